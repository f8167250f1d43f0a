"""archprof's receptive fields against the gradient oracle, row by row, on the built-in models
and a seeded sample of torchvision and timm.

    python benchmarks/rf_sweep.py [--sample N] [--seed S] [--rows N] [--max-macs N] [--jobs N] [--report PATH]
                                  [--models SPEC ...] [--input CxHxW]

Per model: archprof's analysis at 3x64x64 (where the model refuses that size: built with
`img_size=64`, where its constructor takes it; else 3x96x96; else its default input), then
the oracle: the model built on the CPU in float64, evaluation mode, every parameter drawn
positive (uniform in [0.1, 1], a weight's divided by 0.55 x its fan-in so that activations
stay near 1 at any depth: no ReLU6 or hard sigmoid saturates, no softmax turns one-hot, no
float64 overflows), its input uniform in [0.5, 1.5]. One forward with a hook on every
module keeps a copy of what each call returns; for each row whose output one of them is, the
gradient of that row's unit 0 (index 0 along each output dimension archprof places along an
input axis or flattened positions, past any class token beside them, every index along the
others: all channels together, so that no one channel's ReLU cut-off hides the field; where no
dimension holds positions, index 0 of the first two, a token's or a channel's elements; where
their sum reaches no pixel, its first element alone: an attention's softmax sums to 1 over the
keys, whatever the input) reaches exactly the input pixels some path of weights connects to it,
no term cancelling another: its box per axis (first and last reached pixel) is set beside
archprof's `receptive_field_start` and `receptive_field`, clipped to the input (the column counts padding positions).

archprof's two conventions (README, docs/formulas.md) are the oracle's too:
- a maximum reads its whole window (which element wins depends on the values): each max
  pooling and each maximum over dimensions (`amax`, `max(dim)`) takes the gradient of the
  average over the same windows (`WholeWindows`), where the maximum's own reaches the winner
  only (VGG's fields would read 1 to 4 pixels short);
- a normalisation is pointwise (its statistics are not part of the field): each one passes its
  input's gradient through as it is (`PointwiseNorms`), where a GroupNorm's statistics would
  reach every position of the map; its value is made positive, as all the oracle's are (a
  centred map, below 0 at a border unit in every channel, cut the unit's gradient off at the
  ReLU after it).

A row with a field is:
- exact: the two boxes are equal;
- input: archprof says the whole input (`FieldMark.INPUT`) and the oracle's unit reaches all
  of it;
- bound held: archprof's field is marked an upper bound and the oracle's box lies inside it;
- padded: archprof's field, clipped to the input, is wider than the oracle's box by pixels
  that no path reaches, the column counting padding positions past them: archprof's exact box
  of unit 0 (`unit_box`, real pixels only, as `archprof rf --unit` gives it) equals the
  oracle's (a stride's remainder at the input's far end), or, for `FieldMark.INPUT` and for a
  row whose units read the whole of an input dimension (what they mixed along it spans it,
  padding counted), unit 0 reaches every pixel that all the row's units together reach;
- flattened: `FieldMark.INPUT` for a map flattened into one dimension (docs/formulas.md: after
  a flatten the field is the whole input), while the oracle's unit 0 reads only its own
  pixels: the convention, not a claim that each unit reads the whole input; where the units
  flattened do not reach all of the input (a patch grid on a size its patches do not divide:
  SigLIP's 14-pixel patches on 384 pixels), the box they read together, which all the row's
  units together reach exactly in the oracle. Beside a class token (which reads no pixel) the
  unit taken is the first of the tokens, whose field archprof gives;
- wrong: anything else: a bug, or an artefact of the oracle the report explains;
- undefined: archprof marks it `FieldMark.UNDEFINED` (not checked, counted);
- unchecked: its output is no module call's return value (a container's own operator between
  two children: a residual add) or its layout is windows or blocks: no unit 0 to take;
- capped: past `--rows` (the rows checked are spread evenly over those that can be).

`--input CxHxW` analyses every model at that sample shape instead (built with `img_size` of
its sides where timm's constructor takes it and the model refuses the size otherwise); a
model whose own forward raises there too is "refused by the model" (`hub_sweep.failure_status`).

`--sample N` draws N hub models (half torchvision classifiers, half timm; seeded) besides
every built-in model (`--models` names the models to check instead); models whose MACs at
the chosen input exceed `--max-macs` (default 1.5 G) are analysed but not checked. Writes
reports/rf_sweep.md (the counts, every wrong row with both boxes, the padded and flattened
rows by model) and reports/rf_sweep.csv (a line per model: its counts).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import inspect
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from arguments import input_size, sample_options
from hub_sweep import REFUSED, _hubs, failure_status, hub_models, write_reports
from torch.overrides import TorchFunctionMode

from archprof.passes.receptive_field.dims import FLAT, Tokens, among_features, entry_withins
from archprof.passes.receptive_field.maps import AxisMap
from archprof.units import shape_text

ROOT = Path(__file__).resolve().parent.parent
VERDICTS = ("exact", "input", "bound held", "padded", "flattened", "wrong", "undefined", "unchecked", "capped")
FIELDS = (
    "model",
    "status",
    "why",
    "input_size",
    "built_with",
    "rows",
    "seconds",
    *(v.replace(" ", "_") for v in VERDICTS),
)
# The input sizes tried in turn, with the constructor's arguments; None: the model's default input.
LADDER = (((3, 64, 64), {}), ((3, 64, 64), {"img_size": 64}), ((3, 96, 96), {}), (None, {}))
NOTED = ("wrong", "padded", "flattened")  # the verdicts whose rows the report lists


def sweep_one(spec: str, rows: int = 40, max_macs: int = 1_500_000_000, size: tuple[int, ...] | None = None) -> dict:
    """One model's line (FIELDS) and, under "noted", its rows of the verdicts NOTED; at one
    sample of `size` where given (built with that `img_size` where it refuses it otherwise),
    else at the first size of LADDER the model takes."""
    from archprof.errors import first_line

    _hubs()
    torch.set_num_threads(1)  # the workers share the machine's cores
    line = dict.fromkeys(FIELDS, "")
    line.update(model=spec, noted=[])
    start = time.perf_counter()
    ladder = LADDER if size is None else ((size, {}), (size, {"img_size": size[1:]}))
    try:
        loaded, report, built_with = _analysed(spec, ladder)
    except _Unanalysed as exc:  # one line per model, whatever it raises
        if size is None or exc.loaded is None:
            return {**line, "status": "failed", "why": "archprof: " + exc.why}
        step = {"training": False, "batch": 1, "inputs": [size]}
        return {**line, **failure_status(exc.loaded, step, "archprof: " + exc.why)}
    size = report.input_shapes[0][1:]
    line.update(input_size=shape_text(size), built_with=built_with)
    if report.totals.macs > max_macs:
        return {**line, "status": "not run", "why": f"{report.totals.macs:,} MACs, over {max_macs:,}"}
    try:
        checks = _checks(loaded, report, rows)
    except Exception as exc:
        return {**line, "status": "failed", "why": "oracle: " + first_line(exc)}
    counts = Counter(check["verdict"] for check in checks)
    line.update({verdict.replace(" ", "_"): counts[verdict] for verdict in VERDICTS})
    line.update(
        status="wrong" if counts["wrong"] else "checked",
        rows=len(checks),
        seconds=f"{time.perf_counter() - start:.1f}",
        noted=[check for check in checks if check["verdict"] in NOTED],
    )
    return line


class _Unanalysed(Exception):
    """No size of the ladder analysed: `why` says the last one's error, `loaded` is the model
    as built without arguments (None where it did not build)."""

    def __init__(self, why: str, loaded) -> None:
        super().__init__(why)
        self.why, self.loaded = why, loaded


def _analysed(spec: str, ladder):
    """The model loaded and analysed at the first size of `ladder` it takes (None: its default
    input), and the constructor's arguments it was built with ("" for none)."""
    import archprof
    from archprof.errors import first_line
    from archprof.load import load_model

    plain, why = None, ""
    for size, args in ladder:
        if args and not spec.startswith("timm:"):
            continue
        try:
            loaded = load_model(spec, args=args)
            plain = plain or (None if args else loaded)
            return loaded, archprof.analyze(loaded, input_size=size), " ".join(f"{k}={v}" for k, v in args.items())
        except Exception as exc:
            why = first_line(exc)
    raise _Unanalysed(why, plain)


