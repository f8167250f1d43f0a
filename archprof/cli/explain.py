"""`archprof explain`: a layer's figures worked out with its own numbers, or the network's
receptive-field table and stage shares."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from archprof.cli.app import app
from archprof.cli.emit import check_output, choose_format, input_files, write_text
from archprof.cli.options import Format, ModelArg, OutputOpt, format_option, with_model_options
from archprof.cli.streams import fitted_width, user_errors

# What explain writes: text (the table format) or Markdown.
EXPLAIN_FORMATS = (Format.table, Format.markdown)


@app.command()
@user_errors
@with_model_options
def explain(
    model: ModelArg,
    layer: Annotated[
        Optional[str],
        typer.Argument(
            help="A layer as the summary names it (features.0, layer1.0.relu (call 2)), a container (layer1.0), or a"
            " row number (1 = the first; #3 is always a row number). Default: the whole network.",
            show_default=False,
        ),
    ] = None,
    options=None,  # with_model_options: the shared options, read
    train: Annotated[
        bool,
        typer.Option(
            "--train",
            help="One training step: a layer's backward operators too (input and weight gradients, recomputation),"
            " its training FLOPs, what autograd saved for it and its gradients' bytes.",
        ),
    ] = False,
    format: format_option(*EXPLAIN_FORMATS) = None,
    output: OutputOpt = None,
) -> None:
    """Every figure of a layer worked out: each formula with the layer's own values and its result.

    For a layer: output shape per dimension, parameters (weights and bias apart), MACs and
    FLOPs, elementwise FLOPs, activation bytes and the receptive-field step from the layer
    before. For a container: its children's totals and how they add up, and its own
    operations. Without a layer: the receptive field down the network (kernel, stride,
    field, jump, start) and each stage's share of the parameters and MACs. Text, or
    --format markdown for a pull request or a course page. --train traces a training step,
    as summary --train: a layer's backward operators are worked out too (a convolution's
    input and weight gradients, each the forward's MACs; a first layer's missing input
    gradient, a frozen one's missing weight gradient), then its backward and training FLOPs,
    the tensors autograd saved for it and its parameters' gradient bytes.

    Examples:

    archprof explain vgg16 features.0
    archprof explain resnet18 layer1.0 --format markdown -o layer1.md
    archprof explain resnet18 layer1.0.conv1 --train"""
    from archprof.analysis import analyze
    from archprof.errors import ArchprofError

    chosen = choose_format(format, output)  # HTML too: explain's own refusal below says what it writes
    if chosen not in EXPLAIN_FORMATS:
        raise ArchprofError(
            f"explain writes a table (plain text) or markdown, not {chosen.value}: give --format table or markdown"
        )
    check_output(output, "--output", *input_files(model), ("the --weights file", options.weights))
    report = analyze(model, training=train, **options.keywords())
    markdown = chosen is Format.markdown
    # Text on standard output fits its width as a table does; Markdown and a file are never wrapped.
    width = fitted_width() if output is None and not markdown else None
    write_text(report.explain(layer, markdown=markdown, width=width), output)
