"""The CLI's single error boundary, global options and fast start-up."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import typer
from typer.testing import CliRunner

from aitrader import __version__
from aitrader.cli import main as cli_main
from aitrader.errors import AitraderError, DataError, LockHeldError

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(cli_main.app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"aitrader {__version__}"


def test_help_lists_every_lifecycle_command() -> None:
    result = runner.invoke(cli_main.app, ["--help"])
    assert result.exit_code == 0
    for command in ("train", "register", "list", "deploy", "paper-trade", "monitor", "retrain"):
        assert command in result.stdout


def test_unknown_command_is_a_usage_error() -> None:
    result = runner.invoke(cli_main.app, ["no-such-command"])
    assert result.exit_code == 2


@pytest.fixture
def failing_app() -> typer.Typer:
    """A copy of the root group with commands that raise, to exercise the boundary."""
    app = typer.Typer(cls=cli_main.AitraderGroup, pretty_exceptions_show_locals=False)

    @app.command()
    def data_fail() -> None:
        raise DataError("bars.csv: row 3: high 1.0 is below max(open, close) 2.0; pass --repair")

    @app.command()
    def lock_fail() -> None:
        raise LockHeldError("another retrain holds the lock")

    @app.command()
    def many() -> None:
        raise DataError("bars.csv: row 2: high below open; pass --repair\n"
                        "bars.csv: row 3: bad timestamp; pass --repair")

    @app.command()
    def bug() -> None:
        raise RuntimeError("a real bug")

    return app


def test_library_error_is_one_line_on_stderr_exit_1(failing_app: typer.Typer) -> None:
    result = runner.invoke(failing_app, ["data-fail"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == "error: bars.csv: row 3: high 1.0 is below max(open, close) 2.0; pass --repair\n"
    assert "Traceback" not in result.stderr


def test_several_problems_still_print_one_line(failing_app: typer.Typer) -> None:
    result = runner.invoke(failing_app, ["many"])
    assert result.exit_code == 1
    assert result.stderr == (
        "error: bars.csv: row 2: high below open; pass --repair; bars.csv: row 3: bad timestamp; pass --repair\n"
    )


def test_error_subclass_sets_its_exit_code(failing_app: typer.Typer) -> None:
    result = runner.invoke(failing_app, ["lock-fail"])
    assert result.exit_code == 4
    assert result.stderr.startswith("error: another retrain holds the lock")


def test_a_bug_is_not_swallowed(failing_app: typer.Typer) -> None:
    result = runner.invoke(failing_app, ["bug"])
    assert result.exit_code == 1
    assert isinstance(result.exception, RuntimeError)
    assert not isinstance(result.exception, AitraderError)


def test_locals_never_shown_in_tracebacks() -> None:
    assert cli_main.app.pretty_exceptions_show_locals is False


def test_log_file_goes_under_logs(in_tmp) -> None:
    result = runner.invoke(cli_main.app, ["--verbose", "--log-file", "aitrader.log", "features", "list", "--json"])
    assert result.exit_code == 0, result.stderr
    json.loads(result.stdout)
    assert (in_tmp / "logs" / "aitrader.log").is_file()


def _bars_file(in_tmp) -> str:
    from aitrader.data.synthetic import generate_bars

    generate_bars(200, seed=1).to_csv(in_tmp / "bars.csv")
    return "bars.csv"


def test_verbose_logs_progress_on_stderr_and_keeps_stdout_json(in_tmp) -> None:
    args = ["features", "build", "--data", _bars_file(in_tmp), "--out", "f.parquet", "--json"]
    quiet = runner.invoke(cli_main.app, args)
    assert quiet.exit_code == 0 and quiet.stderr == ""
    loud = runner.invoke(cli_main.app, ["--verbose", *args])
    assert loud.exit_code == 0, loud.stderr
    assert json.loads(loud.stdout)["rows"] == 200  # still exactly one JSON document on stdout
    assert "INFO aitrader.data.stream: bars.csv: scanned 200 bars" in loud.stderr  # read in blocks
    assert "INFO aitrader.features.build: wrote f.parquet: 200 rows" in loud.stderr


def test_verbose_error_has_no_traceback_but_the_log_file_does(in_tmp) -> None:
    result = runner.invoke(cli_main.app, ["-v", "--log-file", "run.log", "data", "check", "absent.csv"])
    assert result.exit_code == 1
    assert result.stderr == ("error: absent.csv: no such file or directory; pass a bar file or a directory "
                             "of bar files\n")
    logged = (in_tmp / "logs" / "run.log").read_text()
    assert "DEBUG aitrader: run: aitrader" in logged
    assert "command failed: absent.csv: no such file or directory" in logged
    assert "Traceback (most recent call last)" in logged and "DataError" in logged


def test_log_file_path_and_unwritable_log_file(in_tmp) -> None:
    (in_tmp / "sub").mkdir()
    result = runner.invoke(cli_main.app, ["--log-file", "sub/a.log", "features", "list", "--json"])
    assert result.exit_code == 0 and (in_tmp / "sub" / "a.log").is_file() and not (in_tmp / "logs").exists()
    (in_tmp / "blocker").write_text("a file, not a folder")
    result = runner.invoke(cli_main.app, ["--log-file", "blocker/a.log", "features", "list"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot open log file blocker/a.log") and result.stdout == ""


HEAVY = ("pandas", "numpy", "lightgbm", "xgboost", "sklearn", "onnxruntime", "matplotlib")


def test_help_imports_no_heavy_library() -> None:
    """`aitrader --help` must stay fast: proven by what it imports, not by a clock."""
    code = textwrap.dedent(
        f"""
        import sys
        from typer.testing import CliRunner
        from aitrader.cli.main import app
        for args in (["--help"], ["--version"]):
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 0, result.output
        heavy = [m for m in {HEAVY!r} if m in sys.modules]
        print(",".join(heavy))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"--help imported heavy modules: {out.stdout.strip()}"


