import pytest

from checks.units import (
    Unit,
    UnitError,
    format_bytes,
    format_duration,
    parse_quantity,
    plain_number,
)


@pytest.mark.parametrize(
    ("text", "value", "unit"),
    [
        ("16MB", 16 * 1024**2, Unit.BYTES),
        ("16mb", 16 * 1024**2, Unit.BYTES),
        ("1GiB", 1024**3, Unit.BYTES),
        ("512kB", 512 * 1024, Unit.BYTES),
        ("100B", 100, Unit.BYTES),
        ("1.5GB", 1.5 * 1024**3, Unit.BYTES),
        ("500ms", 0.5, Unit.SECONDS),
        ("30s", 30, Unit.SECONDS),
        ("5min", 300, Unit.SECONDS),
        ("2h", 7200, Unit.SECONDS),
        ("1d", 86400, Unit.SECONDS),
        ("250us", 0.00025, Unit.SECONDS),
        ("90%", 90, Unit.PERCENT),
        ("42", 42, Unit.NUMBER),
        ("-3.5", -3.5, Unit.NUMBER),
    ],
)
def test_parse_quantity(text: str, value: float, unit: Unit) -> None:
    quantity = parse_quantity(text)
    assert quantity.unit is unit
    assert quantity.value == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "MB", "10 parsecs", "5m", "1e5", "ten"])
def test_parse_quantity_refuses(text: str) -> None:
    with pytest.raises(UnitError):
        parse_quantity(text)


def test_bare_m_is_refused_with_a_hint() -> None:
    with pytest.raises(UnitError, match="'5MB' for bytes, 'min' for minutes or 'ms'"):
        parse_quantity("5m")


@pytest.mark.parametrize(("text", "meant"), [("16M", "16MB"), ("2k", "2kB"), ("1G", "1GB")])
def test_one_letter_byte_units_are_answered_with_the_byte_unit(text: str, meant: str) -> None:
    with pytest.raises(UnitError) as refused:
        parse_quantity(text)
    assert str(refused.value) == f"{text!r}: say '{meant}' for bytes"


def test_bytes_are_whole_numbers() -> None:
    assert parse_quantity("1.5kB").value == 1536


@pytest.mark.parametrize(
    ("value", "text"),
    [(16, "16"), (16.0, "16"), (0.5, "0.5"), (1e-5, "0.00001"), (1 / 3, "0.333333")],
)
def test_plain_number_has_no_exponent(value: float, text: str) -> None:
    assert plain_number(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (16 * 1024**2, "16.0 MiB"),
        (3 * 1024**4, "3.0 TiB"),
    ],
)
def test_format_bytes(value: int, text: str) -> None:
    assert format_bytes(value) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0001, "100us"),
        (0, "0ms"),
        (0.012, "12ms"),
        (4.24, "4.2s"),
        (200, "3min 20s"),
        (7500, "2h 5min"),
        (3 * 86400 + 4 * 3600, "3d 4h"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
