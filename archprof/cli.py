"""The `archprof` command: parse, call the library, render, map errors to exit codes.

Exit codes: 0 success, 1 a budget was exceeded, 2 bad input (one line on stderr)."""

from __future__ import annotations

import errno
import os
import sys
from contextlib import contextmanager
from enum import Enum
from functools import wraps
from pathlib import Path
from typing import Annotated, Optional

import typer

from archprof import __version__
from archprof.measure import DEFAULT_REPEAT, DEFAULT_WARMUP, MAX_PASSES

app = typer.Typer(
    name="archprof",
    help="Static analysis and cost profiling of CNN architectures: shapes, parameters, MACs/FLOPs, memory.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    markdown = "markdown"


class DType(str, Enum):
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


_SUFFIX_FORMATS = {".csv": Format.csv, ".json": Format.json, ".md": Format.markdown, ".txt": Format.table}

ModelArg = Annotated[
    str,
    typer.Argument(
        help="A built-in name (see `archprof zoo`), torchvision:NAME, timm:NAME, package.module:factory,"
        " path/to/file.py:factory, a TorchScript file (.pt) or an exported program (.pt2).",
        show_default=False,
    ),
]
FILE_WIDTH = 160  # columns of a table written to a file
MAX_BATCH = 2**62  # beyond it no tensor's element count fits in int64
InputsOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--input",
        "-i",
        help="One input's per-sample shape: 3x224x224, 77:int64 (a dtype after the colon), mask=77:bool (passed by"
        " keyword); repeat it for each input of forward, in order (default: the model's usual input)",
        show_default=False,
    ),
]
ArgsOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--arg",
        "-a",
        help="key=value passed to the factory (10, 0.5, true, none and text are read as such); repeatable",
        show_default=False,
    ),
]
WeightsOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--weights",
        "-w",
        help="A checkpoint (state dict) for a built-in or a factory, loaded with weights_only=True and checked"
        " against the model (the figures do not depend on it)",
        show_default=False,
    ),
]
TrustPickleOpt = Annotated[
    bool,
    typer.Option(
        "--trust-pickle",
        help="Let a file that needs code to unpickle load (a pickled module): only for files you trust.",
    ),
]

FormatOpt = Annotated[
    Optional[Format],
    typer.Option(
        "--format", "-f", help="Output format [default: from --output's suffix, else table]", show_default=False
    ),
]
OutputOpt = Annotated[
    Optional[Path], typer.Option("--output", "-o", help="Write the report to this file.", show_default=False)
]


# Batch and dtype where they default to the model's own (an exported program fixes both).
ModelBatchOpt = Annotated[
    Optional[int],
    typer.Option(
        "--batch", "-b", help="Batch size, 1 to 2^62 (default: 1, or an exported program's)", show_default=False
    ),
]
ModelDTypeOpt = Annotated[
    Optional[DType],
    typer.Option("--dtype", help="Data type of parameters and activations (default: the model's own)"),
]


def _model_options(input, batch, dtype, arg, weights, trust_pickle):
    """The options every model command takes, read once (`archprof.load.ModelOptions`)."""
    from archprof.load import ModelOptions, parse_args, parse_dtype, parse_input_spec

    return ModelOptions(
        inputs=tuple(parse_input_spec(text) for text in input) if input else None,
        batch=_checked_batch(batch) if batch is not None else None,
        dtype=parse_dtype(dtype.value) if dtype is not None else None,
        args=parse_args(arg),
        weights=weights,
        trust_pickle=trust_pickle,
    )


