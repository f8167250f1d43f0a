"""Every hub model's report from this checkout against an earlier commit's: the same rows,
columns and totals, or a list of what differs.

    python benchmarks/same_reports.py --base REV [--sample N] [--seed S] [--train] [--report PATH]

A change meant to make archprof faster and not different (a pass rewritten, a loop made
plainer, a cache added) must leave every report as it was. The tests check figures against
formulas and oracles on chosen models; this checks the change against the code before it,
on every torchvision classification model and every timm model (`hub_sweep.hub_models`).

One worker process per tree (this checkout, and REV as a temporary `git worktree`), the two
side by side, analyses each model (`archprof.analyze` of the spec, at its usual input) and
keeps a digest of its report: the SHA-256 of the repr of every column, of the per-row
operator costs and of the totals, and of its CSV and JSON files (a column whose values
change form, text to a tuple, must still write the same files); or the error, on one
line. Then the digests are compared. Writes reports/same_reports.md: how many models are the same, and each that
differs or fails on one side, with the columns that differ.

With --train, each model's training step at batch 2 instead (reports/same_reports_training.md),
its digests with the graph's forward and backward operators too (each operator, its
arguments and the tensors it reads and makes): a change to the backward pass's trace
must leave the graph as it was, not only the figures drawn from it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hub_sweep import hub_models
from worktree import ROOT, import_archprof_from, machine_text, worktree

DEFAULT_REPORT = ROOT / "reports" / "same_reports.md"
TRAINING_REPORT = ROOT / "reports" / "same_reports_training.md"


def worker(tree: Path, specs: list[str], out: Path, training: bool) -> None:
    """Analyse each model with archprof from `tree` (with `training`, its training step at
    batch 2); write `out`, a JSON object: spec -> a digest per column, "operator_costs",
    "totals", "csv" and "json", and with `training` "forward_ops" and "backward_ops" ("error: ..." where the
    analysis raised). A file, not stdout: a model may print."""
    import warnings

    archprof = import_archprof_from(tree)
    from archprof.errors import first_line

    warnings.simplefilter("ignore")
    digests = {}
    for spec in specs:
        try:
            report = archprof.analyze(spec, batch=2, training=True) if training else archprof.analyze(spec)
        except Exception as exc:  # a failure is a result to compare too
            digests[spec] = f"error: {first_line(exc)}"
            continue
        parts = {**report.columns, "operator_costs": report.operator_costs, "totals": report.totals}
        parts.update(csv=report.to_csv(), json=report.to_json())
        if training:
            parts.update(forward_ops=report.graph.ops, backward_ops=report.graph.backward_ops)
        digests[spec] = {name: _digest(value) for name, value in parts.items()}
    out.write_text(json.dumps(digests))


def _digest(value) -> str:
    return hashlib.sha256(repr(value).encode()).hexdigest()[:16]


def digests_of(trees: dict[str, Path], specs: list[str], scratch: Path, training: bool) -> dict[str, dict[str, str]]:
    """Each tree's digests, its worker running beside the other's."""
    outs = {name: scratch / f"digests-{index}.json" for index, name in enumerate(trees)}
    workers = {
        name: subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                str(tree),
                "--out",
                str(outs[name]),
                *(["--train"] if training else []),
                "--models",
                *specs,
            ],
            stdout=subprocess.DEVNULL,
            cwd=ROOT,
        )
        for name, tree in trees.items()
    }
    for name, process in workers.items():
        if process.wait() != 0:
            raise SystemExit(f"the worker for {name} failed (exit {process.returncode})")
    return {name: json.loads(outs[name].read_text()) for name in trees}


def render(digests: dict[str, dict[str, str]], base: str, command: str, seconds: float) -> str:
    this, earlier = digests["this checkout"], digests[base]
    same = [spec for spec in this if this[spec] == earlier[spec]]
    failed_alike = [spec for spec in same if isinstance(this[spec], str)]
    different = [spec for spec in this if this[spec] != earlier[spec]]
    lines = [
        f"# archprof's reports: this checkout against {base}",
        "",
        f"`{command}`: {len(this):,} models analysed by each tree, {seconds:.0f} s. {machine_text()}",
        "",
        f"- the same report: **{len(same) - len(failed_alike):,}**",
        f"- the same error on both sides: {len(failed_alike):,}",
        f"- different: **{len(different):,}**",
    ]
    if different:
        lines += ["", "| model | what differs |", "|:--|:--|"]
        lines += [f"| `{spec}` | {_what_differs(this[spec], earlier[spec])} |" for spec in different]
    return "\n".join(lines) + "\n"


def _what_differs(this: dict | str, earlier: dict | str) -> str:
    """The columns whose digests differ, or the error of the side that failed."""
    if isinstance(this, str) or isinstance(earlier, str):
        return f"this checkout: {str(this)[:70]}; before: {str(earlier)[:70]}".replace("|", "/")
    return ", ".join(name for name in {**earlier, **this} if this.get(name) != earlier.get(name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="the commit to compare with (required)")
    parser.add_argument("--sample", type=int, help="this many models drawn at random instead of all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", action="store_true", help="each model's training step (batch 2) instead")
    parser.add_argument("--report", type=Path, help="default: reports/same_reports[_training].md")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--models", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args.models, args.out, args.train)
        return
    if args.base is None:
        parser.error("--base is required: the commit to compare with")
    specs = hub_models()
    if args.sample is not None:
        specs = sorted(random.Random(args.seed).sample(specs, min(args.sample, len(specs))))
    command = " ".join(["python benchmarks/same_reports.py", *sys.argv[1:]])
    started = time.perf_counter()
    with worktree(args.base) as tree, tempfile.TemporaryDirectory() as scratch:
        digests = digests_of({"this checkout": ROOT, args.base: tree}, specs, Path(scratch), args.train)
    text = render(digests, args.base, command, time.perf_counter() - started)
    print(text)
    report = args.report or (TRAINING_REPORT if args.train else DEFAULT_REPORT)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(text)


if __name__ == "__main__":
    main()
