"""The plugin contract every executable shares (docs/design.md §2).

- exit 0/1/2/3, and 3 only for usage and internal errors: click never picks the code;
- CRITICAL > WARNING > UNKNOWN > OK when results disagree (nagiosplugin ranks UNKNOWN
  highest, which would hide a real CRITICAL behind a missing privilege);
- one first line ``NAME STATUS - summary | perfdata``, long output after it, the whole
  under Consul's 4096-byte window (it keeps the tail, so the head must fit);
- ``--timeout`` bounds the whole run: a watchdog thread prints and exits even when the
  main thread is stuck in a network call;
- nothing on stderr, no traceback unless ``-vvv``.
"""

from __future__ import annotations

import enum
import math
import os
import re
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

import click
import nagiosplugin

from checks import __version__
from checks.thresholds import Limits
from checks.units import Unit, format_value

# Consul keeps the last 4096 bytes of a check's output; stay clear of that.
OUTPUT_LIMIT = 4000
SUMMARY_LIMIT = 200

TIMEOUT_HELP = "Seconds the whole run may take; past it the check says CRITICAL and exits."


class Status(enum.IntEnum):
    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    @classmethod
    def of(cls, state: nagiosplugin.state.ServiceState) -> Status:
        return cls(int(state))


_RANK = {Status.OK: 0, Status.UNKNOWN: 1, Status.WARNING: 2, Status.CRITICAL: 3}


def worst(statuses: Iterable[Status]) -> Status:
    """The status that wins: CRITICAL > WARNING > UNKNOWN > OK."""
    return max(statuses, key=_RANK.__getitem__, default=Status.OK)


def perfdata_label(name: str, taken: set[str], *, fallback: str) -> str:
    """A stable ASCII snake_case label for a named object (a standby, a slot).

    Graphers break on spaces, quotes and non-ASCII in labels. A name that had to be
    changed gets a short hash of the exact name, so 'DC1 standby' and 'dc1-standby' keep
    their own series whoever else is connected (numbering them by arrival would swap the
    graphs when one disconnects). ``taken`` only guards against the hash colliding.
    """
    label = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or fallback
    if label != name:
        # here, not at the top: hashlib loads OpenSSL (~3 ms) and most checks never get here
        import hashlib

        label = f"{label}_{hashlib.sha1(name.encode()).hexdigest()[:6]}"
    unique, number = label, 2
    while unique in taken:
        unique, number = f"{label}_{number}", number + 1
    taken.add(unique)
    return unique


