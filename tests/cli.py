"""Running the `archprof` command in-process, for tests: its result, and its one error line."""

from typer.testing import CliRunner

from archprof.cli import app

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def one_error_line(result) -> str:
    """The single line a failed command wrote on stderr (asserted: one, `error: ...`, no traceback)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.output
    return lines[0]
