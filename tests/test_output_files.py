"""Where reports go (issue 12): -o/--junit/--plot onto FIFOs, devices, symbolic links,
directories and the user's own input files; file modes; Ctrl-C in the middle of a write;
standard output on a full disk or a closed pipe; one-line errors; numbers too large."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from archprof.cli import app
from archprof.errors import ArchprofError
from archprof.output import json_text, open_output, write_atomically

runner = CliRunner()
ROOT = Path(__file__).parent.parent
needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def error_line(result) -> str:
    """The one line a refused command printed; no traceback behind it."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not an uncaught error
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def read_fifo_in_background(path: Path) -> tuple[threading.Thread, list[bytes]]:
    received: list[bytes] = []

    def read() -> None:
        with open(path, "rb") as fifo:
            received.append(fifo.read())

    reader = threading.Thread(target=read, daemon=True)  # daemon: a test that fails never hangs
    reader.start()
    return reader, received


# -- what -o names ---------------------------------------------------------------------------


def test_a_fifo_is_written_straight_and_stays_a_fifo(tmp_path):
    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    reader, received = read_fifo_in_background(fifo)
    write_atomically(fifo, "layer,macs\nconv,1\n")
    reader.join(timeout=30)
    assert received == [b"layer,macs\nconv,1\n"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(os.listdir(tmp_path)) == ["report.fifo"]


def test_the_cli_writes_a_report_into_a_fifo(tmp_path):
    fifo = tmp_path / "report"
    os.mkfifo(fifo)
    reader, received = read_fifo_in_background(fifo)
    result = invoke("summary", "lenet5", "-f", "csv", "-o", fifo)
    reader.join(timeout=60)
    assert result.exit_code == 0, result.output
    assert received == [invoke("summary", "lenet5", "-f", "csv").stdout_bytes]  # as printed
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


@needs_dev_full
def test_a_full_device_is_one_line_and_exit_2(tmp_path):
    # Through a link of our own: a regression that replaces what -o names replaces the link,
    # never the system's /dev/full (the tests may run as root).
    full = tmp_path / "full"
    full.symlink_to("/dev/full")
    with pytest.raises(ArchprofError, match="No space left on device"):
        write_atomically(full, "x" * 100_000)
    line = error_line(invoke("summary", "lenet5", "-f", "csv", "-o", full))
    assert line == f"error: cannot write {full}: No space left on device"
    assert full.is_symlink() and stat.S_ISCHR(os.stat(full).st_mode)


def test_a_directory_is_refused_before_any_work(tmp_path):
    (tmp_path / "report.csv").mkdir()
    line = error_line(invoke("summary", "no_such_model", "-o", tmp_path / "report.csv"))
    assert "directory" in line and "no_such_model" not in line  # refused before the model was looked up
    assert "directory" in error_line(invoke("check", "lenet5", "--max-params", "1M", "--junit", tmp_path))


# Every option that names a file to write, on the command line of each command that takes it.
FILE_OPTIONS = [
    ("summary", "lenet5", "-f", "csv", "-o"),
    ("explain", "lenet5", "-o"),
    ("rf", "lenet5", "-f", "csv", "-o"),
    ("rf", "lenet5", "--plot"),
    ("memory", "lenet5", "-f", "csv", "-o"),
    ("memory", "lenet5", "--plot"),
    ("profile", "lenet5", "--device", "cpu", "--peak-flops", "1T", "--bandwidth", "1TB/s", "-f", "csv", "-o"),
    ("profile", "lenet5", "--device", "cpu", "--peak-flops", "1T", "--bandwidth", "1TB/s", "--plot"),
    ("compare", "lenet5", "edge_conv", "-j", "1", "-f", "csv", "-o"),
    ("diff", "lenet5", "lenet5", "-f", "csv", "-o"),
    ("check", "lenet5", "--max-params", "1M", "-j", "1", "--junit"),
]


@pytest.mark.parametrize("command", FILE_OPTIONS, ids=lambda command: f"{command[0]} {command[-1]}")
@pytest.mark.parametrize("name", ["report.csv/", "report.csv/.", "report.csv/..", "", "report.csv//"])
def test_a_file_name_that_ends_as_a_folder_or_is_empty_is_refused(tmp_path, monkeypatch, command, name):
    """`-o x.csv/` wrote the file x.csv (Path drops the slash) and `-o ""` was read as '.',
    the current folder: each a file the user did not name. Refused, and nothing written."""
    monkeypatch.chdir(tmp_path)
    line = error_line(invoke(*command, name))
    assert ("it is empty" if name == "" else "ends as a folder's name does") in line
    assert list(tmp_path.iterdir()) == []


def test_a_symbolic_link_is_written_through_and_stays_a_link(tmp_path):
    elsewhere = tmp_path / "reports"
    elsewhere.mkdir()
    real = elsewhere / "real.csv"
    real.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    write_atomically(link, "new\n")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "new\n"
    assert sorted(os.listdir(tmp_path)) == ["link.csv", "reports"]
    assert os.listdir(elsewhere) == ["real.csv"]


def test_a_dangling_link_creates_its_target(tmp_path):
    link = tmp_path / "link.csv"
    link.symlink_to(tmp_path / "target.csv")
    write_atomically(link, "new\n")
    assert link.is_symlink() and (tmp_path / "target.csv").read_text() == "new\n"


# -- file modes ----------------------------------------------------------------------------


@pytest.fixture
def umask():
    """Sets the process umask for one test, then restores it."""
    saved = os.umask(0o022)
    yield os.umask
    os.umask(saved)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600), (0o000, 0o666)])
