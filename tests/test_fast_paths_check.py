"""benchmarks/fast_paths_check.py, on a few hub models, so that it cannot rot: its plain side
patches archprof's internals (the build, the recorder's straight answers), and a name renamed
under it made every model of a run fail. Each model below takes a different fast path: a
torch ResNet's shortcuts, timm's BatchNormAct2d (a functional batch norm handed straight to the
recorder), a vision transformer's copied encoder blocks."""

import importlib
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def check(monkeypatch, hub_packages):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports its siblings
    return importlib.import_module("fast_paths_check")


@pytest.mark.parametrize(
    ("spec", "copies"), [("torchvision:resnet18", 0), ("timm:mobilenetv3_small_050", 0), ("torchvision:vit_b_16", 10)]
)
def test_the_fast_paths_give_the_plain_forwards_graph_and_report(check, spec, copies):
    assert check.check_one(spec) == (spec, dict.fromkeys(check.VARIANTS, "same"), copies)


def test_a_fast_path_that_records_otherwise_is_found_different(check, monkeypatch):
    from archprof.tracing.recorder import Recorder

    answer = Recorder.answer_directly

    def twice(self, own, x, shortcut):  # each shortcut's operator recorded twice
        answer(self, own, x, shortcut)
        return answer(self, own, x, shortcut)

    monkeypatch.setattr(Recorder, "answer_directly", twice)
    _, outcome, _ = check.check_one("torchvision:resnet18")
    assert outcome == dict.fromkeys(check.VARIANTS, "DIFFERENT")
