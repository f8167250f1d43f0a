"""Every torchvision classification model and every timm model, analysed by archprof and
checked against PyTorch's FlopCounterMode on meta tensors.

    python benchmarks/hub_sweep.py [--sample N] [--jobs N] [--seed S] [--train] [--report PATH]
                                   [--families segmentation,video,...] [--resume]
                                   [--input CxHxW] [--batch N]

Per model: archprof's build from its spec (`torchvision:NAME`, `timm:NAME`) and analysis,
each timed; then, on the same module on the meta device at the same input, the reference
figures: parameters as the sum of `numel()`, MACs as FlopCounterMode's count / 2, the
shapes of every tensor the forward returns (where that forward raises on meta for want of
data or a kernel, the model built on the CPU and run there, its weights and inputs drawn
from the seed archprof's CPU fallback drew them from: the same forward). A model is exact
when all three equal archprof's (its parameter total, MACs, and the shapes of the graph's
outputs), wrong when one differs, failed when archprof raised, unless the model's own
forward, run by the reference at the same input, raises too: then the model refuses that
input ("refused by the model": a vision transformer's position table made for one size). A
model whose build fails on meta is left out ("does not build on meta"), and counted.

`--input CxHxW` and `--batch N` analyse every model at that input (each of its inputs, for a
model of several) and batch instead of its default and 1: the formulas checked at sizes the
hub's defaults never reach (odd sides, which convolutions, poolings and ceil modes round,
and a batch above 1). The report is then reports/hub_sweep_CxHxW_batchN.md, beside its CSV.

`--train` analyses one training step instead (batch 2: a BatchNorm in training refuses
one value per channel, which squeeze-excitation blocks meet at batch 1) and compares its
`training_flops` with FlopCounterMode's count of the same forward and backward on meta
(train mode, gradients of ones from the floating outputs, as archprof's trace runs it);
writes reports/hub_sweep_training.md and .csv. Two adjustments make the two comparable:
FlopCounterMode's convolution gradient ignores groups (a depthwise convolution's weight
gradient counted as a dense one's, C times over), so the reference counts each gradient
of a convolution as its forward, by FlopCounterMode's own forward formula; and attention
runs as its math decomposition in both (the CPU's flash kernel, which archprof models and
FlopCounterMode on meta cannot run, turned off for the sweep). One difference is left, the
reference's: an `nn.LSTM` (timm's sequencer2d_*) runs oneDNN's `mkldnn_rnn_layer` on a CPU,
whose gradient computes every gradient at once (input, hidden states, both weights: twice
the forward's products), as archprof counts it; FlopCounterMode on meta runs its per-step
decomposition, whose backward skips the gradients nothing needs (the first step's hidden
state, an input that requires none), so those models read "wrong" by that much.

`--families` sweeps torchvision's other families instead (segmentation, video, optical_flow,
detection, quantization; classification, the default, is torchvision's classifiers and all
of timm), each model at its default input (FAMILY_INPUTS where torchvision names none);
writes reports/hub_sweep_families.md and .csv.

`--sample N` analyses N models drawn at random (seeded) instead of all of them (1,451:
13 minutes on one core). The models go through `archprof.parallel.ordered_map` (`--jobs`,
default one per core). Writes reports/hub_sweep.md and reports/hub_sweep.csv.

Each model's row is appended to the CSV as it comes in (one whole line a write), so a run
stopped part way keeps what it has done; `--resume` (the same options again) sweeps only the
models the CSV lacks, then writes the Markdown report from all its rows. At the end the CSV
is written again, in the models' order.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import functools
import gc
import importlib.metadata
import io
import os
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from arguments import batch_size, input_size, sample_options, sample_suffix
from torchvision_ops import import_torchvision

ROOT = Path(__file__).resolve().parent.parent
FIELDS = (
    "model",
    "status",
    "why",
    "build_ms",
    "first_analysis_ms",
    "analysis_ms",
    "operators",
    "traced_on",
    "params",
    "reference_params",
    "macs",
    "reference_macs",
    "training_flops",
    "reference_training_flops",
    "output_shape",
    "reference_output_shape",
    "not_counted",
)


FAMILIES = ("classification", "segmentation", "video", "optical_flow", "detection", "quantization")
# The families whose models have no default input: RAFT takes two frames (sides divisible by
# 8), a detector one image (which its own transform resizes to 800 pixels or 320).
FAMILY_INPUTS = {"optical_flow": [(3, 128, 128), (3, 128, 128)], "detection": [(3, 320, 320)]}


def hub_models(families: tuple[str, ...] = ("classification",)) -> list[str]:
    """The specs of every model of `families`: classification is torchvision's classifiers and timm."""
    torchvision, timm = _hubs()
    names = []
    for family in families:
        where = torchvision.models if family == "classification" else getattr(torchvision.models, family)
        names += [f"torchvision:{name}" for name in torchvision.models.list_models(module=where)]
    return names + ([f"timm:{name}" for name in timm.list_models()] if "classification" in families else [])


