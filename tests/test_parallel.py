"""Several models in a process pool (--jobs, archprof.parallel): exactly the serial results,
errors and warnings; a module or a callable stays in this process."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import archprof
from archprof import parallel
from archprof.errors import ArchprofError
from archprof.parallel import ordered_map
from tests.cli import cli, one_error_line
from tests.fixtures.tiny_models import small_cnn

SMALL_CNN = "tests/fixtures/tiny_models.py:small_cnn"
TWO_INPUTS = "tests/fixtures/tiny_models.py:TwoInputs"
OTHER_PATH = "tests/fixtures/../fixtures/tiny_models.py:small_cnn"


@pytest.fixture(autouse=True)
def workers_at_once(monkeypatch):
    """Start workers whatever the pace (these models take milliseconds): five items or more
    go to the pool, after this process has analysed two."""
    monkeypatch.setattr(parallel, "WORKER_START_S", 0.0)


def test_compare_in_a_pool_equals_one_process_with_a_factory_file_and_options():
    models = [SMALL_CNN, small_cnn, SMALL_CNN, OTHER_PATH, SMALL_CNN, OTHER_PATH]  # the callable stays here
    options = {"inputs": ["3x16x16"], "args": {"num_classes": 100}, "batch": 2}
    serial = archprof.compare(models, jobs=1, **options)
    pooled = archprof.compare(models, jobs=2, **options)
    pd.testing.assert_frame_equal(pooled, serial)
    assert pooled.attrs == serial.attrs


def test_a_model_traced_for_real_gets_the_same_figures_in_any_process_whatever_the_caller_seeded():
    """A model whose shapes depend on values is traced by a real forward, on random weights
    and inputs drawn from archprof's own seed: the same in this process and in a pool's
    workers (a fresh process's generator starts from a random seed), whoever seeded what."""
    models = ["tests/fixtures/tiny_models.py:KeepsConfident"] * 6
    torch.manual_seed(1)
    serial = archprof.compare(models, jobs=1, inputs=["3x16x16"])
    torch.manual_seed(2)
    pooled = archprof.compare(models, jobs=2, inputs=["3x16x16"])
    pd.testing.assert_frame_equal(pooled, serial)


def test_workers_build_a_model_from_a_name_in_the_callers_default_dtype():
    """A built-in is made in torch's default dtype (`analyze`): the caller's, in a worker too."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        serial = archprof.compare(["lenet5"] * 6, jobs=1)
        pooled = archprof.compare(["lenet5"] * 6, jobs=2)
    finally:
        torch.set_default_dtype(previous)
    pd.testing.assert_frame_equal(pooled, serial)
    lenet = archprof.analyze("lenet5").totals
    assert (serial["param_bytes"] == 8 * lenet.param_count).all()  # float64: 8 B a parameter


def test_the_cli_compare_and_check_give_the_same_output_with_any_jobs(tmp_path):
    compare = ("compare", *[SMALL_CNN, OTHER_PATH] * 3, "-i", "3x16x16", "--arg", "num_classes=100", "-f", "csv")
    assert cli(*compare, "--jobs", "2").stdout == cli(*compare, "--jobs", "1").stdout
    budget = tmp_path / "archprof.toml"
    budget.write_text(
        '[[models]]\nname = "lenet5"\nmax-params = "1M"\n\n'
        '[[models]]\nname = "edge_conv"\nmax-macs = "1"\n\n'
        f'[[models]]\nname = "{SMALL_CNN}"\ninput = "3x16x16"\nmax-params = "1K"\n\n' * 3
    )
    runs = [cli("check", "--config", budget, "--jobs", jobs) for jobs in ("1", "2")]
    assert [r.exit_code for r in runs] == [1, 1]
    assert runs[0].stdout == runs[1].stdout


def test_a_worker_error_is_the_serial_one_line_error_of_the_first_failing_model():
    models = ("lenet5", "no-such-model", TWO_INPUTS, "edge_conv", "alexnet", "edge_fc")  # TwoInputs: no default input
    errors = []
    for jobs in ("1", "2"):
        result = cli("compare", *models, "--jobs", jobs)
        assert result.exit_code == 2
        errors.append(one_error_line(result))
    assert errors[0] == errors[1] and "no-such-model" in errors[0]


def test_ordered_map_keeps_the_order_and_runs_here_what_does_not_pickle():
    assert ordered_map(abs, [-3, 2, -1, 5, -8, 13], jobs=2) == [3, 2, 1, 5, 8, 13]
    assert ordered_map(str, [1, 2, 3, 4, 5, lambda: 0], jobs=2)[:5] == [
        "1",
        "2",
        "3",
        "4",
        "5",
    ]  # a lambda does not pickle
    with pytest.raises(ArchprofError, match=r"jobs must be at least 1 \(or None: every core\), got 0"):
        ordered_map(abs, [1, 2], jobs=0)


def process_id(item: int) -> int:
    return os.getpid()


def test_workers_take_items_from_the_first_while_this_process_takes_the_last():
    pids = ordered_map(process_id, list(range(8)), jobs=2)
    assert pids[-1] == os.getpid() and pids[0] != os.getpid()
    assert set(ordered_map(process_id, list(range(8)), jobs=1)) == {os.getpid()}


def test_what_a_worker_prints_goes_to_stderr_and_standard_output_stays_clean():
    """A process pool's workers print on the process's real standard output, which the CLI
    keeps for the report alone: theirs goes to standard error, as the CLI's own does."""
    script = (
        "from archprof import parallel\n"
        "from tests.fixtures.tiny_models import printed_square\n"
        "parallel.WORKER_START_S = 0.0\n"
        "import sys\n"
        "sys.stdout = sys.stderr  # this process's own prints, as under the CLI\n"
        "assert parallel.ordered_map(printed_square, list(range(8)), jobs=2) == [x * x for x in range(8)]\n"
    )
    done = _ran(script)
    assert done.stdout == ""
    assert done.stderr.count("working on") == 8


@pytest.mark.parametrize("jobs", [1, 2])
def test_each_result_is_handed_over_once_with_its_index_as_it_comes_in(jobs):
    handed: list[tuple[int, int]] = []
    results = ordered_map(abs, [-3, 2, -1, 5, -8, 13, -21], jobs=jobs, each=lambda i, r: handed.append((i, r)))
    assert sorted(handed) == list(enumerate(results)) == list(enumerate([3, 2, 1, 5, 8, 13, 21]))


def test_in_one_process_each_result_is_handed_over_before_the_next_item_runs():
    ran: list[int] = []
    seen: list[list[int]] = []
    ordered_map(ran.append, [1, 2, 3], jobs=1, each=lambda i, r: seen.append(list(ran)))
    assert seen == [[1], [1, 2], [1, 2, 3]]


def test_an_item_that_raised_is_not_handed_over():
    handed: list[int] = []
    with pytest.raises(ZeroDivisionError):
        ordered_map(reciprocal, [1, 2, 0, 4], jobs=1, each=lambda i, r: handed.append(i))
    assert handed == [0, 1]


def reciprocal(item: int) -> float:
    return 1 / item


def test_a_dead_worker_fails_only_its_own_item_with_no_traceback():
    """os._exit in a worker took the pool down: every other item came back as 'a worker
    process died', and Python 3.11's pool thread printed a traceback. Each item is run again
    alone: only the one that dies again fails, as `crashed` makes it."""
    script = (
        "from archprof import parallel\n"
        "from tests.fixtures.tiny_models import dies_at_1\n"
        "parallel.WORKER_START_S = 0.0\n"
        "results = parallel.ordered_map(dies_at_1, list(range(8)), jobs=2, crashed=lambda item, why: -item)\n"
        "assert results == [0, -1, 4, 9, 16, 25, 36, 49], results\n"
        "try:\n"
        "    parallel.ordered_map(dies_at_1, list(range(8)), jobs=2)\n"
        "except parallel.ArchprofError as exc:\n"
        "    print(exc)\n"
    )
    done = _ran(script)
    assert done.stdout == "its worker process died (out of memory, killed, or the model crashed the interpreter)\n"
    assert "Traceback" not in done.stderr


def test_items_run_again_after_a_dead_worker_are_handed_over_too():
    """Each item the dead pool held is run again alone; its result (and the one `crashed`
    makes of the item that dies again) goes to `each` as any other's. They were returned but
    never handed over: a hub sweep whose worker died lost that model's row and stopped on it."""
    script = (
        "from archprof import parallel\n"
        "from tests.fixtures.tiny_models import dies_at_1\n"
        "parallel.WORKER_START_S = 0.0\n"
        "handed = []\n"
        "each = lambda i, r: handed.append((i, r))\n"
        "results = parallel.ordered_map(dies_at_1, list(range(8)), jobs=2, crashed=lambda x, why: -x, each=each)\n"
        "assert sorted(handed) == list(enumerate(results)), (handed, results)\n"
        "print(results)\n"
    )
    assert _ran(script).stdout == "[0, -1, 4, 9, 16, 25, 36, 49]\n"


def test_the_last_item_in_flight_is_handed_over_too():
    """The pool's worker and this process meet in the middle of the items; the item the worker
    still ran came in after the last hand-over's look at it but before the check that all were
    in, and was returned but never handed to `each` (a hub sweep lost a model's row; runs of
    300 items like these lost one in 16 runs of 20). Five runs here, each of which must hand
    over every item."""
    script = (
        "from archprof import parallel\n"
        "from tests.fixtures.tiny_models import square_soon\n"
        "parallel.WORKER_START_S = 0.0\n"
        "for _ in range(5):\n"
        "    handed = {}\n"
        "    results = parallel.ordered_map(square_soon, list(range(300)), jobs=2, each=handed.__setitem__)\n"
        "    assert results == [x * x for x in range(300)]\n"
        "    print(sorted(set(range(300)) - set(handed)))\n"
    )
    assert _ran(script).stdout == "[]\n" * 5


def test_check_shows_every_other_entry_s_verdicts_where_one_model_kills_its_worker(tmp_path):
    """The promise of `check` (a model that cannot be checked does not hide the others) where
    a model crashes its worker: one process would not survive it."""
    budget = tmp_path / "archprof.toml"
    entry = '[[models]]\nname = "{}"\ninput = "3x16x16"\nmax-params = "1K"\n\n'
    budget.write_text(entry.format("tests/fixtures/tiny_models.py:crashing_cnn") + entry.format(SMALL_CNN) * 6)
    junit = tmp_path / "budget.xml"
    script = (
        "import sys\n"
        "from archprof import parallel\n"
        "from archprof.cli import main\n"
        "parallel.WORKER_START_S = 0.0\n"
        f"sys.argv = ['archprof', 'check', '--config', {str(budget)!r}, '--jobs', '2', '--junit', {str(junit)!r}]\n"
        "main()\n"
    )
    done = _ran(script, status=2, COLUMNS="200")
    assert done.stdout.count("max-params") == 6, done.stdout  # the six others' verdicts
    assert "archprof.toml, line 2: its worker process died" in done.stderr, done.stderr  # its name's line
    assert "Traceback" not in done.stderr
    assert junit.read_text().count("<testcase") == 7


def test_an_error_in_order_does_not_wait_for_a_later_item_still_running():
    """Item 0 fails in a worker while item 1 runs for a minute: one process would have stopped
    at item 0, and so does the pool."""
    script = (
        "import time\n"
        "from archprof import parallel\n"
        "from tests.fixtures.tiny_models import slow_at_1\n"
        "parallel.WORKER_START_S = 0.0\n"
        "start = time.perf_counter()\n"
        "try:\n"
        "    parallel.ordered_map(slow_at_1, list(range(8)), jobs=3)\n"
        "except ValueError as exc:\n"
        "    print(exc, time.perf_counter() - start < 45)\n"
    )
    done = _ran(script)
    assert done.stdout.strip() == "item 0 fails True"


def test_a_worker_s_warning_keeps_its_place_and_this_process_s_filters_apply_to_it():
    script = (
        "import warnings\n"
        "from archprof import parallel\n"
        "from tests.fixtures.tiny_models import warns\n"
        "parallel.WORKER_START_S = 0.0\n"
        "warnings.filterwarnings('ignore', message='warned by [0-3]$', module='tests.fixtures.tiny_models')\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    warnings.filterwarnings('ignore', message='warned by [0-3]$', module='tests.fixtures.tiny_models')\n"
        "    assert parallel.ordered_map(warns, list(range(8)), jobs=2) == list(range(8))\n"
        "print(sorted(str(w.message) for w in caught))\n"
        "print({w.filename.endswith('tiny_models.py') for w in caught})\n"
    )
    done = _ran(script)
    assert done.stdout.splitlines() == [str([f"warned by {x}" for x in range(4, 8)]), "{True}"]


def test_the_default_jobs_are_the_cores_this_process_may_run_on(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert parallel.default_jobs() == 1


@pytest.mark.parametrize("jobs", [0, -1, True, "2", 2.0])
def test_compare_refuses_a_bad_jobs_with_profile_too(jobs):
    with pytest.raises(ArchprofError, match="jobs must be"):
        archprof.compare(["lenet5", "edge_conv"], profile=True, runs=1, jobs=jobs)


def test_compare_with_profile_reports_its_progress():
    calls: list[tuple[str, int, int]] = []
    archprof.compare(["lenet5", "edge_conv"], profile=True, runs=1, progress=lambda *call: calls.append(call))
    assert calls == [("analysing", 1, 2), ("analysing", 2, 2)]


@pytest.mark.parametrize("run_as", ["a file", "standard input"])
def test_workers_that_cannot_start_are_said_so_not_blamed_on_a_model(tmp_path, run_as):
    """A script without the main guard: each spawned worker imports it again, which starts a
    pool of its own and dies; from standard input there is no file to import. The models are
    fine: the one error says what is wrong and how to fix it."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from archprof import parallel\n"
        "parallel.WORKER_START_S = 0.0\n"
        "try:\n"
        "    parallel.ordered_map(abs, list(range(8)), jobs=2)\n"
        "except parallel.ArchprofError as exc:\n"
        "    print(exc)\n"
    )
    command = [sys.executable, str(script)] if run_as == "a file" else [sys.executable, "-"]
    done = subprocess.run(
        command,
        input=None if run_as == "a file" else script.read_text(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == parallel._NO_WORKERS


def _ran(script: str, status: int = 0, **environment: str) -> subprocess.CompletedProcess:
    """`python -c script` in a process of its own (a pool needs its main module importable,
    and a worker that dies must not take the test run down), checked to end with `status`."""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, **environment},
    )
    assert done.returncode == status, done.stderr
    return done


def test_sigterm_ends_the_workers_too_and_the_process_by_the_signal():
    """SIGTERM left a pool's workers running, blocked for good; the process now ends them on
    the way out, then ends by the signal, as it would have."""
    models = ["tests/fixtures/tiny_models.py:slow_cnn"] * 8
    command = [sys.executable, "-m", "archprof", "compare", *models, "-i", "3x16x16", "--jobs", "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (workers := _children(process.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert workers, "no worker started"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGTERM, stderr
    # multiprocessing's resource tracker, a process of its own, may warn of the pool's
    # semaphores after archprof has ended (by the signal, no exit handlers ran): not archprof's lines.
    ours = [line for line in stderr.strip().splitlines() if "resource_tracker" not in line]
    assert ours[-1] == "terminated"
    time.sleep(1)
    assert not [pid for pid in workers if os.path.exists(f"/proc/{pid}")]


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux's /proc) that are a pool's workers."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat, open(f"/proc/{entry}/cmdline", "rb") as line:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
                    if parent == pid and b"spawn_main" in line.read():
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found
