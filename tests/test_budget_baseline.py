"""`archprof check MODEL --baseline REPORT --max-increase KEY=PERCENT`: a model held to a
report of it as it was, its total grown by at most a percentage (a CI's ratchet)."""

import csv
import math
from fractions import Fraction

import pytest

import archprof
from archprof.budget import evaluate
from archprof.budget.baseline import growth_limits
from tests.cli import cli, one_error_line

MODEL = "from torch import nn\ndef net(width=8):\n    return nn.Sequential(nn.Conv2d(3, width, 3), nn.ReLU())\n"


@pytest.fixture
def spec(tmp_path):
    (tmp_path / "net.py").write_text(MODEL)
    return f"{tmp_path / 'net.py'}:net"


@pytest.fixture
def baseline(tmp_path, spec):
    path = tmp_path / "main.csv"
    assert cli("summary", spec, "-i", "3x16x16", "-o", path).exit_code == 0
    return path


def _total(path, column: str) -> int:
    """The report's total of `column`: its rows' sum, read as any CSV reader reads it."""
    with open(path, newline="") as file:
        return sum(int(row[column]) for row in csv.DictReader(file))


def test_a_growth_limit_is_the_baselines_total_grown_by_the_percentage(baseline):
    macs = _total(baseline, "macs")  # 8 · 3 · 3 · 3 · 14 · 14 = 42,336
    assert macs == 8 * 3 * 3 * 3 * 14 * 14
    (limit,) = growth_limits(baseline, ["macs=5%"])
    assert limit.key == "max-macs" and limit.threshold == math.floor(Fraction(macs) * 105 / 100)
    assert limit.text == "+5% of main.csv's 42.34 K"
    (half,) = growth_limits(baseline, ["params=0.5"])
    assert half.threshold == math.floor(Fraction(_total(baseline, "param_count")) * Fraction("100.5") / 100)


@pytest.mark.parametrize(
    ("width", "increase", "code"),
    [(8, "macs=0", 0), (9, "macs=5%", 1), (9, "macs=15%", 0), (8, "params=-10%", 1)],
)
def test_the_model_as_it_is_now_is_held_to_it(spec, baseline, width, increase, code):
    """Width 9 against 8: 12.5% more MACs, within 15% and over 5%; the same model within 0% and over -10%."""
    grown = ["--baseline", baseline, "--max-increase", increase]
    done = cli("check", spec, "-i", "3x16x16", "-a", f"width={width}", *grown)
    assert done.exit_code == code, done.output
    assert "of main.csv's" in done.stdout


def test_a_json_baseline_gives_the_same_limits(tmp_path, spec, baseline):
    path = tmp_path / "main.json"
    assert cli("summary", spec, "-i", "3x16x16", "-o", path).exit_code == 0
    from_csv, from_json = growth_limits(baseline, ["macs=5%"]), growth_limits(path, ["macs=5%"])
    assert [limit.threshold for limit in from_csv] == [limit.threshold for limit in from_json]
    # The model grown by an eighth, at the baseline's input (another would be refused: test_budget_trust.py).
    (verdict,) = evaluate(archprof.analyze(spec, input_size="3x16x16", args={"width": 9}), from_json)
    assert verdict.limit_text == "max-macs +5% of main.json's 42.34 K" and not verdict.passed


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--baseline", "{baseline}"], "--baseline needs --max-increase"),
        (["--max-increase", "macs=5%"], "--max-increase needs --baseline"),
        (["--baseline", "{baseline}", "--max-increase", "speed=5"], "KEY one of params, macs, flops, activation"),
        (["--baseline", "{baseline}", "--max-increase", "macs=lots"], "'lots' is not a percentage"),
        (["--baseline", "{baseline}", "--max-increase", "macs=-100%"], "a decrease of 100% or more"),
        (["--baseline", "{baseline}", "--max-increase", "macs=5", "--max-macs", "1G"], "give one limit of it"),
        (["--baseline", "nowhere.csv", "--max-increase", "macs=5"], "file 'nowhere.csv' does not exist"),
        (["--baseline", "net.py", "--max-increase", "macs=5"], "give a report, CSV or JSON"),
    ],
)
def test_a_growth_limit_that_cannot_be_set_is_refused_in_one_line(spec, baseline, options, message):
    options = [option.format(baseline=baseline) for option in options]
    done = cli("check", spec, "-i", "3x16x16", *options)
    assert done.exit_code == 2 and message in one_error_line(done)


@pytest.mark.parametrize(
    ("increase", "message"),
    [("macs=1e99999999", "is not a percentage"), ("macs=1/3", "is not a percentage"), ("macs=2000000", "is no limit")],
)
def test_a_percentage_is_a_plain_decimal_of_sensible_size(spec, baseline, increase, message):
    """1e99999999 was built digit by digit (a hang) and 1e400 crashed with a traceback."""
    done = cli("check", spec, "-i", "3x16x16", "--baseline", baseline, "--max-increase", increase)
    assert done.exit_code == 2 and message in one_error_line(done)


def test_the_baselines_name_is_shown_as_it_is_never_read_as_markup(tmp_path, spec):
    path = tmp_path / "[bold red]main.csv"
    assert cli("summary", spec, "-i", "3x16x16", "-o", path).exit_code == 0
    done = cli("check", spec, "-i", "3x16x16", "--baseline", path, "--max-increase", "macs=5")
    assert done.exit_code == 0 and "of [bold red]main.csv's" in done.stdout


def test_a_baseline_that_is_a_folder_is_named_as_one(tmp_path, spec):
    (tmp_path / "reports.csv").mkdir()
    done = cli("check", spec, "-i", "3x16x16", "--baseline", tmp_path / "reports.csv", "--max-increase", "macs=5")
    assert done.exit_code == 2 and "is not a file" in one_error_line(done)