def sweep_inputs(families: tuple[str, ...], specs: list[str], size: tuple[int, ...] | None) -> dict[str, list]:
    """Spec -> the sample shapes of its inputs to analyse it at: for the models of `families`
    with no default input, FAMILY_INPUTS'; with `size` (`--input`), every input of every one of
    `specs` at that shape, as many as it takes."""
    inputs = {
        spec: FAMILY_INPUTS[family] for family in families if family in FAMILY_INPUTS for spec in hub_models((family,))
    }
    if size is None:
        return inputs
    return {spec: [size] * len(inputs.get(spec, [None])) for spec in specs}


def _versions_text() -> str:
    """The versions the sweep ran against, as installed: torch's kernels and the hubs' models
    change with them."""
    return ", ".join(f"{name} {importlib.metadata.version(name)}" for name in ("torch", "torchvision", "timm"))


def _hubs():
    torchvision = import_torchvision()  # before timm, which imports it
    import timm

    return torchvision, timm


# A training step's batch: a BatchNorm in training refuses one value per channel.
TRAINING_BATCH = 2
# The status of a model archprof raised on whose own forward raises at that input too (`failure_status`).
REFUSED = "refused by the model"


def sweep_one(
    spec: str, training: bool = False, inputs: dict[str, list] | None = None, batch: int | None = None
) -> dict:
    """One model's row (FIELDS), of its inference or (`training`) of one training step, at
    `inputs[spec]` where given (its default input otherwise) and `batch` (None: 1, or
    TRAINING_BATCH for a training step); every exception ends up in `why`, on one line.
    Where archprof raises, the reference runs on the same input: a model whose own forward
    raises there too refuses the input (`refused by the model`), not archprof."""
    import torch

    import archprof
    from archprof.errors import first_line
    from archprof.load import load_model
    from archprof.units import shapes_text

    _hubs()
    row = dict.fromkeys(FIELDS, "")
    row["model"] = spec
    step = {"training": training, "batch": batch or (TRAINING_BATCH if training else 1)}
    if inputs and spec in inputs:
        step["inputs"] = inputs[spec]
    start = time.perf_counter()
    try:
        loaded = load_model(spec)
    except Exception as exc:  # one row per model, whatever it raises
        return {**row, "status": "does not build on meta", "why": first_line(exc)}
    built = time.perf_counter()
    try:
        # The worker's garbage from earlier models is collected before the untimed first
        # analysis, not right before the timed one, whose caches it would leave cold.
        gc.collect()
        # The math decomposition of attention, which FlopCounterMode's reference runs on meta.
        torch.backends.cuda.enable_flash_sdp(not training)
        archprof.analyze(loaded, **step)  # the first pays once-per-process costs (imports, operators first seen)
        again = time.perf_counter()
        report = archprof.analyze(loaded, **step)
    except Exception as exc:
        return {**row, **failure_status(loaded, step, first_line(exc))}
    analysed = time.perf_counter()
    row.update(
        build_ms=f"{(built - start) * 1e3:.1f}",
        first_analysis_ms=f"{(again - built) * 1e3:.1f}",
        analysis_ms=f"{(analysed - again) * 1e3:.1f}",
        operators=len(report.graph.ops),
        traced_on=report.traced_on,
        params=report.totals.param_count,
        macs=report.totals.macs,
        training_flops=report.totals.training_flops if training else "",
        output_shape=shapes_text(t.shape for t in report.graph.outputs),
        not_counted=" ".join(f"{op}={n}" for op, n in sorted(report.totals.not_counted.items())),
    )
    try:
        row.update(_reference_anywhere(loaded, report.input_shapes, training))
    except _NoReference as exc:
        return {**row, "status": "no reference", "why": str(exc)}
    differ = [
        what
        for what, ours, theirs in (
            ("params", row["params"], row["reference_params"]),
            ("MACs", row["macs"], row["reference_macs"]),
            ("training FLOPs", row["training_flops"], row["reference_training_flops"]),
            ("output shape", row["output_shape"], row["reference_output_shape"]),
        )
        if ours != theirs
    ]
    return {**row, "status": "wrong" if differ else "exact", "why": ", ".join(differ)}


