"""benchmarks/fast_paths_check.py, on a few hub models, so that it cannot rot: its plain side
patches archprof's internals (the build, the recorder's straight answers), and a name renamed
under it made every model of a run fail. Each model below takes a different fast path: a
torch ResNet's shortcuts, timm's BatchNormAct2d (a functional batch norm handed straight to the
recorder), a vision transformer's copied encoder blocks."""

import pytest


@pytest.fixture
def check(benchmark_script, hub_packages):
    return benchmark_script("fast_paths_check")


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


def test_at_another_input_the_paths_agree_or_both_raise(check):
    """`--input`: at odd sides the shortcuts and copies still give the plain forward's graph
    and report; a model whose forward refuses the size raises the same error on both paths."""
    assert check.check_one("torchvision:resnet18", (3, 61, 47)) == (
        "torchvision:resnet18",
        dict.fromkeys(check.VARIANTS, "same"),
        0,
    )
    _, outcome, _ = check.check_one("torchvision:vit_b_16", (3, 64, 64))  # its position table is for 224x224
    assert all(said.startswith("both raise: ") and "Wrong image height" in said for said in outcome.values()), outcome


def test_a_fast_path_that_raises_where_the_plain_forward_runs_is_a_failure(check, monkeypatch):
    import torch

    from archprof.tracing.recorder import Recorder

    answer = Recorder.answer_directly

    def refuses(self, own, x, shortcut):  # on the fast path only: the plain one runs under a torch-function mode
        if not torch._C._is_torch_function_mode_enabled():
            raise RuntimeError("a stand-in for a shortcut's bug")
        return answer(self, own, x, shortcut)

    monkeypatch.setattr(Recorder, "answer_directly", refuses)
    _, outcome, _ = check.check_one("torchvision:resnet18", (3, 61, 47))
    for said in outcome.values():
        assert said.startswith("failed: fast raised ") and "a stand-in for a shortcut's bug" in said, said
        assert said.endswith("; plain ran")
