"""checks/resident/push.py: --push specs, the schedule, and the push thread's promise that
no verdict evaluated before a role change reaches Consul after it (docs/design.md §5).

The Consul side is a recorder of `update_check` calls and the checks are stand-ins that
return a Report: what is under test is when a check runs and what gets pushed. The real
agent, real PostgreSQL and the shipped files are in tests/integration/test_resident_dns.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import click
import pytest

from checks.consul import ConsulUnreachable
from checks.output import Report
from checks.reporter.board import RoleBoard, RoleSnapshot
from checks.resident.push import (
    CONSUL_STATUS,
    Pusher,
    PushSpec,
    PushSpecError,
    Schedule,
    push_option_callback,
)
from checks.status import Status
from harness.waiting import wait_until

# -- specs ------------------------------------------------------------------------------


def test_a_spec_names_the_check_its_interval_the_command_and_takes_the_checks_own_timeout() -> None:
    spec = PushSpec.parse("pg-db-lag=5s:lag --role-mismatch ok -t 4")
    assert spec == PushSpec("pg-db-lag", 5.0, "lag", ("--role-mismatch", "ok", "-t", "4"), 4.0)
    assert PushSpec.parse("pg-host-memory=1min:mem").timeout == 10.0  # the executable's -t
    assert PushSpec.parse("a=0.5:alive").interval == 0.5


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("pg-db-alive", "is not CHECK_ID=INTERVAL:COMMAND"),
        ("pg-db-alive=5s:", "is not CHECK_ID=INTERVAL:COMMAND"),
        ("=5s:alive", "is not CHECK_ID=INTERVAL:COMMAND"),
        ("a=soon:alive", "the interval"),
        ("a=0:alive", "positive"),
        ("a=5s:vacuum", "neither a check_postgresql subcommand"),
        ("a=5s:alive --bogus", "--bogus"),  # click 8.1: 'No such option: --bogus'
        ("a=5s:lag -w", "requires an argument"),
        ("a=5s:alive -H db2", "connection options (host)"),
        ("a=5s:lag -p 5433 -U admin", "connection options (port, user)"),
    ],
)
def test_a_spec_that_cannot_run_is_refused_at_start_saying_why(text: str, words: str) -> None:
    with pytest.raises(PushSpecError, match=None) as caught:
        PushSpec.parse(text)
    assert words in str(caught.value)


def test_the_option_refuses_one_check_pushed_twice() -> None:
    command = click.Command("x")
    param = click.Option(["--push"], multiple=True)
    ctx = click.Context(command)
    with pytest.raises(click.BadParameter, match="check a given twice"):
        push_option_callback(ctx, param, ["a=5s:alive", "a=1s:alive"])
    specs = push_option_callback(ctx, param, ["a=5s:alive", "b=1s:mem"])
    assert [spec.check_id for spec in specs] == ["a", "b"]


def test_unknown_is_critical_in_consul_as_a_script_check_exiting_3_is() -> None:
    assert CONSUL_STATUS == {
        Status.OK: "passing",
        Status.WARNING: "warning",
        Status.CRITICAL: "critical",
        Status.UNKNOWN: "critical",
    }


# -- schedule ---------------------------------------------------------------------------


def test_schedule_runs_everything_at_start_then_each_check_on_its_interval() -> None:
    fast, slow = PushSpec("fast", 1.0, "alive", ()), PushSpec("slow", 5.0, "lag", ())
    schedule = Schedule([fast, slow], now=100.0)
    assert schedule.due(100.0) == [fast, slow]
    schedule.ran(fast, 100.0)
    schedule.ran(slow, 100.0)
    assert schedule.due(100.5) == []
    assert schedule.seconds_to_next(100.5) == pytest.approx(0.5)
    assert schedule.due(101.0) == [fast]
    schedule.ran(fast, 101.0)
    schedule.retry(slow, 101.0)  # its push failed: again in a second, not in five
    assert schedule.due(102.0) == [fast, slow]
    schedule.ran(fast, 102.0)
    schedule.retry(slow, 102.0)  # held back: not again before a second
    assert schedule.due(102.5) == []
    schedule.all_now(102.5)  # a role change
    assert schedule.due(102.5) == [fast, slow]


# -- the push thread --------------------------------------------------------------------


class RecordingConsul:
    def __init__(self) -> None:
        self.updates: list[tuple[str, str, str]] = []
        self.unreachable = False
        self.refused = 0

    def update_check(self, check_id: str, status: str, output: str) -> None:
        if self.unreachable:
            self.refused += 1
            raise ConsulUnreachable("cannot reach the Consul agent")
        self.updates.append((check_id, status, output))

    def statuses(self, check_id: str) -> list[str]:
        return [status for cid, status, _ in self.updates if cid == check_id]


def snapshot(role: str, tag: str | None) -> RoleSnapshot:
    return RoleSnapshot(
        role=role,
        tag=tag,
        holds_lock=tag == "leader",
        fenced_reason=None,
        observed_at=time.monotonic(),
    )


class TurningLoop(threading.Thread):
    """Stands for the reporter loop: publishes the current role every 20 ms."""

    def __init__(self, board: RoleBoard, role: str = "replica", tag: str | None = "follower"):
        super().__init__(daemon=True)
        self.board, self.role, self.tag = board, role, tag
        self.stopping = threading.Event()
        self.paused = threading.Event()
        self.turns = 0

    def run(self) -> None:
        while not self.stopping.wait(0.02):
            if not self.paused.is_set():
                self.board.publish(snapshot(self.role, self.tag))
                self.turns += 1


@pytest.fixture
def running() -> Iterator[Callable[..., Pusher]]:
    started: list[Pusher] = []
    loops: list[TurningLoop] = []

    def start(
        specs: list[PushSpec],
        evaluate: Callable[[PushSpec], Report],
        consul: RecordingConsul,
        board: RoleBoard,
        *,
        loop: TurningLoop | None = None,
        loop_interval: float | None = None,
    ) -> Pusher:
        if loop is None:
            loop = TurningLoop(board)
        loops.append(loop)
        loop.start()
        pusher = Pusher(specs, evaluate, consul, board, turn_wait=0.5, loop_interval=loop_interval)
        started.append(pusher)
        pusher.start()
        return pusher

    yield start
    for pusher in started:
        pusher.stop()
        pusher.join(timeout=5)
        assert not pusher.is_alive()
    for loop in loops:
        loop.stopping.set()


def test_each_verdict_is_pushed_as_the_executable_prints_it(
    running: Callable[..., Pusher],
) -> None:
    consul, board = RecordingConsul(), RoleBoard()
    report = Report("CHECK_POSTGRESQL", Status.WARNING, "replay paused", ["lag_bytes=0B"])
    running([PushSpec("pg-db-lag", 0.2, "lag", ())], lambda spec: report, consul, board)
    wait_until(lambda: len(consul.updates) >= 2, timeout=5, what="two pushes")
    assert consul.updates[0] == ("pg-db-lag", "warning", report.render())


def test_a_role_change_runs_every_check_at_once_and_never_pushes_the_old_verdict(
    running: Callable[..., Pusher],
) -> None:
    """The promise of issue 11 item 4: a promotion reaches Consul in one poll, not one
    check interval, and a verdict computed under the old role is not pushed after it."""
    consul, board = RecordingConsul(), RoleBoard()
    loop = TurningLoop(board, "replica", "follower")
    promoted = threading.Event()
    evaluating = threading.Event()
    proceed = threading.Event()

    def evaluate(spec: PushSpec) -> Report:
        if promoted.is_set():
            return Report("CHECK_POSTGRESQL", Status.OK, "primary")
        evaluating.set()
        proceed.wait(5)  # the promotion happens while this verdict is being computed
        return Report("CHECK_POSTGRESQL", Status.CRITICAL, "no WAL receiver")

    running([PushSpec("pg-db-lag", 3600.0, "lag", ())], evaluate, consul, board, loop=loop)
    assert evaluating.wait(5)
    promoted.set()
    loop.role, loop.tag = "primary", "leader"
    proceed.set()
    wait_until(lambda: consul.updates, timeout=5, what="a push after the promotion")
    # the hour-long interval did not hold it back, and the stale CRITICAL never went out
    assert consul.statuses("pg-db-lag") == ["passing"]


def test_no_verdict_goes_out_until_the_loop_turns_after_it(
    running: Callable[..., Pusher],
) -> None:
    """A daemon frozen while it held the leader tag must not put its checks (and so its
    tag) back into DNS before its loop has read the server and Consul again."""
    consul, board = RecordingConsul(), RoleBoard()
    loop = TurningLoop(board)
    loop.paused.set()  # the loop is stuck (or the process was stopped)
    board.publish(snapshot("primary", "leader"))
    report = Report("CHECK_POSTGRESQL", Status.OK, "accepting connections")
    running(
        [PushSpec("pg-db-alive", 0.1, "alive", ())], lambda spec: report, consul, board, loop=loop
    )
    time.sleep(1.0)  # two turn waits: proving nothing went out needs a while
    assert consul.updates == []
    loop.role, loop.tag = "primary", None  # its first turn after waking: fenced, no tag
    loop.paused.clear()
    wait_until(lambda: consul.updates, timeout=5, what="pushes once the loop turns")


def test_a_new_turn_with_the_same_role_runs_nothing(running: Callable[..., Pusher]) -> None:
    consul, board = RecordingConsul(), RoleBoard()
    runs: list[str] = []

    def evaluate(spec: PushSpec) -> Report:
        runs.append(spec.check_id)
        return Report("CHECK_POSTGRESQL", Status.OK, "fine")

    loop = TurningLoop(board)
    running([PushSpec("pg-db-alive", 3600.0, "alive", ())], evaluate, consul, board, loop=loop)
    wait_until(lambda: consul.updates, timeout=5, what="the first push")
    # fifteen turns with observed_at moving only: nothing may run
    after = loop.turns
    wait_until(lambda: loop.turns >= after + 15, timeout=5, what="fifteen more turns")
    assert runs == ["pg-db-alive"]


def test_a_push_the_agent_missed_is_retried_within_about_a_second(
    running: Callable[..., Pusher],
) -> None:
    consul, board = RecordingConsul(), RoleBoard()
    consul.unreachable = True
    report = Report("CHECK_POSTGRESQL", Status.OK, "accepting connections")
    running([PushSpec("pg-db-alive", 3600.0, "alive", ())], lambda spec: report, consul, board)
    wait_until(lambda: consul.refused, timeout=5, what="a push the agent refused")
    consul.unreachable = False  # the agent is back (a restart takes a second or two)
    wait_until(lambda: consul.updates, timeout=3, what="the push retried")
    assert consul.statuses("pg-db-alive") == ["passing"]


def test_a_check_that_raises_costs_one_verdict_not_the_thread(
    running: Callable[..., Pusher],
) -> None:
    consul, board = RecordingConsul(), RoleBoard()
    calls: list[int] = []

    def evaluate(spec: PushSpec) -> Report:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return Report("CHECK_POSTGRESQL", Status.OK, "fine")

    pusher = running([PushSpec("a", 0.1, "alive", ())], evaluate, consul, board)
    wait_until(lambda: consul.updates, timeout=5, what="a push after the failure")
    assert pusher.is_alive()


def test_the_board_wakes_a_waiter_on_the_next_turn_not_on_a_timer() -> None:
    board = RoleBoard()
    first = snapshot("replica", "follower")
    board.publish(first)
    assert board.wait_newer(None, timeout=0) is first  # newer than nothing: at once
    started = time.monotonic()
    assert board.wait_newer(first, timeout=0.2) is first  # no turn: the timeout
    assert time.monotonic() - started >= 0.2
    second = snapshot("replica", "follower")
    threading.Timer(0.05, board.publish, (second,)).start()
    started = time.monotonic()
    assert board.wait_newer(first, timeout=5) is second
    assert time.monotonic() - started < 1


def test_the_checks_due_together_run_side_by_side(running: Callable[..., Pusher]) -> None:
    """One after another, three checks each just inside their -t 4 took 12 s a round, and
    with a 5 s interval their 15 s TTLs ran out between two pushes while all said OK. Each
    evaluation here waits for the other two: run one after another they never meet."""
    consul, board = RecordingConsul(), RoleBoard()
    together = threading.Barrier(3, timeout=5)

    def evaluate(spec: PushSpec) -> Report:
        together.wait()
        return Report("CHECK_POSTGRESQL", Status.OK, spec.check_id)

    specs = [PushSpec(f"pg-db-{name}", 3600.0, name, ()) for name in ("alive", "role", "lag")]
    running(specs, evaluate, consul, board)
    wait_until(lambda: len(consul.updates) == 3, timeout=10, what="three pushes")
    assert sorted(consul.statuses(spec.check_id)[0] for spec in specs) == ["passing"] * 3


@pytest.mark.parametrize(
    ("loop_interval", "asks"), [(None, True), (10.0, True), (0.02, False), (0.1, False)]
)
def test_a_round_asks_the_loop_for_its_turn_only_when_the_loop_is_slower_than_the_push(
    running: Callable[..., Pusher], loop_interval: float | None, asks: bool
) -> None:
    """A loop at least as fast as the push delays a refresh by less than a push interval,
    which the TTL rule allows for; a slower one would hold every verdict back, so the
    round asks for the turn (one more turn each round, which costs CPU)."""
    consul, board = RecordingConsul(), RoleBoard()
    asked: list[float] = []
    board.turn_on_request(lambda: asked.append(time.monotonic()))
    report = Report("CHECK_POSTGRESQL", Status.OK, "accepting connections")
    running(
        [PushSpec("pg-db-alive", 0.1, "alive", ())],
        lambda spec: report,
        consul,
        board,
        loop_interval=loop_interval,
    )
    wait_until(lambda: len(consul.updates) >= 3, timeout=5, what="three pushes")
    assert bool(asked) is asks