def test_every_subcommand_help_imports_no_heavy_library() -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from typer.testing import CliRunner
        from aitrader.cli.main import app
        import typer.main
        group = typer.main.get_command(app)
        paths = []
        for name, cmd in group.commands.items():
            paths.append([name])
            for sub in getattr(cmd, "commands", {{}}):
                paths.append([name, sub])
        for path in paths:
            result = CliRunner().invoke(app, [*path, "--help"])
            assert result.exit_code == 0, (path, result.output)
        print(",".join(m for m in {HEAVY!r} if m in sys.modules))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"a command's --help imported: {out.stdout.strip()}"


# ------------------------------------------------------------------ issue 12: small cuts


def _sub(*args: str, cwd=None, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "COLUMNS": "100", **(env_extra or {})}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_python_dash_m_aitrader_runs_the_cli() -> None:
    out = _sub("-m", "aitrader", "--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"aitrader {__version__}"
    usage = _sub("-m", "aitrader", "--help")
    assert "Usage: aitrader " in usage.stdout  # the program name, not "python -m aitrader"


def test_shell_completion_is_offered() -> None:
    result = runner.invoke(cli_main.app, ["--help"], env={"COLUMNS": "120"})
    assert "--install-completion" in result.stdout and "--show-completion" in result.stdout


def test_flags_show_no_value_metavar_in_any_help() -> None:
    """`--json` not `--json <bool>`: a flag takes no value; options that do still show their type."""
    import typer.main

    group = typer.main.get_command(cli_main.app)
    paths: list[list[str]] = [[]]
    for name, cmd in group.commands.items():
        paths.append([name])
        paths.extend([name, sub] for sub in getattr(cmd, "commands", {}))
    for path in paths:
        result = runner.invoke(cli_main.app, [*path, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.stdout, (path, result.stdout)
    status_help = runner.invoke(cli_main.app, ["status", "--help"], env={"COLUMNS": "200"}).stdout
    assert "<str>" in status_help  # --runs-dir still shows that it takes a value
    assert any(line.split("│")[1].split() == ["--json", "Print", "exactly", "one", "JSON", "document", "on", "stdout."]
               for line in status_help.splitlines() if line.count("│") >= 2)


def test_a_mistyped_choice_suggests_the_closest_one() -> None:
    result = runner.invoke(cli_main.app, ["data", "sample", "--symbol", "APPL"], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "Did you mean 'aapl'?" in result.output
    assert cli_main.with_suggestion("'momentm' is not one of 'price', 'volume'.") == \
        "'momentm' is not one of 'price', 'volume'."  # nothing close: no suggestion
    assert cli_main.with_suggestion("'sgnal' is not one of 'price', 'signal'.").endswith("Did you mean 'signal'?")


def test_a_mistyped_model_kind_suggests_lightgbm(in_tmp) -> None:
    result = runner.invoke(cli_main.app, ["train", "--model", "lightgmb"])
    assert result.exit_code == 1
    assert result.stderr.strip().endswith("got 'lightgmb'; did you mean 'lightgbm'?")


def test_a_mistyped_retrain_metric_suggests_sharpe(in_tmp) -> None:
    result = runner.invoke(cli_main.app, ["retrain", "--name", "syn", "--metric", "shrpe"])
    assert result.exit_code == 1
    assert "did you mean 'sharpe'?" in result.stderr


def test_an_unknown_feature_is_named_before_the_output_folder(in_tmp) -> None:
    (in_tmp / "out").mkdir()
    (in_tmp / "out" / "keep.txt").write_text("not an artifact")
    result = runner.invoke(cli_main.app, ["train", "--features", "rsi14", "--out", "out"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: unknown feature 'rsi14'; did you mean rsi_14")


def test_features_list_imports_no_pandas(tmp_path) -> None:
    code = textwrap.dedent(
        """
        import sys
        from typer.testing import CliRunner
        from aitrader.cli.main import app
        result = CliRunner().invoke(app, ["features", "list"])
        assert result.exit_code == 0, result.output
        assert "rsi_14" in result.stdout
        print(",".join(m for m in ("pandas", "numpy") if m in sys.modules))
        """
    )
    out = _sub("-c", code, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"features list imported: {out.stdout.strip()}"


def test_deploy_help_says_name_at_alias_works() -> None:
    result = runner.invoke(cli_main.app, ["deploy", "--help"], env={"COLUMNS": "200"})
    assert "NAME@alias" in result.stdout


def test_spinners_stay_off_the_output_when_stderr_is_not_a_terminal(capsys) -> None:
    from aitrader.cli._output import status

    with status("working ..."):
        pass
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_the_manifest_records_xgboost_installed_as_xgboost_cpu(monkeypatch) -> None:
    """On Linux the CPU-only wheel (distribution xgboost-cpu) provides the `xgboost` package."""
    from importlib import metadata

    from aitrader.training import artifact

    real = metadata.version

    def only_cpu_wheel(name: str) -> str:
        if name == "xgboost":
            raise metadata.PackageNotFoundError(name)
        return "9.9.9" if name == "xgboost-cpu" else real(name)

    monkeypatch.setattr(artifact.metadata, "version", only_cpu_wheel)
    assert artifact.library_versions("xgboost")["xgboost"] == "9.9.9"