class _NoReference(Exception):
    """FlopCounterMode's forward raised on meta and, where that was for want of data or a
    kernel, on the CPU too: its message says where, on one line."""


def _reference_anywhere(loaded, input_shapes, training: bool) -> dict:
    """`_reference` on meta; where that raises for want of data or a kernel there (some
    forwards make a CPU tensor of their own: torchvision's regnets), on the model built on the
    CPU and run there. Not where the model's own code refuses the input (a vision
    transformer's position table, made for one size): a CPU forward raises the same, after
    building every weight (20 GB for the largest)."""
    import torch

    from archprof.errors import first_line, is_meta_limitation
    from archprof.random_state import REAL_TRACE_SEED

    try:
        return _reference(loaded.module, input_shapes, "meta", training)
    except Exception as on_meta:
        if not is_meta_limitation(on_meta):
            raise _NoReference(f"FlopCounterMode: on meta {first_line(on_meta)}") from on_meta
        try:
            # archprof's CPU fallback draws its random weights (the model built again) and
            # inputs from this seed: seeded alike, the reference's CPU forward is the same
            # forward, which a detector's counts depend on (the boxes its proposals keep).
            torch.manual_seed(REAL_TRACE_SEED)
            return _reference(loaded.materialize("cpu"), input_shapes, "cpu", training)
        except Exception as on_cpu:
            why = f"FlopCounterMode: on meta {first_line(on_meta)}; on the CPU {first_line(on_cpu)}"
            raise _NoReference(why) from on_cpu


def failure_status(loaded, step: dict, why: str) -> dict:
    """The status and why of a model archprof raised on (`why`) analysing it with `step`
    (`analyze`'s training, batch and, where given, inputs): refused by the model where its
    own forward, run by the reference at the same inputs, raises too (its error said after
    archprof's, for a reader to see that they are one); else failed."""
    samples = step.get("inputs") or [spec.shape for spec in loaded.default_inputs or ()]
    if not samples:
        return {"status": "failed", "why": why}
    try:
        _reference_anywhere(loaded, [(step["batch"], *sample) for sample in samples], step["training"])
    except _NoReference as refusal:
        return {"status": REFUSED, "why": f"{why}; {refusal}"}
    return {"status": "failed", "why": why + " (the reference ran)"}


def analysed_or_refused(
    row: dict, dtype: str | None, inputs: list | None, batch: int, training: bool, optimizer: str = "sgd"
):
    """(archprof's `Analysis` of `row`'s model at the sample shapes `inputs` (None: its default
    input), the torch dtype), or (None, dtype) with the row's status and why filled in where
    the analysis raises: refused by the model where the model's own forward raises at those
    inputs too (`failure_status`), else failed."""
    from archprof.analysis import analysis, checked_batch_and_dtype
    from archprof.errors import first_line
    from archprof.load import load_model

    _, dtype = checked_batch_and_dtype(None, dtype)
    loaded = load_model(row["model"])
    try:
        return analysis(loaded, None, batch, dtype, training=training, optimizer=optimizer, inputs=inputs), dtype
    except Exception as exc:
        step = {"training": training, "batch": batch, **({"inputs": inputs} if inputs else {})}
        row.update(failure_status(loaded, step, first_line(exc)))
        return None, dtype


