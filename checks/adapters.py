"""nagiosplugin, adapted to the contract: perfdata order, unit-aware texts, our ranking.

Everything nagiosplugin-shaped lives here, so the rest of the code meets it only through
these classes.
"""

from __future__ import annotations

import nagiosplugin

from checks.output import Report, internal_error
from checks.status import CheckFailed, Status, worst
from checks.thresholds import Limits
from checks.units import Unit, format_value


class Probe(nagiosplugin.Resource):
    """A resource that can also add long-output lines (facts that are not metrics)."""

    def __init__(self) -> None:
        self.details: list[str] = []


class Check(nagiosplugin.Check):
    """nagiosplugin's Check, keeping perfdata in the order the probe yields it.

    nagiosplugin sorts perfdata alphabetically; a probe that yields the aggregates first
    and its objects worst first keeps what matters when the 4 KB limit cuts the line.
    """

    def __call__(self) -> None:
        for resource in self.resources:
            self._evaluate_resource(resource)
        self.perfdata = [p for p in self.perfdata if p]


class MetricContext(nagiosplugin.ScalarContext):
    """A thresholded metric whose text shows its unit the way people read it."""

    def __init__(self, name: str, limits: Limits | None = None, *, label: str, unit: Unit) -> None:
        limits = limits or Limits()
        super().__init__(name, limits.warning, limits.critical)
        self.label = label
        self.unit = unit

    def describe(self, metric: nagiosplugin.Metric) -> str:
        return f"{self.label} {format_value(metric.value, self.unit)}"

    def evaluate(self, metric: nagiosplugin.Metric, resource: object) -> nagiosplugin.Result:
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


class FlagContext(nagiosplugin.Context):
    """A yes/no fact that is bad when it has ``bad_value``: 0/1 perfdata, fixed state."""

    def __init__(self, name: str, *, bad_value: bool, state: Status, hint: str) -> None:
        super().__init__(name)
        self.bad_value = bad_value
        self.state = state
        self.hint = hint

    def evaluate(self, metric: nagiosplugin.Metric, resource: object) -> nagiosplugin.Result:
        if bool(metric.value) == self.bad_value:
            return nagiosplugin.Result(state_of(self.state), self.hint, metric)
        return nagiosplugin.Result(nagiosplugin.Ok, None, metric)

    def performance(self, metric: nagiosplugin.Metric, resource: object):
        return nagiosplugin.Performance(metric.name, int(bool(metric.value)), min=0, max=1)


class FactContext(nagiosplugin.Context):
    """A metric that is only reported (perfdata), never judged."""

    def performance(self, metric: nagiosplugin.Metric, resource: object):
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


def status_of(state: nagiosplugin.state.ServiceState) -> Status:
    """Our status for one of nagiosplugin's states (they share the numbers)."""
    return Status(int(state))


class Summary(nagiosplugin.Summary):
    """First-line wording. Subclasses override :meth:`ok`; problems list the worst results.

    Joined with commas: Nagios rewrites ';' in plugin output (it separates fields there).
    Subclasses word the OK line from the facts their probe kept (``probe: TheirProbe``).
    """

    def __init__(self, probe: Probe | None = None) -> None:
        self.probe = probe

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
        details += [
            f"{status_of(r.state).name.lower()}: {r or f'{r.metric.name} = {r.metric.valueunit}'}"
            for r in results
        ]
    return Report(name, status, text, perfdata=list(check.perfdata), details=details)


def _details(check: nagiosplugin.Check) -> list[str]:
    lines: list[str] = []
    for resource in check.resources:
        lines.extend(getattr(resource, "details", []))
    return lines
