"""Commands over several models or files: compare, check (a budget), diff, zoo."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from archprof.cli.app import app
from archprof.cli.emit import check_appended, check_output, choose_format, emit, input_files, print_table
from archprof.cli.options import (
    Format,
    FormatOpt,
    JobsOpt,
    OutputOpt,
    QuietOpt,
    WideOpt,
    column_choice,
    columns_option,
    file_name,
    format_option,
    limit_option,
    optimizer_option,
    with_model_options,
)
from archprof.cli.streams import progress_display, say, user_errors

# What --sort takes: the keys `archprof.comparison.sort_column` accepts (a test holds the
# two equal). Named here because importing archprof.comparison loads torch before the help shows.
SORT_KEYS = (
    "params",
    "macs",
    "flops",
    "activation",
    "peak-memory",
    "receptive-field",
    "training-memory",
    "training-flops",
    "latency",
    "model",
)


@app.command()
@user_errors
@with_model_options
def compare(
    models: Annotated[
        list[str],
        typer.Argument(
            help="Models in any form summary takes (built-in names, specs, files); the first is the baseline of the"
            " ratios.",
            show_default=False,
        ),
    ],
    options=None,  # with_model_options: the shared options, read
    sort: Annotated[
        Optional[str],
        typer.Option(
            "--sort",
            "-s",
            help=f"Sort ascending by {', '.join(SORT_KEYS)} (training-*: with --train; latency: with --profile).",
            show_default=False,
        ),
    ] = None,
    train: Annotated[
        bool,
        typer.Option(
            "--train", help="Also one training step of each model: its FLOPs (forward and backward) and its peak."
        ),
    ] = False,
    optimizer: optimizer_option("With --train, the optimizer whose state the step's peak holds") = None,
    profile: Annotated[
        bool,
        typer.Option("--profile", help="Also time each model on the CPU (median of at least 5 runs, random weights)."),
    ] = False,
    jobs: JobsOpt = None,
    quiet: QuietOpt = False,
    format: FormatOpt = None,
    output: OutputOpt = None,
    columns: columns_option("Params,MACs,Peak memory", always="the model's name always shows") = None,
    wide: WideOpt = False,
) -> None:
    """Models side by side: parameters, MACs, FLOPs, memory, receptive field, and ratios to the first.

    Activations is the sum of every layer's output bytes (a layer working in place
    included), not a peak; Peak memory is the inference peak: parameters, buffers and the
    most activations live at once.

    Examples:

    archprof compare resnet18 resnet50 mobilenet_v2 --sort macs
    archprof compare resnet18 resnet34 --input 3x160x160 --batch 8 -o compare.csv
    archprof compare resnet18 mobilenet_v2 -o compare.html
    archprof compare resnet18 mobilenet_v2 --train --optimizer adam"""
    from archprof.comparison import (
        bound_notes,
        comparison_cells,
        comparison_csv,
        comparison_json,
        comparison_markdown,
        ratio_notes,
        sorted_heading,
        training_optimizer,
    )
    from archprof.comparison import compare as compare_models

    chosen = choose_format(format, output)
    choice = column_choice(columns, wide, chosen)
    read = [found for spec in models for found in input_files(spec)]
    check_output(output, "--output", *read, ("the --weights file", options.weights))
    with progress_display(quiet) as progress:
        frame = compare_models(
            models,
            profile=profile,
            training=train,
            optimizer="sgd" if optimizer is None else optimizer,
            jobs=jobs,
            progress=progress,
            sort=sort,
            **options.keywords(),
        )

    def table(layout):
        from archprof.render import comparison_table

        baseline, sorted_by = frame.attrs.get("baseline"), sorted_heading(frame)
        cells = comparison_cells(frame)
        notes, ratios = bound_notes(frame), ratio_notes(frame)
        return comparison_table(
            *cells,
            baseline=baseline,
            layout=layout,
            sorted_by=sorted_by,
            notes=notes,
            ratio_notes=ratios,
            optimizer=training_optimizer(frame),
        )

    emit(
        chosen,
        output,
        table,
        {
            Format.csv: lambda: comparison_csv(frame),
            Format.json: lambda: comparison_json(frame),
            Format.markdown: lambda: comparison_markdown(frame),
            Format.html: lambda: _comparison_html(frame),
        },
        choice,
    )


def _comparison_html(frame) -> str:
    from archprof.render.compare_html import comparison_html

    return comparison_html(frame)


@app.command()
@user_errors
@with_model_options
def check(
    models: Annotated[
        Optional[list[str]],
        typer.Argument(
            metavar="MODEL",
            help="Models in any form summary takes; each is held to the limits given",
            show_default="every model in the budget file",
        ),
    ] = None,
    max_params: limit_option("--max-params", "30M (K, M, G, T: decimal)") = None,
    max_macs: limit_option("--max-macs", "5G") = None,
    max_flops: limit_option("--max-flops", "10G") = None,
    max_activation: limit_option("--max-activation", "200MB (kB/MB/GB decimal, KiB/MiB/GiB binary)") = None,
    max_peak_memory: limit_option("--max-peak-memory", "1GB: inference peak, parameters included") = None,
    min_receptive_field: limit_option("--min-receptive-field", "200px: the last feature map's smallest side") = None,
    max_training_memory: limit_option("--max-training-memory", "16GB: a training step's peak, backward in") = None,
    max_training_flops: limit_option("--max-training-flops", "30G: one training step, forward and backward") = None,
    optimizer: optimizer_option("For --max-training-memory") = None,
    options=None,  # with_model_options: the shared options, read
    config: Annotated[
        Optional[Path],
        typer.Option(
            "--config",
            "-c",
            metavar="FILE",
            help="Budget file",
            show_default="./archprof.toml, else the tool.archprof table of ./pyproject.toml",
            parser=file_name,  # '' refused as empty, not read as '.'
        ),
    ] = None,
    baseline: Annotated[
        Optional[Path],
        typer.Option(
            "--baseline",
            metavar="FILE",
            help="A report of the model as it was (archprof summary MODEL -o main.csv), for --max-increase",
            show_default=False,
            parser=file_name,
        ),
    ] = None,
    max_increase: Annotated[
        Optional[list[str]],
        typer.Option(
            "--max-increase",
            metavar="KEY=PERCENT",
            help="At most the --baseline's total grown by PERCENT: params, macs, flops or activation, e.g."
            " macs=5% (repeatable; 0 holds it level, -10% asks it to shrink)",
            show_default=False,
        ),
    ] = None,
    junit: Annotated[
        Optional[Path],
        typer.Option(
            "--junit",
            metavar="FILE",
            help="Also write JUnit XML (one testcase per limit).",
            show_default=False,
            parser=file_name,
        ),
    ] = None,
    jobs: JobsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Fail (exit 1) when a model exceeds its budget: limits from the options or a budget file.

    Exit 0 when every limit holds, 1 when one is exceeded, 2 on bad input. With
    GITHUB_STEP_SUMMARY set (GitHub Actions), the verdict is appended there as Markdown.

    A budget file (--config, else ./archprof.toml or the \\[tool.archprof] table of
    ./pyproject.toml) lists the models, each with limits named as the options are: a
    \\[\\[models]] table each (\\[\\[tool.archprof.models]] in pyproject.toml), or in one line:

    models = [{ name = "resnet50", input = "3x224x224", max-params = "30M" }]

    --baseline with --max-increase holds one model to a report of it as it was, a ratchet:
    at most its totals grown by a percentage.

    Examples:

    archprof check resnet50 --max-params 30M --max-macs 5G
    archprof check resnet18 mobilenet_v2 --max-params 12M
    archprof check resnet18 --baseline main.csv --max-increase macs=5%
    archprof check --config examples/archprof.toml --junit budget.xml"""

    from archprof.budget import EntryError, Verdict, check_all
    from archprof.budget.files import find_budget_file, plan_check
    from archprof.budget.verdicts import append_step_summary, junit_xml, verdict_rows
    from archprof.render import budget_table

    limits = {
        "max-params": max_params,
        "max-macs": max_macs,
        "max-flops": max_flops,
        "max-activation": max_activation,
        "max-peak-memory": max_peak_memory,
        "min-receptive-field": min_receptive_field,
        "max-training-memory": max_training_memory,
        "max-training-flops": max_training_flops,
    }
    limits.update(_growth(baseline, max_increase or [], models or [], limits))
    entries = plan_check(
        models or (),
        limits,
        config=config,
        options=options,
        optimizer=optimizer,
    )
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if junit is not None or step_summary:
        budget_file = config or find_budget_file()
        model_files = [found for entry in entries for found in input_files(entry.model, base=entry.search_dir)]
        read = [
            ("the budget file", budget_file),
            ("the --baseline report", baseline),
            ("the --weights file", options.weights),
            *model_files,
        ]
        read += _weights_files(entries)
    if junit is not None:
        from archprof.errors import ArchprofError

        if str(junit) == "-":  # the table goes there
            raise ArchprofError("--junit - : give a file name (the table goes to standard output)")
        check_output(junit, "--junit", *read)
        # A file of another kind (models.py) is not replaced by XML; a stream (/dev/null, a pipe) may take it.
        if junit.suffix.lower() != ".xml" and not (junit.is_char_device() or junit.is_fifo()):
            raise ArchprofError(f"--junit {junit}: give a file name ending in .xml (the file is replaced by the XML)")
    if step_summary:
        check_appended(step_summary, "GITHUB_STEP_SUMMARY", read, [("the --junit file", junit)])
    with progress_display(quiet) as progress:
        # A model that cannot be checked (exit 2) does not hide the others' verdicts.
        results = check_all(entries, jobs=jobs, progress=progress)
    verdicts = [result for result in results if isinstance(result, Verdict)]
    errors = [result for result in results if isinstance(result, EntryError)]
    if verdicts:
        rows = verdict_rows(verdicts)
        print_table(lambda layout: budget_table(rows, len(errors), layout))
    if junit is not None:
        from archprof.output import write_atomically

        write_atomically(junit, junit_xml(results))
        say(f"wrote {junit}")
    if step_summary:
        try:
            append_step_summary(results, step_summary)
        except OSError as exc:
            say(f"warning: cannot append to GITHUB_STEP_SUMMARY ({step_summary}): {exc.strerror}")
    for error in errors:
        say(f"error: {error.message}")
    if errors:
        raise typer.Exit(2)
    if not all(verdict.passed for verdict in verdicts):
        raise typer.Exit(1)


