"""Nagios threshold ranges with units, turned into nagiosplugin ranges in base units.

A range is the standard ``[@][start:][end]`` (``10``, ``10:``, ``~:10``, ``10:20``,
``@10:20``); each number may carry a unit (``16MB``, ``30s``, ``90%``). nagiosplugin's
``Range`` knows no units, so the numbers are converted to base units (bytes, seconds)
and the range is rebuilt in plain numbers; the perfdata then shows base-unit ranges.

On a check with several metrics, a threshold's unit says which metric it is for
(``-w 16MB -w 30s`` on ``lag``): see :func:`assign`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click
import nagiosplugin

from checks.units import Quantity, Unit, UnitError, parse_quantity, plain_number

# a click command, or the function an option decorator is about to make one of
_CommandT = TypeVar("_CommandT", bound=Callable[..., Any])


@dataclass(frozen=True)
class Threshold:
    """One ``-w``/``-c`` value: a range in base units, and the unit it was given in."""

    text: str
    unit: Unit
    range: nagiosplugin.Range


def parse_threshold(text: str) -> Threshold:
    spec = text.strip()
    invert = spec.startswith("@")
    body = spec[1:] if invert else spec
    start_text, end_text = body.split(":", 1) if ":" in body else ("", body)
    if ":" in end_text:
        raise UnitError(f"{text!r}: a range has at most one ':'")
    bounds: list[Quantity | None] = [
        None if atom in ("", "~") else parse_quantity(atom) for atom in (start_text, end_text)
    ]
    # a bare 0 is zero in any unit: '0:10MB' means what '0MB:10MB' does
    units = {
        q.unit for q in bounds if q is not None and not (q.value == 0 and q.unit is Unit.NUMBER)
    }
    units = units or {q.unit for q in bounds if q is not None}
    if not units:
        raise UnitError(f"{text!r} is not a range: give at least one number")
    if len(units) > 1:
        raise UnitError(f"{text!r}: both ends of a range need the same unit")
    unit = units.pop()
    start, end = bounds
    start_spec = "~" if start_text == "~" else ("" if start is None else plain_number(start.value))
    end_spec = "" if end is None else plain_number(end.value)
    rebuilt = ("@" if invert else "") + (f"{start_spec}:" if ":" in body else "") + end_spec
    try:
        return Threshold(text=text, unit=unit, range=nagiosplugin.Range(rebuilt))
    except ValueError as exc:
        raise UnitError(f"{text!r}: {exc}") from None


if TYPE_CHECKING:
    # click's types say what a ParamType converts to; click before 8.2 cannot be
    # subscripted at run time, and pyproject.toml allows 8.1.
    _ThresholdParamType = click.ParamType[Threshold]
else:
    _ThresholdParamType = click.ParamType


class ThresholdType(_ThresholdParamType):
    """Click parameter type for ranges; ``plain_unit`` is what a unit-less number means."""

    name = "RANGE"

    def __init__(self, *, unit: Unit | None = None, plain_unit: Unit | None = None) -> None:
        self.unit = unit
        self.plain_unit = plain_unit

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> Threshold:
        if isinstance(value, Threshold):
            return value
        try:
            threshold = parse_threshold(str(value))
        except UnitError as exc:
            self.fail(str(exc), param, ctx)
        if threshold.unit is Unit.NUMBER and self.plain_unit is not None:
            threshold = Threshold(threshold.text, self.plain_unit, threshold.range)
        if self.unit is not None and threshold.unit is not self.unit:
            self.fail(
                f"{value!r} must be in {self.unit.name.lower()} (e.g. {self.unit.example})",
                param,
                ctx,
            )
        return threshold


@dataclass(frozen=True)
class Limits:
    """The warning and critical range for one metric (None: no threshold)."""

    warning: nagiosplugin.Range | None = None
    critical: nagiosplugin.Range | None = None

    @classmethod
    def given(
        cls, warning: Threshold | None, critical: Threshold | None, default: Limits | None = None
    ) -> Limits:
        """The user's ranges from a ``--X-warning/--X-critical`` pair, else ``default``'s."""
        default = default or cls()
        return cls(
            warning.range if warning else default.warning,
            critical.range if critical else default.critical,
        )


def assign(
    warnings: Iterable[Threshold],
    criticals: Iterable[Threshold],
    targets: Mapping[Unit, str],
    *,
    defaults: Mapping[str, Limits] | None = None,
    plain_unit: Unit | None = None,
) -> dict[str, Limits]:
    """Give each metric named in ``targets`` its limits, picked by the thresholds' units.

    ``targets`` maps a unit to the metric that thresholds in that unit apply to;
    ``plain_unit`` says which unit a number without one stands for (None: refuse it).
    A metric keeps its ``defaults`` entry for a level the user did not set.
    """
    limits = {metric: (defaults or {}).get(metric, Limits()) for metric in targets.values()}
    accepted = " or ".join(f"{u.name.lower()} ({u.example})" for u in targets)
    for level, given in (("warning", warnings), ("critical", criticals)):
        seen: set[Unit] = set()
        for threshold in given:
            unit = threshold.unit
            if unit is Unit.NUMBER and plain_unit is not None:
                unit = plain_unit
            if unit not in targets:
                raise click.BadParameter(
                    f"{threshold.text!r}: this check takes thresholds in {accepted}",
                    param_hint=f"--{level}",
                )
            if unit in seen:
                raise click.BadParameter(
                    f"{threshold.text!r}: a second {unit.name.lower()} threshold",
                    param_hint=f"--{level}",
                )
            seen.add(unit)
            metric = targets[unit]
            current = limits[metric]
            limits[metric] = (
                Limits(threshold.range, current.critical)
                if level == "warning"
                else Limits(current.warning, threshold.range)
            )
    return limits


def threshold_options(
    *, plain_unit: Unit | None, help_suffix: str = ""
) -> Callable[[_CommandT], _CommandT]:
    """The repeatable ``-w/--warning`` and ``-c/--critical`` options every check shares."""
    kind = ThresholdType(plain_unit=plain_unit)

    def decorate(command: _CommandT) -> _CommandT:
        command = click.option(
            "-c",
            "--critical",
            "critical",
            type=kind,
            multiple=True,
            metavar="RANGE",
            help=f"Critical range; repeatable, one per unit. {help_suffix}".strip(),
        )(command)
        return click.option(
            "-w",
            "--warning",
            "warning",
            type=kind,
            multiple=True,
            metavar="RANGE",
            help=f"Warning range; repeatable, one per unit. {help_suffix}".strip(),
        )(command)

    return decorate


def range_options(
    name: str,
    kind: ThresholdType,
    what: str,
    *,
    default_warning: str = "",
    default_critical: str = "",
) -> Callable[[_CommandT], _CommandT]:
    """``--NAME-warning`` and ``--NAME-critical``: the ranges of a metric that shares its
    unit with the headline one, so ``-w/-c`` cannot reach it (docs/design.md §3)."""

    def decorate(command: _CommandT) -> _CommandT:
        for level, default in (("critical", default_critical), ("warning", default_warning)):
            note = f" (default: {default})" if default else ""
            command = click.option(
                f"--{name}-{level}",
                type=kind,
                metavar="RANGE",
                help=f"{level.capitalize()} range for {what}{note}.",
            )(command)
        return command

    return decorate
