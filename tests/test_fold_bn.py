"""BatchNorm folding (`fold_bn`), against PyTorch's own conv/linear + BatchNorm fusion
(`torch.fx.experimental.optimization.fuse`) and against counts worked by hand."""

import csv
import io
import itertools
import json
import warnings

import pytest
import torch
from torch import nn
from torch.fx.experimental.optimization import fuse

import archprof
from archprof.diff import diff
from archprof.errors import ArchprofWarning
from archprof.meta import on_meta
from archprof.passes.fold_bn import Folding
from archprof.zoo import MODELS
from tests.cli import cli, one_error_line

_NORMS = nn.modules.batchnorm._BatchNorm


def _folded(model, *shape, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ArchprofWarning)
        return archprof.analyze(model, input_size=shape, fold_bn=True, **options)


def _parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _buffer_bytes(module) -> int:
    return sum(b.numel() * b.element_size() for b in module.buffers())


def _unfused_norms(fused: nn.Module) -> set[str]:
    return {name for name, module in fused.named_modules() if isinstance(module, _NORMS)}


def _check_against_fusion(model: nn.Module, input_size: tuple[int, ...]) -> None:
    """Folded report == PyTorch's fused model: parameters, buffers, which norms stay, and
    the fused model's own (unfolded) analysis."""
    fused = fuse(model.eval())
    report = _folded(model, *input_size)
    assert report.totals.param_count == _parameters(fused)
    assert report.totals.buffer_bytes == _buffer_bytes(fused)
    assert {k.norm for k in report.batch_norm_folding.kept} == _unfused_norms(fused)
    assert len(report.batch_norm_folding.folded) == len(_unfused_norms(model)) - len(_unfused_norms(fused))
    # (Not memory: fx writes `out += identity` out of place, and its flat graph groups rows
    # otherwise.)
    plain = archprof.analyze(fused, input_size=input_size)
    for name in ("macs", "elementwise_flops"):
        assert getattr(report.totals, name) == getattr(plain.totals, name), name


@pytest.mark.parametrize("name", list(MODELS))
def test_builtin_models_fold_as_pytorch_fuses_them(name):
    with on_meta():
        model = MODELS[name].build()
    _check_against_fusion(model, MODELS[name].input_size)


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v3_large", "efficientnet_b0"])
def test_torchvision_models_fold_as_pytorch_fuses_them(hub_packages, name):
    torchvision, _ = hub_packages
    with on_meta():
        model = getattr(torchvision.models, name)()
    _check_against_fusion(model, (3, 224, 224))


def test_the_fused_oracle_computes_what_the_model_does(hub_packages):
    torchvision, _ = hub_packages
    model = torchvision.models.mobilenet_v3_large().eval()
    for module in model.modules():
        if isinstance(module, _NORMS):  # statistics that are not the defaults
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fuse(model)(x), model(x), rtol=1e-4, atol=1e-4)


def test_a_convolution_gains_a_bias_and_the_norm_goes():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU())
    report = _folded(model, 3, 10, 10)
    # 8 x 3 x 3 x 3 weights + 8 bias; no buffer; the ReLU's 8 x 8 x 8 FLOPs alone
    assert report.totals.param_count == 216 + 8
    assert report.totals.buffer_bytes == 0
    assert report.totals.elementwise_flops == 8 * 8 * 8
    assert report.columns["layer"] == ["0", "2"]
    assert report.batch_norm_folding.folded[0].norm == "1"
    assert report.batch_norm_folding.folded[0].into == "0"


def test_folded_memory_is_that_of_the_model_fused_by_hand():
    """Each tensor's release (when the forward let go of it) is carried into the folded
    graph: its peak and live bytes are those of the same network written without norms."""
    widths = (3, 8, 16, 4)
    model = nn.Sequential(
        *(
            layer
            for c_in, c_out in itertools.pairwise(widths)
            for layer in (nn.Conv2d(c_in, c_out, 3), nn.BatchNorm2d(c_out))
        ),
        nn.Flatten(),
    )
    by_hand = nn.Sequential(*(nn.Conv2d(c_in, c_out, 3) for c_in, c_out in itertools.pairwise(widths)), nn.Flatten())
    folded, plain = _folded(model, 3, 16, 16), archprof.analyze(by_hand, input_size=(3, 16, 16))
    assert folded.totals.peak_memory_bytes == plain.totals.peak_memory_bytes
    live = dict(zip(folded.columns["layer"], folded.columns["live_bytes"], strict=True))
    assert [live[layer] for layer in ("0", "2", "4", "6")] == plain.columns["live_bytes"]


def test_a_linear_layer_without_bias_folds_into_one_with_a_bias():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5, bias=False), nn.BatchNorm1d(5))
    report = _folded(model, 3, 2, 2, batch=2)
    assert report.totals.param_count == 12 * 5 + 5
    assert report.totals.macs == 2 * 12 * 5
    assert report.columns["operators"][-1] == ("t", "addmm")