def _growth(baseline: Path | None, increases: list[str], models: list[str], limits: dict) -> dict:
    """The limits --max-increase sets over the --baseline report's totals, by their keys."""
    from archprof.errors import ArchprofError

    if baseline is None and not increases:
        return {}
    if baseline is None or not increases:
        given, missing = ("--baseline", "--max-increase") if increases == [] else ("--max-increase", "--baseline")
        raise ArchprofError(f"{given} needs {missing}: e.g. --baseline main.csv --max-increase macs=5%")
    if len(models) != 1:
        raise ArchprofError("--baseline is one model's report: check one model against it, named on the command line")
    from archprof.budget.baseline import growth_limits

    grown = {limit.key: limit for limit in growth_limits(baseline, increases)}
    both = [key for key in grown if limits.get(key) is not None]
    if both:
        raise ArchprofError(f"--{both[0]} and --max-increase {both[0].removeprefix('max-')}: give one limit of it")
    return grown


def _weights_files(entries) -> list[tuple[str, Path]]:
    """The weights file each entry loads (its own `weights = `, or --weights), found where the
    loader finds it: beside the budget file first, then from the current directory. An
    entry's own was not among the files a --junit or step summary must not be: it was overwritten."""
    from archprof.load.common import resolve_path

    return [
        ("the weights file", resolve_path(entry.options.weights, entry.search_dir))
        for entry in entries
        if entry.options.weights is not None
    ]


