"""Attacks on pg-role-reporter's sensor: its loop sleeps on its kept PostgreSQL
connection's socket as well as on Consul's watches, so a session PostgreSQL ends wakes it
at once. What a DBA does to that session or the server must neither make the loop turn (or
reconnect) over and over nor take the leader out of DNS.

"No turn ran" is seen where a DBA sees it: the reporter's row in pg_stat_activity (its pid,
and query_start, which every turn's query sets)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from harness import pgbin
from harness.consul import wait_until
from harness.ports import free_port
from harness.postgres import MONITOR_USER, PgCluster, PgServer
from tests.integration.reporter_deployment import (
    LEADER,
    leaders_http,
    never_during,
    wait_for_dns,
)
from tests.integration.test_role_reporter import Deploy, Deployment, assert_roles, deployed

pytestmark = pytest.mark.integration

__all__ = ["deployed"]  # the fixture, used by name

REPORTER_SESSION = (
    "select pid, query_start::text from pg_stat_activity "
    "where application_name = 'pg-role-reporter'"
)
# longer than any test here: a turn inside the window was woken, not polled
QUIET_INTERVAL = ("--interval", "60")
WINDOW_SECONDS = 3.0


@pytest.fixture
def quiet_leader(pg_install: pgbin.PgInstallation, deployed: Deploy) -> Iterator[Deployment]:
    """One primary, its reporter polling every 60 s, leader in DNS."""
    with PgCluster(pg_install, replicas=0) as cluster:
        d = deployed(cluster, start_reporters=False)
        d.start_reporter("pg-db-1", extra_args=QUIET_INTERVAL)
        assert_roles(d, "pg-db-1", set())
        yield d


def sessions_seen(server: PgServer, seconds: float) -> tuple[set[int], set[object]]:
    """The reporter's session pids and query starts seen in `seconds` (polled every 50 ms)."""
    pids: set[int] = set()
    starts: set[object] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for row in server.sql(REPORTER_SESSION):
            pids.add(row[0])
            starts.add(row[1])
        time.sleep(0.05)
    return pids, starts


def terminate_reporter_session(server: PgServer) -> None:
    server.execute(
        "select pg_terminate_backend(pid) from pg_stat_activity "
        "where application_name = 'pg-role-reporter'"
    )


@pytest.mark.pg(">= 14")
def test_an_idle_session_timeout_does_not_make_the_reporter_reconnect_over_and_over(
    quiet_leader: Deployment,
) -> None:
    """A DBA's idle_session_timeout (PostgreSQL 14+) shorter than --interval ended the kept
    session between turns; the socket woke the loop, which reconnected, idled, was ended
    again: 30 reconnects a second at 20 ms with --interval 60. The kept session opts out."""
    d = quiet_leader
    primary = d.servers["pg-db-1"]
    primary.execute(f"alter role {MONITOR_USER} set idle_session_timeout = '20ms'")
    try:
        # the reporter's next session is one the role's setting applies to
        terminate_reporter_session(primary)
        pids, starts = sessions_seen(primary, WINDOW_SECONDS)
        assert len(pids) <= 1, f"the reporter reconnected {len(pids)} times in 3 s"
        assert len(starts) <= 2, "no turn but the reconnect's inside --interval"
        assert leaders_http(d.agent) == {"pg-db-1"}
        assert "unreachable" not in d.reporters["pg-db-1"].log()
    finally:
        primary.execute(f"alter role {MONITOR_USER} reset idle_session_timeout")