def test_a_new_file_gets_0666_less_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    write_atomically(tmp_path / "new.csv", "x\n")
    assert stat.S_IMODE(os.stat(tmp_path / "new.csv").st_mode) == mode


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o755])
def test_a_replaced_file_keeps_its_mode(tmp_path, umask, mode):
    umask(0o000)
    target = tmp_path / "old.csv"
    target.write_text("old\n")
    target.chmod(mode)
    write_atomically(target, "new\n")
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(os.stat(target).st_mode) == mode


# -- a write that stops half-way -------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "raised"),
    [
        (KeyboardInterrupt, KeyboardInterrupt),
        (SystemExit, SystemExit),
        (OSError(errno.ENOSPC, "No space left on device"), ArchprofError),
    ],
    ids=["ctrl-c", "exit", "disk full"],
)
def test_an_interrupted_write_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch, failure, raised):
    target = tmp_path / "report.csv"
    target.write_text("the old report\n")
    real_fdopen = os.fdopen
    written = []

    def fdopen_that_fails_half_way(*args, **kwargs):
        handle = real_fdopen(*args, **kwargs)
        real_write = handle.write

        def write(text):
            real_write(text[: len(text) // 2])
            handle.flush()  # the half is on disk, in the temporary file
            written.append(len(text) // 2)
            raise failure

        handle.write = write
        return handle

    monkeypatch.setattr(os, "fdopen", fdopen_that_fails_half_way)
    with pytest.raises(raised):
        write_atomically(target, "x" * 1_000_000)
    assert written == [500_000]
    assert target.read_text() == "the old report\n"
    assert os.listdir(tmp_path) == ["report.csv"]


def test_bytes_written_by_a_library_are_kept_only_when_it_finishes(tmp_path):
    """As a plot is saved: the library writes into the handle, and may be interrupted."""
    image = tmp_path / "roofline.png"
    with open_output(image, binary=True) as handle:
        handle.write(b"\x89PNG first")
    with pytest.raises(KeyboardInterrupt), open_output(image, binary=True) as handle:
        handle.write(b"\x89PNG second, half-drawn")
        raise KeyboardInterrupt
    assert image.read_bytes() == b"\x89PNG first"
    assert os.listdir(tmp_path) == ["roofline.png"]


# -- -o naming one of the command's own inputs -----------------------------------------------


def refused_unchanged(path: Path, *args) -> str:
    before = path.read_bytes()
    line = error_line(invoke(*args))
    assert path.read_bytes() == before
    return line


def test_output_onto_the_model_file_is_refused_before_it_is_read(tmp_path):
    model = tmp_path / "model.pt"
    model.write_bytes(b"not a model at all")  # loading it would fail with another message
    line = refused_unchanged(model, "summary", model, "-f", "csv", "-o", model)
    assert line == f"error: --output {model} would overwrite the model file '{model}': give another file name"
    for command in ("rf", "memory"):
        assert "model file" in refused_unchanged(model, command, model, "-f", "csv", "-o", model)
    assert "model file" in refused_unchanged(model, "compare", "lenet5", model, "-f", "csv", "-o", model)


def test_output_onto_the_python_file_of_a_factory_is_refused(tmp_path):
    source = tmp_path / "nets.py"
    source.write_text("from torch import nn\n\n\ndef net():\n    return nn.Conv2d(3, 4, 3)\n")
    line = refused_unchanged(source, "summary", f"{source}:net", "-i", "3x8x8", "-f", "csv", "-o", source)
    assert "model file" in line


def test_output_through_a_link_to_the_model_file_is_refused(tmp_path):
    model = tmp_path / "model.pt2"
    model.write_bytes(b"PK\x03\x04 stand-in")
    link = tmp_path / "report.csv"
    link.symlink_to(model)
    assert "model file" in refused_unchanged(model, "summary", model, "-o", link)


def test_output_onto_the_weights_file_is_refused(tmp_path):
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"checkpoint bytes")
    line = refused_unchanged(weights, "summary", "lenet5", "--weights", weights, "-f", "csv", "-o", weights)
    assert "--weights file" in line
    assert "--weights file" in refused_unchanged(weights, "profile", "lenet5", "-w", weights, "--plot", weights)


def test_junit_onto_the_budget_file_is_refused(tmp_path):
    config = tmp_path / "budget.toml"
    config.write_text('[[models]]\nname = "lenet5"\nmax-params = "1M"\n')
    assert "budget file" in refused_unchanged(config, "check", "--config", config, "--junit", config)


@pytest.mark.parametrize("suffix", ["csv", "json"])
def test_junit_and_the_step_summary_onto_the_baseline_report_are_refused(tmp_path, monkeypatch, suffix):
    """Else the ratchet's report became XML, or gained a Markdown table, and every later check failed."""
    baseline = tmp_path / f"main.{suffix}"
    assert invoke("summary", "lenet5", "-o", baseline).exit_code == 0
    ratchet = ("check", "lenet5", "--baseline", baseline, "--max-increase", "macs=5%")
    assert "--baseline report" in refused_unchanged(baseline, *ratchet, "--junit", baseline)
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(baseline))
    assert "--baseline report" in refused_unchanged(baseline, *ratchet)


@pytest.mark.parametrize("command", ["rf", "memory", "profile"])
def test_a_plot_and_a_report_into_one_file_are_refused_before_any_work(tmp_path, command):
    """Else the plot, written second, replaces the report; the same file however named."""
    target = tmp_path / "both.png"
    line = error_line(invoke(command, "no_such_model", "-f", "csv", "-o", target, "--plot", target))
    assert "are one file" in line and not target.exists()
    existing = tmp_path / "kept.png"
    existing.write_bytes(b"an earlier report")
    refused_unchanged(existing, command, "lenet5", "-f", "csv", "-o", existing, "--plot", tmp_path / "." / "kept.png")


def test_junit_to_standard_output_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no file named "-" may appear here
    assert "give a file name" in error_line(invoke("check", "lenet5", "--max-params", "1M", "--junit", "-"))
    assert not (tmp_path / "-").exists()


def test_diff_output_onto_its_own_input_is_refused(tmp_path):
    old = tmp_path / "old.csv"
    old.write_text("layer,macs\n")
    assert "the input" in refused_unchanged(old, "diff", old, "lenet5", "-o", old)


# -- standard output -----------------------------------------------------------------------


def run_archprof(*args, stdout, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "160"}
    return subprocess.run(
        [sys.executable, "-m", "archprof", *args], stdout=stdout, stderr=subprocess.PIPE, env=env, timeout=300, **kwargs
    )


# What writes to standard output: a report in each kind of output, the help (Typer's, through Rich).
PRINTING = {
    "csv": ["summary", "lenet5", "-f", "csv"],
    "table": ["summary", "lenet5", "-f", "table"],
    "budget table": ["check", "lenet5", "--max-params", "100M"],
    "help": ["summary", "-h"],
    "the app's help": [],
}


@pytest.mark.parametrize("name", ["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"])
def test_output_to_standard_output_by_name_goes_there_and_leaves_a_logged_stderr_alone(tmp_path, name):
    """While a command runs, descriptor 1 points at standard error (so that stray prints keep
    out of the report): `-o /dev/stdout` still writes the report to standard output, after
    what was already there, and a log that standard error appends to keeps its lines."""
    if not Path(name).exists():
        pytest.skip(f"no {name} here")
    log, report = tmp_path / "log.txt", tmp_path / "report.csv"
    log.write_text("earlier line\n")
    report.write_text("already there\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "a") as stderr, open(report, "a") as stdout:
        done = subprocess.run(
            [sys.executable, "-m", "archprof", "summary", "lenet5", "-f", "csv", "-o", name],
            stdout=stdout,
            stderr=stderr,
            env=env,
            timeout=300,
        )
    assert done.returncode == 0, log.read_text()
    assert log.read_text() == f"earlier line\nwrote {name}\n"
    lines = report.read_text().splitlines()
    assert lines[0] == "already there"
    assert lines[1].startswith("layer,module_type,") and len(lines) > 10


def test_a_stream_without_a_suffix_gets_the_table_and_a_file_without_one_is_refused(tmp_path):
    """`-o /dev/stdout` and `-o /dev/null` name no format: they get the table, as standard
    output would; a file whose suffix names none is refused, nothing written."""
    report = tmp_path / "report.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(report, "w") as stdout:
        done = subprocess.run(
            [sys.executable, "-m", "archprof", "summary", "lenet5", "-o", "/dev/stdout"],
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=env,
            timeout=300,
        )
    assert done.returncode == 0, done.stderr
    lines = report.read_text().splitlines()
    assert lines[0].startswith("lenet5") and "Layer" in lines[2] and "Receptive field" in lines[2]
    assert invoke("summary", "lenet5", "-o", os.devnull).exit_code == 0
    plain = tmp_path / "report"
    line = error_line(invoke("summary", "lenet5", "-o", plain))
    assert f"cannot tell the format of '{plain}' from its suffix" in line
    assert not plain.exists()
    # a directory is said to be one, not a suffix naming no format (explain's refused three of those it listed)
    for command in (("summary", "lenet5"), ("explain", "lenet5", "features.0")):
        assert (
            error_line(invoke(*command, "-o", tmp_path))
            == f"error: cannot write {tmp_path}: it is a directory; give a file name"
        )


@needs_dev_full
@pytest.mark.parametrize("printing", PRINTING)
def test_standard_output_on_a_full_disk_is_one_line_and_exit_2(printing):
    with open("/dev/full", "w") as full:
        done = run_archprof(*PRINTING[printing], stdout=full)
    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr
    assert stderr == "error: cannot write to standard output: No space left on device\n"


@needs_dev_full
@pytest.mark.parametrize(
    "failing",
    [
        ["summary", "nosuch"],
        ["summary", "lenet5", "--batch", "0"],
        ["check", "nosuch", "--max-params", "1M", "-j", "1"],
    ],
    ids=["unknown model", "bad option", "check's error"],
)
def test_an_error_with_stderr_on_a_full_disk_still_exits_2(failing):
    """Nowhere to say it, but the status still does: 2, not 1 (a budget check's "over budget")
    from the failed write's exception."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "archprof", *failing], stdout=subprocess.PIPE, stderr=full, env=env, timeout=300
        )
    assert done.returncode == 2


@pytest.mark.parametrize("printing", PRINTING)
def test_a_closed_pipe_ends_quietly_with_141(printing):
    """As a process killed by SIGPIPE: a passing budget check too (1 would read as over budget)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "archprof", *PRINTING[printing]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    process.stdout.close()  # the reader is gone before archprof writes a byte (as `| head -0`)
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=300) == 141, stderr
    assert stderr == ""


@pytest.mark.parametrize("command", [["-h"], ["summary", "-h"]])
def test_a_reader_leaving_mid_help_ends_quietly_with_141(command):
    """`archprof -h | head -30`: the reader gone after Rich's part of the page is written,
    before Click's last write (Click took it for its own error: exit 1, then at the
    interpreter's exit a warning on stderr and exit 120). The page fits the pipe's buffer,
    so whether the reader leaves before that last write is a race (on a busy machine the
    writer may finish first, exit 0): tried until it does, every try ending cleanly."""
    outcomes = []
    for _ in range(8):
        process = subprocess.Popen(
            [sys.executable, "-m", "archprof", *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for _ in range(20):  # of the app's 34 lines: Rich's writes have gone, Click's are to come
            process.stdout.readline()
        process.stdout.close()
        stderr = process.stderr.read().decode()
        outcomes.append((process.wait(timeout=300), stderr))
        assert outcomes[-1] in ((141, ""), (0, "")), outcomes
        if outcomes[-1][0] == 141:
            break
    assert outcomes[-1] == (141, ""), outcomes


@pytest.mark.parametrize("unbuffered", ["1", ""])
@pytest.mark.parametrize("format", ["json", "table"])
def test_a_reader_leaving_mid_report_ends_with_141(format, unbuffered):
    """A report larger than the pipe's buffer, its reader gone after the first bytes (as
    `| head -1`): exit 141, not a report cut short with exit 0 (PYTHONUNBUFFERED did that).
    No COLUMNS or LINES: resnet152's table is 107,529 B with no width set, 43,410 B at 80 columns,
    which a 64 KiB pipe holds whole."""
    env = {name: value for name, value in os.environ.items() if name not in ("COLUMNS", "LINES")}
    process = subprocess.Popen(
        [sys.executable, "-m", "archprof", "summary", "resnet152", "-f", format],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**env, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": unbuffered},
    )
    process.stdout.read(10)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=300) == 141, stderr
    assert stderr == ""


@pytest.mark.parametrize("printing", ["csv", "budget table", "help"])
def test_a_closed_standard_output_is_one_line_and_exit_2(printing):
    """Started with standard output closed (`>&-`); a report written to a file still works."""
    done = run_archprof(*PRINTING[printing], stdout=None, preexec_fn=lambda: os.close(1))
    assert done.returncode == 2, done.stderr.decode()
    assert done.stderr.decode() == "error: cannot write to standard output: it is closed\n"


def test_a_report_written_to_a_file_needs_no_standard_output(tmp_path):
    target = tmp_path / "report.csv"
    done = run_archprof("summary", "lenet5", "-o", target, stdout=None, preexec_fn=lambda: os.close(1))
    assert done.returncode == 0, done.stderr.decode()
    assert target.read_text().startswith("layer,")


# -- error lines ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "shown"),
    [
        ("a\nb", r"a\nb"),
        ("a\rb", r"a\rb"),
        ("a\u2028b", r"a\u2028b"),
        ("a\udcffb", r"a\udcffb"),
        ("a\x1b[31mb", r"a\x1b[31mb"),
        ("é", "é"),  # printable: as it is
    ],
    ids=["newline", "carriage return", "line separator", "lone surrogate", "escape sequence", "accent"],
)
def test_an_error_is_one_line_whatever_the_message_holds(spec, shown):
    line = error_line(invoke("summary", spec))
    assert f"'{shown}'" in line


def test_a_file_name_that_is_not_utf8_is_one_line_from_the_real_process():
    done = run_archprof("summary", "\udcffnets.py:net", stdout=subprocess.DEVNULL)  # argv byte 0xff
    stderr = done.stderr.decode()
    assert done.returncode == 2
    assert stderr.count("\n") == 1 and "\\udcffnets.py" in stderr and "Traceback" not in stderr


# -- numbers too large ---------------------------------------------------------------------

HUGE = "99999999999999999999"  # more than int64 holds


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("summary", "lenet5", "--batch", HUGE), "--batch must be at most 4,611,686,018,427,387,904"),
        (("rf", "lenet5", "--batch", HUGE), "--batch must be at most"),
        (("memory", "lenet5", "--batch", HUGE), "--batch must be at most"),
        (("compare", "lenet5", "alexnet", "--batch", HUGE), "--batch must be at most"),
        (("diff", "lenet5", "alexnet", "--batch", HUGE), "--batch must be at most"),
        (("check", "lenet5", "--max-params", "1M", "--batch", HUGE), "--batch must be at most"),
        (("profile", "lenet5", "--repeat", HUGE), "--repeat must be at most 1,000,000"),
        (("profile", "lenet5", "--warmup", HUGE), "--warmup must be at most 1,000,000"),
        (("profile", "lenet5", "--repeat", "0"), "--repeat must be at least 1"),
        (("profile", "lenet5", "--warmup", "-1"), "--warmup must be at least 0"),
        # A rate near 0 made every roofline time infinite: Infinity in the JSON, which is no JSON.
        (("profile", "lenet5", "--peak-flops", "5e-324"), "FLOP rate '5e-324' must be at least 1 per second"),
        (("profile", "lenet5", "--bandwidth", "0.5B/s"), "bandwidth '0.5B/s' must be at least 1 per second"),
    ],
)
def test_a_count_beyond_its_bound_is_one_line(args, says):
    assert says in error_line(invoke(*args))


