"""nagiosplugin, adapted to the contract: perfdata order, unit-aware texts, our ranking.

Everything nagiosplugin-shaped lives here, so the rest of the code meets it only through
these classes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import nagiosplugin

from checks.output import Report, internal_error
from checks.status import CheckFailed, Status, worst
from checks.thresholds import Limits, Threshold, assign
from checks.units import Unit, format_value


class Resource(nagiosplugin.Resource):
    """A resource that can also add long-output lines (facts that are not metrics)."""

    def __init__(self) -> None:
        self.details: list[str] = []


# what a Check is made of
CheckPart = (
    nagiosplugin.Resource | nagiosplugin.Context | nagiosplugin.Summary | nagiosplugin.Results
)


class Check(nagiosplugin.Check):
    """nagiosplugin's Check, keeping perfdata in the order the resource yields it.

    nagiosplugin sorts perfdata alphabetically; a resource that yields its headline and
    aggregates first and its objects worst first keeps what matters when the 4 KB limit
    cuts the line. The loop is ours, on nagiosplugin's public API only (Check.add,
    Metric.replace, Context.evaluate and performance): nagiosplugin >= 1.3 cannot change
    it behind our back. A resource's failures are CheckFailed (or internal errors), which
    :func:`evaluate` turns into the answer.
    """

    def __init__(self, *objects: CheckPart) -> None:
        self.by_context: dict[str, nagiosplugin.Context] = {}
        super().__init__(*objects)

    def add(self, *objects: CheckPart) -> Check:
        for part in objects:
            if isinstance(part, nagiosplugin.Context):
                self.by_context[part.name] = part
        super().add(*objects)
        return self

    def __call__(self) -> None:
        for resource in self.resources:
            self._measure(resource)

    def _measure(self, resource: nagiosplugin.Resource) -> None:
        metrics = resource.probe()
        for yielded in [metrics] if isinstance(metrics, nagiosplugin.Metric) else metrics:
            context = self.by_context[yielded.context]
            metric = yielded.replace(contextobj=context, resource=resource)
            result = context.evaluate(metric, resource)
            if isinstance(result, nagiosplugin.state.ServiceState):
                result = nagiosplugin.Result(result, metric=metric)
            self.results.add(result)
            if (performance := context.performance(metric, resource)) is not None:
                self.perfdata.append(str(performance))


class MetricContext(nagiosplugin.ScalarContext):
    """A thresholded metric whose text shows its unit the way people read it."""

    def __init__(self, name: str, limits: Limits | None = None, *, label: str, unit: Unit) -> None:
        limits = limits or Limits()
        super().__init__(name, limits.warning, limits.critical)
        self.label = label
        self.unit = unit

    def describe(self, metric: nagiosplugin.Metric) -> str:
        return f"{self.label} {format_value(metric.value, self.unit)}"

    def evaluate(self, metric: nagiosplugin.Metric, resource: Any) -> nagiosplugin.Result:
        result = super().evaluate(metric, resource)
        if result.state == nagiosplugin.Ok:
            return result
        limit = self.critical if result.state == nagiosplugin.Critical else self.warning
        # str(Result) is "description (hint)": "replay lag 20.0 MiB (above 16.0 MiB)"
        return nagiosplugin.Result(result.state, _range_text(limit, self.unit), metric)


def _range_text(limit: nagiosplugin.Range, unit: Unit) -> str:
    """The violated range in the user's units: 'above 16.0 MiB', 'outside 1 to 3'."""
    start, end = limit.start, limit.end
    if limit.invert:
        return f"inside {format_value(start, unit)} to {format_value(end, unit)}"
    if start in (0, float("-inf")):
        return f"above {format_value(end, unit)}"
    if end == float("inf"):
        return f"below {format_value(start, unit)}"
    return f"outside {format_value(start, unit)} to {format_value(end, unit)}"


def metric_contexts(
    limits: dict[str, Limits], words: dict[str, tuple[str, Unit]]
) -> list[MetricContext]:
    """A MetricContext for each thresholded metric, ``{name: (label, unit)}``, with its
    limits as :func:`checks.thresholds.assign` handed them out."""
    return [
        MetricContext(name, limits[name], label=label, unit=unit)
        for name, (label, unit) in words.items()
    ]


def threshold_contexts(
    warnings: Iterable[Threshold],
    criticals: Iterable[Threshold],
    words: dict[str, tuple[str, Unit]],
    *,
    defaults: Mapping[str, Limits] | None = None,
) -> list[MetricContext]:
    """The MetricContexts of ``words`` (one metric per unit): each takes the -w/-c given
    in its unit (:func:`checks.thresholds.assign`), else its ``defaults``."""
    targets = {unit: name for name, (_, unit) in words.items()}
    return metric_contexts(assign(warnings, criticals, targets, defaults=defaults), words)


