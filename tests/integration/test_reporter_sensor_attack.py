"""Attacks on pg-role-reporter's sensor: its loop sleeps on its kept PostgreSQL
connection's socket as well as on Consul's watches, so a session PostgreSQL ends wakes it
at once. What a DBA does to that session or the server must neither make the loop turn (or
reconnect) over and over nor take the leader out of DNS.

"No turn ran" is seen where a DBA sees it: the reporter's row in pg_stat_activity (its pid,
and query_start, which every turn's query sets)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from harness import pgbin
from harness.postgres import MONITOR_USER, PgCluster, PgServer
from tests.integration.reporter_deployment import leaders_http
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


def test_a_reported_setting_reloaded_does_not_wake_the_loop(quiet_leader: Deployment) -> None:
    """ALTER SYSTEM on settings PostgreSQL reports to its clients (ParameterStatus) and a
    reload: an idle session is told only with its next answer, so the socket stays quiet
    and the loop keeps to its interval (no spin on a socket nobody reads)."""
    d = quiet_leader
    primary = d.servers["pg-db-1"]
    before, _ = sessions_seen(primary, 0.1)
    for setting, value in (("TimeZone", "Asia/Kathmandu"), ("DateStyle", "SQL, DMY")):
        primary.execute(f"alter system set {setting} = '{value}'")
    primary.execute("select pg_reload_conf()")
    try:
        pids, starts = sessions_seen(primary, WINDOW_SECONDS)
        assert pids == before
        assert len(starts) <= 2, f"{len(starts)} turns in 3 s with --interval 60"
        assert leaders_http(d.agent) == {"pg-db-1"}
    finally:
        primary.execute("alter system reset all")
        primary.execute("select pg_reload_conf()")
