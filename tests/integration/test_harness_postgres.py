"""The PostgreSQL harness itself: what every other integration test relies on."""

from __future__ import annotations

import stat
from collections.abc import Callable

import psycopg
import pytest

from harness.postgres import PgCluster, PgServer

pytestmark = pytest.mark.integration

MEMBERSHIPS_SQL = """
    SELECT coalesce(array_agg(granted.rolname ORDER BY granted.rolname), '{}')
    FROM pg_auth_members m
    JOIN pg_roles granted ON granted.oid = m.roleid
    JOIN pg_roles member ON member.oid = m.member
    WHERE member.rolname = %s
"""


def connect_as(server: PgServer, role: str) -> psycopg.Connection:
    # Through dsn(), i.e. the harness's passfile: the only place the password lives.
    return psycopg.connect(server.dsn(role), autocommit=True, connect_timeout=5)


def test_replica_streams_and_is_in_recovery(pg_primary: PgServer, pg_replica: PgServer) -> None:
    assert not pg_primary.is_in_recovery()
    assert pg_replica.is_in_recovery()
    assert pg_replica.wal_receiver_status() == "streaming"
    standbys = pg_primary.sql("SELECT application_name, state FROM pg_stat_replication")
    assert (pg_replica.name, "streaming") in standbys
    slots = pg_primary.sql("SELECT slot_name, active FROM pg_replication_slots")
    assert (pg_replica.name, True) in slots


def test_monitor_role_is_in_pg_monitor_only(pg_replica: PgServer) -> None:
    with connect_as(pg_replica, "monitor") as conn:
        row = conn.execute(
            "SELECT current_user, rolsuper, pg_has_role('pg_monitor', 'member')"
            " FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        memberships = conn.execute(MEMBERSHIPS_SQL, ["monitor"]).fetchone()
    assert row == ("monitor", False, True)
    assert memberships == (["pg_monitor"],)


def test_nopriv_role_has_no_grants(pg_primary: PgServer) -> None:
    with connect_as(pg_primary, "nopriv") as conn:
        in_pg_monitor = conn.execute("SELECT pg_has_role('pg_monitor', 'member')").fetchone()
        memberships = conn.execute(MEMBERSHIPS_SQL, ["nopriv"]).fetchone()
    assert in_pg_monitor == (False,)
    assert memberships == ([],)


def test_wrong_password_is_rejected(pg_primary: PgServer) -> None:
    env = pg_primary.env("monitor")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            host=env["PGHOST"],
            port=env["PGPORT"],
            user="monitor",
            password="wrong",
            dbname="postgres",
            connect_timeout=5,
        )


def test_env_points_at_a_private_passfile(pg_primary: PgServer) -> None:
    env = pg_primary.env("monitor")
    assert "PGPASSWORD" not in env
    assert env["PGHOST"] == "127.0.0.1" and env["PGUSER"] == "monitor"
    assert stat.S_IMODE(pg_primary.passfile.stat().st_mode) == 0o600


def test_row_written_on_primary_is_replayed_on_replica(
    pg_primary: PgServer, pg_replica: PgServer, request: pytest.FixtureRequest
) -> None:
    marker = request.node.nodeid
    pg_primary.execute("CREATE TABLE IF NOT EXISTS harness_marks (mark text)")
    pg_primary.execute("INSERT INTO harness_marks VALUES (%s)", [marker])
    pg_replica.wait_until(
        lambda: pg_replica.sql("SELECT 1 FROM harness_marks WHERE mark = %s", [marker]),
        "the marker row to replay",
    )


def test_frozen_postmaster_accepts_tcp_but_never_answers(
    make_pg_cluster: Callable[..., PgCluster],
) -> None:
    with make_pg_cluster(replicas=0) as cluster:
        server = cluster.primary
        server.freeze()
        try:
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(server.dsn("monitor"), connect_timeout=1)
        finally:
            server.thaw()
        assert server.sql("SELECT 1") == [(1,)]


def test_promote_and_repoint(make_pg_cluster: Callable[..., PgCluster]) -> None:
    with make_pg_cluster(replicas=2) as cluster:
        old_primary, new_primary, follower = cluster.primary, *cluster.replicas
        old_primary.stop()
        cluster.promote(new_primary)
        assert not new_primary.is_in_recovery()
        cluster.wait_streaming()
        new_primary.execute("CREATE TABLE after_failover AS SELECT 1 AS x")
        cluster.wait_caught_up()
        assert follower.sql("SELECT x FROM after_failover") == [(1,)]
        # The follower switched to the promoted server's new timeline.
        assert follower.scalar("SELECT received_tli FROM pg_stat_wal_receiver") == 2
