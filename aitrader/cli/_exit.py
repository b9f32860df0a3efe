"""The end of an ``aitrader`` process: skip the interpreter's final garbage collections after a command
that closed what it opened (issue 11, start-up of a short ``paper-trade``).

When the interpreter shuts down it collects the garbage of the whole heap, more than once (finalising
the modules): in a process that imported pandas, pyarrow, numpy, pydantic and onnxruntime that walks
~80,000 tracked objects and costs ~0.2 s of CPU after a 500-bar ``paper-trade`` is done, a third of
that command's wall time (scripts/bench/startup.py). :func:`gc.freeze`, run as the first exit handler,
moves every object alive then into the permanent generation those collections skip. Nothing else of
the exit changes: every exit handler still runs (logging's flush and close, ``weakref.finalize``,
temporary folders), objects freed by their reference count are still freed and finalised; only
objects in reference cycles are left to the operating system without their finalisers.

That is safe only after a command has closed every file, connection and writer it opened, explicitly
rather than through the collector: an unclosed SQLite connection in a cycle would leave its ``-wal``
uncheckpointed, a buffered writer its last bytes unwritten. ``tests/cli/test_exit.py`` holds the
commands that call :func:`skip_final_collections` to that (no file of the run, the registry or the
data left open after the command, with the collector off). Other commands keep the full exit.

Only the process's own command does it: :func:`mark_process_entry` is called by the console script and
``python -m aitrader``; a command invoked in-process (typer's ``CliRunner``, a host program) keeps
its host's exit untouched.
"""

from __future__ import annotations

_state = {"entry": False, "registered": False}


def mark_process_entry() -> None:
    """This process is the ``aitrader`` command itself (its exit belongs to the command)."""
    _state["entry"] = True


def skip_final_collections() -> bool:
    """After a command that closed its resources: freeze the heap at exit (once per process); False when
    this is not the process's own command (nothing is registered)."""
    if not _state["entry"]:
        return False
    if not _state["registered"]:
        import atexit
        import gc

        atexit.register(gc.freeze)  # registered last, so it runs first: the handlers after it run as before
        _state["registered"] = True
    return True