class CheckFailed(Exception):
    """Raised by a probe when the question cannot be answered; ends the check with this."""

    def __init__(self, status: Status, message: str, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        # long-output lines: what the one-line message had to shorten
        self.details = list(details)


def critical(message: str, details: Sequence[str] = ()) -> CheckFailed:
    return CheckFailed(Status.CRITICAL, message, details)


def unknown(message: str) -> CheckFailed:
    return CheckFailed(Status.UNKNOWN, message)


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
            return nagiosplugin.Result(_STATES[self.state], self.hint, metric)
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
        status = worst(Status.of(r.state) for r in results)
        return ", ".join(str(r) for r in results if Status.of(r.state) is status)


@dataclass
class Report:
    """What a check run ends with; rendered once, at the very end."""

    name: str
    status: Status
    summary: str
    perfdata: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    def render(self) -> str:
        # One line, and no ';': Nagios rewrites it in the first line of output (nagioscore#652),
        # and summaries carry messages from libpq and Consul that use it. No '|' in any
        # line but as the perfdata separator: Nagios reads what follows one as perfdata,
        # and application_names, database names and server messages may contain it.
        summary = " ".join(self.summary.split()).replace(";", ",").replace("|", "/")
        if len(summary) > SUMMARY_LIMIT:
            summary = summary[: SUMMARY_LIMIT - 1] + "…"
        first = f"{self.name} {self.status.name} - {summary}"
        perfdata = list(self.perfdata)
        # Perfdata stays on the first line (Icinga mislabels it elsewhere); when it would
        # crowd out the rest, the tail of it goes and a detail line says so.
        details = [line.replace("|", "/") for line in self.details]
        if len(first) + len(" | " + " ".join(perfdata)) > OUTPUT_LIMIT // 2:
            while perfdata and len(first) + len(" | " + " ".join(perfdata)) > OUTPUT_LIMIT // 2:
                perfdata.pop()
            details.insert(0, "(perfdata truncated to fit the 4 KB output limit)")
        if perfdata:
            first += " | " + " ".join(perfdata)
        lines = [first]
        used = len(first.encode()) + 1
        for index, line in enumerate(details):
            size = len(line.encode()) + 1
            more = len(details) - index
            if used + size > OUTPUT_LIMIT - 20 and more > 0:
                lines.append(f"… {more} more")
                break
            lines.append(line)
            used += size
        return "\n".join(lines) + "\n"


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
    status = worst(Status.of(r.state) for r in results)
    summary_obj = check.summary
    text = summary_obj.ok(results) if status is Status.OK else summary_obj.problem(results)
    details = _details(check)
    if verbose:
        details += [
            f"{Status.of(r.state).name.lower()}: {r or f'{r.metric.name} = {r.metric.valueunit}'}"
            for r in results
        ]
    return Report(name, status, text, perfdata=list(check.perfdata), details=details)


def _details(check: nagiosplugin.Check) -> list[str]:
    lines: list[str] = []
    for resource in check.resources:
        lines.extend(getattr(resource, "details", []))
    return lines


def internal_error(name: str, exc: BaseException, *, verbose: int = 0) -> Report:
    details = traceback.format_exception(exc) if verbose >= 3 else []
    lines = [line for chunk in details for line in chunk.rstrip("\n").split("\n")]
    message = f"internal error: {type(exc).__name__}: {exc}".rstrip(": ")
    return Report(name, Status.UNKNOWN, message, details=lines)


class Watchdog:
    """Ends the process at the deadline, whatever the main thread is blocked in.

    A signal handler would only run once the main thread returns to the interpreter,
    which a connect to a frozen server or a DNS lookup may not do in time; a thread
    that writes the answer and calls ``os._exit`` always does.
    """

    def __init__(self, name: str, timeout: float, target: str | Callable[[], str]) -> None:
        self.name = name
        self.timeout = timeout
        self.target = target
        self._lock = threading.Lock()
        self._done = False
        self._timer = threading.Timer(timeout, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Watchdog:
        if self.timeout > 0:
            self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()

    def finish(self) -> bool:
        """Claim the right to print the answer; False once the watchdog has printed."""
        with self._lock:
            if self._done:
                return False
            self._done = True
            return True

    def _target(self) -> str:
        """What was asked, worked out only now: the happy path never pays for it."""
        if not callable(self.target):
            return self.target
        try:
            return self.target()
        except Exception:
            return "the server"

    def _expire(self) -> None:
        if not self.finish():
            return
        try:
            report = Report(
                self.name,
                Status.CRITICAL,
                f"timeout: no answer from {self._target()} within {self.timeout:g}s",
            )
            os.write(1, report.render().encode())
        finally:
            # Whatever the write does (EPIPE once the reader is gone), the process ends:
            # the main thread is waiting for this exit and would otherwise wait for ever.
            os._exit(int(Status.CRITICAL))


VERBOSE_HELP = "More output: -v every metric, -vvv tracebacks."

# The longest --timeout: a day. No scheduler waits that long for a check (Consul, Nagios
# and Icinga kill one at their own, far shorter, timeout), and PostgreSQL's
# statement_timeout, derived from it, stops at 2^31 - 1 ms (24.8 days).
MAX_TIMEOUT = 86400.0
MIN_TIMEOUT = 0.1


class TimeoutType(click.ParamType):
    """``-t``: seconds (``10``, ``2.5``) or a duration (``30s``, ``2min``), finite, between
    a minimum the tool can work within and a day; anything else a usage error."""

    name = "SECONDS"

    def __init__(self, minimum: float = MIN_TIMEOUT, why_minimum: str = "") -> None:
        self.minimum = minimum
        self.why_minimum = why_minimum

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, float):
            return value
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            seconds = self._duration(text, param, ctx)
        if math.isnan(seconds):
            self.fail(f"{text!r} is not a number of seconds (e.g. 10)", param, ctx)
        if seconds > MAX_TIMEOUT:
            self.fail(
                f"{text} is more than a day ({MAX_TIMEOUT:g} seconds), the longest timeout: "
                "no monitoring system waits that long for a check",
                param,
                ctx,
            )
        if seconds <= 0:
            self.fail(f"{text}: a timeout is a positive number of seconds", param, ctx)
        if seconds < self.minimum:
            why = f": {self.why_minimum}" if self.why_minimum else ""
            self.fail(
                f"{text} seconds is too short, give at least {self.minimum:g}{why}", param, ctx
            )
        return seconds

    def _duration(self, text: str, param, ctx) -> float:
        from checks.units import Unit, UnitError, parse_quantity

        try:
            quantity = parse_quantity(text)
        except UnitError:
            quantity = None
        if quantity is None or quantity.unit is not Unit.SECONDS:
            self.fail(f"{text!r} is not a number of seconds (e.g. 10 or 30s)", param, ctx)
        return float(quantity.value)


def common_options(
    command: Callable,
    *,
    timeout_help: str = TIMEOUT_HELP,
    verbose_help: str = VERBOSE_HELP,
    timeout_type: TimeoutType | None = None,
) -> Callable:
    """``-t/--timeout`` and ``-v/--verbose``, on every check (the reporter words them its way)."""
    command = click.option("-v", "--verbose", count=True, help=verbose_help)(command)
    return click.option(
        "-t",
        "--timeout",
        type=timeout_type or TimeoutType(),
        default=10.0,
        show_default=True,
        help=timeout_help,
    )(command)


def version_option(command: Callable) -> Callable:
    return click.version_option(
        __version__,
        "-V",
        "--version",
        package_name="pg-ha-checks",
        message="%(prog)s (pg-ha-checks) %(version)s",
    )(command)


CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def run_cli(command: click.Command, name: str, argv: Sequence[str] | None = None) -> NoReturn:
    """Run a click command under the contract: its exit code and output are ours, not click's.

    The command returns a :class:`Report`; usage errors become ``NAME UNKNOWN`` on stdout
    with exit 3 (click itself would exit 2, which Consul and Nagios read as CRITICAL).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    prog = os.path.basename(sys.argv[0]) if argv is None else command.name
    try:
        result = command.main(args=args, prog_name=prog, standalone_mode=False)
    except click.ClickException as exc:
        report = Report(name, Status.UNKNOWN, f"{exc.format_message()} (see --help)")
    except click.Abort:
        report = Report(name, Status.UNKNOWN, "aborted")
    except Exception as exc:
        report = internal_error(name, exc)
    else:
        if isinstance(result, Report):
            report = result
        else:
            # --help and --version: click printed them and handed back an exit code
            sys.stdout.flush()
            sys.exit(int(result or 0))
    emit(report)


def run_check(
    name: str,
    build: Callable[[], nagiosplugin.Check],
    *,
    timeout: float,
    target: str | Callable[[], str],
    verbose: int = 0,
) -> Report:
    """Build and evaluate a check under the ``--timeout`` watchdog."""
    with Watchdog(name, timeout, target) as watchdog:
        try:
            check = build()
        except CheckFailed as failure:
            report = Report(name, failure.status, failure.message, details=failure.details)
        else:
            report = evaluate(name, check, verbose=verbose)
        if not watchdog.finish():
            # the watchdog has printed its answer and is exiting the process
            threading.Event().wait()
    return report


def emit(report: Report) -> NoReturn:
    sys.stdout.write(report.render())
    sys.stdout.flush()
    sys.exit(int(report.status))