@pytest.mark.parametrize(
    "args",
    [
        ("summary", "lenet5", "--batch", str(2**62)),
        ("memory", "lenet5", "--fit", f"{HUGE}TB"),
        ("summary", "lenet5", "--input", f"{HUGE}x32x32"),
    ],
)
def test_sizes_within_the_bounds_but_beyond_int64_are_one_line(args):
    error_line(invoke(*args))


def test_json_is_strict_json_whatever_the_floats():
    """json.dumps writes NaN and Infinity, which jq and JSON.parse refuse: written null."""
    document = {"a": [float("inf"), float("nan"), (1.5, -float("inf"))], "b": {"c": 1, "d": "x"}}
    strict = json.loads(json_text(document), parse_constant=lambda token: pytest.fail(f"JSON holds {token}"))
    assert strict == {"a": [None, None, [1.5, None]], "b": {"c": 1, "d": "x"}}


def test_a_profile_at_the_slowest_rates_writes_strict_json(tmp_path):
    target = tmp_path / "profile.json"
    result = invoke(
        "profile",
        "lenet5",
        "--device",
        "cpu",
        "--warmup",
        "0",
        "--repeat",
        "1",
        "-q",
        "--peak-flops",
        "1",
        "--bandwidth",
        "1",
        "-o",
        str(target),
    )
    assert result.exit_code == 0, result.output
    document = json.loads(target.read_text(), parse_constant=lambda token: pytest.fail(f"JSON holds {token}"))
    times = [row["roofline_time_ms"] for row in document["layers"] if row["roofline_time_ms"] is not None]
    assert times and max(times) > 1e6