def failed_and_refused(rows: list[dict]) -> list[str]:
    """A report's sections listing the rows that failed, then those refused by the model, each
    with its why; none for a status no row has."""
    lines = []
    for status, title in (("failed", "Failed"), (REFUSED, "Refused by the model")):
        listed = [row for row in rows if row["status"] == status]
        if listed:
            lines += ["", f"## {title}", "", *(f"- `{row['model']}`: {row['why']}" for row in listed)]
    return lines


def _reference(module, input_shapes, device: str, training: bool = False) -> dict:
    """Parameters, FlopCounterMode's MACs and the output shape of `module` run on `device`;
    with `training`, in train mode, and FlopCounterMode's count of that forward and of the
    backward pass from its floating outputs (gradients of ones) as the training FLOPs."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from archprof.structure import tensors_in
    from archprof.units import shapes_text

    module = module.train(training)
    inputs = [torch.randn(shape, device=device) for shape in input_shapes]  # as archprof's CPU fallback draws them
    mapping = {torch.ops.aten.convolution_backward: _convolution_gradients_flops}
    skipped: list[int] = []  # FLOPs of the LSTM gradients the decomposition skips (`_lstm_gradients_skipped`)
    hooks = [
        lstm.register_forward_pre_hook(lambda lstm, args: skipped.append(_lstm_gradients_skipped(lstm, *args)))
        for lstm in module.modules()
        if isinstance(lstm, torch.nn.LSTM)
    ]
    try:
        with FlopCounterMode(display=False, custom_mapping=mapping) as counter:  # with grad: its hooks need a backward
            output = module(*inputs)
            forward_flops = counter.get_total_flops()
            if training:
                roots = [t for t in tensors_in(output) if t.is_floating_point() and t.requires_grad]
                if roots:
                    torch.autograd.backward(roots, [torch.ones_like(t) for t in roots])
    finally:
        for hook in hooks:
            hook.remove()
    figures = {
        "reference_params": sum(p.numel() for p in module.parameters()),
        "reference_macs": forward_flops // 2,
        "reference_output_shape": shapes_text(t.shape for t in tensors_in(output)),
    }
    if training:
        figures["reference_training_flops"] = counter.get_total_flops() + sum(skipped)
    return figures


def _lstm_gradients_skipped(lstm, x, hx=None) -> int:
    """The FLOPs of the matrix products a CPU's oneDNN LSTM gradient computes (archprof's
    count; float32, no projection, not packed) and PyTorch's decomposition on meta, which the
    reference runs, skips as nothing needs them: each layer's and direction's initial state's
    gradient (dgates x W_hh, N x 4H x H), where the states are not given or need no gradient,
    and the first layer's input gradient (dgates x W_ih over the T steps, N x T x 4H x I),
    where the input needs none. 2 FLOPs a MAC, as FlopCounterMode counts a product.
    tests/test_hub_sweep.py checks them against archprof's count of single LSTMs."""
    import torch

    if isinstance(x, torch.nn.utils.rnn.PackedSequence) or lstm.proj_size:  # oneDNN takes neither
        return 0
    batched = x.dim() == 3
    steps = x.shape[1 if lstm.batch_first else 0] if batched else x.shape[0]
    sequences = x.shape[0 if lstm.batch_first else 1] if batched else 1
    hidden = lstm.hidden_size
    directions = 2 if lstm.bidirectional else 1
    states_need_none = hx is None or not any(t.requires_grad for t in hx)
    flops = 0
    if states_need_none:
        flops += lstm.num_layers * directions * 2 * sequences * 4 * hidden * hidden
    if not x.requires_grad:
        flops += directions * 2 * sequences * steps * 4 * hidden * lstm.input_size
    return flops


