"""CLI commands of the model registry: register, list, deploy, verify, history, registry rebuild.

Each command opens ``aitrader.registry.Registry`` (imported inside the command: the registry
package is light, but the rule keeps start-up predictable), makes one call and renders it.
Everything printed from stored text (reasons, tags, user and host names, check details, paths)
goes through ``safe_text``: a control character or ANSI escape in a stored value cannot forge a
line or restyle the terminal.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from aitrader.cli._output import console, print_json, status

if TYPE_CHECKING:
    from aitrader.registry import DeployResult, History, RebuildReport, VerifyReport, VersionInfo

REGISTRY_HELP = "Registry root folder (default: $AITRADER_REGISTRY, else ./models)."
JSON_HELP = "Print exactly one JSON document on stdout."


def _registry_opt() -> Any:
    return typer.Option(None, "--registry", envvar="AITRADER_REGISTRY", show_envvar=False, help=REGISTRY_HELP)


def _json_opt() -> Any:
    return typer.Option(False, "--json", help=JSON_HELP)


def _tags(values: list[str] | None) -> dict[str, str]:
    from aitrader.registry import parse_tag

    return dict(parse_tag(v) for v in values or [])


def register_cmd(
    artifact_dir: Path = typer.Argument(
        ..., help="Artifact folder written by `aitrader train` (manifest.json + files)."
    ),
    name: str = typer.Option(..., "--name", help="Model name: 1-64 of a-z 0-9 _ . - (e.g. aapl_lgbm)."),
    tag: list[str] = typer.Option(None, "--tag", help="KEY=VALUE label stored in the index; repeatable."),
    trust_pickle: bool = typer.Option(
        False, "--trust-pickle", help="Allow loading pickle-based files (joblib); only for sources you trust."
    ),
    registry: str | None = _registry_opt(),
    json_out: bool = _json_opt(),
) -> None:
    """Copy an artifact into the registry as NAME:vN with the SHA256 of every file."""
    from aitrader.registry import Registry

    info = Registry(registry).register(artifact_dir, name, tags=_tags(tag), trust_pickle=trust_pickle)
    if json_out:
        print_json(info.to_dict())
        return
    typer.echo(f"{info.model_id} {info.digest}")  # validated name + hex digest: nothing to escape
    if info.reused:
        trust = "; it is now marked trusted (--trust-pickle)" if trust_pickle else ""
        typer.echo(f"note: the same files were already registered as {info.model_id}; nothing copied{trust}", err=True)


def list_cmd(
    name: str | None = typer.Option(None, "--name", help="Only this model's versions."),
    detail: str | None = typer.Option(
        None, "--detail", help="One version in detail with its feature importance: NAME, NAME:vN or NAME@alias."
    ),
    registry: str | None = _registry_opt(),
    json_out: bool = _json_opt(),
) -> None:
    """List registered versions: aliases (production*), created, kind, holdout IC, hit rate, Sharpe."""
    from aitrader.registry import Registry

    reg = Registry(registry)
    if detail is not None:
        if name is not None:
            raise typer.BadParameter("--detail names one version; drop --name", param_hint="--detail")
        _list_detail(reg, detail, json_out)
        return
    infos = reg.list_versions(name)
    unindexed = reg.unindexed(name)
    if json_out:
        print_json({"registry": str(reg.root), "versions": [i.to_dict() for i in infos], "unindexed": unindexed})
    else:
        _render_list(infos, str(reg.root))
    if unindexed:  # never silently shorter than what is on disk
        more = f" (and {len(unindexed) - 3} more)" if len(unindexed) > 3 else ""
        typer.echo(
            f"warning: {len(unindexed)} version folder(s) on disk are not in the index: "
            f"{', '.join(unindexed[:3])}{more}; run `aitrader registry rebuild --registry {reg.root}` "
            "to re-index them (`aitrader verify` lists them)",
            err=True,
        )


def _list_detail(reg: Any, model_id: str, json_out: bool) -> None:
    """``list --detail``: the version record and its manifest's feature importance (files verified first)."""
    import json

    from aitrader.errors import RegistryError
    from aitrader.registry import safe_text

    info = reg.resolve(model_id)
    reg.verify_or_raise(info)  # nothing is read from a version before its hashes are checked
    path = Path(info.path) / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RegistryError(f"cannot read {path}: {exc}; run `aitrader verify {info.model_id}`") from exc
    found = manifest.get("importance") if isinstance(manifest, dict) else None
    section: dict[str, Any] = found if isinstance(found, dict) else {}
    feats = section.get("features") if isinstance(section.get("features"), dict) else None
    ranked = sorted(((str(k), float(v)) for k, v in (feats or {}).items() if isinstance(v, int | float)),
                    key=lambda kv: -kv[1])
    if json_out:
        print_json({"version": info.to_dict(),
                    "importance": {"method": section.get("method"), "features": dict(ranked)} if ranked else None})
        return
    from rich import box
    from rich.table import Table
    from rich.text import Text

    out = console()
    aliases = ", ".join(info.aliases) or "-"
    out.print(f"{safe_text(info.model_id)}: {safe_text(info.kind or '-')} {safe_text(info.task or '-')}, "
              f"aliases {safe_text(aliases)}", markup=False, highlight=False)
    out.print(f"created {safe_text(info.created_at[:19].replace('T', ' '))}, digest {info.digest[:16]}",
              markup=False, highlight=False)
    out.print(f"holdout: IC {_fmt(info.metrics.get('ic'))}, hit rate {_fmt(info.metrics.get('hit_rate'))}, "
              f"Sharpe {_fmt(info.metrics.get('sharpe'), '.2f')}", markup=False, highlight=False)
    if not ranked:
        out.print("no feature importance recorded (trained before it was stored); retrain to record it",
                  markup=False)
        return
    table = Table(title=f"feature importance ({safe_text(str(section.get('method')))}, share of the total)",
                  box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1))
    for col, justify in (("rank", "right"), ("feature", "left"), ("share", "right"), ("", "left")):
        table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    top = ranked[0][1] or 1.0
    for rank, (feature, share) in enumerate(ranked, 1):
        bar = "#" * max(int(round(30 * share / top)), 1 if share > 0 else 0)
        table.add_row(str(rank), Text(safe_text(feature)), f"{100 * share:.1f}%", bar)
    out.print(table)


