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
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import random
import time
import warnings
from pathlib import Path

import torch
from hub_sweep import _hubs, hub_models
from torch.overrides import TorchFunctionMode

REPORT = Path(__file__).resolve().parent.parent / "reports" / "fast_paths_check.md"
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


def check_one(spec: str) -> tuple[str, dict[str, str], int]:
    """(spec, variant -> "same" / "DIFFERENT" / "failed: why", blocks copied at batch 1)."""
    import archprof.tracing.replay
    from archprof.analysis import analysis
    from archprof.errors import first_line
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
        try:
            with native_attention_off():
                fast = analysis(load_model(spec), None, **options)  # a fresh model each time: a forward may change it
                copies[name] = copied
                with _built_as_torch_builds():
                    plain_model = load_model(spec)
                with _Passing(), _through_the_dispatcher():
                    plain = analysis(plain_model, None, **options)
        except Exception as exc:  # one row per model, whatever it raises
            outcome[name] = f"failed: {first_line(exc)}"
            continue
        same = repr((fast.graph, fast.report.columns)) == repr((plain.graph, plain.report.columns))
        outcome[name] = "same" if same else "DIFFERENT"
    archprof.tracing.replay._copy = copy
    return spec, outcome, copies.get("batch 1", 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=int, help="check a seeded sample of this many models")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    options = parser.parse_args()
    models = hub_models()
    total = len(models)
    if options.sample:
        models = sorted(random.Random(0).sample(models, min(options.sample, total)))
    start = time.perf_counter()
    rows = []
    with multiprocessing.get_context("spawn").Pool(options.jobs, maxtasksperchild=50) as pool:
        for done, row in enumerate(pool.imap_unordered(check_one, models, chunksize=4), 1):
            rows.append(row)
            print(f"\r{done}/{len(models)} models", end="", flush=True)
    print()
    rows.sort()
    wall = time.perf_counter() - start
    lines = [
        "# archprof's fast paths against the plain forward",
        "",
        f"- Command: `python benchmarks/fast_paths_check.py{f' --sample {options.sample}' if options.sample else ''}"
        f" --jobs {options.jobs}`; {len(models)} of {total} hub models; {wall:.0f} s",
        f"- torch {torch.__version__}",
        "",
        'Each model built on meta and analysed as archprof does, then built under torch\'s own `torch.device("meta")`'
        " (its constructors and initialisers as torch runs them) and analysed under a torch-function mode that passes"
        " every call through (no shortcut taken, no block copied: every forward runs) and with functional batch norms"
        " sent through the dispatcher (not handed to the recorder by archprof.kernels); graph and report compared.",
        "",
        "| variant | same | different | failed |",
        "|:--|--:|--:|--:|",
    ]
    for name in VARIANTS:
        outcomes = [outcome.get(name, "") for _, outcome, _ in rows]
        failed = sum(o.startswith("failed") for o in outcomes)
        lines.append(f"| {name} | {outcomes.count('same')} | {outcomes.count('DIFFERENT')} | {failed} |")
    with_copies = [copies for _, _, copies in rows if copies]
    lines += [
        "",
        f"Models with blocks copied (`archprof.tracing.replay`, batch 1): {len(with_copies)};"
        f" {sum(with_copies)} copies.",
    ]
    wrong = [(spec, outcome) for spec, outcome, _ in rows if any(o != "same" for o in outcome.values())]
    if wrong:
        lines += ["", "| model | outcome |", "|:--|:--|"]
        lines += [f"| `{spec}` | {'; '.join(f'{k}: {v}' for k, v in outcome.items())} |" for spec, outcome in wrong]
    text = "\n".join(lines) + "\n"
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