def _convolution_gradients_flops(
    grad_out_shape,
    x_shape,
    w_shape,
    _bias,
    _stride,
    _padding,
    _dilation,
    transposed,
    _output_padding,
    _groups,
    output_mask,
    out_shape=None,
    **kwargs,
) -> int:
    """Each gradient of a convolution (its input's, its weight's) costs what its forward
    costs, by FlopCounterMode's own forward formula, which counts a group's channels only
    (its convolution_backward formula counts every channel pair, whatever the groups)."""
    from torch.utils.flop_counter import conv_flop_count

    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=transposed)
    return forward * (bool(output_mask[0]) + bool(output_mask[1]))


# What each status but "exact" means, said under its table.
MEANINGS = {
    "wrong": "archprof's parameters, MACs, training FLOPs or output shape differ from the reference's: a bug.",
    "failed": "archprof raised: a bug, or a limit its message names.",
    REFUSED: "archprof raised, and so did the model's own forward at the same input, run by the"
    " reference (a vision transformer's position table made for one size, a window attention's window that must"
    " divide the map, a residual sum of two paths that round an odd size differently): the model does not take"
    " this input, as PyTorch runs it. Each row says archprof's error, then the reference's.",
    "no reference": "archprof analysed the model (its figures are in the CSV), but the reference could not:"
    " FlopCounterMode's own forward raised on the meta device (and, where that was for want of data or a kernel,"
    " on the CPU too). A limit of the reference, not of archprof.",
    "does not build on meta": "The model's constructor fails on the meta device: neither archprof nor the"
    " reference can take it from its spec.",
}


STATUSES = ("exact", "wrong", "failed", REFUSED, "no reference", "does not build on meta")


def _us_per_operator(row: dict) -> float:
    return float(row["analysis_ms"]) * 1e3 / max(int(row["operators"]), 1)


