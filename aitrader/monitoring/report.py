"""The monitor's HTML report: one self-contained file (PNG charts embedded as base64 data URIs).

One file that opens offline and can be mailed or archived without a folder of images beside it.
The page is written to a temporary file in the target folder and renamed, so a crash never leaves
half a report.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aitrader.errors import AitraderError
from aitrader.monitoring.files import write_text_atomic
from aitrader.monitoring.monitor import MonitorResult

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.ok{color:#1a7f37;font-weight:bold}.alert{color:#b42318;font-weight:bold}
img{max-width:100%;border:1px solid #eee;margin:0.5em 0}
"""


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _charts(result: MonitorResult) -> dict[str, str]:
    """Four charts as base64 PNGs; a chart without data says so instead of being left out."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in cron
    import matplotlib.pyplot as plt

    s, summ = result.series, result.summary
    holdout = summ["accuracy"]["holdout"]
    charts: dict[str, str] = {}
    try:
        fig, ax = plt.subplots(figsize=(9, 3.2))
        if s.get("equity"):
            ax.plot(s["equity_ts"], s["equity"], color="#1f77b4")
        else:
            ax.text(0.5, 0.5, "no equity recorded yet", ha="center", transform=ax.transAxes)
        ax.set_title("Equity curve")
        ax.set_ylabel("equity")
        fig.autofmt_xdate()
        charts["equity"] = _png(fig)
        plt.close(fig)

        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.2))
        roll = s.get("rolling") or {}
        for ax, key, label in ((ax1, "mae", "MAE"), (ax2, "ic", "IC")):
            values = [float("nan") if v is None else v for v in roll.get(key) or []]
            if values:
                ax.plot(values, label=f"rolling {label} (window {summ['accuracy']['window_size']})")
            else:
                ax.text(0.5, 0.5, "no outcomes yet", ha="center", transform=ax.transAxes)
            if holdout.get(key) is not None:
                ax.axhline(holdout[key], color="grey", linestyle="--", label=f"training holdout {label}")
            ax.set_title(f"Rolling {label}")
            ax.set_xlabel("predictions with a known outcome")
            ax.legend(fontsize=7)
        charts["rolling"] = _png(fig)
        plt.close(fig)

        feats = [r for r in summ["drift"]["features"] if r["psi"] is not None]
        fig, ax = plt.subplots(figsize=(9, max(2.5, 0.3 * len(feats) + 1)))
        if feats:
            names = [r["name"] for r in reversed(feats)]
            vals = [r["psi"] for r in reversed(feats)]
            limit = summ["thresholds"]["psi_max"]
            drifted = [bool(r.get("significant")) for r in reversed(feats)]
            ax.barh(names, vals, color=["#b42318" if d else "#1f77b4" for d in drifted])
            ax.axvline(limit, color="grey", linestyle="--", label=f"psi_max {limit} (red: past max(psi_max, chance))")
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no live feature values", ha="center", transform=ax.transAxes)
        ax.set_title("Population stability index per feature")
        charts["psi"] = _png(fig)
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(5, 4.5))
        if s.get("prediction"):
            ax.scatter(s["prediction"], s["outcome"], s=6, alpha=0.5)
            ax.axhline(0, color="grey", linewidth=0.5)
            ax.axvline(0, color="grey", linewidth=0.5)
        else:
            ax.text(0.5, 0.5, "no outcomes yet", ha="center", transform=ax.transAxes)
        ax.set_xlabel("prediction")
        ax.set_ylabel("realised outcome")
        ax.set_title("Prediction vs outcome")
        charts["scatter"] = _png(fig)
        plt.close(fig)
    finally:
        plt.close("all")
    return charts


def _accuracy_rows(acc: Mapping[str, Any]) -> list[list[Any]]:
    return [[k, acc["run"].get(k), acc["window"].get(k), acc["holdout"].get(k)]
            for k in ("mae", "rmse", "hit_rate", "ic", "rank_ic")]


def render_html(result: MonitorResult) -> str:
    """The report page as a string."""
    s = result.summary
    ops, acc, drift = s["operational"], s["accuracy"], s["drift"]
    charts = _charts(result)
    health = '<span class="ok">healthy</span>' if not s["alerts"] else '<span class="alert">ALERT</span>'
    alerts = "".join(f"<li>{html.escape(a['message'])}</li>" for a in s["alerts"]) or "<li>none</li>"
    warnings = "".join(f"<li>{html.escape(w['message'])}</li>" for w in s.get("warnings") or [])
    warn_html = f"<h2>Warnings (no alert)</h2><ul>{warnings}</ul>" if warnings else ""
    img = {k: f'<img alt="{k}" src="data:image/png;base64,{v}">' for k, v in charts.items()}
    m = s["model"]
    ops_rows = [[k, ops[k]] for k in ("predictions", "fallbacks", "latency_ms_p50", "latency_ms_p99",
                                      "errors_total", "error_rate", "feature_availability", "disabled",
                                      "worst_daily_loss")]
    ops_rows += [[f"errors: {k}", v] for k, v in ops["errors_by_type"].items()]
    ops_rows += [[f"risk rejections: {k}", v] for k, v in ops["risk_rejections"].items()]
    drift_rows = [[r["rank"], r["name"], r.get("weight"), r["psi"], r.get("threshold"), r.get("significant"),
                   r.get("n_eff"), r["ks"], r["n"]] for r in drift["features"]]
    pred = drift["prediction"]
    drift_rows.append(["-", "prediction", None, pred["psi"], pred.get("threshold"), pred.get("significant"),
                       pred.get("n_eff"), pred["ks"], pred["n"]])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>aitrader monitor: {html.escape(s['run_id'])}</title>
<style>{_CSS}</style></head><body>
<h1>Monitor report: run {html.escape(s['run_id'])} - {health}</h1>
<p>Model {_fmt(m.get('model_id'))} version {_fmt(m.get('version'))} ({_fmt(m.get('task'))}),
digest <code>{_fmt(m.get('digest'))}</code>; run status {_fmt(s.get('run_status'))},
last update {_fmt(s.get('updated_at'))}.</p>
<h2>Alerts</h2><ul>{alerts}</ul>{warn_html}
<h2>Equity</h2>{img['equity']}
<h2>Operations</h2>{_table(['metric', 'value'], ops_rows)}
<h2>Accuracy</h2>
{_table(['metric', f"whole run (n={acc['run']['n']})", f"last {acc['window_size']} (n={acc['window']['n']})",
         'training holdout'], _accuracy_rows(acc))}
{img['rolling']}{img['scatter']}
<h2>Drift (live n={drift['n']}; importance-weighted feature drift {_fmt(drift.get('feature_score'))},
importance from {_fmt(drift.get('importance'))})</h2>
<p>A PSI counts as drift when it exceeds its limit: the larger of psi_max and the PSI that chance
reaches 1 time in 100 at the series' effective sample size n_eff (autocorrelated values carry less
information than their count).</p>
{_table(['rank', 'name', 'importance', 'PSI', 'limit', 'drifted', 'n_eff', 'KS', 'n'], drift_rows)}
{img['psi']}
</body></html>
"""


def write_report(result: MonitorResult, path: str | Path) -> Path:
    """Write the report atomically (temporary file, then rename) and return its path."""
    target = Path(path)
    page = render_html(result)
    try:
        write_text_atomic(target, page)
    except OSError as exc:
        raise AitraderError(f"cannot write report {target}: {exc.strerror}; pass a writable --report path") from exc
    return target
