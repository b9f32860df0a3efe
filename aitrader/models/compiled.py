"""Compiled tree ensembles: LightGBM/XGBoost turned into machine code, loaded as a verified library.

Two compilers, both optional (the ``compiled`` extra):

- ``lleaves`` (LightGBM only): lleaves parses ``model.txt`` into LLVM IR (float64, the objective's
  link function included); llvmlite optimises it for the host CPU and emits an object file, which
  gcc links into a shared library. lleaves 1.3 optimises with llvmlite's legacy pass manager,
  removed in llvmlite 0.45, so the optimisation step here uses the new pass manager when the legacy
  one is gone (the IR is lleaves' own either way).
- ``treelite`` (LightGBM and XGBoost): treelite imports the model, tl2cgen writes it as C, gcc
  compiles that with a small batch entry point into a shared library.

Both libraries export one function the runner calls through ctypes: ``(X, n, out)`` for ``n``
float64 rows (NaN = missing), so a single row and a batch go through the same code. A library is
machine code for this CPU and these library versions: it never goes into a registry artifact (whose
digest is the same everywhere). :func:`compile_model` writes it with a record (``compiled.json``:
its SHA256, size, backend, versions, CPU tag, parity); :func:`load_library` re-hashes the bytes and
``dlopen``s exactly the bytes it verified (a private copy), so a library changed after it was
recorded is refused, never run. The cache folders themselves are the registry's business
(``aitrader.registry.backends``).

Measured on this 2-core machine for a 200-tree LightGBM (``scripts/bench/inference.py`` prints
the current figures): see docs/registry.md, "Runner backends". The default order
(:data:`DEFAULT_ORDER`) follows those figures.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from aitrader.errors import IntegrityError, ModelError

BACKENDS = ("lleaves", "treelite")
#: Which model kinds each compiler handles.
KINDS = {"lleaves": ("lightgbm",), "treelite": ("lightgbm", "xgboost")}
#: Tried in this order by ``--backend auto``/``compiled``; lleaves first: faster to compile and to
#: run per row than treelite on the bench (docs/registry.md, "Runner backends").
DEFAULT_ORDER = ("lleaves", "treelite")
LIB_FILE = "model.so"
RECORD_FILE = "compiled.json"
RECORD_FORMAT = 1
ENTRY = "aitrader_predict"  # void aitrader_predict(const double* X, int64_t n, double* out)
COMPILE_TIMEOUT_S = 600


class CompilerUnavailable(ModelError):
    """A compiled backend cannot be used here: not installed, no C compiler, or not for this model kind."""


# ---------------------------------------------------------------------- identity of a build


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


@cache
def arch_tag() -> str:
    """This machine's architecture and CPU features, short: code compiled for the host CPU runs only
    where both match (``x86_64-3fa9c2d1``)."""
    flags = hashlib.sha256(_cpu_flags().encode()).hexdigest()[:8]
    return f"{platform.machine() or 'unknown'}-{flags}"


@cache
def _gcc() -> tuple[str, str]:
    cc = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if cc is None:
        raise CompilerUnavailable("no C compiler (gcc or $CC) on PATH; install gcc to use the compiled backends")
    out = subprocess.run([cc, "-dumpfullversion", "-dumpversion"], capture_output=True, text=True, check=False,
                         timeout=30)
    return cc, (out.stdout.strip().splitlines() or ["unknown"])[0]


def backend_version(backend: str) -> str:
    """The versions that decide the library's bytes (``lleaves1.3.0-llvmlite0.50.0-gcc12.2.0``);
    CompilerUnavailable when the backend is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    names = {"lleaves": ("lleaves", "llvmlite"), "treelite": ("treelite", "tl2cgen")}
    if backend not in names:
        raise ModelError(f"unknown compiled backend {backend!r}; expected one of {BACKENDS}")
    try:
        parts = [f"{n}{version(n)}" for n in names[backend]]
    except PackageNotFoundError as exc:
        raise CompilerUnavailable(f"{backend} is not installed ({exc.name} missing); install the "
                                  "'compiled' extra: pip install 'aitrader[compiled]'") from exc
    return "-".join([*parts, f"gcc{_gcc()[1]}"])


