"""Running a check under the contract: the time budget, the watchdog, the exit code.

- exit 0/1/2/3, and 3 only for usage and internal errors: click never picks the code;
- ``--timeout`` bounds the whole run: a watchdog thread prints and exits even when the
  main thread is stuck in a network call;
- nothing on stderr.

A check runs either as its own process (:func:`run_cli`: prints, exits, and a watchdog
ends the process at ``--timeout``) or in-process in a resident daemon (:func:`invoke`:
returns the same report and leaves the time bound to its caller). Both go through one
path, :func:`_answer`.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, NoReturn

import click
import nagiosplugin

from checks import __version__
from checks.adapters import evaluate
from checks.budget import Budget
from checks.output import Report, internal_error
from checks.status import CheckFailed, Status

if TYPE_CHECKING:
    from checks.postgres.connection import ConnectionSource

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
        self._timer.name = f"{name} watchdog"
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


if TYPE_CHECKING:
    # click before 8.2 cannot subscript ParamType at run time, and pyproject allows 8.1
    _SecondsParamType = click.ParamType[float]
else:
    _SecondsParamType = click.ParamType


class TimeoutType(_SecondsParamType):
    """``-t``: seconds (``10``, ``2.5``) or a duration (``30s``, ``2min``), finite, between
    a minimum the tool can work within and a day; anything else a usage error."""

    name = "SECONDS"

    def __init__(self, minimum: float = MIN_TIMEOUT, why_minimum: str = "") -> None:
        self.minimum = minimum
        self.why_minimum = why_minimum

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
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

    def _duration(
        self, text: str, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        from checks.units import Unit, UnitError, parse_quantity

        try:
            quantity = parse_quantity(text)
        except UnitError:
            quantity = None
        if quantity is None or quantity.unit is not Unit.SECONDS:
            self.fail(f"{text!r} is not a number of seconds (e.g. 10 or 30s)", param, ctx)
        return float(quantity.value)


def common_options(
    command: Callable[..., Any],
    *,
    timeout_help: str = TIMEOUT_HELP,
    verbose_help: str = VERBOSE_HELP,
    timeout_type: TimeoutType | None = None,
) -> Callable[..., Any]:
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


# True while invoke() runs a check in this thread: no watchdog (it would end the daemon),
# nothing printed.
_in_process: ContextVar[bool] = ContextVar("in_process", default=False)


class NotACheck(Exception):
    """--help or --version asked for in-process: answered as a report, never printed."""

    def __init__(self, summary: str, details: Sequence[str] = ()) -> None:
        super().__init__(summary)
        self.summary = summary
        self.details = list(details)


def _show_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    if _in_process.get():
        raise NotACheck(f"--version is not a check: pg-ha-checks {__version__}")
    click.echo(f"{ctx.find_root().info_name} (pg-ha-checks) {__version__}")
    ctx.exit()


def version_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-V",
        "--version",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_show_version,
        help="Show the version and exit.",
    )(command)


def _answer_help_in_process(option: click.Option | None) -> click.Option | None:
    """click's help option, but in-process it raises :class:`NotACheck` instead of printing.

    ``get_help_option`` is click's documented hook; the option may be cached by click
    (8.1.8+), so its callback is wrapped once.
    """
    printing = option.callback if option is not None else None
    if option is None or printing is None or getattr(printing, "answers_in_process", False):
        return option

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value and not ctx.resilient_parsing and _in_process.get():
            raise NotACheck(
                "--help is not a check: the command's help follows",
                ctx.get_help().splitlines(),
            )
        return printing(ctx, param, value)

    callback.answers_in_process = True  # type: ignore[attr-defined]
    option.callback = callback
    return option


class CheckCommand(click.Command):
    """A check's click command: answers --help in-process too (see :func:`invoke`)."""

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        return _answer_help_in_process(super().get_help_option(ctx))


class CheckGroup(click.Group):
    """A group of check commands, answering --help in-process like them."""

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        return _answer_help_in_process(super().get_help_option(ctx))


CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def command(name: str) -> Callable[[Callable[..., Any]], click.Command]:
    """``@click.command`` for a check: our help option names, width and in-process help."""
    return click.command(name, cls=CheckCommand, context_settings=CONTEXT_SETTINGS)


def _answer(command: click.Command, args: list[str], prog: str, name: str) -> Report | int:
    """Run a click command under the contract; the report, or the exit code of a --help or
    --version that click printed (only outside :func:`invoke`).

    Usage errors become ``NAME UNKNOWN`` (exit 3; click itself would exit 2, which Consul
    and Nagios read as CRITICAL), and so does any internal error.
    """
    try:
        result = command.main(args=args, prog_name=prog, standalone_mode=False)
    except click.ClickException as exc:
        return Report(name, Status.UNKNOWN, f"{exc.format_message()} (see --help)")
    except click.Abort:
        return Report(name, Status.UNKNOWN, "aborted")
    except NotACheck as answer:
        return Report(name, Status.UNKNOWN, answer.summary, details=answer.details)
    except Exception as exc:
        return internal_error(name, exc)
    if isinstance(result, Report):
        return result
    if _in_process.get():
        return Report(name, Status.UNKNOWN, "internal error: the command gave no report")
    return int(result or 0)


def invoke(
    command: click.Command,
    args: Sequence[str],
    name: str,
    *,
    source: ConnectionSource | None = None,
) -> Report:
    """Run a check's click command in this thread, as the executable would with ``args``.

    Returns the report the executable would print (``report.render()``, exit code
    ``int(report.status)``): usage and internal errors are UNKNOWN reports with click's
    message. It never prints, never exits and starts no watchdog: the caller bounds the
    time. ``--help`` and ``--version`` are not checks: an UNKNOWN report, whose long
    output is the help text. ``source``, when given, lends the check its connection to
    PostgreSQL (:func:`checks.postgres.connection.connect`).
    """
    in_process = _in_process.set(True)
    lent = None
    if source is not None:
        from checks.postgres.connection import connection_source

        lent = (connection_source, connection_source.set(source))
    try:
        answer = _answer(command, list(args), command.name or name.lower(), name)
    finally:
        if lent is not None:
            lent[0].reset(lent[1])
        _in_process.reset(in_process)
    assert isinstance(answer, Report)  # in-process, help and version are reports
    return answer


def run_cli(command: click.Command, name: str, argv: Sequence[str] | None = None) -> NoReturn:
    """The executable: run the command, print its report and exit with its status."""
    args = list(sys.argv[1:] if argv is None else argv)
    prog = os.path.basename(sys.argv[0]) if argv is None else command.name or name.lower()
    answer = _answer(command, args, prog, name)
    if isinstance(answer, int):
        # --help and --version: click printed them
        sys.stdout.flush()
        sys.exit(answer)
    emit(answer)


def run_check(
    name: str,
    build: Callable[[], nagiosplugin.Check],
    *,
    budget: Budget,
    target: str | Callable[[], str],
    verbose: int = 0,
) -> Report:
    """Build and evaluate a check; as its own process, under the ``--timeout`` watchdog,
    which takes the whole budget (the parts of the run take their shares of it)."""
    if _in_process.get():
        return _evaluate(name, build, verbose)
    with Watchdog(name, budget.seconds, target) as watchdog:
        report = _evaluate(name, build, verbose)
        if not watchdog.finish():
            # the watchdog has printed its answer and is exiting the process
            threading.Event().wait()
    return report


def _evaluate(name: str, build: Callable[[], nagiosplugin.Check], verbose: int) -> Report:
    try:
        check = build()
    except CheckFailed as failure:
        return Report(name, failure.status, failure.message, details=failure.details)
    return evaluate(name, check, verbose=verbose)


def emit(report: Report) -> NoReturn:
    sys.stdout.write(report.render())
    sys.stdout.flush()
    sys.exit(int(report.status))