def test_norms_that_cannot_fold_stay_and_say_why():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.after_pool = nn.BatchNorm2d(4)
            self.after_add = nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.after_add(y + x) + self.after_pool(self.pool(x)).mean()

    with pytest.warns(ArchprofWarning, match="2 BatchNorm"):
        report = archprof.analyze(Block(), input_size=(4, 8, 8), fold_bn=True)
    reasons = {k.norm: k.reason for k in report.batch_norm_folding.kept}
    assert "aten.max_pool2d_with_indices" in reasons["after_pool"]
    assert "aten.add" in reasons["after_add"]
    assert report.batch_norm_folding.folded == ()
    unfolded = archprof.analyze(Block(), input_size=(4, 8, 8))
    assert report.totals == unfolded.totals


@pytest.mark.parametrize("frozen", [False, True], ids=["in training mode", "frozen with eval()"])
def test_in_a_training_step_nothing_folds(frozen):
    # A norm the model froze runs on its running statistics, but the step still trains its
    # weight and bias: the reason says so, not that it computes batch statistics.
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    if frozen:
        model[1].eval()
    with pytest.warns(ArchprofWarning, match="a training step trains it"):
        report = archprof.analyze(model, input_size=(3, 8, 8), fold_bn=True, training=True)
    assert [k.norm for k in report.batch_norm_folding.kept] == ["1"]
    assert report.totals.param_count == 8 * 3 * 3 * 3 + 8 + 2 * 8


def test_a_norm_without_running_statistics_does_not_fold():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.warns(ArchprofWarning, match="batch statistics"):
        report = archprof.analyze(model, input_size=(3, 8, 8), fold_bn=True)
    assert [k.norm for k in report.batch_norm_folding.kept] == ["1"]
    assert report.totals.param_count == 4 * 3 * 3 * 3 + 4 + 2 * 4