def test_a_reported_setting_reloaded_or_a_cancel_does_not_wake_the_loop(
    quiet_leader: Deployment,
) -> None:
    """ALTER SYSTEM on settings PostgreSQL reports to its clients (ParameterStatus) and a
    reload, pg_cancel_backend on the idle session: an idle session is told nothing (a
    setting comes with its next answer), so the socket stays quiet and the loop keeps to
    its interval (no spin on a socket nobody reads)."""
    d = quiet_leader
    primary = d.servers["pg-db-1"]
    before, _ = sessions_seen(primary, 0.1)
    for setting, value in (("TimeZone", "Asia/Kathmandu"), ("DateStyle", "SQL, DMY")):
        primary.execute(f"alter system set {setting} = '{value}'")
    primary.execute("select pg_reload_conf()")
    for _ in range(3):
        primary.execute(
            "select pg_cancel_backend(pid) from pg_stat_activity "
            "where application_name = 'pg-role-reporter'"
        )
    try:
        pids, starts = sessions_seen(primary, WINDOW_SECONDS)
        assert pids == before
        assert len(starts) <= 2, f"{len(starts)} turns in 3 s with --interval 60"
        assert leaders_http(d.agent) == {"pg-db-1"}
    finally:
        primary.execute("alter system reset all")
        primary.execute("select pg_reload_conf()")


# a TTL check of pg-db-1 for --push: 4 s, more than twice a 1 s push plus its -t 1
PUSHED = "pg-db-1-pushed"


def register_pushed_check(d: Deployment) -> None:
    d.agent.api(
        "PUT",
        "/v1/agent/check/register",
        json_body={"ID": PUSHED, "Name": "pushed", "ServiceID": "pg-db-1", "TTL": "4s"},
    )


def lock_holder(d: Deployment) -> str | None:
    try:
        entries = d.agent.api("GET", "/v1/kv/service/pg-db/leader")
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == 404:
            return None  # never taken
        raise
    return entries[0].get("Session") if entries else None


@pytest.mark.parametrize(
    ("signum", "extra"),
    [
        (signal.SIGTERM, ()),
        (signal.SIGINT, ()),
        (signal.SIGTERM, ("--listen", "127.0.0.1:{port}")),
        (signal.SIGINT, ("--listen", "127.0.0.1:{port}", "--push", f"{PUSHED}=1:alive -t 1")),
    ],
    ids=["sigterm", "sigint", "sigterm-listen", "sigint-listen-push"],
)
def test_a_stop_during_a_long_sleep_is_prompt_and_hands_the_leadership_back(
    pg_install: pgbin.PgInstallation,
    deployed: Deploy,
    signum: signal.Signals,
    extra: tuple[str, ...],
) -> None:
    """The loop sleeps in poll(2) for --interval 60: a signal must still end it at once,
    with the leader tag off and the lock released (no TTL for the next primary to wait)."""
    with PgCluster(pg_install, replicas=0) as cluster:
        d = deployed(cluster, start_reporters=False)
        if "--push" in extra:
            register_pushed_check(d)  # critical until the first push: the leader waits
        args = tuple(a.format(port=free_port()) for a in extra)
        reporter = d.start_reporter("pg-db-1", extra_args=(*QUIET_INTERVAL, *args))
        assert_roles(d, "pg-db-1", set())
        wait_until(lambda: lock_holder(d) is not None, timeout=10, what="the lock taken")
        # well into the 60 s sleep (the first turns are over)
        reporter.wait_for_log("role tag none -> leader")
        started = time.monotonic()
        reporter.process.send_signal(signum)
        reporter.process.wait(timeout=10)
        took = time.monotonic() - started
        assert reporter.process.returncode == 0, reporter.log()
        assert took < 5, f"stopped {took:.1f} s after {signum.name}"
        assert leaders_http(d.agent) == set()
        assert lock_holder(d) is None
        assert f"stopping on {signum.name}" in reporter.log()
        assert "released the leader lock" in reporter.log()


