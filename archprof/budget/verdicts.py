"""What `archprof check` reports of its verdicts: plain-text rows, a Markdown summary (GitHub
Actions' step summary) and JUnit XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from archprof.budget import EntryError, Verdict
from archprof.passes.receptive_field import FieldMark
from archprof.text import limits_verdict, markdown_code, markdown_literal, visible_text
from archprof.units import (
    percent_change_text,
)


def format_margin(verdict: Verdict) -> str:
    margin = verdict.margin
    sign = "-" if margin < 0 else "+"
    shown = verdict.limit.figure_text(abs(margin))
    if verdict.limit.threshold:
        return f"{sign}{shown} ({percent_change_text(margin / verdict.limit.threshold)})"
    return f"{sign}{shown}"


def verdict_rows(verdicts: Sequence[Verdict]) -> list[dict[str, str]]:
    """Plain text cells, one dict per limit: model, input, dtype, limit, value, margin, verdict;
    and a note ('' for none) saying why a limit the value is within fails (`Verdict.note`)."""
    return [
        {
            "model": v.model,
            "input": v.input_shape,
            "dtype": v.setting,
            "limit": v.limit_text,
            "value": v.value_text,
            "margin": format_margin(v),
            "verdict": "pass" if v.passed else "FAIL",
            "note": visible_text(v.note),
        }
        for v in verdicts
    ]


def unchecked_text(count: int) -> str:
    """ "1 model could not be checked", "2 models ...": what a verdict says of EntryErrors."""
    return f"{count} model{'s' * (count != 1)} could not be checked"


def markdown_summary(results: Sequence[Verdict | EntryError]) -> str:
    """The verdict as GitHub-flavoured Markdown (for $GITHUB_STEP_SUMMARY); an entry that
    could not be checked is a row with its error."""

    verdicts = [v for v in results if isinstance(v, Verdict)]
    errors = len(results) - len(verdicts)
    failed = sum(not v.passed for v in verdicts)
    models = len(dict.fromkeys((v.model, v.input_shape, v.setting) for v in verdicts))
    if errors:
        exceeded = f", {limits_verdict(failed, len(verdicts))}" if failed else ""
        title = f"### ⚠️ archprof budget: {unchecked_text(errors)}{exceeded}"
    elif failed:
        title = f"### ❌ archprof budget: {limits_verdict(failed, len(verdicts))}"
    else:
        title = f"### ✅ archprof budget: {limits_verdict(0, len(verdicts))} ({models} model{'s' * (models != 1)})"
    header = "| Model | Input | Dtype | Limit | Value | Margin | Verdict |"
    lines = [title, "", header, "|---|---|---|---|---:|---:|---|"]
    for result in results:
        if isinstance(result, EntryError):
            cells = [markdown_code(result.model), result.input_shape, result.dtype, markdown_literal(result.message)]
            cells += ["", "", "⚠️ **ERROR**"]
        else:
            row = verdict_rows([result])[0]
            verdict = "✅ pass" if row["verdict"] == "pass" else "❌ **FAIL**"
            cells = [markdown_code(row["model"]), row["input"], row["dtype"], markdown_code(row["limit"]), row["value"]]
            cells += [row["margin"], verdict]
        lines.append("| " + " | ".join(cells) + " |")
    # Why a limit its value is within fails, under the table (a cell would widen it by a paragraph).
    notes = [f"- {markdown_code(v.model, in_table=False)}: {markdown_literal(v.note)}" for v in verdicts if v.note]
    return "\n".join(lines + (["", *notes] if notes else [])) + "\n\n"


def append_step_summary(results: Sequence[Verdict | EntryError], path: str | Path) -> None:
    """Append the Markdown summary to `path`, on a line of its own: a summary that an earlier
    step left without a last newline would otherwise run into the title, which then is no heading."""
    with open(path, "a+", encoding="utf-8") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        separator = ""
        if size:
            handle.seek(size - 1)
            separator = "" if handle.read(1) == "\n" else "\n"
        handle.write(separator + markdown_summary(results))


def junit_xml(results: Sequence[Verdict | EntryError]) -> str:
    """JUnit XML: one testsuite per model, input and dtype, one testcase per limit, <failure> when exceeded;
    an entry that could not be checked, a testsuite of the model with one testcase, its <error>.
    The model's name and the limits as written are given with control characters shown as
    escapes (`visible_text`): XML 1.0 has no way to hold most of them."""
    suites = ET.Element("testsuites", name="archprof budget")
    by_model: dict[tuple[str, str, str] | int, list[Verdict] | EntryError] = {}
    for index, result in enumerate(results):
        if isinstance(result, EntryError):
            by_model[index] = result
        else:
            by_model.setdefault((result.model, result.input_shape, result.setting), []).append(result)
    for group in by_model.values():
        if isinstance(group, EntryError):
            model, message = visible_text(group.model), visible_text(group.message)
            given = ", ".join(part for part in (group.input_shape, group.dtype) if part)
            name = f"{model} ({given})" if given else model
            suite = ET.SubElement(suites, "testsuite", name=name, tests="1", failures="0", errors="1", skipped="0")
            case = ET.SubElement(suite, "testcase", classname=f"archprof.budget.{model}", name="check")
            ET.SubElement(case, "error", message=message, type="ArchprofError").text = message
            continue
        name, shape, setting = group[0].model, group[0].input_shape, group[0].setting
        model = visible_text(name)
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=f"{model} ({shape}, {setting})",
            tests=str(len(group)),
            failures=str(sum(not v.passed for v in group)),
            errors="0",
            skipped="0",
        )
        for verdict in group:
            # Named by its input and setting too: two entries of one model are two tests to a CI's reporter.
            case_name = f"{verdict.limit_name} at {shape}, {setting}"
            case = ET.SubElement(suite, "testcase", classname=f"archprof.budget.{model}", name=case_name)
            if verdict.field == FieldMark.INPUT:  # "global (32 px)": the input's size, said already
                exact = ""
            else:
                exact = f" ({verdict.value:,} px, its smallest side)" if verdict.field else f" ({verdict.value:,})"
            detail = f"{verdict.limit.metric.label} {verdict.value_text}{exact} at input {shape}, {setting}"
            limit = visible_text(verdict.limit_text)
            if verdict.passed:
                ET.SubElement(case, "system-out").text = f"{detail}: within {limit}"
            elif verdict.note:
                message = f"{detail}: {visible_text(verdict.note)}"
                ET.SubElement(case, "failure", message=message, type="BudgetUnverifiable").text = message
            else:
                bound = "over" if verdict.limit.bound == "max" else "under"
                message = f"{detail} is {bound} {limit} ({format_margin(verdict)})"
                ET.SubElement(case, "failure", message=message, type="BudgetExceeded").text = message
    verdicts = [v for v in results if isinstance(v, Verdict)]
    suites.set("tests", str(len(results)))
    suites.set("failures", str(sum(not v.passed for v in verdicts)))
    suites.set("errors", str(len(results) - len(verdicts)))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


# -- what `archprof check` checks --------------------------------------------------------
