"""Numbers with units, both ways: one grammar to read counts, sizes and rates from options
and budget files, and human-readable text for rendering (counts stay exact integers
everywhere else)."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, InvalidOperation
from fractions import Fraction

from archprof.errors import ArchprofError, shown

# Every prefix the grammar below reads, so that what it reads is written back in it: a peak
# given as 1.5P showed as 1500.00 TFLOP/s.
_COUNT_STEPS = ((10**18, "E"), (10**15, "P"), (10**12, "T"), (10**9, "G"), (10**6, "M"), (10**3, "K"))
_BYTE_STEPS = ((10**18, "EB"), (10**15, "PB"), (10**12, "TB"), (10**9, "GB"), (10**6, "MB"), (10**3, "kB"))
_BINARY_BYTE_STEPS = ((2**60, "EiB"), (2**50, "PiB"), (2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"))


def human_count(value: int) -> str:
    """138357544 -> '138.36 M' (decimal prefixes); 999,999 -> '1.00 M', not '1000.00 K';
    from 1000 E on, '1.70e+22' (a mantissa of 22 digits before the point says nothing more)."""
    text = _prefixed(value, _COUNT_STEPS)
    return text if text is not None else str(value)


def _prefixed(value: int, steps: tuple[tuple[int, str], ...]) -> str | None:
    """`value` in the largest of `steps` (largest first) it reaches, to two decimals, in the
    next larger where it rounds to one of that (1000.00 K is 1.00 M, 1024.00 KiB 1.00 MiB);
    from 1000 of the largest on, in e-notation; None below the smallest step."""
    for index, (step, prefix) in enumerate(steps):
        if abs(value) >= step:
            rounded = _fixed(Fraction(value, step), 2)
            if index == 0 and abs(rounded) >= 1000:
                return f"{value:.2e}"
            if index > 0 and abs(rounded) >= steps[index - 1][0] // step:
                step, prefix = steps[index - 1]
                rounded = _fixed(Fraction(value, step), 2)
            return f"{_decimals(rounded, 2)} {prefix}"
    return None


def _fixed(number: Fraction, places: int) -> Fraction:
    """`number` to `places` decimals, a tie away from zero, in exact arithmetic: in binary
    floats 2,675 / 1000 is just below 2.675 and 1,145 / 1000 just above 1.145, so that ties
    went either way (2.67 K, 1.15 K)."""
    scale = 10**places
    units = (2 * abs(number) * scale + 1) // 2  # the nearest whole number of 1/scale, a tie up
    return Fraction(units if number >= 0 else -units, scale)


def _decimals(rounded: Fraction, places: int, grouped: bool = False) -> str:
    """A number `_fixed` rounded to `places` decimals, written out ('1020.00'), its whole part
    grouped by thousands where asked ('-1,069.0')."""
    whole, part = divmod(abs(rounded) * 10**places, 10**places)
    return f"{'-' if rounded < 0 else ''}{int(whole):{',' if grouped else ''}}.{int(part):0{places}d}"


def share_text(share: float) -> str:
    """A fraction as a percentage to 0.1%: 0.255 -> '25.5%'; a share that is neither none nor
    all never reads as either: '<0.1%' (not 0.0%), '>99.9%' (not 100.0%). Rounded from the
    float's shortest decimal form, a tie away from zero (as counts are): 0.0625 is 6.3%, and
    0.2675 (a float just below it) 26.8%."""
    if 0 < share < 0.0005:
        return "<0.1%"
    if 0.9995 <= share < 1:
        return ">99.9%"
    if not math.isfinite(share):
        return f"{100 * share}%"
    return f"{_decimals(_fixed(Fraction(repr(float(share))) * 100, 1), 1, grouped=True)}%"


def percent_change_text(change: float) -> str:
    """A relative change as a signed percentage, written as `share_text` writes a share:
    0.4163 -> '+41.6%', 0.00004 -> '+<0.1%', -0.9997 -> '<-99.9%', 10.69 -> '+1,069.0%'. A
    change near all the value is bounded with its sign inside ('<-99.9%', '>+99.9%'): the
    sign before the bound read as an arrow ('->99.9%')."""
    shown = share_text(abs(change))
    if shown.startswith(">"):
        return ("<-" if change < 0 else ">+") + shown[1:]
    return ("-" if change < 0 else "+") + shown


def ratio_text(ratio: float) -> str:
    """A ratio as every table writes it: 0.18 -> '0.18x', 12345.678 -> '12,345.68x' (grouped
    as counts are, so that a large one reads at a glance); one under 0.1 in two significant
    figures, 0.025 -> '0.025x' (mobilenet_v2's parameters against vgg16's, which two
    decimals made 0.03x), 0.00039 -> '0.00039x', never '0.00x' (lenet5 against vgg16), nor
    in scientific notation: 9.6e-06 -> '0.0000096x'."""
    if 0 < abs(ratio) < 0.095:  # where two decimals keep one significant figure, or none
        return f"{Decimal(f'{ratio:.2g}'):f}x"
    return f"{ratio:,.2f}x"


def human_value(unit: str, value: int, binary: bool = False) -> str:
    """A count, bytes or pixels as a person reads them: '25.56 M', '6.12 MB' ('5.83 MiB'
    `binary`), '212 px'."""
    if unit == "bytes":
        return human_bytes(value, binary)
    if unit == "pixels":
        return f"{value} px"
    return human_count(value)


def shape_text(dims: Sequence[int]) -> str:
    """(1, 3, 224, 224) -> '1x3x224x224'; a scalar's () -> '()'."""
    return _SHAPE_TEXTS[tuple(dims)]


