"""Quantities with units: parsing what users type, formatting what they read.

Byte multiples follow PostgreSQL's own convention (``kB``, ``MB``, ``GB``, ``TB`` are powers
of 1024, as in postgresql.conf); the IEC spellings (``KiB``, ``MiB``...) mean the same.
Durations use PostgreSQL's units too (``us``, ``ms``, ``s``, ``min``, ``h``, ``d``); a bare
``m`` is refused because it reads as minutes to some and milliseconds to others.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass


class Unit(enum.Enum):
    """What a number measures; the value is the Nagios perfdata UOM."""

    BYTES = "B"
    SECONDS = "s"
    PERCENT = "%"
    NUMBER = ""

    @property
    def example(self) -> str:
        return {
            Unit.BYTES: "16MB",
            Unit.SECONDS: "30s",
            Unit.PERCENT: "90%",
            Unit.NUMBER: "10",
        }[self]


_BYTE_FACTORS = {
    "b": 1,
    "kb": 1024,
    "kib": 1024,
    "mb": 1024**2,
    "mib": 1024**2,
    "gb": 1024**3,
    "gib": 1024**3,
    "tb": 1024**4,
    "tib": 1024**4,
}
_SECOND_FACTORS = {
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "sec": 1.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
# One-letter spellings people carry over from other tools (-w 16M), and what they meant.
_BARE_PREFIXES = {"k": "kB", "m": "MB", "g": "GB", "t": "TB"}
_QUANTITY = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*([A-Za-z%]*)\s*$")


class UnitError(ValueError):
    """A quantity the user typed could not be understood."""


@dataclass(frozen=True)
class Quantity:
    value: float
    unit: Unit


def parse_quantity(text: str) -> Quantity:
    """Parse ``16MB``, ``1GiB``, ``500ms``, ``5min``, ``90%`` or a plain number.

    Bytes come back as whole numbers (perfdata wants integers for bytes).
    """
    match = _QUANTITY.match(text)
    if not match:
        raise UnitError(f"{text!r} is not a number with an optional unit")
    number, suffix = float(match.group(1)), match.group(2)
    if suffix == "":
        return Quantity(number, Unit.NUMBER)
    if suffix == "%":
        return Quantity(number, Unit.PERCENT)
    key = suffix.lower()
    if key in _BYTE_FACTORS:
        return Quantity(float(round(number * _BYTE_FACTORS[key])), Unit.BYTES)
    if key in _SECOND_FACTORS:
        return Quantity(number * _SECOND_FACTORS[key], Unit.SECONDS)
    if key in _BARE_PREFIXES:
        # -w 16M means megabytes to anyone coming from other tools; only a lower-case m
        # may also be minutes or milliseconds.
        meant = f"'{match.group(1)}{_BARE_PREFIXES[key]}'"
        if suffix == "m":
            raise UnitError(
                f"{text!r}: say {meant} for bytes, 'min' for minutes or 'ms' for milliseconds"
            )
        raise UnitError(f"{text!r}: say {meant} for bytes")
    raise UnitError(
        f"{text!r}: unknown unit {suffix!r} (bytes: B kB MB GB TB or KiB MiB GiB TiB, "
        "time: us ms s min h d, percent: %)"
    )


def plain_number(value: float) -> str:
    """A number as Nagios range syntax and perfdata accept it: no exponent, no '.0'."""
    if math.isinf(value):
        return "~" if value < 0 else ""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


def format_bytes(value: float) -> str:
    """``16.0 MiB``: binary units, one decimal, stable between runs."""
    sign = "-" if value < 0 else ""
    size = abs(float(value))
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            if unit == "B":
                return f"{sign}{int(size)} B"
            return f"{sign}{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """``12ms``, ``4.2s``, ``3min 20s``, ``2h 5min``, ``3d 4h``."""
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if 0 < seconds < 0.001:
        return f"{seconds * 1e6:.0f}us"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}min {whole % 60}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60}min"
    return f"{whole // 86400}d {whole % 86400 // 3600}h"


def format_value(value: float, unit: Unit) -> str:
    if unit is Unit.BYTES:
        return format_bytes(value)
    if unit is Unit.SECONDS:
        return format_duration(value)
    if unit is Unit.PERCENT:
        return f"{value:.1f}%"
    return plain_number(value)