def test_a_huge_depth_is_every_row():
    deep = invoke("summary", "lenet5", "--depth", HUGE, "-f", "csv")
    plain = invoke("summary", "lenet5", "-f", "csv")
    assert deep.exit_code == 0, deep.output
    assert deep.stdout == plain.stdout


@pytest.mark.parametrize("command", ["summary", "compare", "check"])
def test_ctrl_c_is_one_line_and_exit_130_with_no_file(command, tmp_path):
    """Ctrl-C mid-analysis (here in the model's forward): one line saying so (Typer's own
    exit 130 said nothing), and no report file, not even a partial one."""
    from typer.testing import CliRunner

    from archprof.cli import app

    models = tmp_path / "models"
    models.mkdir()
    (models / "net.py").write_text(
        "import torch\n\nclass Net(torch.nn.Linear):\n    def forward(self, x):\n        raise KeyboardInterrupt\n"
        "\ndef net():\n    return Net(4, 4)\n"
    )
    spec = f"{models / 'net.py'}:net"
    target = tmp_path / "out" / "report.csv"
    target.parent.mkdir()
    options = {
        "summary": [spec, "-o", target],
        "compare": [spec, "--jobs", "1", "-o", target],
        "check": [spec, "--max-params", "1M", "--junit", target.with_suffix(".xml")],
    }[command]
    result = CliRunner().invoke(app, [command, *map(str, options), "--input", "4"])
    assert result.exit_code == 130, result.output
    assert result.stderr == "interrupted (Ctrl-C)\n"
    assert list(target.parent.iterdir()) == []