def markdown(
    rows: list[dict],
    total: int,
    sample: int | None,
    jobs: int,
    wall_s: float,
    load: float,
    training: bool = False,
    families: tuple[str, ...] = ("classification",),
    resumed: int = 0,
    seed: int = 0,
    size: tuple[int, ...] | None = None,
    batch: int | None = None,
) -> str:
    from archprof.units import shape_text

    statuses = Counter(row["status"] for row in rows)
    scope = (
        f"a **sample** of {len(rows)} of the {total} models (drawn at random, seeded), not the whole hub"
        if sample
        else f"all {total} models"
    )
    step = (
        f" One training step at batch {batch or TRAINING_BATCH} each: its `training_flops` against"
        " FlopCounterMode's count of the same train-mode forward and of the backward pass from its floating"
        " outputs (gradients of ones),"
        " each gradient of a convolution counted as its forward by FlopCounterMode's own forward formula (its"
        " convolution_backward formula ignores groups: a depthwise weight gradient C times over), and attention"
        " as its math decomposition in both (the CPU's flash kernel, which archprof models, turned off: on meta"
        " FlopCounterMode runs the math one). An LSTM's gradient products are counted as a CPU's oneDNN kernel"
        " computes them (archprof's count): the decomposition on meta skips those nothing needs, the initial"
        " states' (zeros) and, where the input needs none, the first layer's input's, which the reference adds"
        " (`_lstm_gradients_skipped`)."
        if training
        else ""
    )
    classification = families == ("classification",)
    hubs = "torchvision and timm" if classification else f"torchvision's {', '.join(families)} models"
    lines = [
        f"# Hub sweep: {hubs} against FlopCounterMode"
        + (", one training step" if training else "")
        + (f", every input {shape_text(size)}" if size else "")
        + (f", batch {batch}" if batch else ""),
        "",
        f"{dt.date.today()}, {scope}; `python benchmarks/hub_sweep.py"
        + (f" --sample {sample} --seed {seed}" if sample else "")
        + (" --train" if training else "")
        + ("" if classification else f" --families {','.join(families)}")
        + sample_options(size, batch)
        + f" --jobs {jobs}`, {wall_s:.0f} s wall"
        + (f" (resuming a stopped run: {resumed} models from its CSV)" if resumed else "")
        + f"; load average {load:.1f} on {os.cpu_count()} cores at the"
        f" start (other work on the machine slows every time below); {_versions_text()}.",
        "",
        "Reference: the same module on the meta device, parameters as the sum of `numel()`, MACs as"
        " FlopCounterMode's count / 2, the shapes of every tensor the forward returns, in order."
        " Where that forward raises on meta for want of data or a kernel, the model built on the CPU and run"
        " there for real, from the seed archprof's own CPU fallback drew its weights and input from (the same"
        " forward, which a detector's counts depend on)." + step,
        "",
        "| " + " | ".join(STATUSES) + " |",
        "|" + "---:|" * len(STATUSES),
        "| " + " | ".join(str(statuses[status]) for status in STATUSES) + " |",
        "",
    ]
    for status, meaning in MEANINGS.items():
        listed = [row for row in rows if row["status"] == status]
        if listed:
            lines += [f"## {status}", "", meaning, "", "| model | why |", "|---|---|"]
            lines += [f"| {row['model']} | {row['why']} |" for row in listed]
            lines.append("")
    timed = [row for row in rows if row["analysis_ms"]]
    fallback = [row for row in timed if row["traced_on"] != "meta"]
    lines += ["## Traced with a real forward", ""]
    if fallback:
        lines += ["The forward cannot run on the meta device: archprof traced a real one (slower).", ""]
        lines += ["| model | traced on | analysis (ms) |", "|---|---|---:|"]
        lines += [f"| {row['model']} | {row['traced_on']} | {row['analysis_ms']} |" for row in fallback]
    else:
        lines.append("None: every model was traced on the meta device.")
    lines.append("")
    analysis_times = [float(row["analysis_ms"]) for row in timed]
    per_op = [_us_per_operator(row) for row in timed]
    if timed:
        lines += [
            "## Analysis time",
            "",
            f"Median {statistics.median(analysis_times):.1f} ms a model, {statistics.median(per_op):.0f} µs per"
            " traced operator (median over models). Each time is one run, the second analysis of the model: the"
            " first (its own CSV column) also pays what a process pays once, imports and operators first seen; the"
            " worker's garbage is collected before the first, so that the second runs warm. Builds: one run each.",
            "",
        ]
    header = ["| model | build (ms) | analysis (ms) | operators | µs per operator |", "|---|---:|---:|---:|---:|"]

    def timing_row(row: dict) -> str:
        us = _us_per_operator(row)
        return f"| {row['model']} | {row['build_ms']} | {row['analysis_ms']} | {row['operators']} | {us:.0f} |"

    lines += ["### Slowest analyses", "", *header]
    lines += [timing_row(row) for row in sorted(timed, key=lambda row: -float(row["analysis_ms"]))[:10]]
    lines += ["", "### Slowest per operator", "", *header]
    slowest = sorted(timed, key=_us_per_operator, reverse=True)
    lines += [timing_row(row) for row in slowest[:10]]
    operators = Counter(entry.partition("=")[0] for row in rows for entry in str(row["not_counted"]).split() if entry)
    lines += ["", "## Operators still not counted", ""]
    if operators:
        lines += ["| operator | models |", "|---|---:|"]
        lines += [f"| `{op}` | {n} |" for op, n in operators.most_common()]
    else:
        lines.append("None: every operator that ran has a cost formula.")
    return "\n".join(lines) + "\n"