def check_supported(backend: str, kind: str | None, task: str | None) -> None:
    """CompilerUnavailable unless ``backend`` compiles a ``kind`` model (regression or binary classifier)."""
    if backend not in KINDS:
        raise ModelError(f"unknown compiled backend {backend!r}; expected one of {BACKENDS}")
    if kind not in KINDS[backend]:
        raise CompilerUnavailable(f"{backend} does not compile {kind} models (only {', '.join(KINDS[backend])})")
    if task not in ("regression", "classification"):
        raise CompilerUnavailable(f"{backend}: unknown task {task!r}")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------- compilers


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False, timeout=COMPILE_TIMEOUT_S)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ModelError(f"{Path(cmd[0]).name} failed (exit {proc.returncode}): {' | '.join(tail)}")


class _Quiet:
    """Silence C-level stdout and stderr for the duration: treelite/tl2cgen print build notes there,
    which would corrupt a command's ``--json`` document. What they printed is kept in ``.text``."""

    def __enter__(self) -> _Quiet:
        sys.stdout.flush()
        sys.stderr.flush()
        self._tmp = tempfile.TemporaryFile()
        self._saved = [os.dup(1), os.dup(2)]
        os.dup2(self._tmp.fileno(), 1)
        os.dup2(self._tmp.fileno(), 2)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in zip((1, 2), self._saved, strict=True):
            os.dup2(saved, fd)
            os.close(saved)
        self._tmp.seek(0)
        self.text = self._tmp.read().decode(errors="replace")
        self._tmp.close()


def _lleaves_object(model_file: Path, work: Path) -> Path:
    """lleaves' IR for ``model.txt``, optimised for the host CPU, as an object file."""
    try:
        import llvmlite.binding as llvm
        import llvmlite.ir
        from lleaves.compiler.ast import parse_to_ast
        from lleaves.compiler.codegen import gen_forest
    except ImportError as exc:
        raise CompilerUnavailable(f"lleaves is not installed ({exc}); pip install 'aitrader[compiled]'") from exc
    forest = parse_to_ast(str(model_file))
    forest.raw_score = False  # apply the objective's link (sigmoid for binary), as Booster.predict does
    ir = llvmlite.ir.Module(name="forest")
    # No cache blocking (block = all trees): lleaves' advice for single-row prediction, the runner's case,
    # and it keeps LightGBM's summation order, so the doubles are the native ones. Blocks of 34 trees
    # (lleaves' default) compiled a 200-tree model in 11 s instead of 28 s, but ran 25% slower per row
    # and changed the last bit of some predictions (3.9e-16).
    gen_forest(forest, ir, max(1, len(forest.trees)), "forest_root", True)
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    ir.triple = llvm.get_process_triple()
    module = llvm.parse_assembly(str(ir))
    module.verify()
    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # LLVM cannot detect them on some hosts
        features = ""
    target = llvm.Target.from_triple(llvm.get_process_triple())
    machine = target.create_target_machine(cpu=llvm.get_host_cpu_name(), features=features, reloc="pic",
                                           codemodel="default", opt=3)
    if hasattr(llvm, "create_pass_builder"):  # llvmlite >= 0.44: the new pass manager
        builder = llvm.create_pass_builder(machine, llvm.create_pipeline_tuning_options(speed_level=3))
        builder.getModulePassManager().run(module, builder)
    else:  # older llvmlite: lleaves' own legacy pipeline
        pmb = llvm.PassManagerBuilder()
        pmb.opt_level, pmb.inlining_threshold = 3, 1
        pm = llvm.ModulePassManager()
        pmb.populate(pm)
        pm.run(module)
    obj = work / "forest.o"
    obj.write_bytes(machine.emit_object(module))
    return obj


# Rows in, one double out per row: forest_root(data, out, start, end) over rows [start, end).
_LLEAVES_ENTRY = """
#include <stdint.h>
void forest_root(double* data, double* out, int32_t start, int32_t end);
void aitrader_predict(const double* X, int64_t n, double* out) {
  forest_root((double*)X, out, 0, (int32_t)n);
}
"""

