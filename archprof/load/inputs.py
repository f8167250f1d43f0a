"""Model inputs: one sample's shape, dtype and keyword (`InputSpec`), read from the CLI's text or Python values."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

import torch

from archprof.errors import ArchprofError, check_flag, shown
from archprof.load.common import DTYPES, INPUT_DTYPES, INT64_MAX, described, printable_errors, shorten
from archprof.units import whole_number

# -- inputs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputSpec:
    """One input of the model's forward: one sample's shape and, optionally, its dtype and
    keyword.

    `shape` leaves the batch out: archprof puts the batch in front (`batched=False` keeps
    the shape as it is, for an input without a batch dimension). `dtype` None means the
    model's floating dtype (or `analyze(dtype=...)`); give `torch.int64` for token ids.
    `name` None passes the input positionally, in order; a name passes it as that keyword
    argument of `forward`."""

    shape: tuple[int, ...]
    dtype: torch.dtype | None = None
    name: str | None = None
    batched: bool = True

    def __post_init__(self) -> None:
        # A set or a dict iterates in an order of its own: {3, 224, 224} would be 224x3, silently.
        if not isinstance(self.shape, Iterable) or isinstance(self.shape, (AbstractSet, Mapping)):
            raise ArchprofError(
                f"input shape must be a sequence of sizes such as (3, 224, 224), got {described(self.shape)}"
            )
        check_flag("batched", self.batched)
        shape = tuple(_whole_size(size, self.shape) for size in self.shape)
        object.__setattr__(self, "shape", shape)
        if self.dtype is not None and not isinstance(self.dtype, torch.dtype):
            object.__setattr__(self, "dtype", parse_input_dtype(str(self.dtype)))
        check_fits(shape, self.dtype, f"input shape {_shown_shape(shape)}")
        if self.name is not None and not str(self.name).isidentifier():
            raise ArchprofError(f"input name '{self.name}' is not a Python identifier (a keyword of forward)")

    def full_shape(self, batch: int) -> tuple[int, ...]:
        shape = (batch, *self.shape) if self.batched else self.shape
        batch_shown = f" (batch {_shown_shape(shape[:1])})" if self.batched else ""
        check_fits(shape, self.dtype, f"input {_shown_shape(shape)}{batch_shown}")
        return shape

    def __str__(self) -> str:
        text = "x".join(map(str, self.shape))
        if self.dtype is not None:
            text += f":{str(self.dtype).removeprefix('torch.')}"
        return f"{self.name}={text}" if self.name else text


InputsLike = Any  # see normalize_inputs


def check_fits(shape: tuple[int, ...], dtype: torch.dtype | None, what: str) -> None:
    """Every size, the element count and the byte size of a tensor must fit in int64 (each
    size is at least 1, so the byte size bounds the rest). dtype None: the model's, taken as
    float32's 4 bytes here; the trace checks each input again in the dtype it makes it in
    (a float64 model's)."""
    itemsize = dtype.itemsize if dtype is not None else 4
    if math.prod(shape) * itemsize > INT64_MAX:
        raise ArchprofError(
            f"{what} is too large: its elements of {itemsize} bytes would take more than 2**63 - 1 bytes, the most"
            " torch can address; give smaller sizes"
        )


def _shown_shape(shape: Sequence[int]) -> str:
    """'3x224x224'; a size of more than 30 digits as its power of two (str() refuses past 4300 digits)."""
    return "x".join(str(size) if size.bit_length() <= 100 else f"2**{size.bit_length() - 1}+" for size in shape)


_SIZE = re.compile("[0-9]+(x[0-9]+)*")  # digits 0-9 only: \d, and int(), read "٣٢" as 32


def _whole_size(size: Any, shape: Any) -> int:
    """One size of `shape` as an int (`whole_number`), at least 1."""
    whole = whole_number(size)
    if whole is None or whole < 1:
        shown = tuple(shape) if not isinstance(shape, str) else shape
        raise ArchprofError(f"malformed input shape {shown!r}: every size must be a whole number of at least 1")
    return whole


@printable_errors
def parse_input_size(text: str) -> tuple[int, ...]:
    """'3x224x224' -> (3, 224, 224): the per-sample input, without the batch."""
    size = _sizes(text)
    check_fits(size, None, f"input size '{text}'")
    return size


def _sizes(text: str) -> tuple[int, ...]:
    cleaned = text.strip().lower()
    if not _SIZE.fullmatch(cleaned):
        raise ArchprofError(f"malformed input size '{text}': expected positive sizes joined by 'x', e.g. 3x224x224")
    if any(len(part.lstrip("0")) > 19 for part in cleaned.split("x")):
        raise ArchprofError(f"input size {shorten(text)} is too large: torch's sizes are at most 2**63 - 1")
    size = tuple(int(part) for part in cleaned.split("x"))
    if any(part == 0 for part in size):
        raise ArchprofError(f"malformed input size '{text}': every size must be at least 1")
    return size


def _joined_otherwise(size: str) -> str:
    """A hint for sizes joined by another separator than 'x' ('3,224,224', '3*224*224',
    '3 224 224'): the size as archprof reads it."""
    parts = re.split(r"\s*[,*×X ]\s*|\s+", size.strip().strip("()[]"))
    if len(parts) > 1 and all(part.isdigit() for part in parts):
        return f"; did you mean {'x'.join(parts)}?"
    return ""


@printable_errors
def parse_input_spec(text: str) -> InputSpec:
    """'[name=]3x224x224[:dtype]' -> InputSpec, e.g. '77:int64', 'mask=77:bool'."""
    name, equals, rest = text.strip().partition("=")
    if not equals:
        name, rest = "", text.strip()
    size, colon, dtype = rest.partition(":")
    if colon and not dtype.strip():
        raise ArchprofError(f"malformed input '{text}': nothing after ':', expected a dtype such as int64")
    if not _SIZE.fullmatch(size.strip().lower()):
        # A dtype's name alone: `inputs=((77,), "int64")` is two inputs, the second this text.
        hint = (
            f"; a dtype goes after its shape, '77:{text.strip()}', or as a torch.dtype in a pair: ((77,), torch.int64)"
            if not colon and size.strip().lower().removeprefix("torch.") in INPUT_DTYPES
            else ""
        )
        raise ArchprofError(
            f"malformed input size '{text}': expected [name=]SIZES[:dtype], e.g. 3x224x224, 77:int64 or mask=77:bool"
            + (hint or _joined_otherwise(size))
        )
    shape = _sizes(size)  # says which size is 0; InputSpec checks the size in bytes of its dtype
    name = name.strip()
    if equals and not name.isidentifier():
        raise ArchprofError(f"malformed input '{text}': '{name}' is not a keyword name")
    return InputSpec(shape, parse_input_dtype(dtype.strip()) if colon else None, name or None)


def parse_dtype(text: str) -> torch.dtype:
    """A model dtype: float32, float16, bfloat16 or float64."""
    try:
        return DTYPES[text]
    except KeyError:
        raise ArchprofError(f"unknown dtype '{text}'; choose one of {', '.join(DTYPES)}") from None


def parse_input_dtype(text: str) -> torch.dtype:
    """An input's dtype: a model dtype, float64, an integer type or bool."""
    cleaned = text.strip().lower().removeprefix("torch.")
    try:
        return INPUT_DTYPES[cleaned]
    except KeyError:
        raise ArchprofError(f"unknown input dtype '{text}'; choose one of {', '.join(INPUT_DTYPES)}") from None


def normalize_inputs(inputs: InputsLike) -> tuple[InputSpec, ...]:
    """The forms `analyze(inputs=...)` takes, as InputSpecs (positional ones first, in order).

    - one shape: `(3, 224, 224)` or `"3x224x224"` or `"77:int64"`, or `((77,), torch.int64)`, or
      one `InputSpec`
    - several positional inputs: a list of those, or of `(shape, dtype)` pairs
    - keyword inputs: a dict `{"x": (3, 32, 32), "ids": ((77,), torch.int64), "mask": "77:bool"}`
    - no inputs (a forward that takes none): `{}`, `[]` or `()`; one input of no dimensions
      per sample is `[()]`
    """
    _refuse_tensors(inputs)
    if isinstance(inputs, (tuple, list)) and not inputs:  # a list of no inputs, as {} is: not the shape ()
        return ()
    if isinstance(inputs, Mapping):
        specs = []
        for name, value in inputs.items():
            spec = _one_input(value, f"inputs[{name!r}]")
            specs.append(InputSpec(spec.shape, spec.dtype, str(name), spec.batched))
    elif isinstance(inputs, (str, InputSpec)) or _is_shape(inputs) or _is_typed_shape(inputs):
        specs = [_one_input(inputs, "inputs")]
    elif isinstance(inputs, Sequence) and inputs:
        specs = [_one_input(value, f"inputs[{i}]") for i, value in enumerate(inputs)]
    else:
        raise ArchprofError(
            f"cannot read inputs {described(inputs)}: give a shape such as (3, 224, 224), a list of shapes or"
            " InputSpecs, or a dict of keyword inputs"
        )
    names = [spec.name for spec in specs if spec.name]
    if len(names) != len(set(names)):
        raise ArchprofError(f"an input name is given twice: {', '.join(names)}")
    positional = [spec for spec in specs if not spec.name]
    return (*positional, *(spec for spec in specs if spec.name))


def _refuse_tensors(inputs: InputsLike) -> None:
    """Refuse tensors given as inputs (`inputs=[x]`, x a batch the forward would take) in one
    line that gives the same inputs as shapes: archprof reads no values, and a tensor's repr
    runs to a line a row. Where every tensor's first size is one batch, that is `batch=`;
    else each tensor is taken whole (`batched=False`)."""
    if isinstance(inputs, torch.Tensor):
        entries = [("inputs", inputs)]
    elif isinstance(inputs, Mapping):
        entries = [(f"inputs[{shown(name)}]", value) for name, value in inputs.items()]
    elif isinstance(inputs, (tuple, list)):
        entries = [(f"inputs[{index}]", value) for index, value in enumerate(inputs)]
    else:
        return
    tensors = [(where, value) for where, value in entries if isinstance(value, torch.Tensor)]
    if not tensors:
        return
    firsts = {tensor.shape[0] if tensor.dim() else None for _, tensor in tensors}
    batch = firsts.pop() if len(firsts) == 1 else None
    batched = batch is not None
    forms = [_shape_of(v, batched) if isinstance(v, torch.Tensor) else shown(v) for _, v in entries]
    if isinstance(inputs, torch.Tensor):
        given = forms[0]
    elif isinstance(inputs, Mapping):
        given = "{" + ", ".join(f"{shown(name)}: {form}" for name, form in zip(inputs, forms, strict=True)) + "}"
    else:
        given = f"[{', '.join(forms)}]"
    with_batch = f" with batch={batch}" if batch not in (None, 1) else ""
    raise ArchprofError(
        f"{tensors[0][0]} is a tensor: archprof reads shapes, not values: give inputs={given}{with_batch}"
    )


def _shape_of(tensor: torch.Tensor, batched: bool) -> str:
    """A tensor as the input `normalize_inputs` takes for it: its shape past the batch,
    (3, 32, 32), with its dtype where that is not float32, ((77,), torch.int64); taken whole,
    an InputSpec with batched=False."""
    dtype = f", {tensor.dtype}" if tensor.dtype != torch.float32 else ""
    if not batched:
        return f"InputSpec({tuple(tensor.shape)}{dtype}, batched=False)"
    shape = tuple(tensor.shape[1:])
    return f"({shape}{dtype})" if dtype else str(shape)


def _is_shape(value: Any) -> bool:
    """A tuple, list or torch.Size of whole numbers (NumPy's too, as `input_size` takes them)."""
    return isinstance(value, (tuple, list, torch.Size)) and all(whole_number(v) is not None for v in value)


def _is_typed_shape(value: Any) -> bool:
    """(shape, torch.dtype): one input, `inputs=((77,), torch.int64)`, as in a list. (A
    dtype's name there, `((77,), "int64")`, reads as a list of two inputs, as it always has.)"""
    return (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and _is_shape(value[0])
        and isinstance(value[1], torch.dtype)
    )


def _one_input(value: Any, where: str) -> InputSpec:
    if isinstance(value, InputSpec):
        return value
    if isinstance(value, str):
        return parse_input_spec(value)
    if _is_shape(value):
        return InputSpec(tuple(value))
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and _is_shape(value[0])
        and isinstance(value[1], (torch.dtype, str))
    ):
        dtype = value[1] if isinstance(value[1], torch.dtype) else parse_input_dtype(value[1])
        return InputSpec(tuple(value[0]), dtype)
    raise ArchprofError(
        f"cannot read {where} = {described(value)}: expected a shape such as (3, 224, 224), '77:int64', "
        f"(shape, dtype) or an InputSpec{nested_hint(value)}"
    )


def nested_hint(value: Any) -> str:
    """For shapes nested in one input (a forward taking a list of tensors, `forward(self, xs)`),
    which archprof does not take, or given as `input_size`: how to give them, each a tensor of
    its own; "" else."""
    nested = isinstance(value, (tuple, list)) and len(value) > 1
    if not nested or not all(_is_shape(v) or isinstance(v, (str, InputSpec)) for v in value):
        return ""
    return (
        "; each input is one tensor: for a forward that takes a list of tensors, analyse a wrapper"
        " whose forward(self, *xs) calls the model on list(xs), and give the shapes one by one"
    )
