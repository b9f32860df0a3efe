"""``train`` jobs: ``aitrader retrain`` in a separate process, never inside the serving process.

A job runs ``python -m aitrader retrain --name NAME --data PATH --registry ROOT --json
--promote-if-better`` (plus ``--metric``/``--min-improvement`` when given), so the decision follows
retrain's rules exactly (champion vs challenger on the same unseen rows; retrain's own lock keeps
two retrains of a registry apart). Its stdout (the one JSON document) and stderr go to files in
the job folder; ``state()`` reports ``running``, ``finished`` (with the decision: retrain's
``status``, ``promoted`` true/false, the new model id) or ``failed`` (exit code and the error line).
One job per model name at a time: a second ``train`` while one runs is refused.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aitrader.serve.protocol import ProtocolError

METRICS = ("ic", "sharpe", "mae")


@dataclass
class Job:
    id: str
    name: str
    data: str
    proc: subprocess.Popen[bytes]
    folder: Path
    started_at: float
    ended_at: float | None = None
    result: dict[str, Any] | None = None

    def poll(self) -> str:
        if self.result is not None:
            return str(self.result["state"])
        code = self.proc.poll()
        if code is None:
            return "running"
        self.ended_at = time.time()
        self.result = self._finish(code)
        return str(self.result["state"])

    def _finish(self, code: int) -> dict[str, Any]:
        out = (self.folder / "stdout.json").read_text(encoding="utf-8", errors="replace").strip()
        err = (self.folder / "stderr.txt").read_text(encoding="utf-8", errors="replace").strip()
        if code != 0:
            line = next((ln for ln in reversed(err.splitlines()) if ln.startswith("error:")),
                        err.splitlines()[-1] if err else "")
            return {"state": "failed", "exit_code": code, "error": line or f"retrain exited with {code}"}
        try:
            doc = json.loads(out)
        except ValueError:
            return {"state": "failed", "exit_code": code, "error": "retrain printed no JSON result"}
        status = doc.get("status")
        challenger = doc.get("challenger") if isinstance(doc.get("challenger"), dict) else {}
        return {"state": "finished", "exit_code": 0, "status": status, "promoted": bool(doc.get("promoted")),
                "decision": doc.get("decision") or doc.get("message"), "challenger": challenger.get("model_id"),
                "message": doc.get("message"), "feedback": doc.get("feedback")}

    def to_dict(self) -> dict[str, Any]:
        state = self.poll()
        out = {"job": self.id, "name": self.name, "data": self.data, "state": state, "pid": self.proc.pid,
               "started_at": self.started_at, "ended_at": self.ended_at}
        if self.result is not None:
            out.update({k: v for k, v in self.result.items() if k != "state"})
        return out


class Jobs:
    """The server's train jobs (kept for the life of the server)."""

    def __init__(self, folder: Path, registry_root: str | Path | None, runs_dir: str | Path) -> None:
        self.folder = folder
        self.registry_root = registry_root
        self.runs_dir = runs_dir
        self.jobs: dict[str, Job] = {}

    def start(self, header: dict[str, Any]) -> Job:
        name, data = header.get("name"), header.get("data")
        if not isinstance(name, str) or not name:
            raise ProtocolError("bad_train", "train needs name: the registry name of the model to retrain")
        if not isinstance(data, str) or not data:
            raise ProtocolError("bad_train", "train needs data: the path of a parquet (or CSV) bars file")
        if not Path(data).is_file():
            raise ProtocolError("bad_train", f"train data {data} is not a file the server can read; pass a path "
                                "on the server's machine")
        metric = header.get("metric", "ic")
        if metric not in METRICS:
            raise ProtocolError("bad_train", f"metric {metric!r} is not one of {', '.join(METRICS)}")
        margin = header.get("min_improvement", 0.0)
        if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0 <= margin < 1e9:
            raise ProtocolError("bad_train", f"min_improvement must be a number >= 0, got {margin!r}")
        for job in self.jobs.values():
            if job.name == name and job.poll() == "running":
                raise ProtocolError("busy", f"a train job for {name} is running ({job.id}, pid {job.proc.pid}); "
                                    "wait for it (op job) before starting another")
        job_id = f"{int(time.time())}-{secrets.token_hex(4)}"
        folder = self.folder / job_id
        folder.mkdir(parents=True)
        cmd = [sys.executable, "-m", "aitrader", "retrain", "--name", name, "--data", str(Path(data).resolve()),
               "--metric", metric, "--min-improvement", repr(float(margin)), "--runs-dir", str(self.runs_dir),
               "--json"]
        if header.get("promote", True):
            cmd.append("--promote-if-better")
        if self.registry_root is not None:
            cmd += ["--registry", str(self.registry_root)]
        if (config := header.get("config")) is not None:
            if not isinstance(config, str):
                raise ProtocolError("bad_train", "config must be a path string")
            cmd += ["--config", config]
        with (folder / "stdout.json").open("wb") as out, (folder / "stderr.txt").open("wb") as err:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,  # noqa: S603
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        job = Job(job_id, name, data, proc, folder, time.time())
        self.jobs[job_id] = job
        return job

    def get(self, job_id: Any) -> Job:
        job = self.jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            raise ProtocolError("unknown_job", f"no job {job_id!r}; the ids are what train returned")
        return job

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for job in self.jobs.values():
            s = job.poll()
            out[s] = out.get(s, 0) + 1
        return out
