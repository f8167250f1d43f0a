"""One grammar for every number with a unit that archprof reads: counts (--max-params),
sizes (--fit, --max-peak-memory, budget files) and rates (--peak-flops, --bandwidth)."""

from decimal import ROUND_HALF_UP, Decimal, localcontext

import numpy
import pytest

from archprof.errors import ArchprofError
from archprof.units import (
    human_bytes,
    human_count,
    parse_bandwidth,
    parse_count,
    parse_flops_rate,
    parse_pixels,
    parse_size,
    percent_change_text,
    share_text,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("30M", 30_000_000),
        ("1.5G", 1_500_000_000),
        ("5g", 5_000_000_000),
        ("2K", 2_000),
        ("1.5T", 1_500_000_000_000),
        ("25557032", 25_557_032),
        ("25_557_032", 25_557_032),
        (" 30 M ", 30_000_000),
        ("0.5K", 500),
        ("1e9", 10**9),
        ("1.5e9", 1_500_000_000),
        (30_000_000, 30_000_000),  # from a TOML file or Python
        (1.5e9, 1_500_000_000),
        (0, 0),
        ("1234567890123456789012345678901", 1234567890123456789012345678901),  # past Decimal's default 28 digits
    ],
)
def test_counts(text, value):
    assert parse_count(text) == value


@pytest.mark.parametrize(("text", "value"), [("200", 200), ("200px", 200), ("200 px", 200), (" 16PX ", 16), (200, 200)])
def test_pixels_read_as_tables_write_them(text, value):
    """A receptive-field limit as the table shows it, '16 px', was 'cannot read the count'."""
    assert parse_pixels(text) == value


@pytest.mark.parametrize("text", ["px", "-3px", "1.5px", "2pxx", True, "10p", "1k", "1kpx"])
def test_unreadable_pixels(text):
    with pytest.raises(ArchprofError, match="pixel count"):
        parse_pixels(text)


@pytest.mark.parametrize(
    "text",
    [
        *("30Q", "-5M", "", "  ", "M", "1.5.5G", "1.2345K", "30MB", "1KiB", "1e3x", True, -3, None, "1e999"),
        *("٣٠M", "３０M", "1e٣"),  # Arabic-Indic and full-width digits: int() reads them, the grammar does not
        pytest.param(10**5000, id="5,001 digits"),  # past what str() converts: a ValueError, not archprof's error
        "1.0000000000000000000000000001",  # whole once rounded to Decimal's default 28 digits
    ],
)
def test_unreadable_counts(text):
    with pytest.raises(ArchprofError):
        parse_count(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1e99999999999999999999", "too large"),  # an exponent past Decimal's own: InvalidOperation, a traceback
        ("1e-99999999999999999999", "too small"),
        ("1e-9999999", r"not a whole number.*\(1E-9999999\)|at least 1"),  # underflowed to 0: the limit 0
        ("1e-999999", r"not a whole number.*\(1E-999999\)|at least 1"),  # the value had a million zeros
    ],
)
def test_tiny_and_huge_numbers_are_refused_in_a_short_line(text, message):
    for parse in (parse_count, parse_size, parse_flops_rate, parse_bandwidth):
        with pytest.raises(ArchprofError, match=message) as raised:
            parse(text)
        assert len(str(raised.value)) < 200


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("16GB", 16 * 10**9),
        ("16GiB", 16 * 2**30),
        ("512MB", 512 * 10**6),
        ("512MiB", 512 * 2**20),
        ("1.5GB", 1_500_000_000),
        ("1.5GiB", 3 * 2**29),
        ("0.5KiB", 512),
        ("2kB", 2_000),
        ("2KiB", 2_048),
        ("16 gb", 16 * 10**9),
        ("1TB", 10**12),
        ("1000000", 1_000_000),
        ("1000000B", 1_000_000),
        ("1_000MB", 10**9),
        ("1e9", 10**9),
        (4096, 4096),
        (2e8, 200_000_000),
        ("99999999999999999999TB", 99_999_999_999_999_999_999 * 10**12),  # exact, however large
    ],
)
def test_sizes(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "cannot read"),
        ("GB", "cannot read"),
        ("16 GBs", "cannot read"),
        ("-1GB", "cannot read"),
        ("16XB", "cannot read"),
        ("1iB", "cannot read"),
        ("1.5.5GB", "cannot read"),
        (True, "cannot read"),
        ("0", "more than 0"),
        ("0.5", "whole number of bytes"),
        ("1.0000001kB", "whole number of bytes"),
        ("1e70", "too large"),
        ("1.0000000000000000000000000001KiB", r"whole number of bytes \(1024.0000000000000000000000001024\)"),
    ],
)
def test_unreadable_sizes(text, message):
    with pytest.raises(ArchprofError, match=message):
        parse_size(text)


