"""role: primary or replica, expected or not."""

from __future__ import annotations

import pytest

from harness.postgres import PgCluster
from tests.plugin_run import check_postgresql


def test_role_on_primary(pg_cluster: PgCluster) -> None:
    run = check_postgresql("role", "--expect", "primary", env=pg_cluster.primary.env())
    assert run.first_line.startswith("PG_ROLE OK - primary, writable, timeline ")
    assert run.perfdata["is_primary"].value == 1
    assert run.perfdata["is_writable"].value == 1
    identifier = pg_cluster.primary.scalar("SELECT system_identifier FROM pg_control_system()")
    assert f"system identifier: {identifier}" in run.long_output


def test_role_on_replica(pg_cluster: PgCluster) -> None:
    run = check_postgresql("role", "--expect", "replica", env=pg_cluster.replicas[0].env())
    assert run.first_line.startswith("PG_ROLE OK - replica, read-only, timeline ")
    assert run.perfdata["is_primary"].value == 0
    assert run.perfdata["timeline"].value >= 1


@pytest.mark.parametrize(
    ("node", "expect", "summary"),
    [
        ("replica", "primary", "replica (in recovery), expected primary"),
        ("primary", "replica", "primary (not in recovery), expected replica"),
    ],
)
def test_wrong_role_is_critical(
    pg_cluster: PgCluster, node: str, expect: str, summary: str
) -> None:
    server = pg_cluster.primary if node == "primary" else pg_cluster.replicas[0]
    run = check_postgresql("role", "--expect", expect, env=server.env())
    assert run.status == "CRITICAL"
    assert run.summary == summary


def test_timeline_of_promoted_replica_is_new_at_once(make_pg_cluster) -> None:
    cluster: PgCluster = make_pg_cluster(replicas=1)
    replica = cluster.replicas[0]
    before = check_postgresql("role", env=replica.env()).perfdata["timeline"].value
    cluster.primary.stop()
    replica.promote()
    run = check_postgresql("role", "--expect", "primary", env=replica.env())
    assert run.status == "OK"
    assert run.perfdata["timeline"].value == before + 1