@app.command()
@user_errors
@with_model_options
def diff(
    old: Annotated[
        str,
        typer.Argument(
            help="A report (a .csv or .json file, as archprof summary -f csv or -f json writes it) or a model in"
            " any form summary takes (a name, a .pt, .pt2 or .py:factory file, module:factory).",
            show_default=False,
        ),
    ],
    new: Annotated[str, typer.Argument(help="The same, to compare with OLD.", show_default=False)],
    options=None,  # with_model_options: the shared options, read
    format: FormatOpt = None,
    output: OutputOpt = None,
    columns: columns_option("Params,MACs", always="the change and the layer's name always show") = None,
    wide: WideOpt = False,
) -> None:
    """What changed between two reports or models: layers added, removed or changed, and the totals.

    The table, Markdown and HTML list the layers as summary does, as the module tree: each
    module first, its own change then its subtree's in parentheses. CSV and JSON list one
    entry a layer, in the order the layers ran.

    Examples:

    archprof diff resnet18 resnet34
    archprof summary resnet18 -o before.csv
    archprof diff before.csv resnet18 --input 3x160x160 --format json
    archprof diff resnet18 mobilenet_v2 -o diff.html"""
    from archprof import diff as diffing

    chosen = choose_format(format, output)
    choice = column_choice(columns, wide, chosen)
    read = (*input_files(old, "the input"), *input_files(new, "the input"), ("the --weights file", options.weights))
    check_output(output, "--output", *read)
    result = diffing.diff(old, new, **options.keywords())

    def table(layout):
        from archprof.render import diff_tables

        return diff_tables(result, layout)

    # Markdown is the table's (emit's): its columns, its names written as every Markdown table writes them.
    writers = {Format.csv: result.to_csv, Format.json: result.to_json, Format.html: lambda: _diff_html(result)}
    emit(chosen, output, table, writers, choice)


def _diff_html(result) -> str:
    from archprof.render.diff_html import diff_html

    return diff_html(result)


ZooFormatOpt = format_option(Format.table, Format.csv, Format.json, Format.markdown)


@app.command()
@user_errors
def zoo(format: ZooFormatOpt = None, output: OutputOpt = None) -> None:
    """List the built-in models with their parameter count and default input.

    Examples:

    archprof zoo
    archprof zoo -f json"""
    from archprof.errors import ArchprofError
    from archprof.output import json_text
    from archprof.report.formats import csv_text
    from archprof.units import shape_text
    from archprof.zoo import MODELS

    chosen = choose_format(format, output)
    if chosen is Format.html:
        raise ArchprofError("zoo writes a table, CSV, JSON or Markdown, not HTML")
    check_output(output, "--output")
    models = list(MODELS.values())

    def table(layout):
        from archprof.render import zoo_table

        return zoo_table(models, layout.width)

    header = ("name", "param_count", "input_size", "description")

    def records():  # for the files only: the table counts the parameters itself
        return [(m.name, m.param_count(), m.input_size, m.description) for m in models]

    writers = {
        Format.csv: lambda: csv_text(header, [(n, p, shape_text(i), d) for n, p, i, d in records()], (False,) * 4),
        Format.json: lambda: json_text(
            [dict(zip(header, (n, p, list(i), d), strict=True)) for n, p, i, d in records()]
        ),
    }
    emit(chosen, output, table, writers)
