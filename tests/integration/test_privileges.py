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
    ("primary", "slots"): "OK",
    ("replica", "slots"): "OK",
    ("primary", "wraparound"): "OK",
    ("replica", "wraparound"): "OK",
    ("primary", "transactions"): "OK",
    ("replica", "transactions"): "OK",
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


def test_wraparound_without_pg_monitor_says_what_it_cannot_see(pg_cluster: PgCluster) -> None:
    """The XID ages are everyone's to read; what holds them back may be another role's
    session, hidden without pg_read_all_stats: the long output says so."""
    run = check_postgresql("wraparound", env=pg_cluster.primary.env("nopriv"))
    assert run.status == "OK", run.stdout
    assert any(
        "transactions are hidden from role nopriv" in line
        and line.endswith("GRANT pg_monitor TO nopriv (or pg_read_all_stats)")
        for line in run.long_output
    ), run.stdout
