from __future__ import annotations

from checks.memory.pressure import parse_pressure, read_pressure
from tests.unit.mem_helpers import tree


def test_psi_some_and_full() -> None:
    pressure = read_pressure(tree("v1-host"))
    assert pressure is not None
    assert (pressure.some_avg10, pressure.some_avg60, pressure.full_avg10) == (1.5, 0.75, 0.2)
    assert pressure.source == "/proc/pressure/memory"


def test_no_psi_file_is_none() -> None:
    assert read_pressure(tree("no-psi-no-swap")) is None


def test_psi_without_a_full_line() -> None:
    pressure = parse_pressure("some avg10=1.00 avg60=2.00 avg300=3.00 total=4\n", "x")
    assert pressure is not None
    assert pressure.full_avg10 is None


def test_garbage_is_none() -> None:
    assert parse_pressure("nothing here\n", "x") is None