def test_rates():
    assert parse_flops_rate("989T") == 989e12
    assert parse_flops_rate("67.5 TFLOP/s") == 67.5e12
    assert parse_flops_rate("1.2P") == 1.2e15
    assert parse_flops_rate("5e13") == 5e13
    assert parse_flops_rate(2e9) == 2e9
    assert parse_bandwidth("3.35TB/s") == 3.35e12
    assert parse_bandwidth("3.35TB") == 3.35e12
    assert parse_bandwidth("100 GiB/s") == 100 * 2**30
    assert parse_bandwidth("1_000GB/s") == 1e12
    for bad in ("fast", "-3T", "0", "0.5", "5e-324", "1GiFLOP/s"):
        with pytest.raises(ArchprofError):
            parse_flops_rate(bad)
    with pytest.raises(ArchprofError, match="cannot read the bandwidth"):
        parse_bandwidth("3.35 TB per second")


def test_bytes_in_binary_units_where_the_size_was_given_in_them():
    from archprof.units import in_binary_units

    assert human_bytes(512 * 2**20, binary=True) == "512.00 MiB" and human_bytes(512 * 2**20) == "536.87 MB"
    assert human_bytes(1536, binary=True) == "1.50 KiB" and human_bytes(1000, binary=True) == "1000 B"
    sizes = {"512MiB": True, "2 gib ": True, "512MB": False, "1e9": False, "4KiB": True, "1Mi": True, "2PiB": True}
    assert {size: in_binary_units(size) for size in sizes} == sizes


def test_every_prefix_read_is_written_back():
    """--peak-flops 1.5P showed as '1500.00 TFLOP/s': the grammar reads P and E (and PiB, EiB),
    which the writers now use too, each from the text it was read from."""
    from archprof.units import flops_rate_text

    assert flops_rate_text(parse_flops_rate("1.5P")) == "1.50 PFLOP/s"
    assert human_count(parse_count("2E")) == "2.00 E" and human_count(parse_count("999T")) == "999.00 T"
    assert human_bytes(parse_size("3PB")) == "3.00 PB" and human_bytes(parse_size("2EiB"), binary=True) == "2.00 EiB"
    assert human_bytes(parse_size("2PiB"), binary=True) == "2.00 PiB"
    assert human_bytes(parse_size("1e30")) == "1.00e+30 B" and human_bytes(999 * 10**18) == "999.00 EB"


@pytest.mark.parametrize(
    ("value", "count", "size", "binary"),
    [
        (999_994, "999.99 K", "999.99 kB", "976.56 KiB"),  # 999.994 K: two decimals hold it
        (999_995, "1.00 M", "1.00 MB", "976.56 KiB"),  # 999.995 K rounds to 1000.00 K, which is 1.00 M
        (999_999_999, "1.00 G", "1.00 GB", "953.67 MiB"),
        (2**20 - 1, "1.05 M", "1.05 MB", "1.00 MiB"),  # 1023.999 KiB rounds to 1024.00 KiB, 1 MiB
        (1020 * 2**10, "1.04 M", "1.04 MB", "1020.00 KiB"),  # under 1024 KiB: still KiB
        (10**21 - 1, "1.00e+21", "1.00e+21 B", "867.36 EiB"),  # 1000.00 E: past the largest prefix
        (17_009_740 * 10**15, "1.70e+22", "1.70e+22 B", "1.70e+22 B"),  # vgg16's MACs at batch 2**40
    ],
)
def test_a_figure_never_reads_a_thousand_of_its_unit(value, count, size, binary):
    """A count or size is written in the largest unit it reaches once rounded to two decimals
    (999,999 parameters read '1000.00 K'), and past the largest, in e-notation, as sizes were
    ('17009.74 E' for a count before)."""
    from archprof.units import human_bytes, human_count

    assert (human_count(value), human_bytes(value), human_bytes(value, binary=True)) == (count, size, binary)