def _checks(loaded, report, cap: int) -> list[dict]:
    """Every row with a field, its check: the row, its verdict and the boxes, the oracle's
    gradients taken for at most `cap` of the rows it can check (0: all), spread evenly."""
    from archprof.passes.layers import group_layers
    from archprof.passes.receptive_field import tensor_fields

    graph = report.graph
    fields, spatial = tensor_fields(graph)
    groups = group_layers(graph)
    rows = report.rows()
    torch.manual_seed(0)  # the oracle's weights and input
    module = _oracle_copy(loaded.materialize("cpu", copy_module=True))
    x = (torch.rand(1, *report.input_shapes[0][1:], dtype=torch.float64) + 0.5).requires_grad_()
    named = graph.calls_as_named()  # hooked under first names; a module held under two, renamed as its rows
    outputs = _real_outputs(graph, {named.get(key, key): kept for key, kept in _returns(module, x).items()})
    with_field = [i for i, group in enumerate(groups) if group.outputs and fields.get(group.outputs[0].id) is not None]
    checkable = [
        i for i in with_field if rows[i]["receptive_field"] != "undefined" and groups[i].outputs[0].id in outputs
    ]
    drawn = set(_spread(checkable, cap))
    checks = []
    for index in with_field:
        row, output = rows[index], groups[index].outputs[0]
        check = {"layer": row["layer"], "call": row["call"], "shape": row["output_shape"], "archprof": "", "oracle": ""}
        if row["receptive_field"] == "undefined":
            check["verdict"] = "undefined"
        elif output.id not in outputs:
            check["verdict"] = "unchecked"
        elif index not in drawn:
            check["verdict"] = "capped"
        else:
            check.update(_verdict(fields[output.id], row, outputs[output.id], x, spatial))
        checks.append(check)
    return checks