@pytest.mark.parametrize("statistics", [False, True], ids=["batch statistics", "running statistics"])
def test_an_instance_norm_is_no_batch_norm_to_fold_or_warn_about(statistics):
    """nn.InstanceNorm runs a batch norm over its input reshaped to one sample."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.InstanceNorm2d(8, affine=True, track_running_stats=statistics))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ArchprofWarning)
        report = archprof.analyze(model.eval(), input_size=(3, 16, 16), fold_bn=True)
    assert report.batch_norm_folding == Folding((), ())
    assert report.totals.param_count == sum(p.numel() for p in model.parameters())


def test_a_layer_output_read_twice_or_a_weight_shared_does_not_fold():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y + self.conv(x)  # conv's output read twice; conv called again

    report = _folded(Twice(), 3, 4, 4)
    (kept,) = report.batch_norm_folding.kept
    assert "also read" in kept.reason or "used by other operations" in kept.reason

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            return self.bn(self.conv(x)) + self.conv(x)  # one weight, folded once and not the other

    (kept,) = _folded(Shared(), 3, 4, 4).batch_norm_folding.kept
    assert "used by other operations" in kept.reason


def test_a_bias_shared_with_another_layer_does_not_fold():
    """Two convolutions share one bias and a BatchNorm follows one of them: the fold would
    rewrite that bias, which the other reads (a real fold in place changes the model's
    output, the oracle), so the norm is kept, and every parameter counted as it is."""

    class SharedBias(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 8, 3), nn.Conv2d(3, 8, 3)
            self.c2.bias = self.c1.bias
            self.bn = nn.BatchNorm2d(8)

        def forward(self, x):
            return self.bn(self.c1(x)) + self.c2(x)

    model = SharedBias().eval()
    with torch.no_grad():
        model.bn.running_mean.fill_(0.5)
        x = torch.rand(1, 3, 8, 8)
        before = model(x)
        fused = torch.nn.utils.fusion.fuse_conv_bn_eval(model.c1, model.bn)
        model.c1.bias.copy_(fused.bias)  # the shared bias rewritten in place
        assert not torch.allclose(fused(x) + model.c2(x), before, atol=1e-4)
    report = _folded(SharedBias().eval(), 3, 8, 8)
    (kept,) = report.batch_norm_folding.kept
    assert kept.norm == "bn" and "bias" in kept.reason
    assert report.totals.param_count == sum(p.numel() for p in model.parameters())


def test_a_functional_batch_norm_folds_too():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(6, 3, 3, 3))
            self.register_buffer("mean", torch.zeros(6))
            self.register_buffer("var", torch.ones(6))

        def forward(self, x):
            return nn.functional.batch_norm(nn.functional.conv2d(x, self.weight), self.mean, self.var)

    report = _folded(Functional(), 3, 6, 6)
    assert report.totals.param_count == 6 * 27 + 6
    assert report.totals.buffer_bytes == 0
    assert report.totals.elementwise_flops == 0


def test_cli_summary_folds_and_names_what_stays():
    folded = cli("summary", "densenet121", "--fold-bn", "-f", "csv")
    assert folded.exit_code == 0, folded.output
    assert "warning: 62 BatchNorm(s) not folded: features.denseblock1.denselayer1.norm1" in folded.stderr
    with on_meta():
        fused = fuse(MODELS["densenet121"].build().eval())
    params = sum(int(row["param_count"]) for row in csv.DictReader(io.StringIO(folded.stdout)))
    assert params == _parameters(fused)


def test_profile_refuses_fold_bn_on_one_line():
    result = cli("profile", "lenet5", "--fold-bn", "--device", "cpu")
    assert result.exit_code == 2
    assert "--fold-bn" in one_error_line(result)


def test_profile_help_does_not_offer_fold_bn_and_memory_help_says_measure_refuses_it():
    """profile always refuses --fold-bn, yet its help described it; memory --measure refuses it too."""
    assert "--fold-bn" not in cli("profile", "-h").stdout
    assert "--fold-bn" in cli("summary", "-h").stdout
    memory_help = " ".join(cli("memory", "-h").stdout.replace("│", " ").split())
    measure_help = memory_help.split("--measure ", 1)[1].split(" --plot ", 1)[0]
    assert "--fold-bn" in measure_help


def _fused_params(name: str) -> int:
    with on_meta():
        return _parameters(fuse(MODELS[name].build().eval()))


def test_compare_folds_every_model():
    result = cli("compare", "resnet18", "vgg11_bn", "--fold-bn", "-f", "csv", "--jobs", "1")
    assert result.exit_code == 0, result.output
    rows = csv.DictReader(io.StringIO(result.stdout))
    assert [int(row["param_count"]) for row in rows] == [_fused_params("resnet18"), _fused_params("vgg11_bn")]


def test_check_judges_the_folded_model():
    limit = _fused_params("resnet18")  # fewer than the unfolded model's parameters
    assert cli("check", "resnet18", "--max-params", limit, "--fold-bn", "--jobs", "1").exit_code == 0
    assert cli("check", "resnet18", "--max-params", limit, "--jobs", "1").exit_code == 1


def test_diff_folds_a_model_spec_not_a_csv_report(tmp_path):
    unfolded = tmp_path / "resnet18.csv"
    assert cli("summary", "resnet18", "-o", unfolded).exit_code == 0
    result = diff(str(unfolded), "resnet18", fold_bn=True)
    with on_meta():
        plain = _parameters(MODELS["resnet18"].build())
    params = next(total for total in result.totals if total.metric == "param_count")
    assert (params.old, params.new) == (plain, _fused_params("resnet18"))
    assert cli("diff", unfolded, "resnet18", "--fold-bn", "-f", "csv").exit_code == 0


def test_compare_refuses_to_time_folded_models():
    result = cli("compare", "lenet5", "alexnet", "--fold-bn", "--profile")
    assert result.exit_code == 2
    assert "--fold-bn" in one_error_line(result)


def test_memory_and_its_fit_see_the_folded_model():
    folded = cli("memory", "resnet18", "--fold-bn", "-f", "json")
    plain = cli("memory", "resnet18", "-f", "json")
    assert folded.exit_code == plain.exit_code == 0, folded.output
    buffers = [json.loads(result.stdout)["totals"]["buffer_bytes"] for result in (folded, plain)]
    with on_meta():
        model = MODELS["resnet18"].build()
    assert buffers == [_buffer_bytes(fuse(model.eval())), _buffer_bytes(model)]
    assert cli("memory", "resnet18", "--fold-bn", "--fit", "1GB").exit_code == 0


def test_rf_writes_the_folded_report():
    result = cli("rf", "resnet18", "--fold-bn", "-f", "csv")
    assert result.exit_code == 0, result.output
    params = sum(int(row["param_count"]) for row in csv.DictReader(io.StringIO(result.stdout)))
    assert params == _fused_params("resnet18")


def test_explaining_a_folded_norm_names_the_layer_it_folded_into():
    """Its row is gone: the error says where its scale and shift went (torch's own fusion
    folds the same pair), where it said there was no such layer."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()).eval()
    fused = [type(m) for m in fuse(model).modules()]
    assert nn.BatchNorm2d not in fused and nn.Conv2d in fused
    report = archprof.analyze(model, input_size=(3, 8, 8), fold_bn=True)
    with pytest.raises(archprof.ArchprofError, match="'1' is folded into '0'"):
        report.explain("1")
    with pytest.raises(archprof.ArchprofError, match="no layer"):
        report.explain("9x")


def test_a_folded_reports_json_says_which_norms_folded():
    """A folded report's CSV and JSON had no mark of it: a saved one could not be told from the
    model as it is. JSON names each BatchNorm folded and kept, as `Report.batch_norm_folding`
    does; the oracle: the built-in resnet18's BatchNorm2d modules, each called once."""
    model = MODELS["resnet18"].build()
    norms = [name for name, module in model.named_modules() if isinstance(module, nn.BatchNorm2d)]
    folded = json.loads(_folded(model.eval(), 3, 64, 64).to_json())["batch_norm_folding"]
    assert sorted(entry["norm"] for entry in folded["folded"]) == sorted(norms) and folded["kept"] == []
    assert "batch_norm_folding" not in json.loads(archprof.analyze(model, input_size=(3, 64, 64)).to_json())