@pytest.mark.parametrize(
    ("ratio", "text"),
    [
        (0.18, "0.18x"),
        (12345.678, "12,345.68x"),
        (1.0, "1.00x"),
        (0.00039, "0.00039x"),
        (0.0049, "0.0049x"),
        (3_504_872 / 138_357_544, "0.025x"),  # mobilenet_v2's parameters over vgg16's: it read 0.03x
        (0.0949, "0.095x"),
        (0.095, "0.10x"),
        (0, "0.00x"),
        (1e-05, "0.00001x"),  # an MLP's MACs against resnet18's read '1e-05x'
        (9.6e-06, "0.0000096x"),
    ],
)
def test_a_ratio_keeps_two_figures_where_two_decimals_would_show_one_or_none(ratio, text):
    """lenet5's parameters over vgg16's, 61,706 / 138,357,544 = 0.00045, read '0.00x';
    mobilenet_v2's, 0.0253, read '0.03x'."""
    from archprof.units import ratio_text

    assert ratio_text(ratio) == text


@pytest.mark.parametrize("value", [2_675, 1_005, 1_125, 1_145, 2_355_000, 11_715_000, -2_675, 999_994, 123_456_789])
def test_a_count_on_a_rounding_tie_rounds_away_from_zero_like_every_other(value):
    # The figure as decimal arithmetic gives it from the exact integer, ties away from zero:
    # in binary floats 2,675 / 1000 fell below 2.675 and 1,145 / 1000 above 1.145.
    step, prefix = next((s, p) for s, p in ((10**6, "M"), (10**3, "K")) if abs(value) >= s)
    expected = (Decimal(value) / step).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    assert human_count(value) == f"{expected} {prefix}"
    assert human_bytes(value) == f"{expected} {'MB' if prefix == 'M' else 'kB'}"


@pytest.mark.parametrize(("part", "whole"), [(1, 16), (2_675, 10_000), (51, 200), (1, 3), (7, 8)])
def test_a_share_on_a_rounding_tie_rounds_away_from_zero(part, whole):
    expected = (Decimal(part) * 100 / whole).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
    assert share_text(part / whole) == f"{expected}%"


def test_figures_do_not_depend_on_the_callers_decimal_context():
    # A caller's thread-wide context (4 digits) must neither round a figure twice nor make it fail.
    with localcontext() as context:
        context.prec = 4
        assert human_count(25_554_999) == "25.55 M"  # 25.554999 exactly
        assert human_count(138_357_544) == "138.36 M"
        assert share_text(0.0625) == "6.3%"


def test_huge_counts_and_numpy_shares_are_written():
    assert human_count(10**44) == "1.00e+44" and human_bytes(10**47) == "1.00e+47 B"
    assert human_count(-999_995) == "-1.00 M"  # rounds to a thousand K: the next prefix, as positive ones
    assert share_text(numpy.float64(0.0625)) == "6.3%"


@pytest.mark.parametrize(
    ("change", "text"),
    [(-0.9997, "<-99.9%"), (0.9997, ">+99.9%"), (-0.00004, "-<0.1%"), (0.4163, "+41.6%"), (-1.0, "-100.0%")],
)
def test_a_change_near_all_of_the_value_is_bounded_with_its_sign_inside(change, text):
    """diff resnet18 lenet5 wrote the MACs' fall as '->99.9%', which reads as an arrow: a fall
    of more than 99.9% is below -99.9% ('<-99.9%'); a small change keeps its sign first."""
    assert percent_change_text(change) == text