def deploy_cmd(
    model_id: str = typer.Option(
        ..., "--model-id", help="NAME (latest version), NAME:vN or NAME@alias (the version an alias holds, "
        "e.g. spy_lgbm@staging); a NAME with --rollback."),
    alias: str = typer.Option("production", "--alias", help="Alias to promote to."),
    from_file: Path | None = typer.Option(
        None, "--from-file", help="Register this artifact folder first, then deploy."
    ),
    rollback: bool = typer.Option(
        False, "--rollback", help="Restore the version the alias held before its last change."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Run the checks only: promote and log nothing."),
    reason: str | None = typer.Option(None, "--reason", help="Why: recorded in the deploy log."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="With --from-file: register as trusted pickle."),
    tag: list[str] = typer.Option(None, "--tag", help="With --from-file: KEY=VALUE tag; repeatable."),
    require_edge: bool = typer.Option(
        False, "--require-edge", help="Refuse a model whose training verdict is not 'edge' (else only a warning)."
    ),
    backend: str | None = typer.Option(
        None, "--backend", help="Runner backend: auto (compile the trees when they match, else ONNX), compiled, "
        "onnx or native. Default: $AITRADER_BACKEND, else auto."),
    registry: str | None = _registry_opt(),
    json_out: bool = _json_opt(),
) -> None:
    """Check a version (hashes, loads, sample predictions, feature contract, backend), then promote it."""
    from aitrader.registry import Registry

    if rollback and from_file is not None:
        raise typer.BadParameter("--rollback cannot be combined with --from-file", param_hint="--rollback")
    if (trust_pickle or tag) and from_file is None:
        raise typer.BadParameter("--trust-pickle and --tag apply to --from-file only", param_hint="--from-file")
    if require_edge and rollback:
        raise typer.BadParameter("--require-edge does not apply to --rollback", param_hint="--require-edge")
    reg = Registry(registry)
    with status(f"checking {model_id} (hashes, load, sample predictions, feature contract, backend) ..."):
        if rollback:
            result = reg.rollback(model_id, alias, reason=reason, dry_run=dry_run, backend=backend)
        elif from_file is not None:
            result = reg.deploy_from_file(
                from_file, model_id, alias, dry_run=dry_run, reason=reason, trust_pickle=trust_pickle,
                tags=_tags(tag), require_edge=require_edge, backend=backend,
            )
        else:
            result = reg.deploy(model_id, alias, dry_run=dry_run, reason=reason, require_edge=require_edge,
                                backend=backend)
    if json_out:
        print_json(result.to_dict())
    else:
        _render_deploy(result)
    for warning in result.warnings:  # no edge by the training verdict, a compiled backend not used (--json: "warnings")
        typer.echo(f"warning: {warning}", err=True)
    failed = [c for c in result.checks if c.status == "failed"]
    if failed:  # only a dry run returns with a failed check; a real deploy raised already
        from aitrader.registry import safe_text

        detail = safe_text(failed[0].detail)
        typer.echo(f"error: deploy check {failed[0].name} failed for {result.model_id}: {detail}", err=True)
        raise typer.Exit(1)


def verify_cmd(
    model_id: str | None = typer.Argument(None, help="NAME (all its versions) or NAME:vN; default: everything."),
    registry: str | None = _registry_opt(),
    json_out: bool = _json_opt(),
) -> None:
    """Re-hash every registered file; exit 1 with the list of mismatches."""
    from aitrader.registry import Registry

    with status(f"re-hashing {model_id or 'every registered version'} ..."):
        report = Registry(registry).verify(model_id)
    if json_out:
        print_json(report.to_dict())
    else:
        _render_verify(report)
    if not report.ok:
        lost = sorted({p.model_id for p in report.mismatches if p.problem == "unindexed"})
        changed = [p for p in report.mismatches if p.problem != "unindexed"]
        bad = sorted({p.model_id for p in changed})
        parts = []
        if changed:
            parts.append(
                f"{len(changed)} mismatch(es) in {', '.join(bad)}: files changed after registration; "
                "re-register the original artifacts or deploy other versions"
            )
        if lost:
            parts.append(
                f"{len(lost)} version folder(s) on disk are not in the index ({', '.join(lost[:3])}); run "
                "`aitrader registry rebuild` to re-index them"
            )
        typer.echo(f"error: {'; '.join(parts)}", err=True)
        raise typer.Exit(1)


def history_cmd(
    name: str = typer.Argument(..., help="Model name."),
    at: str | None = typer.Option(
        None, "--at", help="ISO-8601 time: which version held each alias then (naive = UTC)."
    ),
    registry: str | None = _registry_opt(),
    json_out: bool = _json_opt(),
) -> None:
    """Show the append-only deploy log of a model: when, who, from/to version, alias, checks, reason."""
    from aitrader.registry import Registry

    hist = Registry(registry).history(name, at=at)
    if json_out:
        print_json(hist.to_dict())
    else:
        _render_history(hist)


def rebuild_cmd(
    registry: str | None = _registry_opt(),
    json_out: bool = _json_opt(),
) -> None:
    """Re-create the index (registry.db) from the version folders and deploy_log.jsonl."""
    from aitrader.registry import Registry

    report = Registry(registry).rebuild()
    if json_out:
        print_json(report.to_dict())
    else:
        _render_rebuild(report)


# ---------------------------------------------------------------------- rendering (human output)


def _fmt(value: object, spec: str = ".3f") -> str:
    """A metric for the table; anything that is not a number (a damaged index) shows as '-'."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return format(value, spec)


def _short(value: object, depth: int = 0) -> str:
    """A details value, compact and on one line: floats to 4 significant digits (also inside
    containers), mappings as ``{key: value, ...}``, lists as ``[a, b]``, long values cut with '...'."""
    from aitrader.registry import safe_text

    if isinstance(value, float):
        return format(value, ".4g")
    if isinstance(value, dict) and depth < 3:
        text = "{" + ", ".join(f"{safe_text(k)}: {_short(v, depth + 1)}" for k, v in value.items()) + "}"
    elif isinstance(value, list) and depth < 3:
        text = "[" + ", ".join(_short(v, depth + 1) for v in value) + "]"
    elif isinstance(value, dict | list):
        text = "{...}" if isinstance(value, dict) else "[...]"
    elif value is None:
        text = "-"
    else:
        text = safe_text(value)
    return text if len(text) <= 72 else text[:69] + "..."


def _wrapped(head: str, parts: list[str], width: int) -> list[str]:
    """``head`` then ``parts`` joined by ', ', wrapped at ``width`` with continuation lines indented
    under the first part (a long log stays readable at 100 columns instead of wrapping mid-word)."""
    lines, line, indent = [], head, " " * len(head)
    for i, part in enumerate(parts):
        piece = part + ("," if i < len(parts) - 1 else "")
        if line.strip() and len(line) + len(piece) + 1 > width and line != head:
            lines.append(line.rstrip())
            line = indent
        line += piece if line in (head, indent) else " " + piece
    lines.append(line.rstrip())
    return lines


def _render_list(infos: list[VersionInfo], root: str) -> None:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from aitrader.registry import safe_text

    root = safe_text(root)

    if not infos:
        console().print(
            f"no models registered in {root}; add one with `aitrader register DIR --name NAME`", markup=False
        )
        return
    table = Table(title=f"registry {root}  (* = production)", box=box.SIMPLE_HEAD, show_edge=False, padding=0)
    for col in ("name", "ver", "aliases", "created", "kind", "IC", "hit", "Sharpe", "digest"):
        table.add_column(
            col,
            justify="right" if col in ("IC", "hit", "Sharpe") else "left",
            no_wrap=True,
            overflow="ellipsis",
        )
    for i in infos:
        aliases = ", ".join(f"{a}*" if a == "production" else a for a in i.aliases)
        cells = [
            i.name,
            f"v{i.version}",
            aliases,
            i.created_at[:10],
            i.kind or "-",
            _fmt(i.metrics.get("ic")),
            _fmt(i.metrics.get("hit_rate")),
            _fmt(i.metrics.get("sharpe"), ".2f"),
            i.digest[:10],
        ]
        table.add_row(*(Text(safe_text(c)) for c in cells))  # Text: no markup, no escapes from the index
    console().print(table)


def _render_deploy(result: DeployResult) -> None:
    from rich.table import Table
    from rich.text import Text

    from aitrader.registry import safe_text

    table = Table(title=f"deploy checks: {result.model_id} -> {result.alias}")
    for col in ("check", "status", "detail"):
        table.add_column(col)
    for c in result.checks:
        table.add_row(c.name, c.status, Text(safe_text(c.detail)))  # Text: a detail may contain [brackets]
    out = console()
    if result.registered is not None:
        out.print(f"registered {result.registered.model_id} {result.registered.digest}", markup=False)
    out.print(table)
    out.print(safe_text(result.note), markup=False, soft_wrap=True)


def _render_verify(report: VerifyReport) -> None:
    from aitrader.registry import safe_text

    out = console()
    for v in report.versions:
        out.print(f"{v.model_id}: {'OK' if v.ok else 'FAILED'} ({v.files} files, {v.bytes} bytes)", markup=False)
        for p in v.problems:
            if p.problem == "unindexed":
                what = "on disk but not in the index; `aitrader registry rebuild` re-indexes it"
            elif p.problem == "unexpected":
                what = "not part of the registered version"
            elif p.problem == "not_regular":
                what = f"{p.found}, not a regular file; not opened"
            elif p.problem in ("missing", "unreadable"):
                what = f"registered {p.expected}" + (f", {p.found}" if p.found else "")
            else:
                what = f"registered {p.expected or '-'}, found {p.found or '-'}"
            out.print(safe_text(f"  {p.problem}: {p.path} ({what})"), soft_wrap=True, markup=False)
    mb = sum(v.bytes for v in report.versions) / 1e6
    out.print(f"{len(report.versions)} version(s), {mb:.1f} MB verified in {report.seconds:.2f} s")


def _render_history(hist: History) -> None:
    from aitrader.registry import safe_text as s

    out = console()
    width = max(out.width, 60)
    if not hist.events:
        out.print(f"no deploys of {hist.name} yet", markup=False)
    for e in hist.events:  # one line per event: a log reads better than a wrapped table
        frm = f"v{e.from_version}" if e.from_version else "-"
        reason = f"  reason: {s(e.reason)}" if e.reason else ""
        # an evaluation moved nothing: show challenger vs holder, not an arrow
        move = f"v{e.to_version} vs {frm}" if e.action == "evaluate" else f"{frm} -> v{e.to_version}"
        out.print(
            f"{s(str(e.ts)[:19].replace('T', ' '))}  {s(e.user)}@{s(e.host)}  {s(e.action)} {s(e.alias)}: {move}  "
            f"{s(e.status)}{reason}",
            soft_wrap=True,
            markup=False,
        )
        for c in e.checks:
            if isinstance(c, dict) and c.get("status") == "failed":
                out.print(f"    check {s(c.get('name'))} failed: {s(c.get('detail'))}", soft_wrap=True, markup=False)
        if e.details:
            pairs = [f"{s(k)}={_short(v)}" for k, v in e.details.items()]
            for part in _wrapped("    details: ", pairs, width):
                out.print(part, soft_wrap=True, markup=False)
    for alias, version in hist.current.items():
        out.print(f"now: {alias} -> {hist.name}:v{version}")
    for alias, held in hist.holders.items():
        out.print(f"at {hist.at}: {alias} -> {f'{hist.name}:v{held}' if held else 'nothing'}")


def _render_rebuild(report: RebuildReport) -> None:
    from aitrader.registry import safe_text

    out = console()
    out.print(f"rebuilt the index of {safe_text(report.root)}: {len(report.versions)} version(s)", markup=False)
    for item in report.skipped:
        line = f"  not indexed: {item['path']}: {item['reason']}"
        out.print(safe_text(line), soft_wrap=True, markup=False)
    for key, version in report.aliases.items():
        out.print(f"  alias {key} -> v{version}", markup=False)
    restored = f"{report.events} row(s) restored from deploy_log.jsonl" if report.journal else "none"
    out.print(f"  deploy log: {restored}", markup=False)
    if report.replaced:
        out.print(f"  the old index was kept as {safe_text(report.replaced)}", markup=False)
    for note in report.notes:
        typer.echo(f"note: {safe_text(note)}", err=True)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("register")(register_cmd)
    app.command("list")(list_cmd)
    app.command("deploy")(deploy_cmd)
    app.command("verify")(verify_cmd)
    app.command("history")(history_cmd)
    maintenance = typer.Typer(
        help="Registry maintenance: rebuild the index from the version folders.", no_args_is_help=True
    )
    maintenance.command("rebuild")(rebuild_cmd)
    app.add_typer(maintenance, name="registry")