def whole_number(value: object) -> int | None:
    """`value` as an int where it is one of any integer type (NumPy's too, as
    `operator.index` takes it); None for a bool, a float, a string or anything else."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def checked_count(name: str, value: object, least: int, most: int | None = None, note: str = "") -> int:
    """`value` as a Python int from `least` to `most` (no upper end where None), refused on one
    line naming `name` otherwise; `note` says what a value means ("0 = the whole model")."""
    count = whole_number(value)
    meaning = f" ({note})" if note else ""
    if count is None:
        raise ArchprofError(f"{name} must be a whole number{meaning}, got {shown(value)}")
    if count < least:
        raise ArchprofError(f"{name} must be at least {least}{meaning}, got {count}")
    if most is not None and count > most:
        raise ArchprofError(f"{name} must be at most {most:,}, got {count}")
    return count


def tensor_text(shape: Sequence[int], dtype) -> str:
    """A tensor of `shape` and `dtype` in words: "1x3x224x224 float32"."""
    return f"{shape_text(shape)} {str(dtype).removeprefix('torch.')}"


def shapes_text(shapes: Iterable[Sequence[int]]) -> str:
    """Several shapes, as archprof prints them: '1x3x32x32, 1x10'."""
    if type(shapes) is list and len(shapes) == 1:  # a report row's one shape (most rows'): no join, half its time
        return _SHAPE_TEXTS[tuple(shapes[0])]
    return ", ".join([_SHAPE_TEXTS[tuple(shape)] for shape in shapes])


class _ShapeTexts(dict):
    """A shape -> its text, each made once: a report writes each of its few dozen shapes many
    times (each row's input and output shapes), and joining them anew was a tenth of its
    passes. A dict read by subscript, not an lru_cache: a hit is a lookup, without the cache's
    call and its list of recent keys (a third of the instructions). Emptied when full, so that
    a process that analyses many models at many sizes holds at most a few thousand."""

    def __missing__(self, dims: tuple[int, ...]) -> str:
        if len(self) >= 4096:
            self.clear()
        text = self[dims] = "x".join(map(str, dims)) if dims else "()"  # a scalar (a loss, a sum): not an empty cell
        return text


_SHAPE_TEXTS = _ShapeTexts()


def human_bytes(value: int, binary: bool = False) -> str:
    """6115328 -> '6.12 MB' (decimal units, as disk and GPU vendors use); `binary`: '5.83 MiB'
    (powers of 1024, for a budget given in them: 512MiB shown back as 512.00 MiB)."""
    text = _prefixed(value, _BINARY_BYTE_STEPS if binary else _BYTE_STEPS)
    if text is None:
        return f"{value} B"
    return text if text[-1] == "B" else f"{text} B"  # past the largest unit: 1e30 bytes read '1.00e+30 B'


def byte_unit(value: float, binary: bool = False) -> tuple[int, str]:
    """The unit `human_bytes` writes `value` in, as (bytes in it, its name): (10**6, "MB")."""
    for step, unit in _BINARY_BYTE_STEPS if binary else _BYTE_STEPS:
        if abs(value) >= step:
            return step, unit
    return 1, "B"


def flops_rate_text(value: float) -> str:
    """9.62e9 -> '9.62 GFLOP/s'."""
    text = human_count(round(value))  # "9.62 G", or "500" below a thousand
    return f"{text}FLOP/s" if text[-1].isalpha() else f"{text} FLOP/s"


def bandwidth_text(value: float) -> str:
    """3.525e10 -> '35.25 GB/s'."""
    return f"{human_bytes(round(value))}/s"


def ridge_text(ridge: float) -> str:
    """The ridge (FLOPs per byte) to one decimal (5.0), to two significant digits under 1
    (0.014, never 0.0), from 10,000 as a count ("1.00 T", not every digit of 10**12)."""
    if ridge >= 10_000:
        return human_count(round(ridge))
    return f"{ridge:.1f}" if ridge >= 1 else f"{ridge:.2g}"


# -- reading -------------------------------------------------------------------------------
#
# A quantity is a number (`25_557_032`, `1.5`, `.5`, `1e9`, `1.5e9`), optional space, an
# optional decimal prefix K, M, G, T, P, E (powers of 1000; case does not matter), for sizes
# and bandwidths optionally binary (KiB, MiB, ...: powers of 1024), then the kind's unit.

_QUANTITY = re.compile(
    r"(?P<number>(?:\d+(?:_\d+)*(?:\.\d*)?|\.\d+)(?:e(?P<exponent>[+-]?\d+))?)\s*(?P<prefix>[kmgtpe]?)(?P<binary>i?)(?P<unit>\S*)",
    re.IGNORECASE | re.ASCII,  # digits 0-9 only: int() would read '٣٠M' (Arabic-Indic) as 30M
)
_PREFIXES = "kmgtpe"
# Arithmetic as exact as the text, however many digits and however small (Decimal's default
# rounds to 28 digits: a 31-digit count changed, 1.0000000000000000000000000001 became whole;
# and 1e-9999999 underflowed to 0).
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)
_LARGEST_EXPONENT = 60  # nothing archprof measures comes near 10**60; bigger text is a typo


@dataclass(frozen=True)
class _Kind:
    name: str  # "count", "size", ... as the error says it
    units: tuple[str, ...]  # the unit texts that may follow the prefix (lower case; "" for none)
    binary: bool  # whether KiB-style prefixes are allowed
    examples: str
    prefixed: bool = True  # whether K, M, G... may follow the number


_COUNT = _Kind("count", ("",), False, "30M, 1.5G, 1e9 or 25_557_032")
# No prefixes: a receptive field is a few hundred pixels, and "10p" (10 px, the x lost) read as
# 10 peta-pixels failed every model.
_PIXELS = _Kind("pixel count", ("",), False, "200 or 200px", prefixed=False)
_SIZE = _Kind("size", ("", "b"), True, "16GB, 16GiB, 512MB, 1.5GB, 1e9 or 1000000 (bytes)")
_FLOPS = _Kind("FLOP rate", ("", "flop/s", "flops", "flop"), False, "989T, 67.5TFLOP/s or 5e13")
_BANDWIDTH = _Kind("bandwidth", ("", "b", "b/s", "/s", "bps"), True, "3.35TB/s, 900GB/s or 100GiB/s")


def _quantity(value: object, kind: _Kind) -> Decimal:
    """The exact value of `value` (text, or a number from a TOML file or Python), unit applied."""
    unreadable = ArchprofError(f"cannot read the {kind.name} {shown(value)}: expected e.g. {kind.examples}")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise unreadable
    if isinstance(value, int) and abs(value) >= 10 ** (_LARGEST_EXPONENT + 1):  # str() refuses 4,300 digits
        raise ArchprofError(f"the {kind.name} given, over 10**{_LARGEST_EXPONENT}, is too large")
    text = repr(value) if isinstance(value, float) else str(value)  # 1.5e9 read exactly, not as a float near it
    match = _QUANTITY.fullmatch(text.strip())
    if (
        match is None
        or match["unit"].lower() not in kind.units
        or (match["binary"] and not (kind.binary and match["prefix"]))
        or (match["prefix"] and not kind.prefixed)
    ):
        raise unreadable
    power = _PREFIXES.index(match["prefix"].lower()) + 1 if match["prefix"] else 0
    try:
        number = Decimal(match["number"].replace("_", ""))  # the pattern admits only valid decimals
    except InvalidOperation:  # an exponent past Decimal's own range (1e99999999999999999999), either way
        size = "small" if match["exponent"].startswith("-") else "large"
        raise ArchprofError(f"the {kind.name} '{value}' is too {size}") from None
    if number and number.adjusted() + 3 * power > _LARGEST_EXPONENT:
        raise ArchprofError(f"the {kind.name} '{value}' is too large")
    return _EXACT.multiply(number, (1024 if match["binary"] else 1000) ** power)


def _whole(number: Decimal, value: object, kind: _Kind, unit: str) -> int:
    if number != number.to_integral_value():
        raise ArchprofError(f"the {kind.name} '{value}' is not a whole number{unit} ({number.normalize(_EXACT)})")
    return int(number)


def parse_count(value: object) -> int:
    """A count: '30M' = 30,000,000, '1.5G', '1e9', '25_557_032' (K, M, G, T, P, E decimal).
    ArchprofError for anything else, a negative count or one that is not whole."""
    return _whole(_quantity(value, _COUNT), value, _COUNT, "")


def parse_pixels(value: object) -> int:
    """A count of pixels, as tables show a receptive field: '200', '200px', '200 px' (the
    unit taken off first: its 'p' would read as the prefix peta); no prefix ('10p', '1k')."""
    text = value.strip() if isinstance(value, str) else value
    if isinstance(text, str) and text[-2:].lower() == "px":
        text = text[:-2]
    try:
        number = _quantity(text, _PIXELS)
    except ArchprofError:
        raise ArchprofError(f"cannot read the pixel count {value!r}: expected e.g. {_PIXELS.examples}") from None
    return _whole(number, value, _PIXELS, "")


def in_binary_units(text: str) -> bool:
    """Whether a size as `parse_size` reads it is in powers of 1024 ('512MiB', '2 gib', '1Mi',
    '2PiB'), by the grammar it reads sizes with."""
    match = _QUANTITY.fullmatch(text.strip())
    return match is not None and bool(match["binary"]) and bool(match["prefix"])


def parse_size(value: object) -> int:
    """A memory size in bytes: '16GB' = 16e9, '16GiB' = 16 * 2**30, '512MB', '1.5GB', '1e9',
    '1_000MB', '1000000' (plain bytes). Decimal units are powers of 1000, binary ones
    (`KiB`, `MiB`, `GiB`, `TiB`) of 1024; case and a space before the unit do not matter.
    ArchprofError for anything else, or a size that is not a positive whole number of bytes."""
    size = _whole(_quantity(value, _SIZE), value, _SIZE, " of bytes")
    if size <= 0:
        raise ArchprofError(f"the size '{value}' must be more than 0 bytes")
    return size


def _positive_rate(value: object, kind: _Kind) -> float:
    rate = float(_quantity(value, kind))
    if rate < 1:  # no device is slower; a rate near 0 makes every roofline time infinite
        raise ArchprofError(f"the {kind.name} '{value}' must be at least 1 per second")
    return rate


def parse_flops_rate(value: object) -> float:
    """FLOP/s: '989T' = 989e12, '67.5 TFLOP/s', '1.2P', '5e13'; a number stays a number."""
    return _positive_rate(value, _FLOPS)


def parse_bandwidth(value: object) -> float:
    """Bytes per second: '3.35TB/s', '3.35TB', '900GB/s', '100GiB/s' (prefixes as `parse_size`)."""
    return _positive_rate(value, _BANDWIDTH)
