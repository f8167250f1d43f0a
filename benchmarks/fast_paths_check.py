"""archprof's fast paths change nothing: every torchvision classification model and every
timm model, each built on meta and analysed twice. Once as archprof does; once built under
torch's own `torch.device("meta")` (every constructor and initialiser runs as torch has it,
not `archprof.meta.on_meta`'s), analysed under a torch-function mode that passes every
call through (with one active, no module call takes a shortcut, `archprof.tracing.shortcuts`, nor
is copied from an earlier one, `archprof.tracing.replay`: every forward runs) and with the
recorder refusing the calls `archprof.kernels` would hand it straight (a functional batch
norm then goes through the dispatcher). The two graphs and reports must be equal, `repr`
for `repr`, at batch 1 in the model's dtype and at batch 2 in float16. PyTorch's own
inference fast paths (nn.MultiheadAttention's, nn.TransformerEncoderLayer's) are off on
both sides: under a torch-function mode they are never taken, on meta or on a CPU. Writes
reports/fast_paths_check.md.

    python benchmarks/fast_paths_check.py --jobs 2            # all 1,451 models, about 8 minutes on 2 cores
    python benchmarks/fast_paths_check.py --sample 100        # a seeded sample
    python benchmarks/fast_paths_check.py --input 3x199x167 --report reports/fast_paths_check_3x199x167.md

`--input` analyses every model at that sample shape instead of its own: the shortcuts and
copies at sizes the hub's defaults never reach (odd sides). A model whose forward refuses it
raises the same error on both paths ("both raise"); a path that raises where the other runs
is a failure.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import multiprocessing
import random
import time
import warnings
from pathlib import Path

import torch
from arguments import input_size, sample_options
from hub_sweep import _hubs, hub_models
from report_writing import ready_to_write, write_report
from torch.overrides import TorchFunctionMode

from archprof.errors import ArchprofError

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "reports" / "fast_paths_check.md"
VARIANTS = {"batch 1": {"batch": 1, "dtype": None}, "batch 2, float16": {"batch": 2, "dtype": torch.float16}}


class _Passing(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def _through_the_dispatcher():
    import archprof.tracing.recorder

    answering = archprof.tracing.recorder.Recorder.answering
    archprof.tracing.recorder.Recorder.answering = lambda self, x: None
    try:
        yield
    finally:
        archprof.tracing.recorder.Recorder.answering = answering


@contextlib.contextmanager
def _built_as_torch_builds():
    """The loader's build on meta under torch's own device context instead of `on_meta`."""
    import archprof.load.specs

    on_meta = archprof.load.specs.on_meta
    archprof.load.specs.on_meta = lambda: torch.device("meta")
    try:
        yield
    finally:
        archprof.load.specs.on_meta = on_meta


def check_one(spec: str, size: tuple[int, ...] | None = None) -> tuple[str, dict[str, str], int]:
    """(spec, variant -> "same" / "DIFFERENT" / "failed: why" / "both raise: why", blocks
    copied at batch 1), at the model's default input or one sample of `size`. "both raise":
    the fast and the plain analyses raised the same error (a model that refuses the input)."""
    import archprof.tracing.replay
    from archprof.analysis import analysis
    from archprof.load import load_model
    from archprof.tracing.trace import native_attention_off

    _hubs()
    warnings.simplefilter("ignore")
    copied = 0
    copy = archprof.tracing.replay._copy

    def counted(*args):
        nonlocal copied
        output = copy(*args)
        copied += output is not None
        return output

    archprof.tracing.replay._copy = counted
    outcome, copies = {}, {}
    for name, options in VARIANTS.items():
        copied = 0
        with native_attention_off():
            try:
                fast = analysis(load_model(spec), size, **options)  # a fresh model each time: a forward may change it
                copies[name] = copied
            except Exception as exc:  # one row per model, whatever it raises
                fast = exc
            try:
                with _built_as_torch_builds():
                    plain_model = load_model(spec)
                with _Passing(), _through_the_dispatcher():
                    plain = analysis(plain_model, size, **options)
            except Exception as exc:
                plain = exc
        if isinstance(fast, Exception) or isinstance(plain, Exception):
            outcome[name] = _raised(fast, plain)
            continue
        same = repr((fast.graph, fast.report.columns)) == repr((plain.graph, plain.report.columns))
        outcome[name] = "same" if same else "DIFFERENT"
    archprof.tracing.replay._copy = copy
    return spec, outcome, copies.get("batch 1", 0)


def _raised(fast, plain) -> str:
    """The outcome where one analysis or both raised: the same error from both (the model's
    own forward refusing the input) or a failure, with what each path did."""
    from archprof.errors import first_line

    fast_said, plain_said = (first_line(x) if isinstance(x, Exception) else None for x in (fast, plain))
    if fast_said is not None and fast_said == plain_said:
        return f"both raise: {fast_said}"
    did = [
        f"{path} raised {said}" if said is not None else f"{path} ran"
        for path, said in (("fast", fast_said), ("plain", plain_said))
    ]
    return "failed: " + "; ".join(did)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=int, help="check a seeded sample of this many models")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument(
        "--input", type=input_size, default=None, help="one sample's shape for every model, 3x199x167 (default its own)"
    )
    parser.add_argument("--report", type=Path, default=REPORT, help=f"default {REPORT.relative_to(ROOT)}")
    options = parser.parse_args()
    try:
        ready_to_write(options.report)
    except ArchprofError as exc:  # a directory, a read-only file: one line, exit 2, before minutes of checks
        parser.error(str(exc))
    models = hub_models()
    total = len(models)
    if options.sample:
        models = sorted(random.Random(0).sample(models, min(options.sample, total)))
    start = time.perf_counter()
    rows = []
    with multiprocessing.get_context("spawn").Pool(options.jobs, maxtasksperchild=50) as pool:
        check = functools.partial(check_one, size=options.input)
        for done, row in enumerate(pool.imap_unordered(check, models, chunksize=4), 1):
            rows.append(row)
            print(f"\r{done}/{len(models)} models", end="", flush=True)
    print()
    rows.sort()
    wall = time.perf_counter() - start
    lines = [
        "# archprof's fast paths against the plain forward",
        "",
        f"- Command: `python benchmarks/fast_paths_check.py{f' --sample {options.sample}' if options.sample else ''}"
        + sample_options(options.input)
        + f" --jobs {options.jobs}`; {len(models)} of {total} hub models; {wall:.0f} s",
        f"- torch {torch.__version__}",
        "",
        'Each model built on meta and analysed as archprof does, then built under torch\'s own `torch.device("meta")`'
        " (its constructors and initialisers as torch runs them) and analysed under a torch-function mode that passes"
        " every call through (no shortcut taken, no block copied: every forward runs) and with functional batch norms"
        " sent through the dispatcher (not handed to the recorder by archprof.kernels); graph and report compared.",
        "",
        "| variant | same | different | failed | both raise |",
        "|:--|--:|--:|--:|--:|",
    ]
    for name in VARIANTS:
        outcomes = [outcome.get(name, "") for _, outcome, _ in rows]
        failed, refused = (sum(o.startswith(word) for o in outcomes) for word in ("failed", "both raise"))
        lines.append(f"| {name} | {outcomes.count('same')} | {outcomes.count('DIFFERENT')} | {failed} | {refused} |")
    with_copies = [copies for _, _, copies in rows if copies]
    lines += [
        "",
        f"Models with blocks copied (`archprof.tracing.replay`, batch 1): {len(with_copies)};"
        f" {sum(with_copies)} copies.",
    ]
    # Listed: every model a path of which differs or raises alone; those that raise alike only counted.
    wrong = [
        (spec, outcome)
        for spec, outcome, _ in rows
        if any(o != "same" and not o.startswith("both raise") for o in outcome.values())
    ]
    if wrong:
        lines += ["", "| model | outcome |", "|:--|:--|"]
        lines += [f"| `{spec}` | {'; '.join(f'{k}: {v}' for k, v in outcome.items())} |" for spec, outcome in wrong]
    text = "\n".join(lines) + "\n"
    write_report(options.report, text)
    print(text)


if __name__ == "__main__":
    main()
