"""Commands on one model: summary, profile, memory, rf."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Annotated, Optional

import typer

from archprof.cli.app import app
from archprof.cli.emit import emit_report, one_model_targets, write_plot, write_text
from archprof.cli.options import (
    Format,
    FormatOpt,
    HideIdleOpt,
    ModelArg,
    OutputOpt,
    QuietOpt,
    WideOpt,
    checked_hide_idle,
    columns_option,
    count_option,
    optimizer_option,
    plot_option,
    with_model_options,
)
from archprof.cli.streams import fitted_width, progress_display, say, status_display, user_errors
from archprof.measure import DEFAULT_REPEAT, DEFAULT_WARMUP, MAX_PASSES

DepthOpt = Annotated[
    Optional[int],
    typer.Option("--depth", "-d", min=0, metavar="N", help="Roll rows up below this module depth.", show_default=False),
]


@app.command()
@user_errors
@with_model_options
def summary(
    model: ModelArg,
    options=None,  # with_model_options: the shared options, read
    depth: DepthOpt = None,
    train: Annotated[
        bool,
        typer.Option(
            "--train", help="One training step: the backward pass's MACs per layer (input and weight gradients)."
        ),
    ] = False,
    optimizer: optimizer_option("With --train, the optimizer whose state the step's peak in the totals holds") = None,
    format: FormatOpt = None,
    output: OutputOpt = None,
    columns: columns_option("Output shape,MACs,% MACs") = None,
    wide: WideOpt = False,
    top: Annotated[
        Optional[int],
        typer.Option(
            "--top",
            min=1,
            metavar="N",
            help="Only the N rows with the most of --by, largest first, a flat list with each figure's share",
            show_default=False,
        ),
    ] = None,
    by: Annotated[
        Optional[str],
        typer.Option(
            "--by",
            metavar="KEY",
            help="What --top ranks rows by: macs, params, flops, elementwise-flops or activation",
            show_default="macs",
        ),
    ] = None,
    hide_idle: HideIdleOpt = False,
) -> None:
    """Per-layer output shapes, parameters, MACs, FLOPs and activation memory, with totals.

    Several inputs: one --input per input of forward, e.g. --input 3x224x224 --input 10.
    A model whose forward cannot run on the meta device is traced with a real forward on
    the CPU (a warning says so). --train traces a training step, its backward pass included
    (on meta too): gradient MACs per layer and the step's FLOPs in the totals.

    A module's row shows its own operations (a block's residual add), then in dim
    parentheses its subtree's sums. Activations: the bytes of the outputs the row's operations
    made (none for an nn.Identity, whose output is its input). Live after:
    the activation bytes live right after the row (what later rows still read). FLOPs:
    2 x MACs; Elementwise FLOPs: activations, pooling, norms (shown where the width allows).

    --top N lists the N rows with the most MACs (--by another figure), each row's own
    figures (a module's subtree with --depth), beside their shares of the model's totals.
    --hide-idle leaves out the rows of placeholders (timm's models call an nn.Identity in
    a third of their rows), in the table and Markdown, as in memory and rf; CSV, JSON and
    HTML hold every row.

    Examples:

    archprof summary resnet50
    archprof summary resnet50 --depth 2 -o resnet50.csv
    archprof summary resnet50 --top 10 --by activation
    archprof summary timm:mobilenetv3_large_100 --hide-idle
    archprof summary resnet50 --train --optimizer adam
    archprof summary examples/my_models.py:small_cnn -i 3x64x64 -a num_classes=100"""
    from archprof.analysis import analyze

    chosen, choice = one_model_targets(model, options, format, output, columns, wide)
    table = _ranking(top, by, chosen, hide_idle)
    optimizer = "sgd" if optimizer is None else optimizer  # any other refused without --train, as by analyze
    report = analyze(model, training=train, optimizer=optimizer, **options.keywords())
    if depth is not None:
        report = report.rollup(depth)
    emit_report(report, chosen, output, table=table, choice=choice)


def _ranking(top: int | None, by: str | None, chosen: Format, hide_idle: bool):
    """The table `summary` draws, the summary's or `--top`'s list, its options checked before any work."""
    from archprof.errors import ArchprofError

    checked_hide_idle(hide_idle, chosen)
    if top is None:
        if by is not None:
            raise ArchprofError("--by says what --top ranks rows by: add --top N")
        from archprof.render.summary import summary_table

        return partial(summary_table, hide_idle=hide_idle)  # without it, the idle rows counted under the table
    from archprof.render.summary import RANKED_BY, ranked_table

    key = "macs" if by is None else by.strip().lower()
    if key not in RANKED_BY:
        raise ArchprofError(f"cannot rank rows by '{by}': choose one of {', '.join(RANKED_BY)}")
    if chosen not in (Format.table, Format.markdown):
        raise ArchprofError(f"--top ranks the rows of the table and Markdown: {chosen.value} holds every row to sort")
    return lambda report, layout: ranked_table(report, key, top, layout)


@app.command()
@user_errors
@with_model_options(hidden=("fold_bn",))  # refused: profile times the model as it is
def profile(
    model: ModelArg,
    options=None,  # with_model_options: the shared options, read
    device: Annotated[
        Optional[str],
        typer.Option("--device", help="cpu or cuda (cuda:N)", show_default="cuda if torch sees a GPU, else cpu"),
    ] = None,
    warmup: Annotated[
        int, typer.Option("--warmup", metavar="N", help="Untimed passes first (at most 1,000,000).")
    ] = DEFAULT_WARMUP,
    repeat: Annotated[
        int, typer.Option("--repeat", metavar="N", help="Timed passes, 1 to 1,000,000 (the median is reported).")
    ] = DEFAULT_REPEAT,
    peak_flops: Annotated[
        Optional[str],
        typer.Option(
            "--peak-flops",
            metavar="RATE",
            help="The device's peak FLOP/s, e.g. 989T",
            show_default="measured once, then cached",
        ),
    ] = None,
    bandwidth: Annotated[
        Optional[str],
        typer.Option(
            "--bandwidth",
            metavar="RATE",
            help="Its memory bandwidth, e.g. 3.35TB/s",
            show_default="measured once, then cached",
        ),
    ] = None,
    remeasure: Annotated[
        bool,
        typer.Option("--remeasure", help="Measure the device's ceilings again, whatever the cache holds."),
    ] = False,
    plot: plot_option("the layers on the roofline") = None,
    quiet: QuietOpt = False,
    depth: DepthOpt = None,
    format: FormatOpt = None,
    output: OutputOpt = None,
    columns: columns_option("Time,Share,Bound") = None,
    wide: WideOpt = False,
) -> None:
    """Run the model for real, timed per layer, and set the measurements beside the analysis.

    With random weights: latency (median, p90), throughput, achieved FLOP/s, the roofline,
    and a cross-check of shapes, FLOPs and peak memory against the real run (mismatches in
    red).

    Several inputs: one --input per input of forward, as for `summary`. --device cuda
    without a GPU torch can see is an error (exit 2).

    The device's peak FLOP/s and bandwidth are measured once (a large matrix product, a
    large copy) and cached per device, thread count, torch version and dtype in
    $ARCHPROF_CACHE_DIR, else $XDG_CACHE_HOME/archprof, else ~/.cache/archprof
    (ceilings.json); the table says where each came from and how old it is. A cached
    ceiling that a layer beats is measured again; --remeasure measures both again;
    --peak-flops and --bandwidth give them by hand.

    --depth N gives a module at depth N one row: the sums of its rows' times, shares, bytes
    moved and roofline times, its rates worked out from those.

    Examples:

    archprof profile resnet18 --input 3x64x64 --device cpu --repeat 5
    archprof profile resnet18 --input 3x64x64 --remeasure --plot roofline.png
    archprof profile resnet50 --depth 1"""
    from archprof.api import profile as profile_model
    from archprof.errors import ArchprofError, errors_named
    from archprof.measure.device import resolve_device
    from archprof.render.profile import report_table
    from archprof.units import parse_bandwidth, parse_flops_rate

    # Everything a user can get wrong fails before any work.
    chosen, choice = one_model_targets(model, options, format, output, columns, wide, plot)
    with errors_named("--peak-flops"):  # as --fit names its size
        flops_rate = parse_flops_rate(peak_flops) if peak_flops is not None else None
    with errors_named("--bandwidth"):
        bytes_rate = parse_bandwidth(bandwidth) if bandwidth is not None else None
    count_option("--warmup", warmup, 0, MAX_PASSES)
    count_option("--repeat", repeat, 1, MAX_PASSES)
    target = resolve_device(device)
    if remeasure:
        from archprof.measure.ceilings import FIGURES, forget_device

        # A figure given by hand is neither measured nor cached: its cached value stays.
        to_measure = [figure for figure, given in zip(FIGURES, (flops_rate, bytes_rate), strict=True) if given is None]
        if not to_measure:
            raise ArchprofError("--remeasure has nothing to measure: --peak-flops and --bandwidth give both ceilings")
        forget_device(target, to_measure)
    with progress_display(quiet) as progress:
        report = profile_model(
            model,
            device=str(target),
            warmup=warmup,
            repeat=repeat,
            peak_flops=flops_rate,
            bandwidth=bytes_rate,
            progress=progress,
            **options.keywords(),
        )
    if depth is not None:
        report = report.rollup(depth)
    image = None
    if plot is not None:  # drawn before any file is written: one that cannot be drawn leaves the report's as it was
        from archprof.render.roofline import roofline_image

        image = roofline_image(report, plot)
    if image is not None:  # before the report: a plot that cannot be written leaves the report's file as it was
        write_plot(image, plot)
    emit_report(report, chosen, output, table=report_table, choice=choice)
    if chosen is not Format.table or output is not None:  # the table shows them; else say so here
        for line in report.measured.mismatches:
            say(f"MISMATCH {line}", fg="red", bold=True)


@app.command()
@user_errors
@with_model_options
def memory(
    model: ModelArg,
    options=None,  # with_model_options: the shared options, read
    depth: DepthOpt = None,
    train: Annotated[
        bool,
        typer.Option(
            "--train",
            help="Training memory: gradients, optimizer state, saved activations, the step's peak (backward too).",
        ),
    ] = False,
    optimizer: optimizer_option(
        "Optimizer whose state and update training memory holds, as torch.optim runs it on the CPU",
        " (docs/formulas.md: the options each name means)",
    ) = None,
    fit: Annotated[
        Optional[str],
        typer.Option(
            "--fit",
            metavar="SIZE",
            help="Find the largest batch whose predicted memory fits this size, e.g. 16GB, 16GiB, 512MB.",
            show_default=False,
        ),
    ] = None,
    measure: Annotated[
        bool,
        typer.Option(
            "--measure",
            help="Also run the model for real (on CUDA, else the CPU) and measure the peak of inference and of one"
            " training step (on the CPU with operators' workspace and without; in the JSON as measured_memory)."
            " Not with --fold-bn: the run is of the model as it is.",
        ),
    ] = False,
    plot: plot_option("the memory held over the forward, layer by layer,") = None,
    quiet: QuietOpt = False,
    hide_idle: HideIdleOpt = False,
    format: FormatOpt = None,
    output: OutputOpt = None,
    columns: columns_option("Peak in layer,Live after") = None,
    wide: WideOpt = False,
) -> None:
    """Memory per layer and in total: the inference peak, the training step's peak, what batch fits.

    Per layer: the output, the activations live after it and the peak within it. In total:
    the inference peak (parameters + buffers + largest live activations), or with --train
    the gradients, optimizer state, activations saved for backward and the training step's
    peak (forward then backward: parameters, optimizer state, and the activations and
    gradients held at the step's busiest op, named with its layer and phase). --fit SIZE
    finds the largest batch whose peak fits SIZE (16GB = 16e9 bytes, 16GiB = 16 x 2^30).

    Examples:

    archprof memory resnet50 --plot memory.png
    archprof memory resnet50 --depth 1
    archprof memory resnet50 --train --optimizer adamw --fit 16GB"""
    from archprof.analysis import analyze
    from archprof.errors import ArchprofError, errors_named
    from archprof.fit import fit_batch
    from archprof.measure.peak_memory import predicted_and_measured
    from archprof.passes.optimizer_state import optimizer_state_copies
    from archprof.render import memory_table
    from archprof.render.html import memory_html
    from archprof.units import human_bytes, in_binary_units, parse_size

    chosen, choice = one_model_targets(model, options, format, output, columns, wide, plot)
    checked_hide_idle(hide_idle, chosen)
    inputs, torch_dtype = options.inputs, options.dtype
    if optimizer is not None and not (train or measure):
        optimizer_state_copies(optimizer)  # an unknown name said first: --train would not mend it
        raise ArchprofError("--optimizer applies to training memory: add --train")
    if measure and options.fold_bn:  # it would set the unfolded model's peak beside the folded prediction
        raise ArchprofError("--measure runs the model as it is, BatchNorms unfolded, and trains it: drop --fold-bn")
    optimizer = "sgd" if optimizer is None else optimizer  # "" refused below, as any unknown name
    optimizer_state_copies(optimizer)
    analysed_with = optimizer if train else "sgd"  # with --measure alone, its training step takes it
    with errors_named("--fit"):  # as check names its limit: "--max-peak-memory: the size '0' ..."
        budget = parse_size(fit) if fit is not None else None
    if budget is not None and options.batch is not None:
        raise ArchprofError("--fit finds the batch itself: drop --batch")

    loaded = options.load(model)  # once, for every analysis
    found = None
    if budget is not None:
        binary = in_binary_units(fit)  # 512MiB shown back as 512.00 MiB, not 536.87 MB
        with status_display(quiet, f"finding the largest batch that fits in {human_bytes(budget, binary)}"):
            found = fit_batch(
                loaded,
                budget,
                inputs=inputs,
                dtype=torch_dtype,
                training=train,
                optimizer=analysed_with,
                fold_bn=options.fold_bn,
                binary=binary,
            )
        report = replace(found.report, batch_fit=found.as_dict())  # in the JSON too
    else:
        report = analyze(
            loaded,
            inputs=inputs,
            batch=options.batch,
            dtype=torch_dtype,
            training=train,
            optimizer=analysed_with,
            fold_bn=options.fold_bn,
        )
    notes = []
    if found is not None:
        notes.append(
            f"largest batch that fits in {found.budget_text}: {found.batch} "
            f"({human_bytes(found.bytes_at_batch, found.binary)}; {found.beyond_text})"
        )
    measured = None
    if measure:
        batch = report.input_shapes[0][0]
        _refuse_a_run_that_cannot_fit(_measured_peak(loaded, report, inputs, batch, torch_dtype, optimizer), batch)
        with status_display(quiet, f"measuring the peak of inference and of a training step at batch {batch}"):
            measured = predicted_and_measured(loaded, inputs, batch, torch_dtype, optimizer)
    if measured is not None:
        notes += [step.text(measured.device) for step in measured.steps]
        report = replace(report, measured_memory=measured)  # in the JSON too
    if depth is not None:
        report = report.rollup(depth)  # each row its subtree's highest peak
    table = partial(memory_table, fit=found, measured=measured, hide_idle=hide_idle)
    image = None
    if plot is not None:  # drawn before any file is written
        from archprof.render.memory_plot import memory_image

        image = memory_image(report, plot, fit=found)
    if image is not None:  # before the report, as in profile
        write_plot(image, plot)
    _emit_view(report, chosen, output, table, choice, partial(memory_html, report, found, measured))
    if chosen is not Format.table:
        for note in notes:
            say(note)


def _emit_view(report, chosen: Format, output, table, choice, page) -> None:
    """`emit_report` with `table` (rf's, memory's), whose HTML is `page()`: the command's own
    table as a page (`render.html.rf_html`, `memory_html`), not the summary's."""
    if chosen is Format.html:
        write_text(page(), output)
    else:
        emit_report(report, chosen, output, table=table, choice=choice)


def _measured_peak(loaded, report, inputs, batch: int, dtype, optimizer: str) -> int:
    """The most `memory --measure` will hold, predicted: it runs inference and a training step."""
    from archprof.analysis import analyze

    if not report.training:
        report = analyze(loaded, inputs=inputs, batch=batch, dtype=dtype, training=True, optimizer=optimizer)
    return max(report.totals.peak_memory_bytes, report.totals.training_peak_bytes)


def _refuse_a_run_that_cannot_fit(predicted: int, batch: int) -> None:
    """Refuse, before any real run, one whose predicted peak (with a margin) exceeds the memory
    the device it runs on has free: CUDA's, else the CPU's."""
    from archprof.measure.device import beyond_free_memory, too_large_for

    device, free = available_memory()
    if beyond_free_memory(predicted, free):
        raise too_large_for(
            f"--measure's run at batch {batch}", predicted, free, device, "give a smaller --batch or --fit"
        )


def available_memory() -> tuple[str, int | None]:
    """The device a measurement runs on (as `archprof.measure.peak_memory` picks it) and its free
    bytes: CUDA's free memory, or the system's available memory (None where it cannot tell)."""
    import torch

    from archprof.measure.device import free_memory

    if torch.cuda.is_available():
        return "cuda", free_memory(torch.device("cuda"))
    return "the CPU", free_memory(torch.device("cpu"))


def _final_field_layer(report) -> str:
    """The last feature map's layer (`metrics.final_field_row`: the one whose field compare
    and check read), as --layer names it. Refused where that name gives another unit: a
    later row of the same call (the model's own operations after it), whose field --layer
    would read."""
    from archprof.errors import ArchprofError
    from archprof.metrics import final_field_row
    from archprof.text import layer_label

    rows = report.rows()
    final = final_field_row(rows)
    if final is None:
        raise ArchprofError(f"{report.model} has no layer with a spatial receptive field: no unit box to give")
    name = layer_label(final["layer"], final["call"])
    last = next(row for row in reversed(rows) if (row["layer"], row["call"]) == (final["layer"], final["call"]))
    if last is not final:
        raise ArchprofError(
            f"--unit needs --layer here: the model's final field is that of an operation inside {name}, not of its"
            " output, which --layer names"
        )
    return name


@app.command()
@user_errors
@with_model_options
def rf(
    model: ModelArg,
    options=None,  # with_model_options: the shared options, read
    plot: plot_option("field size and effective stride against depth") = None,
    unit: Annotated[
        Optional[str],
        typer.Option(
            "--unit",
            help="Print the exact input box of this unit of --layer (without it, of the last feature map's layer,"
            " whose field compare and check read): its index along each spatial dimension of the input, in the"
            " input's order, e.g. 3,4.",
            show_default=False,
        ),
    ] = None,
    layer: Annotated[
        Optional[str],
        typer.Option(
            "--layer",
            help="The layer whose --unit to give, as the table names it, e.g. features.10, (model) or"
            " 'layer1.0.relu (call 2)' (a module's second call).",
            show_default=False,
        ),
    ] = None,
    depth: DepthOpt = None,
    format: FormatOpt = None,
    output: OutputOpt = None,
    columns: columns_option("Field,Stride,Coverage") = None,
    wide: WideOpt = False,
    hide_idle: HideIdleOpt = False,
) -> None:
    """Receptive field of every layer: the input pixels that can reach its output units.

    Columns: Field, the centre unit's field size per spatial dimension, padding positions
    included, with its range over the layer's units where they differ ("global" where every
    unit reads the whole input: global pooling, attention over all positions, a linear layer
    over a flattened map; "undefined" where archprof cannot follow the network, with the
    reason below the table). Stride, the effective stride: input pixels between neighbouring
    units, a fraction after upsampling (1/2). Centred: unit 0 stands for input pixels
    [0, stride - 1], centre (stride - 1) / 2; "yes" when unit 0's field's centre
    (start + end) / 2 is that point in every dimension. Coverage: the share of the input's
    pixels unit 0's field reaches. A module's row, before its layers' as in the summary, holds
    the field of its output. The last line names the first layer whose field covers the
    whole input. CSV and JSON write the full report, whose receptive_field* columns hold unit
    0's numbers; Markdown writes this table. --depth N gives a module at depth N one row: the
    field of its output (its last layer's).

    --unit 3,4 --layer L prints the exact input box of one unit of layer L's output: the
    first and last input pixel, per spatial dimension, that can reach it (padding excluded);
    without --layer, L is the last feature map's layer, whose field compare and check read.
    Its coordinates follow the input's spatial dimensions, in the input's order: 3 along the
    input's first (H), 4 along its second (W), whichever tensor dimension of L's output runs
    along each (after a transpose of H and W, 3,4 is the output's unit [..., 4, 3]).

    Examples:

    archprof rf vgg16
    archprof rf resnet18 --unit 3,4 --layer layer2.0.conv1
    archprof rf resnet50 --depth 2
    """
    from rich.console import Group

    from archprof.analysis import analysis
    from archprof.errors import ArchprofError
    from archprof.passes.layers import group_layers
    from archprof.passes.receptive_field import row_states, spreads
    from archprof.render import receptive_field_table, to_text
    from archprof.render.base import Prose
    from archprof.render.fields import unit_box_text
    from archprof.render.html import rf_html
    from archprof.render.rf_plot import fields_image

    chosen, choice = one_model_targets(model, options, format, output, columns, wide, plot)
    checked_hide_idle(hide_idle, chosen)
    if layer is not None and unit is None:
        raise ArchprofError("--layer names the layer of --unit: add --unit, e.g. --unit 3,4 --layer features.10")
    if unit is not None and (plot is not None or output is not None or format is not None):
        raise ArchprofError("--unit prints one unit's input box: drop --plot, --output and --format")
    found = analysis(
        options.load(model), None, options.batch, options.dtype, inputs=options.inputs, fold_bn=options.fold_bn
    )
    report = found.report
    states, spatial = row_states(found.graph, group_layers(found.graph))
    # Before any roll-up: a layer inside a module rolled into one row by --depth is still named
    # (a rolled-up module's unit is its output's, as the full table's container rows give it).
    if unit is not None:  # wrapped to the width as a table is, not cut by the terminal mid-figure
        layer = layer if layer is not None else _final_field_layer(report)
        write_text(to_text(Group(Prose(unit_box_text(report, states, spatial, layer, unit))), fitted_width()), None)
        return
    if depth is not None:
        states = [states[report.output_row(indices)] for _, indices in report.rollup_groups(depth)]
        report = report.rollup(depth)
    spread = spreads(states, spatial)
    table = partial(receptive_field_table, spreads=spread, hide_idle=hide_idle)
    image = fields_image(report, spread, plot) if plot is not None else None  # drawn before any file is written
    if image is not None:  # before the report, as in profile
        write_plot(image, plot)
    _emit_view(report, chosen, output, table, choice, partial(rf_html, report, spread))