# tl2cgen's predict() takes one row of union Entry (missing = -1) and writes its one output, in the
# model's leaf type (float64 for LightGBM, float32 for XGBoost): LEAF_T is set from header.h.
_TREELITE_ENTRY = """
#include <math.h>
#include "header.h"
void aitrader_predict(const double* X, int64_t n, double* out) {
  LEAF_T result[1];
  const int32_t nf = get_num_feature();
  union Entry* row = (union Entry*)malloc(sizeof(union Entry) * (size_t)(nf > 0 ? nf : 1));
  if (row == NULL) { for (int64_t i = 0; i < n; ++i) out[i] = NAN; return; }
  for (int64_t i = 0; i < n; ++i) {
    const double* x = X + i * nf;
    for (int32_t j = 0; j < nf; ++j) {
      if (isnan(x[j])) { row[j].missing = -1; } else { row[j].fvalue = x[j]; }
    }
    result[0] = 0;
    predict(row, 0, result);
    out[i] = (double)result[0];
  }
  free(row);
}
"""


def _treelite_model(kind: str, model_file: Path) -> Any:
    try:
        import treelite
    except ImportError as exc:
        raise CompilerUnavailable(f"treelite is not installed ({exc}); pip install 'aitrader[compiled]'") from exc
    if kind == "lightgbm":
        return treelite.frontend.load_lightgbm_model(str(model_file))
    import xgboost as xgb

    return treelite.frontend.from_xgboost(xgb.Booster(model_file=str(model_file)))


def _treelite_sources(kind: str, model_file: Path, work: Path) -> list[Path]:
    try:
        import tl2cgen
    except ImportError as exc:
        raise CompilerUnavailable(f"tl2cgen is not installed ({exc}); pip install 'aitrader[compiled]'") from exc
    with _Quiet():
        tl2cgen.generate_c_code(_treelite_model(kind, model_file), dirpath=str(work), params={"parallel_comp": 2})
    header = (work / "header.h").read_text(encoding="utf-8")
    if "#define N_TARGET 1\n" not in header or "#define MAX_N_CLASS 1\n" not in header:
        raise CompilerUnavailable("treelite: only single-output models (regression, binary classifier) compile")
    leaf = re.search(r"void predict\(union Entry\* data, int pred_margin, (float|double)\* result\);", header)
    if leaf is None:
        raise ModelError("tl2cgen generated an unexpected predict() signature; this tl2cgen version is not supported")
    entry = work / "aitrader_entry.c"
    entry.write_text(_TREELITE_ENTRY.replace("LEAF_T", leaf.group(1)), encoding="utf-8")
    recipe = json.loads((work / "recipe.json").read_text(encoding="utf-8"))
    return [work / f"{s['name']}.c" for s in recipe["sources"]] + [entry]


