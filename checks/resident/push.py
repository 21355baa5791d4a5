"""Resident mode's Consul push: the daemon runs the instance's checks on its own schedule
and writes each verdict into a Consul TTL check (docs/design.md §5, §8).

`--push CHECK_ID=INTERVAL:COMMAND [OPTION...]` (one argument each, repeatable) names a TTL
check of the local agent, how often to evaluate it, and the check to run: a
`check_postgresql` subcommand with its options, or `mem` for mem_check. The verdict is
what the executable would print for the same options, run in-process on the daemon's
kept connection; connection options are refused (the daemon checks its own instance).

Why push and not a script check: a script check's verdict stands for a whole interval, so
a verdict from just before a promotion outlives it (§5). Here every change of the role
board (a promotion, a demotion, a stopped server) makes every check run again at once,
and a verdict evaluated under an older role is thrown away, not pushed. A verdict goes
out only behind a turn of the role loop that read PostgreSQL after the check started, so
Consul never holds a verdict newer than the tag and the lock (see Pusher.turn_after); a
loop that stops turning stops the pushes, and the TTLs then fail the instance closed.

Every evaluation is pushed (status and output): that is also the TTL refresh, so the TTL
in conf.d must exceed the interval plus the longest timeout of the checks due with it (the
checks due together run side by side; the shipped files leave twice that). An identical
update is local to the agent: Consul syncs a status change to the servers at once and
output-only changes at most every few minutes.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from checks.consul import ConsulClient, ConsulError, ConsulSettings
from checks.reporter.board import verdict_of
from checks.status import Status

if TYPE_CHECKING:
    import click

    from checks.output import Report
    from checks.postgres.connection import ConnectionSource
    from checks.reporter.board import RoleSnapshot

log = logging.getLogger("pg-role-reporter")

MEMORY_COMMAND = "mem"
# Consul's states for our exit codes, as a script check maps them (§5): 3 is critical.
CONSUL_STATUS = {
    Status.OK: "passing",
    Status.WARNING: "warning",
    Status.CRITICAL: "critical",
    Status.UNKNOWN: "critical",
}
# After a failed push (agent restarting, check not loaded yet): the verdict is pushed
# again this soon, as the reporter retries an agent that does not answer (§5).
PUSH_RETRY_SECONDS = 1.0
# The longest wait on the board between two looks at `stopping` (a clean stop is this late).
STOP_SECONDS = 1.0
# The executable's own default for -t.
DEFAULT_CHECK_TIMEOUT = 10.0
# Options that would point a check at another server: the daemon checks its own instance.
CONNECTION_PARAMETERS = ("host", "port", "user", "dbname")


class PushSpecError(ValueError):
    """A --push value that cannot be run; the message says why, for a usage error."""


@dataclass(frozen=True)
class PushSpec:
    """One `--push CHECK_ID=INTERVAL:COMMAND [OPTION...]`."""

    check_id: str
    interval: float
    command: str
    args: tuple[str, ...]
    timeout: float = DEFAULT_CHECK_TIMEOUT

    @classmethod
    def parse(cls, text: str) -> PushSpec:
        check_id, equals, rest = text.partition("=")
        interval_text, colon, command_line = rest.partition(":")
        words = shlex.split(command_line) if colon else []
        if not (equals and check_id.strip() and words):
            raise PushSpecError(
                f"{text!r} is not CHECK_ID=INTERVAL:COMMAND [OPTION...] "
                "(e.g. 'pg-db-lag=5s:lag --role-mismatch ok -t 4')"
            )
        import click

        from checks.runtime import TimeoutType

        try:
            interval = float(TimeoutType().convert(interval_text, None, None))
        except click.BadParameter as exc:
            raise PushSpecError(f"{text!r}: the interval: {exc.message}") from None
        command, *args = words
        spec = cls(check_id.strip(), interval, command, tuple(args))
        return spec.validated()

    def click_command(self) -> tuple[click.Command, Sequence[str], str]:
        """(the click command an executable runs, its argv, the status line's name)."""
        if self.command == MEMORY_COMMAND:
            from checks import mem_check

            return mem_check.command, self.args, mem_check.NAME
        from checks import check_postgresql

        if self.command not in check_postgresql.SUBCOMMANDS:
            raise PushSpecError(
                f"{self.check_id}: {self.command!r} is neither a check_postgresql subcommand "
                f"({', '.join(check_postgresql.SUBCOMMANDS)}) nor {MEMORY_COMMAND!r}"
            )
        return check_postgresql.cli, (self.command, *self.args), check_postgresql.NAME

    def validated(self) -> PushSpec:
        """Parse the options now, as the executable would: a typo ends the start with a
        usage error instead of a critical check every interval. Returns the spec with
        the check's own -t, which bounds each run."""
        import click
        from click.core import ParameterSource

        command, argv, _ = self.click_command()
        if isinstance(command, click.Group):
            command = command.get_command(click.Context(command), argv[0]) or command
            argv = argv[1:]
        try:
            with command.make_context(self.command, list(argv)) as ctx:
                given = [
                    name
                    for name in CONNECTION_PARAMETERS
                    if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
                ]
                timeout = ctx.params.get("timeout", DEFAULT_CHECK_TIMEOUT)
        except click.ClickException as exc:
            raise PushSpecError(f"{self.check_id}: {exc.format_message()}") from None
        if given:
            raise PushSpecError(
                f"{self.check_id}: connection options ({', '.join(given)}) have no place in "
                "--push: the checks run on the daemon's own connection to its instance"
            )
        return PushSpec(self.check_id, self.interval, self.command, self.args, float(timeout))


# runs one spec's check and returns the report the executable would print
Evaluator = Callable[[PushSpec], "Report"]


class CheckUpdater(Protocol):
    """checks.consul.ConsulClient, as the push writes to it."""

    def update_check(self, check_id: str, status: str, output: str) -> None: ...


class RoleSource(Protocol):
    """checks.reporter.board.RoleBoard, as the push reads it."""

    def latest(self) -> RoleSnapshot | None: ...

    def wait_newer(self, seen: RoleSnapshot | None, timeout: float) -> RoleSnapshot | None: ...

    def wait_changed(self, seen: RoleSnapshot | None, timeout: float) -> RoleSnapshot | None: ...

    def request_turn(self) -> None: ...

    def interrupt(self) -> None: ...


class Schedule:
    """When each check is due next. Pure: the caller says what time it is."""

    def __init__(self, specs: Sequence[PushSpec], now: float) -> None:
        self.specs = list(specs)
        self._due = {spec.check_id: now for spec in self.specs}

    def due(self, now: float) -> list[PushSpec]:
        return [spec for spec in self.specs if self._due[spec.check_id] <= now]

    def seconds_to_next(self, now: float) -> float:
        return max(0.0, min(self._due.values(), default=now + 60.0) - now)

    def ran(self, spec: PushSpec, now: float) -> None:
        self._due[spec.check_id] = now + spec.interval

    def retry(self, spec: PushSpec, now: float) -> None:
        """Its verdict did not reach Consul: run it again in a second, whatever its
        interval (a TTL must not run out over an agent restart)."""
        self._due[spec.check_id] = now + PUSH_RETRY_SECONDS

    def all_now(self, now: float) -> None:
        for check_id in self._due:
            self._due[check_id] = now


class PushTrouble:
    """One log line when pushing starts failing (or fails otherwise), one when it works again."""

    def __init__(self) -> None:
        self.current: str | None = None

    def failed(self, spec: PushSpec, error: ConsulError) -> None:
        text = str(error)
        if text != self.current:
            log.warning(
                "pushing %s to Consul: %s; retrying every %gs",
                spec.check_id,
                text,
                PUSH_RETRY_SECONDS,
            )
            self.current = text

    def held_back(self, turn_wait: float) -> None:
        text = "held back"
        if text != self.current:
            log.warning(
                "holding check verdicts back: the role loop has not read PostgreSQL within "
                "%gs (the TTL checks fail the instance closed if this lasts)",
                turn_wait,
            )
            self.current = text

    def ok(self) -> None:
        if self.current is not None:
            log.info("pushing check verdicts to Consul again (was: %s)", self.current)
            self.current = None


class Pusher(threading.Thread):
    """Runs the --push checks on their schedule and on every role change; pushes each
    verdict to its TTL check."""

    def __init__(
        self,
        specs: Sequence[PushSpec],
        evaluate: Evaluator,
        consul: CheckUpdater,
        board: RoleSource,
        *,
        turn_wait: float,
        loop_interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name="consul-push", daemon=True)
        self.specs = list(specs)
        self.evaluate = evaluate
        self.consul = consul
        self.board = board
        # how long a turn of the loop may take to come: its interval plus a PostgreSQL
        # round trip bounded by its -t
        self.turn_wait = turn_wait
        # the loop's --interval; None: unknown, so every round asks for its turn
        self.loop_interval = loop_interval
        self.clock = clock
        self.stopping = threading.Event()
        self.trouble = PushTrouble()
        self.pushed: dict[str, tuple[str, str]] = {}  # check id -> (status, output)

    def run(self) -> None:
        seen = self.board.latest()
        while seen is None:  # the loop's first turn: the role every verdict is judged under
            if self.stopping.is_set():
                return
            seen = self.board.wait_newer(None, STOP_SECONDS)
        schedule = Schedule(self.specs, self.clock())
        while not self.stopping.is_set():
            now = self.clock()
            due = schedule.due(now)
            if not due:
                # asleep until the next check is due or the verdict changes (stop()
                # interrupts): the turns that change nothing do not wake it
                latest = self.board.wait_changed(seen, schedule.seconds_to_next(now))
                if verdict_of(latest) != verdict_of(seen):
                    schedule.all_now(self.clock())
                seen = latest
                continue
            base, started = self.board.latest(), self.clock()
            if self.stopping.is_set():
                return
            verdicts = []
            for spec, report in self.evaluate_all(due):
                if report is None:
                    schedule.ran(spec, self.clock())
                else:
                    verdicts.append((spec, report))
            confirmed = self.turn_after(started, every=min(spec.interval for spec in due))
            if confirmed is None:
                # the loop is stuck (or this process was stopped): no verdict goes out
                # until it turns again, and the TTLs fail the instance closed meanwhile
                self.trouble.held_back(self.turn_wait)
                for spec, _ in verdicts:
                    schedule.retry(spec, self.clock())
                continue
            seen = confirmed
            if verdict_of(confirmed) != verdict_of(base):
                # evaluated across a role change: stale before it is pushed; every check
                # runs again under the new role
                schedule.all_now(self.clock())
                continue
            for spec, report in verdicts:
                schedule.ran(spec, self.clock())
                if not self.push(spec, report):
                    schedule.retry(spec, self.clock())

    def evaluate_all(self, due: Sequence[PushSpec]) -> list[tuple[PushSpec, Report | None]]:
        """Each due check's report (None when it raised), the checks run side by side.

        One after another, a round took the sum of their run times: against a slow server
        (each check just inside its -t 4) the shipped three PostgreSQL checks took 12 s,
        and with the 5 s interval each TTL was refreshed every 17 s, past its 15 s TTL: the
        session bound to the alive check went, and the leader with it, while every check
        said OK. Side by side a round takes its slowest check's time, which the TTL allows.
        """
        if len(due) == 1:
            return [(due[0], self._evaluate_one(due[0]))]
        reports: dict[str, Report | None] = {}

        def run(spec: PushSpec) -> None:
            reports[spec.check_id] = self._evaluate_one(spec)

        workers = [
            threading.Thread(target=run, args=(spec,), name=f"push {spec.check_id}", daemon=True)
            for spec in due
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            # each run is bounded by its check's -t (bounded_evaluator)
            worker.join()
        return [(spec, reports.get(spec.check_id)) for spec in due]

    def _evaluate_one(self, spec: PushSpec) -> Report | None:
        try:
            return self.evaluate(spec)
        except Exception as exc:  # a bug must cost one verdict, never the thread
            log.error("evaluating %s: %s: %s", spec.check_id, type(exc).__name__, exc)
            return None

    def turn_after(self, started: float, *, every: float = 0.0) -> RoleSnapshot | None:
        """The first snapshot of a turn that read PostgreSQL after `started`, or None when
        none came within `turn_wait`. `every`: the shortest push interval of the round.

        A verdict goes out only behind such a turn: the tag and the lock in Consul are
        then at least as new as the verdict. A daemon that was SIGSTOPped (or swapped out)
        while it held the leader tag wakes with a lock that may have passed to a new
        primary; its first turn takes the tag off, and only then are its checks, and
        with them its place in DNS, back.
        """
        deadline = started + self.turn_wait
        snapshot = self.board.latest()
        fresh = snapshot is not None and snapshot.observed_at >= started
        if not fresh and (self.loop_interval is None or self.loop_interval > every):
            # A loop slower than the push would hold each verdict back up to its interval:
            # with --interval 10, pushes every 2 s went out every 10 s and a 6 s TTL ran out
            # between them. Ask for the turn now. A loop at least as fast as the push delays
            # a refresh by less than a push interval, which the TTL rule allows for (twice
            # the interval plus -t), and an extra turn a round was ~0.02 % of a core.
            self.board.request_turn()
        while snapshot is None or snapshot.observed_at < started:
            left = deadline - self.clock()
            if left <= 0 or self.stopping.is_set():
                return None
            snapshot = self.board.wait_newer(snapshot, min(left, STOP_SECONDS))
        return snapshot

    def push(self, spec: PushSpec, report: Report) -> bool:
        status, output = CONSUL_STATUS[report.status], report.render()
        try:
            self.consul.update_check(spec.check_id, status, output)
        except ConsulError as exc:
            self.trouble.failed(spec, exc)
            return False
        except Exception as exc:  # never end the thread quietly: TTLs would expire
            log.error("pushing %s: %s: %s", spec.check_id, type(exc).__name__, exc)
            return False
        self.trouble.ok()
        previous = self.pushed.get(spec.check_id)
        if previous is None or previous[0] != status:
            log.info("%s is %s: %s", spec.check_id, status, output.split("\n", 1)[0])
        self.pushed[spec.check_id] = (status, output)
        return True

    def stop(self) -> None:
        """Ends run() within STOP_SECONDS (it may be waiting on the board)."""
        self.stopping.set()
        self.board.interrupt()


def bounded_evaluator(source: ConnectionSource | None) -> Evaluator:
    """Each check in a worker thread under its own -t, on the daemon's kept connection."""
    from checks.resident.checks import run_bounded

    def evaluate(spec: PushSpec) -> Report:
        command, argv, name = spec.click_command()
        return run_bounded(command, argv, name, spec.timeout, source)

    return evaluate


@contextlib.contextmanager
def pushing(
    specs: Sequence[PushSpec],
    board: RoleSource,
    consul_settings: ConsulSettings,
    source: ConnectionSource | None,
    *,
    turn_wait: float,
    loop_interval: float | None = None,
) -> Iterator[Pusher]:
    """The cli's service: a Pusher with its own Consul client, stopped on the way out."""
    with ConsulClient(consul_settings) as consul:
        pusher = Pusher(
            specs,
            bounded_evaluator(source),
            consul,
            board,
            turn_wait=turn_wait,
            loop_interval=loop_interval,
        )
        pusher.start()
        try:
            yield pusher
        finally:
            pusher.stop()
            pusher.join(timeout=max(spec.timeout for spec in specs) + 1)


def push_option_callback(
    ctx: click.Context, param: click.Parameter, values: Sequence[str]
) -> tuple[PushSpec, ...]:
    """click callback of `--push`: every spec parsed and validated at start, ids unique."""
    import click

    try:
        specs = tuple(PushSpec.parse(value) for value in values)
    except PushSpecError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    ids = [spec.check_id for spec in specs]
    if repeated := sorted({i for i in ids if ids.count(i) > 1}):
        raise click.BadParameter(f"check {', '.join(repeated)} given twice", ctx, param)
    return specs


PUSH_HELP = (
    "Run a check in the daemon every INTERVAL (and at once after every role change) and "
    "push its verdict into the local agent's TTL check CHECK_ID: COMMAND is a "
    "check_postgresql subcommand or 'mem' (mem_check), with its options but no connection "
    "options, all in one argument, e.g. --push 'pg-db-lag=5s:lag --role-mismatch ok -t 4'. "
    "Repeatable."
)
