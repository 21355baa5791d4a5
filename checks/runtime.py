"""Running a check under the contract: the time budget, the watchdog, the exit code.

- exit 0/1/2/3, and 3 only for usage and internal errors: click never picks the code;
- ``--timeout`` bounds the whole run: a watchdog thread prints and exits even when the
  main thread is stuck in a network call;
- nothing on stderr.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import NoReturn

import click
import nagiosplugin

from checks import __version__
from checks.adapters import evaluate
from checks.output import Report, internal_error
from checks.status import CheckFailed, Status

TIMEOUT_HELP = "Seconds the whole run may take; past it the check says CRITICAL and exits."


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