def _real_outputs(graph, returns: dict[tuple[str, int], list]) -> dict[int, torch.Tensor]:
    """TensorMeta.id -> the oracle's tensor, for each tensor a module call returned (of the
    traced shape, and computed from the input)."""
    calls = {call.index: call for call in graph.module_calls}
    found = {}
    for index, tensors in graph.call_outputs.items():
        real = returns.get((calls[index].path, calls[index].call), [])
        for meta, tensor in zip(tensors, real, strict=False):
            if tensor is not None and tuple(tensor.shape) == meta.shape:
                found.setdefault(meta.id, tensor)
    return found


def _spread(items: list[int], cap: int) -> list[int]:
    """At most `cap` of `items` (all of them where `cap` is 0), evenly spaced, the first and last included."""
    if not cap or len(items) <= cap:
        return items
    return [items[round(k * (len(items) - 1) / (cap - 1))] for k in range(cap)] if cap > 1 else items[-1:]


def _oracle_copy(module):
    """`module` in float64, evaluation mode, without gradients of its own, every parameter
    uniform in [0.1, 1] and a weight's (two or more dimensions) divided by 0.55 x its fan-in
    (the elements of one output unit: numel over the first dimension), so that each unit is
    about the mean of what it reads."""
    module = module.double().eval().requires_grad_(False)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.uniform_(0.1, 1.0)
            if parameter.dim() >= 2:
                parameter /= 0.55 * (parameter.numel() // parameter.shape[0])
    return module


def _returns(module, x) -> dict[tuple[str, int], list]:
    """(module path, call) -> the tensors that call returned, copied as it returned them (a
    later in-place operator, `out += identity`, writes over the original), from one forward."""
    from archprof.structure import tensors_in

    returns, calls = {}, Counter()

    def keep(path):
        def hook(_, args, output):
            returns[(path, calls[path])] = [t.clone() if t.requires_grad else None for t in tensors_in(output)]
            calls[path] += 1

        return hook

    hooks = [child.register_forward_hook(keep(path)) for path, child in module.named_modules()]
    try:
        with WholeWindows(), PointwiseNorms():
            module(x)
    finally:
        for hook in hooks:
            hook.remove()
    return returns


# Each max pooling -> the average pooling whose gradient reaches every element of the same
# windows, and the function whose signature names its arguments (F.max_pool2d's takes *args).
_AVERAGE_OF = {
    pool: (mean, named)
    for nd, average, adaptive in (
        (1, F.avg_pool1d, F.adaptive_avg_pool1d),
        (2, F.avg_pool2d, F.adaptive_avg_pool2d),
        (3, F.avg_pool3d, F.adaptive_avg_pool3d),
    )
    for kind, mean in (("", average), ("adaptive_", adaptive))
    for named in [getattr(F, f"{kind}max_pool{nd}d_with_indices")]
    for pool in (getattr(F, f"{kind}max_pool{nd}d"), named)
}
_MAXIMA = (torch.amax, torch.Tensor.amax, torch.max, torch.Tensor.max)


class WholeWindows(TorchFunctionMode):
    """archprof's convention that a maximum reads its whole window (which element wins depends
    on the values), in the oracle: each max pooling and each maximum over dimensions keeps its
    value and takes the gradient of the mean over the same window (the average pooling of the
    same kernel, stride, padding and rounding; the mean over the same dimensions), which reaches
    every element of it, where the maximum's reaches the winner only."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if func in _AVERAGE_OF:
            spread = _pooled_mean(func, args, kwargs)
        elif func in _MAXIMA:
            spread = _reduced_mean(args, kwargs)
        else:
            return result
        if spread is None:
            return result
        if isinstance(result, torch.Tensor):
            return result + (spread - spread.detach())
        values, *rest = result  # (values, indices)
        return type(result)((values + (spread - spread.detach()), *rest))


_NORMS = (F.batch_norm, F.group_norm, F.instance_norm, F.layer_norm, F.rms_norm)


class PointwiseNorms(TorchFunctionMode):
    """archprof's convention that a normalisation is pointwise (its statistics are not part of
    the field), in the oracle: each normalisation passes its input's gradient through as it
    is, where its statistics (a GroupNorm's over the whole map) would reach every position.
    Its value is made positive (its magnitude, plus 0.1), as every other value of the oracle
    is: a centred map is below 0 at a border unit in every channel (PoolFormerV2's GroupNorm
    at unit 0, each of 1,280 channels), where a ReLU or StarReLU after it would cut the
    unit's whole gradient off."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if func not in _NORMS:
            return result
        source = args[0] if args else kwargs["input"]
        return result.detach().abs() + 0.1 + (source - source.detach())


def _pooled_mean(func, args, kwargs):
    """The average pooling over a max pooling's windows; None for a dilated one (no average
    pooling has a dilation)."""
    average, named = _AVERAGE_OF[func]
    bound = inspect.signature(named).bind(*args, **kwargs).arguments
    # Padding of -inf (timm's "same" max pooling pads first) averaged would make the sum NaN;
    # read as 0, its gradient is 0 there all the same (padding reaches no input pixel).
    bound["input"] = torch.nan_to_num(bound["input"], nan=0.0, posinf=0.0, neginf=0.0)
    if "output_size" in bound:
        return average(bound["input"], bound["output_size"])
    dilation = bound.get("dilation", 1)
    if any(d != 1 for d in (dilation if isinstance(dilation, (tuple, list)) else [dilation])):
        return None
    kernel = bound["kernel_size"]
    return average(
        bound["input"], kernel, bound.get("stride") or kernel, bound.get("padding", 0), bound.get("ceil_mode", False)
    )


def _reduced_mean(args, kwargs):
    """The mean over the dimensions a maximum reduces (all where it names none); None for the
    elementwise maximum of two tensors."""
    source, *rest = args
    dims = kwargs.get("dim", rest[0] if rest else ())
    if isinstance(dims, torch.Tensor):
        return None
    keep = kwargs.get("keepdim", rest[1] if len(rest) > 1 else False)
    if dims == () or dims == []:
        return source.mean()
    return source.mean(dims, keepdim=keep)


def _verdict(state, row: dict, real, x, spatial: tuple[int, ...]) -> dict:
    """The row's verdict and both boxes, from the gradient of its output's unit 0."""
    from archprof.passes.receptive_field.dims import Field

    dims = state.dims if isinstance(state, Field) else ()
    if any(entry is not None and not isinstance(entry, (AxisMap, *FLAT)) for entry in dims):
        return {"verdict": "unchecked"}  # windows, blocks: no plain unit 0
    # Unit 0: index 0 along the dimensions that hold positions (a map's, or flattened ones;
    # beside a class token, the first of the tokens: the field archprof gives is theirs), all
    # channels together, so that no one channel's ReLU cut-off after a normalisation's
    # centring (a value below 0) hides the unit's field.
    placed = [isinstance(entry, (AxisMap, *FLAT)) and not _features(dims, index) for index, entry in enumerate(dims)]
    if any(placed) and len(dims) == real.dim():
        index = [_first_unit(entry) if place else slice(None) for entry, place in zip(dims, placed, strict=True)]
        unit = real[tuple(index)]
    else:  # global (no dimension holds positions): index 0 of the first two (a token, a channel)
        unit = real[(0, 0)[: real.dim()]]
    oracle = _gradient_box(unit.sum(), x)
    if oracle is None and unit.numel() > 1:  # a sum that cancels (a softmax's over the keys is 1): one element
        oracle = _gradient_box(unit.flatten()[0], x)
    if row["receptive_field"] == "input":
        return {
            "verdict": _input_verdict(oracle, real, x, spatial, flattened=bool(dims)),
            "archprof": "input",
            "oracle": _text(oracle),
        }
    sizes, starts = row["receptive_field"], row["receptive_field_start"]
    clipped = [(max(s, 0), min(s + n - 1, end - 1)) for s, n, end in zip(starts, sizes, spatial, strict=True)]
    inside = oracle is not None and _inside(oracle, clipped)
    if row["receptive_field_note"].startswith("an upper bound"):
        verdict = "bound held" if inside else "wrong"
    elif oracle == clipped:
        verdict = "exact"
    elif inside and any(isinstance(entry, FLAT) for entry in dims) and _gradient_box(real.sum(), x) == clipped:
        verdict = "flattened"  # what the units flattened read together, where that is not the whole input
    elif inside and _unit_box(state, spatial) == oracle:
        verdict = "padded"
    elif inside and " reads the whole of input dimension " in row["receptive_field_note"]:
        # An axis whose mixed units' span, padding counted, covers it: the per-axis INPUT.
        verdict = "padded" if oracle == _gradient_box(real.sum(), x) else "wrong"
    else:
        verdict = "wrong"
    return {"verdict": verdict, "archprof": _text(clipped), "oracle": _text(oracle)}


def _features(dims, index: int) -> bool:
    """Whether dimension `index` holds block positions among a unit's features (a
    space-to-depth's channels: `among_features`), read whole, as the channels are."""
    held = entry_withins(dims[index])
    return bool(held) and all(among_features(dims, index, within) for within in held)


def _first_unit(entry) -> int:
    """The index of a dimension's first unit that archprof places: past a class token."""
    return entry.first if isinstance(entry, Tokens) else 0


def _input_verdict(oracle, real, x, spatial: tuple[int, ...], flattened: bool) -> str:
    """A row archprof says reads the whole input: "input" where unit 0 reaches all of it;
    "padded" where it reaches every pixel that all the row's units together reach (those left
    out are read by none: a stride's remainder); "flattened" for a flattened map's element 0."""
    if oracle == [(0, n - 1) for n in spatial]:
        return "input"
    if flattened:
        return "flattened"
    return "padded" if oracle is not None and oracle == _gradient_box(real.sum(), x) else "wrong"


def _unit_box(state, spatial: tuple[int, ...]):
    """archprof's exact box of unit 0 (real pixels only), None where it gives none."""
    from archprof.errors import ArchprofError
    from archprof.passes.receptive_field import unit_box

    try:
        return unit_box(state, spatial, (0,) * len(spatial))
    except ArchprofError:
        return None


def _gradient_box(unit, x) -> list[tuple[int, int]] | None:
    """Per axis, the first and last input pixel the gradient of `unit` reaches (over every
    channel); None where it reaches none. Raises where it is not finite (the oracle failed)."""
    if not unit.requires_grad:
        return None
    (gradient,) = torch.autograd.grad(unit, x, retain_graph=True)
    if not torch.isfinite(gradient).all():
        raise FloatingPointError("the oracle's gradient is not finite")
    reached = gradient[0].abs().sum(0) > 0
    if not reached.any():
        return None
    return [tuple(int(i) for i in torch.nonzero(reached.any(dim=1 - axis)).flatten()[[0, -1]]) for axis in range(2)]


def _inside(inner: list[tuple[int, int]], outer: list[tuple[int, int]]) -> bool:
    return all(o[0] <= i[0] and i[1] <= o[1] for i, o in zip(inner, outer, strict=True))


def _text(box: list[tuple[int, int]] | None) -> str:
    return "none" if box is None else " x ".join(f"{a}..{b}" for a, b in box)


def chosen_models(sample: int, seed: int) -> list[str]:
    """Every built-in model, then `sample` hub models: half torchvision's classifiers, half timm."""
    from archprof.zoo import MODELS

    hub = hub_models()
    torchvision = [spec for spec in hub if spec.startswith("torchvision:")]
    timm = [spec for spec in hub if spec.startswith("timm:")]
    draw = random.Random(seed)
    picked = draw.sample(torchvision, min(sample // 2, len(torchvision)))
    return [*MODELS, *sorted(picked), *sorted(draw.sample(timm, sample - len(picked)))]


def markdown(lines: list[dict], command: str, jobs: int, wall_s: float) -> str:
    checked = [line for line in lines if line["status"] in ("checked", "wrong")]
    totals = Counter({verdict: sum(int(line[verdict.replace(" ", "_")]) for line in checked) for verdict in VERDICTS})
    statuses = Counter(line["status"] for line in lines)
    text = [
        "# Receptive fields against the gradient oracle",
        "",
        f"{dt.date.today()}; `python benchmarks/rf_sweep.py {command}` ({jobs} worker(s), {wall_s:.0f} s wall);"
        f" load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end.",
        "",
        "Oracle: the model on the CPU in float64, evaluation mode, every parameter positive (a weight's scaled by its"
        " fan-in), and the gradient of each row's output unit 0 with respect to the input: its box (first and last"
        " reached pixel per axis) beside archprof's `receptive_field_start` and `receptive_field`, clipped to the"
        " input; each max pooling's gradient spread over its window (archprof's convention that a maximum reads"
        " its whole window). The verdicts are defined in the script's docstring: padded is wider by pixels no"
        " path reaches (the column counts padding), flattened is the whole input by the flatten convention (or"
        " what the units flattened read together, where that is not all of it), unchecked has no module output"
        " to hook, capped is past `--rows`.",
        "",
        f"Models: {len(lines)} ({statuses['checked'] + statuses['wrong']} checked, {statuses['wrong']} with a wrong"
        f" row, {statuses['not run']} not run, {statuses['failed']} failed"
        + (
            f", {statuses[REFUSED]} refused by the model: its own forward raises at that input"
            if statuses[REFUSED]
            else ""
        )
        + ").",
        "",
        "| " + " | ".join(VERDICTS) + " |",
        "|" + "---:|" * len(VERDICTS),
        "| " + " | ".join(str(totals[verdict]) for verdict in VERDICTS) + " |",
        "",
    ]
    noted = [(line["model"], check) for line in checked for check in line["noted"]]
    text += _rows_section("Wrong rows", "wrong", noted)
    text += _by_model_section("padded", noted)
    text += _by_model_section("flattened", noted)
    for status in ("failed", "not run", REFUSED):
        listed = [line for line in lines if line["status"] == status]
        if listed:
            text += [f"## Models {status}", "", *(f"- `{line['model']}`: {line['why']}" for line in listed), ""]
    built = [line for line in lines if line["built_with"]]
    if built:
        text += ["## Built with arguments", "", *(f"- `{line['model']}`: {line['built_with']}" for line in built), ""]
    return "\n".join(text)


def _rows_section(title: str, verdict: str, noted: list[tuple[str, dict]]) -> list[str]:
    rows = [(model, check) for model, check in noted if check["verdict"] == verdict]
    text = [f"## {title}", ""]
    if not rows:
        return [*text, "None.", ""]
    text += ["| model | layer | call | output | archprof | oracle |", "|---|---|---:|---|---|---|"]
    text += [
        f"| {model} | {c['layer']} | {c['call']} | {c['shape']} | {c['archprof']} | {c['oracle']} |"
        for model, c in rows
    ]
    return [*text, ""]


def _by_model_section(verdict: str, noted: list[tuple[str, dict]]) -> list[str]:
    """The models with `verdict` rows, their count and the first of them."""
    first: dict[str, dict] = {}
    count: Counter = Counter()
    for model, check in noted:
        if check["verdict"] == verdict:
            first.setdefault(model, check)
            count[model] += 1
    if not first:
        return []
    text = [
        f"## Rows {verdict}, by model",
        "",
        "| model | rows | first | archprof | oracle |",
        "|---|---:|---|---|---|",
    ]
    for model, c in first.items():
        text.append(f"| {model} | {count[model]} | {c['layer']} | {c['archprof']} | {c['oracle']} |")
    return [*text, ""]


def main() -> None:
    from archprof.parallel import ordered_map

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=60, help="hub models drawn at random (half torchvision)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, default=40, help="rows checked per model at most (0: all)")
    parser.add_argument("--max-macs", type=int, default=1_500_000_000, help="check no model with more MACs")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--report", type=Path, default=ROOT / "reports" / "rf_sweep.md")
    parser.add_argument("--models", nargs="+", metavar="SPEC", help="these models, not the built-in ones and a sample")
    parser.add_argument(
        "--input", type=input_size, default=None, help="one sample's shape for every model, 3x61x47 (default: LADDER)"
    )
    options = parser.parse_args()
    chosen = options.models or chosen_models(options.sample, options.seed)
    start = time.perf_counter()

    def progress(phase: str, done: int, total: int) -> None:
        print(f"\r{done}/{total}", end="", file=sys.stderr, flush=True)

    sweep = functools.partial(sweep_one, rows=options.rows, max_macs=options.max_macs, size=options.input)
    lines = ordered_map(sweep, chosen, jobs=options.jobs, progress=progress)
    print(file=sys.stderr)
    command = f"--sample {options.sample} --seed {options.seed} --rows {options.rows} --max-macs {options.max_macs}"
    if options.models:
        command = f"--rows {options.rows} --max-macs {options.max_macs} --models {' '.join(options.models)}"
    command += sample_options(options.input)
    text = markdown(lines, command, options.jobs, time.perf_counter() - start)
    write_reports(options.report, text, FIELDS, [{k: line[k] for k in FIELDS} for line in lines])
    print(text)


if __name__ == "__main__":
    main()