def _version(value: bool) -> None:
    if value:
        with _standard_output():
            typer.echo(f"archprof {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """archprof: know what a CNN costs before you run it."""


def _user_errors(command):
    """Print an ArchprofError on one line (`_say`) and exit 2, without a traceback."""

    @wraps(command)
    def run(*args, **kwargs):
        import warnings

        from archprof.errors import ArchprofError, ArchprofWarning

        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            # archprof's own warnings (the CPU fallback) as one line, each once.
            if issubclass(category, ArchprofWarning):
                _say(f"warning: {message}")
            else:
                shown(message, category, filename, lineno, file, line)

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("once", ArchprofWarning)
                warnings.showwarning = show
                return command(*args, **kwargs)
        except ArchprofError as exc:
            _say(f"error: {exc}")
            raise typer.Exit(2) from None

    return run


def _say(text: str, **style) -> None:
    """`text` as one line on stderr, whatever it holds: a newline, a carriage return, a
    line separator (U+2028), any other unprintable character or a lone surrogate (a
    file name that is not UTF-8) is written as its escape (\\n, \\u2028, \\udcff); what
    stderr's encoding lacks, as a backslash escape."""
    printable = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    typer.secho(printable.encode(encoding, "backslashreplace").decode(encoding), err=True, **style)


@contextmanager
def _standard_output():
    """Around every print to standard output, flushed here: a full disk ends the command
    with one line and exit 2, a reader that has gone (`| head -1`) quietly with 141 (as
    a process killed by SIGPIPE), never a traceback. Standard output then points at
    os.devnull, so that the interpreter's own flush at exit has nothing left to fail on."""
    try:
        yield
        sys.stdout.flush()
    except OSError as exc:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (open until exit)
        if exc.errno == errno.EPIPE:
            raise typer.Exit(141) from None
        _say(f"error: cannot write to standard output: {exc.strerror or exc}")
        raise typer.Exit(2) from None


@app.command()
@_user_errors
def summary(
    model: ModelArg,
    input: InputsOpt = None,
    batch: ModelBatchOpt = None,
    dtype: ModelDTypeOpt = None,
    arg: ArgsOpt = None,
    weights: WeightsOpt = None,
    trust_pickle: TrustPickleOpt = False,
    depth: Annotated[
        Optional[int],
        typer.Option("--depth", "-d", min=0, help="Roll rows up below this module depth.", show_default=False),
    ] = None,
    format: FormatOpt = None,
    output: OutputOpt = None,
) -> None:
    """Per-layer output shapes, parameters, MACs, FLOPs and activation memory, with totals.

    Several inputs: one --input per input of forward, e.g. --input 3x224x224 --input 10.
    A model whose forward cannot run on the meta device is traced with a real forward on
    the CPU (a warning says so)."""
    from archprof.analysis import analyze

    chosen = _choose_format(format, output)
    _check_output(output, "--output", *_input_files(model), ("the --weights file", weights))
    report = analyze(model, **_model_options(input, batch, dtype, arg, weights, trust_pickle).keywords())
    if depth is not None:
        report = report.rollup(depth)
    _emit_report(report, chosen, output)


@app.command()
@_user_errors
def profile(
    model: ModelArg,
    input: InputsOpt = None,
    batch: ModelBatchOpt = None,
    dtype: ModelDTypeOpt = None,
    arg: ArgsOpt = None,
    weights: WeightsOpt = None,
    trust_pickle: TrustPickleOpt = False,
    device: Annotated[
        Optional[str],
        typer.Option("--device", help="cpu or cuda (cuda:N); default: cuda if torch sees a GPU, else cpu"),
    ] = None,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed passes first (at most 1,000,000).")] = DEFAULT_WARMUP,
    repeat: Annotated[
        int, typer.Option("--repeat", help="Timed passes, 1 to 1,000,000 (the median is reported).")
    ] = DEFAULT_REPEAT,
    peak_flops: Annotated[
        Optional[str],
        typer.Option("--peak-flops", help="The device's peak FLOP/s, e.g. 989T (default: measured once, then cached)"),
    ] = None,
    bandwidth: Annotated[
        Optional[str],
        typer.Option("--bandwidth", help="Its memory bandwidth, e.g. 3.35TB/s (default: measured once, then cached)"),
    ] = None,
    plot: Annotated[
        Optional[Path],
        typer.Option(
            "--plot",
            help="Draw the layers on the roofline into this PNG/SVG/PDF (needs matplotlib).",
            show_default=False,
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    format: FormatOpt = None,
    output: OutputOpt = None,
) -> None:
    """Run the model for real, timed per layer, and set the measurements beside the analysis.

    With random weights: latency (median, p90), throughput, achieved FLOP/s, the roofline,
    and a cross-check of shapes, FLOPs and peak memory against the real run (mismatches in
    red).

    Several inputs: one --input per input of forward, as for `summary`. --device cuda
    without a GPU torch can see is an error (exit 2).

    The device's peak FLOP/s and bandwidth are measured once (a large matrix product, a
    large copy) and cached in $ARCHPROF_CACHE_DIR, else $XDG_CACHE_HOME/archprof, else
    ~/.cache/archprof (ceilings.json); --peak-flops and --bandwidth give them by hand."""
    from archprof.api import profile as profile_model
    from archprof.measure.device import resolve_device
    from archprof.render import profile_table
    from archprof.render.roofline import check_plot_target
    from archprof.units import parse_bandwidth, parse_flops_rate

    chosen = _choose_format(format, output)
    inputs_read = (*_input_files(model), ("the --weights file", weights))
    _check_output(output, "--output", *inputs_read)
    _check_output(plot, "--plot", *inputs_read)
    # Everything a user can get wrong fails before any work.
    options = _model_options(input, batch, dtype, arg, weights, trust_pickle)
    flops_rate = parse_flops_rate(peak_flops) if peak_flops is not None else None
    bytes_rate = parse_bandwidth(bandwidth) if bandwidth is not None else None
    if plot is not None:
        check_plot_target(plot)
    _count_option("--warmup", warmup, 0, MAX_PASSES)
    _count_option("--repeat", repeat, 1, MAX_PASSES)
    target = resolve_device(device)
    with _progress(quiet) as progress:
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
    _emit_report(report, chosen, output, table=profile_table)
    if plot is not None:
        from archprof.render.roofline import plot_roofline

        plot_roofline(report, plot)
        _say(f"wrote {plot}")
    if chosen is not Format.table or output is not None:  # the table shows them; else say so here
        for line in report.measured.mismatches:
            _say(f"MISMATCH {line}", fg="red", bold=True)


class _progress:
    """A rich progress display on stderr while profiling (none when stderr is not a
    terminal, or with --quiet); yields the callback `archprof.profile` takes, or None."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = None

    def __enter__(self):
        from rich.console import Console

        console = Console(stderr=True)
        if self.quiet or not console.is_terminal:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.bar.__enter__()
        tasks: dict[str, int] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = self.bar.add_task(phase, total=total)
            self.bar.update(tasks[phase], completed=done, total=total)

        return update

    def __exit__(self, *exc) -> bool:
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False


@app.command()
@_user_errors
def memory(
    model: ModelArg,
    input: InputsOpt = None,
    batch: ModelBatchOpt = None,
    dtype: ModelDTypeOpt = None,
    train: Annotated[
        bool,
        typer.Option("--train", help="Training memory: parameters, gradients, optimizer state and saved activations."),
    ] = False,
    optimizer: Annotated[
        Optional[str],
        typer.Option(
            "--optimizer", help="Optimizer of the training estimate: sgd (default), momentum, adam.", show_default=False
        ),
    ] = None,
    fit: Annotated[
        Optional[str],
        typer.Option(
            "--fit",
            help="Find the largest batch whose predicted memory fits this size, e.g. 16GB, 16GiB, 512MB.",
            show_default=False,
        ),
    ] = None,
    measure: Annotated[
        bool,
        typer.Option(
            "--measure", help="Also run the model on CUDA: max_memory_allocated for inference and one training step."
        ),
    ] = False,
    arg: ArgsOpt = None,
    weights: WeightsOpt = None,
    trust_pickle: TrustPickleOpt = False,
    format: FormatOpt = None,
    output: OutputOpt = None,
) -> None:
    """Memory per layer and in total: the inference peak, the training estimate, what batch fits.

    Per layer: the output, the activations live after it and the peak within it. In total:
    the inference peak (parameters + buffers + largest live activations), or with --train
    the training estimate (parameters, gradients, optimizer state, activations saved for
    backward). --fit SIZE finds the largest batch whose prediction fits SIZE (16GB = 16e9
    bytes, 16GiB = 16 x 2^30)."""
    from functools import partial

    from archprof.analysis import analyze
    from archprof.errors import ArchprofError
    from archprof.fit import fit_batch
    from archprof.measure.cuda_memory import predicted_and_measured, require_cuda
    from archprof.passes.memory import optimizer_state_copies
    from archprof.render import memory_table
    from archprof.units import human_bytes, parse_size

    chosen = _choose_format(format, output)
    _check_output(output, "--output", *_input_files(model), ("the --weights file", weights))
    options = _model_options(input, batch, dtype, arg, weights, trust_pickle)
    inputs, torch_dtype = options.inputs, options.dtype
    if optimizer is not None and not (train or measure):
        raise ArchprofError("--optimizer applies to training memory: add --train")
    optimizer = optimizer or "sgd"
    optimizer_state_copies(optimizer)
    budget = parse_size(fit) if fit is not None else None
    if budget is not None and batch is not None:
        raise ArchprofError("--fit finds the batch itself: drop --batch")
    if measure:
        require_cuda()  # before any analysis: fail fast

    loaded = options.load(model)  # once, for every analysis
    found = None
    if budget is not None:
        found = fit_batch(loaded, budget, inputs=inputs, dtype=torch_dtype, training=train, optimizer=optimizer)
        report = found.report
    else:
        report = analyze(
            loaded, inputs=inputs, batch=options.batch, dtype=torch_dtype, training=train, optimizer=optimizer
        )
    notes = []
    if found is not None:
        notes.append(
            f"largest batch that fits in {human_bytes(found.budget_bytes)}: {found.batch} "
            f"({human_bytes(found.bytes_at_batch)}; batch {found.batch + 1} needs {human_bytes(found.bytes_at_next)})"
        )
    measured = (
        predicted_and_measured(loaded, inputs, report.input_shapes[0][0], torch_dtype, optimizer) if measure else None
    )
    if measured is not None:
        notes += [f"{label}: predicted {p:,} B, measured {m:,} B on {measured[0]}" for label, p, m in measured[1]]
    _emit_report(report, chosen, output, table=partial(memory_table, fit=found, measured=measured))
    if chosen is not Format.table:
        for note in notes:
            _say(note)


@app.command()
@_user_errors
def rf(
    model: ModelArg,
    input: InputsOpt = None,
    batch: ModelBatchOpt = None,
    dtype: ModelDTypeOpt = None,
    arg: ArgsOpt = None,
    weights: WeightsOpt = None,
    trust_pickle: TrustPickleOpt = False,
    format: FormatOpt = None,
    output: OutputOpt = None,
) -> None:
    """Receptive field of every layer: the input pixels that can reach its output unit 0.

    Columns: Field, the field's size per spatial dimension, padding positions included
    ("input" after global pooling, a flatten or a linear layer; "undefined" where it cannot
    be computed exactly, with the reason below the table). Stride, the effective stride: input
    pixels between neighbouring units. Centred: unit 0 stands for input pixels [0, stride - 1],
    centre (stride - 1) / 2; "yes" when the field's centre (start + end) / 2 is that point in
    every dimension. Coverage: the share of the input's pixels the field reaches (per
    dimension the part inside the input over its size, multiplied). The last line names the
    first layer whose field covers the whole input. CSV, JSON and Markdown write the full
    report, whose receptive_field* columns hold the same numbers.
    """
    from archprof.analysis import analyze
    from archprof.render import receptive_field_table

    chosen = _choose_format(format, output)
    _check_output(output, "--output", *_input_files(model), ("the --weights file", weights))
    report = analyze(model, **_model_options(input, batch, dtype, arg, weights, trust_pickle).keywords())
    _emit_report(report, chosen, output, table=receptive_field_table)


@app.command()
@_user_errors
def compare(
    models: Annotated[
        list[str],
        typer.Argument(
            help="Models in any form summary takes (built-in names, specs, files); the first is the baseline of the"
            " ratios.",
            show_default=False,
        ),
    ],
    input: InputsOpt = None,
    batch: ModelBatchOpt = None,
    dtype: ModelDTypeOpt = None,
    arg: ArgsOpt = None,
    weights: WeightsOpt = None,
    trust_pickle: TrustPickleOpt = False,
    sort: Annotated[
        Optional[str],
        typer.Option(
            "--sort",
            "-s",
            help="Sort ascending by params, macs, flops, activation, peak-memory, receptive-field, latency or model.",
            show_default=False,
        ),
    ] = None,
    profile: Annotated[
        bool,
        typer.Option("--profile", help="Also time each model on the CPU (median of at least 5 runs, random weights)."),
    ] = False,
    format: FormatOpt = None,
    output: OutputOpt = None,
) -> None:
    """Models side by side: parameters, MACs, FLOPs, memory, receptive field, and ratios to the first."""
    from archprof.comparison import compare as compare_models
    from archprof.comparison import (
        comparison_cells,
        comparison_csv,
        comparison_json,
        comparison_markdown,
        sort_comparison,
    )

    chosen = _choose_format(format, output)
    read = [found for spec in models for found in _input_files(spec)]
    _check_output(output, "--output", *read, ("the --weights file", weights))
    options = _model_options(input, batch, dtype, arg, weights, trust_pickle)
    frame = compare_models(models, profile=profile, **options.keywords())
    if sort is not None:
        frame = sort_comparison(frame, sort)

    def table(width: int):
        from archprof.render import comparison_table

        return comparison_table(*comparison_cells(frame), baseline=frame.attrs.get("baseline"), width=width)

    _emit(
        chosen,
        output,
        table,
        {
            Format.csv: lambda: comparison_csv(frame),
            Format.json: lambda: comparison_json(frame),
            Format.markdown: lambda: comparison_markdown(frame),
        },
    )


def _limit_option(name: str, example: str):
    return Annotated[Optional[str], typer.Option(name, help=f"e.g. {example}", show_default=False)]


@app.command()
@_user_errors
def check(
    model: Annotated[
        Optional[str],
        typer.Argument(
            help="A model in any form summary takes (default: every model in the budget file)",
            show_default=False,
        ),
    ] = None,
    max_params: _limit_option("--max-params", "30M (K, M, G, T: decimal)") = None,
    max_macs: _limit_option("--max-macs", "5G") = None,
    max_flops: _limit_option("--max-flops", "10G") = None,
    max_activation: _limit_option("--max-activation", "200MB (kB/MB/GB decimal, KiB/MiB/GiB binary)") = None,
    max_peak_memory: _limit_option("--max-peak-memory", "1GB: inference peak, parameters included") = None,
    min_receptive_field: _limit_option("--min-receptive-field", "200 (pixels, last spatial layer)") = None,
    max_training_memory: _limit_option("--max-training-memory", "16GB: the training estimate") = None,
    optimizer: Annotated[
        Optional[str],
        typer.Option(
            "--optimizer", help="For --max-training-memory: sgd (default), momentum, adam, adamw.", show_default=False
        ),
    ] = None,
    input: InputsOpt = None,
    batch: ModelBatchOpt = None,
    dtype: ModelDTypeOpt = None,
    arg: ArgsOpt = None,
    weights: WeightsOpt = None,
    trust_pickle: TrustPickleOpt = False,
    config: Annotated[
        Optional[Path],
        typer.Option(
            "--config",
            "-c",
            help="Budget file (default: ./archprof.toml, else the tool.archprof table of ./pyproject.toml)",
            show_default=False,
        ),
    ] = None,
    junit: Annotated[
        Optional[Path],
        typer.Option("--junit", help="Also write JUnit XML (one testcase per limit).", show_default=False),
    ] = None,
) -> None:
    """Fail (exit 1) when a model exceeds its budget: limits from the options or a budget file.

    Exit 0 when every limit holds, 1 when one is exceeded, 2 on bad input. With
    GITHUB_STEP_SUMMARY set (GitHub Actions), the verdict is appended there as Markdown."""
    import os

    from archprof import budget
    from archprof.render import budget_table

    limits = {
        "max-params": max_params,
        "max-macs": max_macs,
        "max-flops": max_flops,
        "max-activation": max_activation,
        "max-peak-memory": max_peak_memory,
        "min-receptive-field": min_receptive_field,
        "max-training-memory": max_training_memory,
    }
    entries = budget.plan_check(
        model,
        limits,
        config=config,
        options=_model_options(input, batch, dtype, arg, weights, trust_pickle),
        optimizer=optimizer,
    )
    if junit is not None:
        budget_file = config or budget.find_budget_file()
        model_files = [found for entry in entries for found in _input_files(entry.model, base=entry.search_dir)]
        _check_output(junit, "--junit", ("the budget file", budget_file), ("the --weights file", weights), *model_files)
    verdicts = [verdict for entry in entries for verdict in budget.check_entry(entry)]
    with _standard_output():
        _console().print(budget_table(budget.verdict_rows(verdicts)))
    if junit is not None:
        from archprof.output import write_atomically

        write_atomically(junit, budget.junit_xml(verdicts))
        _say(f"wrote {junit}")
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        try:
            budget.append_step_summary(verdicts, step_summary)
        except OSError as exc:
            _say(f"warning: cannot append to GITHUB_STEP_SUMMARY ({step_summary}): {exc.strerror}")
    if not all(verdict.passed for verdict in verdicts):
        raise typer.Exit(1)


@app.command()
@_user_errors
def diff(
    old: Annotated[
        str, typer.Argument(help="A CSV report (archprof summary -f csv) or a model spec.", show_default=False)
    ],
    new: Annotated[str, typer.Argument(help="The same, to compare with OLD.", show_default=False)],
    input: InputsOpt = None,
    batch: ModelBatchOpt = None,
    dtype: ModelDTypeOpt = None,
    arg: ArgsOpt = None,
    weights: WeightsOpt = None,
    trust_pickle: TrustPickleOpt = False,
    format: FormatOpt = None,
    output: OutputOpt = None,
) -> None:
    """What changed between two reports or models: layers added, removed or changed, and the totals."""
    from archprof import diff as diffing

    chosen = _choose_format(format, output)
    read = (*_input_files(old, "the input"), *_input_files(new, "the input"), ("the --weights file", weights))
    _check_output(output, "--output", *read)
    result = diffing.diff(old, new, **_model_options(input, batch, dtype, arg, weights, trust_pickle).keywords())

    def table(width: int):
        from archprof.render import diff_tables

        return diff_tables(result, width=width)

    _emit(
        chosen,
        output,
        table,
        {Format.csv: result.to_csv, Format.json: result.to_json, Format.markdown: result.to_markdown},
    )


def _emit(format: Format, output: Path | None, table, writers) -> None:
    """Print the table format (`table(width)`) or the text of `writers[format]()`, or write
    it (atomically) to `output`."""
    from archprof.output import write_atomically

    if format is Format.table:
        if output is None:
            console = _console()
            with _standard_output():
                console.print(table(console.width))
            return
        from archprof.render import to_text

        text = to_text(table(FILE_WIDTH))
    else:
        text = writers[format]()
        if output is None:
            with _standard_output():
                sys.stdout.write(text)
            return
    write_atomically(output, text)
    _say(f"wrote {output}")


@app.command()
@_user_errors
def zoo() -> None:
    """List the built-in models with their parameter count and default input."""
    from archprof.render import zoo_table
    from archprof.zoo import MODELS

    with _standard_output():
        _console().print(zoo_table(MODELS.values()))


def _choose_format(format: Format | None, output: Path | None) -> Format:
    from archprof.errors import ArchprofError

    if format is not None:
        return format
    if output is None:
        return Format.table
    try:
        return _SUFFIX_FORMATS[output.suffix.lower()]
    except KeyError:
        known = ", ".join(_SUFFIX_FORMATS)
        raise ArchprofError(f"cannot tell the format of '{output}' from its suffix ({known}): give --format") from None


def _check_output(output: Path | None, option: str, *inputs: tuple[str, str | Path | None]) -> None:
    """Fail before any work when `output` cannot be written (a directory, no such folder) or
    is one of the files the command reads, given as (what, path): the report would destroy it."""
    if output is None:
        return
    from archprof.errors import ArchprofError
    from archprof.output import check_output_target

    check_output_target(output)
    for what, path in inputs:
        if path is not None and _same_file(output, path):
            raise ArchprofError(f"{option} {output} would overwrite {what} '{path}': give another file name")


def _input_files(spec: str, what: str = "the model file", base: Path | None = None) -> list[tuple[str, Path]]:
    """The files a model spec may read, as `_check_output` takes them: the spec itself (a .pt,
    .pt2 or CSV file), the Python file of path/to/file.py:factory; also in `base`, where
    a budget file's specs are looked up first."""
    location = spec.rpartition(":")[0]
    paths = [Path(spec)] + ([Path(location)] if location.lower().endswith(".py") else [])
    if base is not None:
        paths += [base / path for path in paths]
    return [(what, path) for path in paths]


def _same_file(a: Path, b: str | Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):  # either is missing (nothing to destroy), or not a valid name
        return False


def _checked_batch(batch: int) -> int:
    return _count_option("--batch", batch, 1, MAX_BATCH)


def _count_option(option: str, value: int, low: int, high: int) -> int:
    """`value`, refused on one line outside [low, high] (typer takes any integer, 10**20 too)."""
    from archprof.errors import ArchprofError

    if value < low:
        raise ArchprofError(f"{option} must be at least {low}, got {value}")
    if value > high:
        raise ArchprofError(f"{option} must be at most {high:,}, got {value}")
    return value


def _emit_report(report, format: Format, output: Path | None, table=None) -> None:
    """`_emit` for a Report: `table(report, width=...)` draws the table format (default:
    the summary table; rich loads only for a table)."""

    def draw(width: int):
        from archprof.render import summary_table

        return (table or summary_table)(report, width=width)

    writers = {Format.csv: report.to_csv, Format.json: report.to_json, Format.markdown: report.to_markdown}
    _emit(format, output, draw, writers)


def _console():
    from rich.console import Console

    return Console()


def main() -> None:
    app()