def main() -> None:
    from archprof.parallel import default_jobs, ordered_map

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=None, help="analyse N models drawn at random")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=default_jobs())
    parser.add_argument("--train", action="store_true", help="analyse one training step (batch 2) instead")
    parser.add_argument("--families", type=_families, default=("classification",), help=", ".join(FAMILIES))
    parser.add_argument(
        "--report", type=Path, default=None, help="default: reports/hub_sweep[_families][_CxHxW][_batchN][_training].md"
    )
    parser.add_argument("--resume", action="store_true", help="keep the CSV's rows, sweep the rest")
    parser.add_argument(
        "--input", type=input_size, default=None, help="every input of every model at this shape, 3x199x167"
    )
    parser.add_argument("--batch", type=batch_size, default=None, help=f"default 1; {TRAINING_BATCH} with --train")
    options = parser.parse_args()
    families = options.families
    stem = "hub_sweep" if families == ("classification",) else "hub_sweep_families"
    stem += sample_suffix(options.input, options.batch)
    report = options.report or ROOT / "reports" / (stem + ("_training.md" if options.train else ".md"))
    models = hub_models(families)
    chosen = sorted(random.Random(options.seed).sample(models, options.sample)) if options.sample else models
    table = report.with_suffix(".csv")
    report.parent.mkdir(parents=True, exist_ok=True)
    try:
        swept = {row["model"]: row for row in kept_rows(table, FIELDS)} if options.resume else {}
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    resumed = sum(spec in swept for spec in chosen)
    left = [spec for spec in chosen if spec not in swept]
    if options.resume:
        print(f"{resumed} of {len(chosen)} models already in {table}", file=sys.stderr)
    else:
        write_csv(table, FIELDS, [])
    load = os.getloadavg()[0]
    start = time.perf_counter()

    def progress(phase: str, done: int, total: int) -> None:
        print(f"\r{done}/{total}", end="", file=sys.stderr, flush=True)

    def keep(index: int, row: dict) -> None:
        append_row(table, FIELDS, row)
        swept[row["model"]] = row

    inputs = sweep_inputs(families, models, options.input)
    sweep = functools.partial(sweep_one, training=options.train, inputs=inputs, batch=options.batch)
    ordered_map(sweep, left, jobs=options.jobs, progress=progress, each=keep)
    wall_s = time.perf_counter() - start
    print(file=sys.stderr)
    rows = [swept[spec] for spec in chosen]
    text = markdown(
        rows,
        len(models),
        options.sample,
        options.jobs,
        wall_s,
        load,
        options.train,
        families,
        resumed,
        options.seed,
        options.input,
        options.batch,
    )
    write_reports(report, text, FIELDS, rows)
    print(text)


def _families(text: str) -> tuple[str, ...]:
    families = tuple(family.strip() for family in text.split(",") if family.strip())
    unknown = [family for family in families if family not in FAMILIES]
    if unknown or not families:
        raise argparse.ArgumentTypeError(f"unknown families {unknown}: choose from {', '.join(FAMILIES)}")
    return families


def write_reports(report: Path, text: str, fields: tuple[str, ...], rows: list[dict]) -> None:
    """The Markdown report at `report`, and its rows as CSV beside it (.csv)."""
    report.write_text(text)
    write_csv(report.with_suffix(".csv"), fields, rows)


def write_csv(path: Path, fields: tuple[str, ...], rows: list[dict]) -> None:
    """`rows` as CSV at `path`, in a file beside it renamed over it: a stop part way leaves
    the file as it was, never half written."""
    unfinished = path.with_name(path.name + ".partial")
    unfinished.write_text(_csv_lines(fields, rows, header=True))
    os.replace(unfinished, path)


def append_row(path: Path, fields: tuple[str, ...], row: dict) -> None:
    """`row` appended to the CSV at `path` as one whole line, in one write: a process stopped
    between two rows leaves every row it wrote whole."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(descriptor, _csv_lines(fields, [row]).encode())
    finally:
        os.close(descriptor)


def kept_rows(path: Path, fields: tuple[str, ...]) -> list[dict]:
    """The rows of the CSV at `path` (none where there is no file), its last line dropped
    from the file where it is not whole (a stop mid-write: that model is swept again).
    ValueError where its columns are not `fields`."""
    if not path.exists():
        return []
    text = path.read_text()
    whole = text[: text.rfind("\n") + 1]
    if whole != text:
        os.truncate(path, len(whole.encode()))
    reader = csv.DictReader(io.StringIO(whole))
    if tuple(reader.fieldnames or ()) != fields:
        raise ValueError(f"{path} has columns {reader.fieldnames}, not this sweep's: sweep again without --resume")
    return list(reader)


def _csv_lines(fields: tuple[str, ...], rows: list[dict], header: bool = False) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fields, lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


if __name__ == "__main__":
    main()
