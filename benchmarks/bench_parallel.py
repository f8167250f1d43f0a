"""`archprof.compare` over many models in one process against a process pool: wall time, and
whether the results are exactly the same.

    python benchmarks/bench_parallel.py [--jobs N ...] [--rounds R] [--models SPEC ...]

Each run is a fresh Python process (torch, archprof, torchvision and timm imported before
the clock starts) that calls `archprof.compare(models, jobs=N)` once, for inference and
then with `training=True` (a training step each: about twice the work), and writes its
DataFrame; runs with each `--jobs` take turns, round after round. The pool's cost is in the
time: starting workers (a fresh interpreter each, which imports torch and archprof) and
each worker's first analysis. archprof starts a worker only while the models left would
take longer than that (`archprof.parallel.WORKER_START_S`), so a few quick models stay in
one process. Writes reports/benchmark_parallel.md.
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

from worktree import ROOT, machine_text

# torchvision's meta registrations clash with a CPU build of torch: archprof does without
# them. At module level, so that the pool's spawned workers (which run this module's top
# level as `__mp_main__`) import torchvision the same way.
sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))

# The sixteen hub models slowest to build and analyse for the first time in a process
# (reports/hub_sweep.csv): the work a pool is for. The six of issue 14 take about a second
# in all, less than a worker takes to start, and stay in one process.
DEFAULT_MODELS = (
    "timm:tiny_vit_21m_512",
    "timm:mvitv2_huge_cls",
    "timm:tiny_vit_21m_384",
    "timm:nfnet_f7",
    "timm:maxvit_xlarge_tf_384",
    "timm:mvitv2_large_cls",
    "timm:maxvit_base_tf_512",
    "timm:dm_nfnet_f5",
    "timm:mvitv2_large",
    "torchvision:densenet161",
    "timm:vit_5b_patch16_sapiens2",
    "timm:ecaresnet200d",
    "timm:deepseek_vit_412m",
    "timm:xcit_small_24_p8_384",
    "timm:dm_nfnet_f4",
    "timm:ecaresnet269d",
)


def run_once(specs: list[str], jobs: int, training: bool, out: Path) -> None:
    """In a fresh process: import everything, then time one `compare` and save its frame."""
    import timm  # noqa: F401  (imported before the clock, as torchvision and torch are)
    import torchvision  # noqa: F401

    import archprof

    start = time.perf_counter()
    frame = archprof.compare(specs, jobs=jobs, training=training)
    seconds = time.perf_counter() - start
    out.write_bytes(pickle.dumps((seconds, frame)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, os.cpu_count() or 1], help="pool sizes to time")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--report", type=Path, default=ROOT / "reports" / "benchmark_parallel.md")
    parser.add_argument("--run-once", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--training", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.run_once is not None:
        run_once(options.models, options.jobs[0], options.training, options.run_once)
        return

    runs = {(training, jobs): [] for training in (False, True) for jobs in options.jobs}
    with tempfile.TemporaryDirectory() as scratch:
        for turn in range(options.rounds):
            for training in (False, True):
                for jobs in options.jobs if turn % 2 == 0 else options.jobs[::-1]:
                    out = Path(scratch) / "frame.pickle"
                    command = [sys.executable, __file__, "--run-once", str(out), "--jobs", str(jobs)]
                    flags = ["--training"] if training else []
                    subprocess.run([*command, *flags, "--models", *options.models], check=True, cwd=ROOT)
                    runs[training, jobs].append(pickle.loads(out.read_bytes()))
                    seconds = runs[training, jobs][-1][0]
                    what = "training" if training else "inference"
                    print(
                        f"[bench] round {turn + 1}/{options.rounds}, {what}, jobs {jobs}: {seconds:.1f} s",
                        file=sys.stderr,
                    )

    lines = [
        "# archprof.compare: one process against a process pool",
        "",
        f"`python benchmarks/bench_parallel.py --jobs {' '.join(map(str, options.jobs))} --rounds {options.rounds}`:"
        f" {len(options.models)} models ({', '.join(f'`{spec}`' for spec in options.models)}), each run a fresh"
        " process with torch, archprof, torchvision and timm imported before the clock starts; the pool sizes take"
        f" turns, round after round. {machine_text()}",
        "",
        f"| analysis | jobs | wall s (median of {options.rounds}) | runs | speed-up | frame equal to jobs="
        f"{options.jobs[0]}'s |",
        "|:--|--:|--:|:--|--:|:--|",
    ]
    for training in (False, True):
        serial_frame = runs[training, options.jobs[0]][0][1]
        base = statistics.median(seconds for seconds, _ in runs[training, options.jobs[0]])
        for jobs in options.jobs:
            median = statistics.median(seconds for seconds, _ in runs[training, jobs])
            equal = all(frame.equals(serial_frame) for _, frame in runs[training, jobs])
            times = ", ".join(f"{seconds:.1f}" for seconds, _ in runs[training, jobs])
            lines.append(
                f"| {'training step' if training else 'inference'} | {jobs} | {median:.1f} | {times}"
                f" | {base / median:.2f}x | {'yes' if equal else 'NO'} |"
            )
    lines += [
        "",
        "The pool's time includes starting its workers (each a fresh interpreter importing torch and archprof, and"
        " timm or torchvision for these models) and each worker's first analysis; archprof starts one only while the"
        " models left would take longer than that. On few cores and a short list that start is most of what a worker"
        " could save; the longer the list and the more cores, the more the pool gives back.",
    ]
    text = "\n".join(lines) + "\n"
    options.report.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