# -- a plot that cannot be drawn, a file or folder the user may not write ----------------------


@pytest.mark.parametrize("command", ["rf", "memory", "profile"])
def test_a_plot_that_cannot_be_drawn_leaves_the_report_file_as_it_was(tmp_path, monkeypatch, command):
    """The plot is drawn in memory before the report is written: a backend that fails (PGF's
    TeX run, here any format's) is one line, and the report given with -o is not replaced."""
    from matplotlib.figure import Figure

    def fails(*args, **kwargs):
        raise RuntimeError("the backend broke\nwith a second line")

    monkeypatch.setattr(Figure, "savefig", fails)
    report = tmp_path / "report.csv"
    report.write_text("the earlier report\n")
    extra = ("--device", "cpu", "--repeat", "1", "--warmup", "0") if command == "profile" else ()
    line = error_line(invoke(command, "lenet5", *extra, "-o", report, "--plot", tmp_path / "plot.png"))
    assert "cannot draw" in line and "the backend broke" in line
    assert report.read_text() == "the earlier report\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.csv"]  # no plot, no temporary file


def test_a_pgf_plot_without_latex_is_refused_before_any_work(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    line = error_line(invoke("memory", "no_such_model", "--plot", tmp_path / "memory.pgf"))
    assert "needs LaTeX" in line  # said before the model name is even looked up


def _no_permission_for(monkeypatch, denied: Path) -> None:
    """os.access answers no for `denied` (the tests may run as root, whom the OS never refuses)."""
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        if Path(path).resolve() == denied.resolve() and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def test_a_read_only_report_file_is_refused_before_any_work(tmp_path, monkeypatch):
    target = tmp_path / "kept.csv"
    target.write_text("kept\n")
    _no_permission_for(monkeypatch, target)
    line = refused_unchanged(target, "summary", "lenet5", "-o", target)
    assert "read-only" in line


def test_a_folder_the_user_may_not_write_in_is_refused_before_any_work(tmp_path, monkeypatch):
    folder = tmp_path / "locked"
    folder.mkdir()
    _no_permission_for(monkeypatch, folder)
    for args in (("summary", "lenet5", "-o", folder / "r.csv"), ("rf", "lenet5", "--plot", folder / "rf.png")):
        assert "no permission to write in" in error_line(invoke(*args))
    assert not any(folder.iterdir())


def test_a_format_the_output_suffix_contradicts_is_refused_and_a_txt_file_takes_any(tmp_path):
    """JSON written into report.csv was refused only later, by whatever read it as CSV."""
    for format, name in (("json", "b.csv"), ("markdown", "t.json"), ("table", "t.html"), ("csv", "r.md")):
        line = error_line(invoke("summary", "no_such_model", "-f", format, "-o", tmp_path / name))
        assert f"--format {format} does not fit" in line  # said before the model is looked up
    assert not any(tmp_path.iterdir())
    notes = tmp_path / "notes.txt"
    result = invoke("summary", "lenet5", "-f", "markdown", "-o", notes)
    assert result.exit_code == 0, result.output
    assert "\n| Layer | Type |" in notes.read_text()  # Markdown, as asked


def test_ctrl_c_as_the_temporary_file_is_made_leaves_the_old_file_and_nothing_else(tmp_path, monkeypatch):
    """README, "Output files": Ctrl-C keeps the old file, and no temporary file. Raised just
    as the call that makes the temporary file returns, before its name could be kept."""
    target = tmp_path / "r.csv"
    target.write_text("OLD")
    made = os.open

    def made_then_interrupted(path, flags, mode=0o777, **kwargs):
        fd = made(path, flags, mode, **kwargs)
        if str(path).endswith(".tmp"):
            os.close(fd)
            raise KeyboardInterrupt
        return fd

    monkeypatch.setattr(os, "open", made_then_interrupted)
    with pytest.raises(KeyboardInterrupt), open_output(target) as handle:
        handle.write("NEW")
    monkeypatch.undo()
    assert target.read_text() == "OLD"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]
