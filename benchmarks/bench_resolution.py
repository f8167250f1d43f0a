"""archprof's analysis time at 1x, 2x and 4x a model's usual side: flat, or how far not.

    python benchmarks/bench_resolution.py [--rounds N] [--models SPEC ...] [--report PATH]

A meta trace computes no pixel, so the trace costs the same at any resolution; what can
grow is the receptive-field pass, which answers questions about whole maps (does a global
pooling read every pixel?) from a few units per map where their fields are in order, and
unit by unit where not. The default models are those whose maps once went unit by unit:
timm's BlurPool networks (reflection paddings), torchvision's DeepLabV3 (dilated
convolutions), TinyViT (padded windows), Swin (rolls) and MaxxViT (grid attention), whose
maps now repeat over zones that shrink with depth, not with the side; ResNet-50 beside
them as the plain case.

Per model, built once from its spec on meta, its analysis at each side is timed `--rounds`
times (default 9), the sides taking turns round by round (a slow spell of the machine falls
on all three), and, on the graph of one trace per side, the receptive-field pass alone. The
report gives the medians and the ratio of 4x to 1x (the median of each round's own ratio),
flat where it is at most 1.5 (the noise allowed by benchmarks/bench_analysis.py's own
resolution check). A side the model's forward refuses
(a position table made for one size) is left out. Writes reports/benchmark_resolution.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from torchvision_ops import import_torchvision
from worktree import machine_text

from archprof.analysis import analysis
from archprof.errors import ArchprofError
from archprof.load import load_model
from archprof.passes.layers import group_layers
from archprof.passes.receptive_field import receptive_field_columns

DEFAULT_REPORT = Path(__file__).resolve().parent.parent / "reports" / "benchmark_resolution.md"
DEFAULT_MODELS = (
    "torchvision:resnet50",
    "timm:resnetblur50",
    "timm:densenetblur121d",
    "torchvision:deeplabv3_resnet50",
    "timm:tiny_vit_21m_224",
    "torchvision:swin_t",
    "timm:maxxvitv2_rmlp_base_rw_384",
)
FACTORS = (1, 2, 4)
FLAT = 1.5  # the largest ratio of 4x to 1x counted as flat


@dataclass
class Timings:
    """One model's runs: per side, its analysis times and its receptive-field pass's, in
    seconds, run i of every side made in the same round; and the operators its trace holds
    (a model may run more of them at a larger side: TinyViT pads its windows from 448 on)."""

    analysis: dict[int, list[float]]
    passes: dict[int, list[float]]
    operators: dict[int, int]

    def ratio(self, times: dict[int, list[float]]) -> float:
        """The largest side's time over the smallest's: the median of the rounds' ratios (runs
        a moment apart, where a ratio of medians would set different moments against each
        other)."""
        sides = sorted(times)
        return statistics.median(a / b for a, b in zip(times[sides[-1]], times[sides[0]], strict=True))


def measure(spec: str, rounds: int) -> Timings:
    """The model's analysis and receptive-field pass at each side its forward takes."""
    loaded = load_model(spec)
    channels, side = loaded.default_inputs[0].shape[-3], loaded.default_inputs[0].shape[-1]
    graphs = {}
    for factor in FACTORS:
        shape = (channels, side * factor, side * factor)
        try:
            graphs[shape] = analysis(loaded, shape, 1, None).graph  # also the warm-up
        except ArchprofError:
            continue
    groups = {shape: group_layers(graph) for shape, graph in graphs.items()}
    timings = Timings(
        {shape[-1]: [] for shape in graphs},
        {shape[-1]: [] for shape in graphs},
        {shape[-1]: len(graph.ops) for shape, graph in graphs.items()},
    )
    for turn in range(rounds):
        order = list(graphs) if turn % 2 == 0 else list(graphs)[::-1]
        for shape in order:
            timings.analysis[shape[-1]].append(_timed(lambda shape=shape: analysis(loaded, shape, 1, None)))
            timings.passes[shape[-1]].append(
                _timed(lambda shape=shape: receptive_field_columns(graphs[shape], groups[shape]))
            )
    return timings


def _timed(run) -> float:
    gc.disable()  # as an analysis pauses the collector
    try:
        start = time.perf_counter()
        run()
        return time.perf_counter() - start
    finally:
        gc.enable()


def report(results: dict[str, Timings], rounds: int, command: str) -> str:
    lines = [
        "# archprof's analysis time against the resolution",
        "",
        f"{dt.date.today()}; `{command}`: each model's analysis at 1x, 2x and 4x its usual side, batch 1,",
        f"{rounds} runs each, the sides taking turns; beside it the receptive-field pass alone, on the",
        "graph of one trace. Times are medians; each ratio (largest side over smallest) is the",
        f"median of the rounds' own ratios. {machine_text()}",
        "",
        "| model | sides | operators | analysis ms | its ratio | receptive-field pass ms | its ratio | flat |",
        "|:--|:--|--:|--:|--:|--:|--:|:--|",
    ]
    for spec, timings in results.items():
        sides = sorted(timings.analysis)
        analysis_ms = ", ".join(f"{statistics.median(timings.analysis[s]) * 1e3:.1f}" for s in sides)
        pass_ms = ", ".join(f"{statistics.median(timings.passes[s]) * 1e3:.1f}" for s in sides)
        operators = ", ".join(str(timings.operators[s]) for s in sides)
        ratio = timings.ratio(timings.analysis)
        verdict = "yes" if ratio <= FLAT else "**no**"
        lines.append(
            f"| `{spec}` | {', '.join(map(str, sides))} | {operators} | {analysis_ms} | {ratio:.2f}x"
            f" | {pass_ms} | {timings.ratio(timings.passes):.2f}x | {verdict} |"
        )
    lines += [
        "",
        f"Flat: the analysis at the largest side within {FLAT}x of the smallest's. A model that runs",
        "more operators at a larger side takes longer for that alone (TinyViT pads its windows from",
        "448 on; Swin-T shifts its last stage's windows only where that stage holds more than one).",
        "Where the receptive-field pass grows beyond that, docs/architecture.md says why (a roll's and a",
        "grid attention's maps repeat within zones, with a few fields per position in a block, and",
        "MaxxViT's blocks grow with the map; Swin's zones vanish where a stage's map holds few windows).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="timed runs per side (the median is reported)")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="specs or built-in names")
    parser.add_argument("--report", type=Path, default=DEFAULT_REPORT, help="where to write the Markdown report")
    args = parser.parse_args(argv)
    import_torchvision()
    results = {}
    for index, spec in enumerate(args.models, 1):
        print(f"[bench] {index}/{len(args.models)} {spec}", file=sys.stderr, flush=True)
        results[spec] = measure(spec, args.rounds)
    command = "python benchmarks/bench_resolution.py" + (f" --rounds {args.rounds}" if args.rounds != 9 else "")
    if args.models != list(DEFAULT_MODELS):
        command += " --models " + " ".join(args.models)
    text = report(results, args.rounds, command)
    print(text)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(text)
    print(f"[bench] wrote {args.report}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