def compile_model(backend: str, kind: str, task: str, model_file: str | Path, out_dir: str | Path,
                  *, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Compile the native model file with ``backend`` into ``out_dir/model.so`` plus ``compiled.json``.

    ``out_dir`` must not exist; it appears whole or not at all (built in a sibling temp folder and
    renamed). Returns the record: backend, version, arch, sha256, bytes, compile_seconds, task, kind,
    and ``extra`` (the caller's, e.g. the artifact digest and the parity figures)."""
    check_supported(backend, kind, task)
    version = backend_version(backend)
    cc, _ = _gcc()
    out_dir = Path(out_dir).absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=f".tmp-{out_dir.name[:40]}-", dir=out_dir.parent))
    try:
        lib = work / LIB_FILE
        if backend == "lleaves":
            obj = _lleaves_object(Path(model_file), work)
            entry = work / "entry.c"
            entry.write_text(_LLEAVES_ENTRY, encoding="utf-8")
            _run([cc, "-O2", "-fPIC", "-shared", "-o", str(lib), str(entry), str(obj), "-lm"], work)
        else:
            sources = _treelite_sources(kind, Path(model_file), work)
            _run([cc, "-std=c99", "-O2", "-fPIC", "-shared", "-o", str(lib), *map(str, sources), "-lm"], work)
        data = lib.read_bytes()
        record = {"format": RECORD_FORMAT, "backend": backend, "version": version, "arch": arch_tag(),
                  "kind": kind, "task": task, "file": LIB_FILE, "sha256": sha256_bytes(data), "bytes": len(data),
                  "compile_seconds": round(time.perf_counter() - t0, 3), **(extra or {})}
        for leftover in work.iterdir():
            if leftover.name != LIB_FILE:
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        (work / RECORD_FILE).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        work.replace(out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return record


# ---------------------------------------------------------------------- loading


class CompiledPredictor:
    """A loaded library: ``predict_one`` on a preallocated row, ``predict_batch`` on a matrix."""

    def __init__(self, fn: Callable[..., None], n_features: int, backend: str, sha256: str) -> None:
        self._fn = fn
        self.n_features = n_features
        self.backend = backend
        self.sha256 = sha256
        self._row = np.zeros(n_features, dtype=np.float64)
        self._out = np.zeros(1, dtype=np.float64)
        # ctypes objects built once: converting Python ints on every call costs more than the trees.
        self._args = (ctypes.c_void_p(self._row.ctypes.data), ctypes.c_int64(1),
                      ctypes.c_void_p(self._out.ctypes.data))

    def predict_one(self, x: np.ndarray) -> float:
        """One row (length n_features); reuses one buffer, so not thread-safe (like ModelRunner)."""
        self._row[:] = x
        self._fn(*self._args)
        return float(self._out[0])

    def predict_batch(self, X: np.ndarray) -> np.ndarray:
        Xc = np.ascontiguousarray(X, dtype=np.float64)
        if Xc.ndim != 2 or Xc.shape[1] != self.n_features:
            raise ModelError(f"compiled predict: expected (n, {self.n_features}) rows, got shape {Xc.shape}")
        out = np.empty(Xc.shape[0], dtype=np.float64)
        if Xc.shape[0]:
            self._fn(Xc.ctypes.data, Xc.shape[0], out.ctypes.data)
        return out


def read_record(folder: Path) -> dict[str, Any]:
    """The ``compiled.json`` of a cache folder (ModelError when unreadable)."""
    path = folder / RECORD_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise ModelError(f"{path} is not a compiled-model record of format {RECORD_FORMAT}")
    return record


def load_library(folder: str | Path, record: dict[str, Any], n_features: int) -> CompiledPredictor:
    """Verify ``folder/model.so`` against ``record['sha256']`` and load those very bytes.

    IntegrityError when the bytes differ (the library changed after it was compiled): it is not
    loaded. The verified bytes are written to a private temporary file that is ``dlopen``ed and
    unlinked, so a change to the cached file between the check and the load cannot slip in."""
    path = Path(folder) / str(record.get("file", LIB_FILE))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read compiled library {path}: {exc}") from exc
    found = sha256_bytes(data)
    if found != record.get("sha256"):
        raise IntegrityError(
            f"sha256 mismatch in compiled library {path}: recorded {str(record.get('sha256'))[:12]}..., found "
            f"{found[:12]}...; the file changed after it was compiled and was not loaded. Delete {Path(folder)} "
            "and deploy the model again to recompile it"
        )
    fd, tmp = tempfile.mkstemp(prefix=f"aitrader-{found[:16]}-", suffix=".so")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        lib = ctypes.CDLL(tmp)
    except OSError as exc:
        raise ModelError(f"cannot load compiled library {path}: {exc}; delete {Path(folder)} and deploy again") from exc
    finally:
        Path(tmp).unlink(missing_ok=True)
    fn = getattr(lib, ENTRY)
    fn.restype = None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]
    return CompiledPredictor(fn, n_features, str(record.get("backend")), found)


__all__ = [
    "BACKENDS",
    "DEFAULT_ORDER",
    "CompiledPredictor",
    "CompilerUnavailable",
    "arch_tag",
    "backend_version",
    "check_supported",
    "compile_model",
    "load_library",
    "read_record",
]
