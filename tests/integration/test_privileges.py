"""Least privilege: pg_monitor is enough; without it, a clear UNKNOWN, never a silent OK."""

from __future__ import annotations

import pytest

from harness.postgres import PgCluster
from tests.plugin_run import check_postgresql

EXPECTED = {
    ("primary", "alive"): "OK",
    ("primary", "role"): "OK",
    ("primary", "lag"): "OK",
    ("primary", "standbys"): "OK",
    ("replica", "alive"): "OK",
    ("replica", "role"): "OK",
    ("replica", "lag"): "OK",
    ("replica", "standbys"): "OK",
}


@pytest.mark.parametrize(("node", "command"), list(EXPECTED))
def test_every_check_works_with_pg_monitor_only(
    pg_cluster: PgCluster, node: str, command: str
) -> None:
    server = pg_cluster.primary if node == "primary" else pg_cluster.replicas[0]
    assert not server.scalar("SELECT rolsuper FROM pg_roles WHERE rolname = 'monitor'")
    run = check_postgresql(command, env=server.env("monitor"))
    assert run.status == EXPECTED[node, command], run.stdout


@pytest.mark.parametrize(
    ("node", "command", "view"),
    [("replica", "lag", "pg_stat_wal_receiver"), ("primary", "standbys", "pg_stat_replication")],
)
def test_missing_pg_monitor_is_unknown_naming_the_privilege(
    pg_cluster: PgCluster, node: str, command: str, view: str
) -> None:
    server = pg_cluster.primary if node == "primary" else pg_cluster.replicas[0]
    run = check_postgresql(command, env=server.env("nopriv"))
    assert run.status == "UNKNOWN"
    assert run.summary == (
        f"cannot see {view} details as role nopriv: GRANT pg_monitor TO nopriv "
        "(or pg_read_all_stats)"
    )