def test_a_promotion_beside_a_live_primary_then_its_crash_with_a_long_interval(
    pg_install: pgbin.PgInstallation, deployed: Deploy
) -> None:
    """--interval 60 on both. A promotion does not wake the promoted replica's reporter:
    PostgreSQL (18 too) sends an idle session the new in_hot_standby only with its next
    answer, so the socket stays quiet and the promotion waits for the poll. DNS never names
    two leaders meanwhile. When the old primary is SIGKILLed, its reporter is woken by its
    session's end and hands the lock back; the lock watch wakes the promoted one, leader
    within seconds, not a poll later."""
    with PgCluster(pg_install, replicas=1) as cluster:
        d = deployed(cluster, start_reporters=False)
        for service_id in d.servers:
            d.start_reporter(service_id, extra_args=QUIET_INTERVAL)
        assert_roles(d, "pg-db-1", {"pg-db-2"})
        promoted = d.servers["pg-db-2"]
        promoted.promote()
        never_during(
            lambda: leaders_http(d.agent) != {"pg-db-1"},
            lambda: False,
            timeout=3,
            what="only the lock holder is leader after a promotion beside it",
        )
        # what the man page says: a promotion alone is seen by the poll, not at once
        assert "primary, writable" not in d.reporters["pg-db-2"].log()
        d.servers["pg-db-1"].kill()
        never_during(
            lambda: len(leaders_http(d.agent)) > 1,
            lambda: leaders_http(d.agent) == {"pg-db-2"},
            timeout=15,
            what="never two leaders",
        )
        assert leaders_http(d.agent) == {"pg-db-2"}
        wait_for_dns(d.agent, LEADER, d.ports("pg-db-2"), timeout=5)


def test_pushes_do_not_wait_for_the_poll_so_a_ttl_sized_by_the_man_page_holds(
    quiet_leader: Deployment,
) -> None:
    """A pushed verdict goes out only behind a turn that read PostgreSQL after the check
    started. The loop turned only every --interval, so with --interval 60 a check pushed
    every second went out once a minute and its 4 s TTL (the man page's rule: more than
    twice the interval plus -t) ran out between pushes: the instance left DNS while every
    check said OK. The pusher now asks the loop for that turn."""
    d = quiet_leader
    register_pushed_check(d)
    reporter = d.start_reporter(
        "pg-db-1", extra_args=(*QUIET_INTERVAL, "--push", f"{PUSHED}=1:alive -t 1")
    )

    def status() -> str:
        return str(d.agent.api("GET", "/v1/agent/checks")[PUSHED]["Status"])

    wait_until(lambda: status() == "passing", timeout=10, what="the first push")
    never_during(
        lambda: status() != "passing",
        lambda: False,
        timeout=9,
        what=f"the pushed check stays passing (two TTLs); log:\n{reporter.log()}",
    )
    assert leaders_http(d.agent) == {"pg-db-1"}


def test_a_backend_killed_by_the_oom_killer_costs_the_leader_only_the_crash_recovery(
    quiet_leader: Deployment,
) -> None:
    """SIGKILL of one backend makes the postmaster end every session and recover. The
    ended session wakes the loop (--interval 60), which finds the server in recovery and
    takes the tag off; the leader must then be back soon after the server, not a poll
    (a minute) later."""
    d = quiet_leader
    primary = d.servers["pg-db-1"]
    victim = primary.connect()
    victim_pid = victim.info.backend_pid
    os.kill(victim_pid, signal.SIGKILL)
    victim.close()
    reporter = d.reporters["pg-db-1"]
    # the reporter saw the crash (its session ended with all the others) ...
    reporter.wait_for_log("the role tag goes until that is fixed", timeout=10)
    wait_until(lambda: answers(primary), timeout=30, what="the server recovered")
    recovered = time.monotonic()
    # ... and the server back within seconds, not at its next poll
    wait_until(lambda: leaders_http(d.agent) == {"pg-db-1"}, timeout=20, what="leader back")
    assert time.monotonic() - recovered < 10, reporter.log()


def answers(server: PgServer) -> bool:
    try:
        return bool(server.scalar("select 1"))
    except psycopg.Error:
        return False