class FlagContext(nagiosplugin.Context):
    """A yes/no fact that is bad when it has ``bad_value``: 0/1 perfdata.

    Bad, it says ``state`` and ``hint``; a subclass whose words (or state) depend on the
    resource's facts overrides :meth:`verdict`.
    """

    def __init__(
        self,
        name: str,
        *,
        bad_value: bool = True,
        state: Status = Status.CRITICAL,
        hint: str = "",
    ) -> None:
        super().__init__(name)
        self.bad_value = bad_value
        self.state = state
        self.hint = hint

    def verdict(self, metric: nagiosplugin.Metric, resource: Any) -> tuple[Status, str]:
        """The state and words of the flag when it has its bad value (OK: not bad after all)."""
        return self.state, self.hint

    def evaluate(self, metric: nagiosplugin.Metric, resource: Any) -> nagiosplugin.Result:
        if bool(metric.value) == self.bad_value:
            status, hint = self.verdict(metric, resource)
            if status is not Status.OK:
                return nagiosplugin.Result(state_of(status), hint, metric)
        return nagiosplugin.Result(nagiosplugin.Ok, None, metric)

    def performance(
        self, metric: nagiosplugin.Metric, resource: object
    ) -> nagiosplugin.Performance:
        return nagiosplugin.Performance(metric.name, int(bool(metric.value)), min=0, max=1)


class FactContext(nagiosplugin.Context):
    """A metric that is only reported (perfdata), never judged."""

    def performance(
        self, metric: nagiosplugin.Metric, resource: object
    ) -> nagiosplugin.Performance:
        return nagiosplugin.Performance(
            metric.name, metric.value, metric.uom, min=metric.min, max=metric.max
        )


_STATES = {
    Status.OK: nagiosplugin.Ok,
    Status.WARNING: nagiosplugin.Warn,
    Status.CRITICAL: nagiosplugin.Critical,
    Status.UNKNOWN: nagiosplugin.Unknown,
}


def state_of(status: Status) -> nagiosplugin.state.ServiceState:
    """nagiosplugin's state for one of ours."""
    return _STATES[status]


def named(result: nagiosplugin.Result) -> str:
    """The name of the metric a result judged ('' for a result about no metric)."""
    return result.metric.name if result.metric is not None else ""


def status_of(state: nagiosplugin.state.ServiceState) -> Status:
    """Our status for one of nagiosplugin's states (they share the numbers)."""
    return Status(int(state))


class Summary(nagiosplugin.Summary):
    """First-line wording. Subclasses override :meth:`ok`; problems list the worst results.

    Joined with commas: Nagios rewrites ';' in plugin output (it separates fields there).
    Subclasses word the OK line from the facts their resource kept
    (``resource: TheirResource``).
    """

    def __init__(self, resource: Resource | None = None) -> None:
        self.resource = resource

    def ok(self, results: nagiosplugin.Results) -> str:
        return ", ".join(str(r) for r in results if r.hint) or str(results[0])

    def problem(self, results: nagiosplugin.Results) -> str:
        status = worst(status_of(r.state) for r in results)
        return ", ".join(str(r) for r in results if status_of(r.state) is status)


def evaluate(name: str, check: nagiosplugin.Check, *, verbose: int = 0) -> Report:
    """Run a nagiosplugin check and turn its results into our report."""
    try:
        check()
    except CheckFailed as failure:
        return Report(
            name, failure.status, failure.message, details=failure.details + _details(check)
        )
    except Exception as exc:  # an internal error must still end as a plugin answer
        return internal_error(name, exc, verbose=verbose)
    results = check.results
    if not len(results):
        return Report(name, Status.UNKNOWN, "no result (internal error)")
    status = worst(status_of(r.state) for r in results)
    summary_obj = check.summary
    text = summary_obj.ok(results) if status is Status.OK else summary_obj.problem(results)
    details = _details(check)
    if verbose:
        # str(Result): the metric's description, or its hint
        details += [f"{status_of(r.state).name.lower()}: {r}" for r in results]
    return Report(name, status, text, perfdata=list(check.perfdata), details=details)


def _details(check: nagiosplugin.Check) -> list[str]:
    lines: list[str] = []
    for resource in check.resources:
        lines.extend(getattr(resource, "details", []))
    return lines
