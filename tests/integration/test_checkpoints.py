"""checkpoints: WAL written since the last checkpoint (a restartpoint on a replica) began,
as the pg_monitor-only role, before and after the checkpoint that clears it."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest

from harness.postgres import NOPRIV_USER, PgCluster, PgServer
from tests.plugin_run import PluginRun, check_postgresql

# 1 MB is far below the WAL the test writes and far above what a checkpoint leaves behind
# (its own record and a running-transactions record).
AFTER_A_CHECKPOINT = "1MB"
_SUMMARY = (
    r"\d+(\.\d)? (B|KiB|MiB) of WAL since the last {kind} began "
    r"\(\d+% of max_wal_size 1\.0 GiB\)"
)


@pytest.fixture(scope="module")
def quiet_cluster(make_pg_cluster: Callable[..., PgCluster]) -> Iterator[PgCluster]:
    """No checkpoint of its own during the test: not by time, not by WAL volume."""
    with make_pg_cluster(replicas=1, checkpoint_timeout="1h", max_wal_size="1GB") as cluster:
        yield cluster


def _written_since(server: PgServer, start: str) -> int:
    return int(server.scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", [start]))


def _checkpoints(server: PgServer, *args: str, role: str = "monitor") -> PluginRun:
    run: PluginRun = check_postgresql("checkpoints", *args, env=server.env(role))
    return run


def test_wal_since_the_checkpoint_until_the_next_one(quiet_cluster: PgCluster) -> None:
    primary, replica = quiet_cluster.primary, quiet_cluster.replicas[0]
    start = primary.scalar("SELECT pg_current_wal_lsn()::text")
    primary.execute("CREATE TABLE filler AS SELECT g AS n FROM generate_series(1, 200000) AS g")
    written = _written_since(primary, start)
    assert written > 2 * 2**20
    quiet_cluster.wait_caught_up()

    for server, kind in ((primary, "checkpoint"), (replica, "restartpoint")):
        behind = _checkpoints(server, "-w", AFTER_A_CHECKPOINT)
        assert behind.status == "WARNING", behind.stdout
        assert re.fullmatch(
            _SUMMARY.format(kind=kind) + rf": {kind}s fall behind \(WAL since the last "
            r"checkpoint \S+ MiB \(above 1\.0 MiB\)\)",
            behind.summary,
        ), behind.summary
        assert behind.perfdata["wal_since_checkpoint"].value >= written
        assert behind.perfdata["wal_since_checkpoint"].uom == "B"
        assert behind.long_output[0].startswith(f"last {kind} completed ")
        # the defaults, a share of max_wal_size, are far off
        assert _checkpoints(server).status == "OK"

    primary.execute("CHECKPOINT")
    cleared = _checkpoints(primary, "-w", AFTER_A_CHECKPOINT)
    assert cleared.status == "OK", cleared.stdout
    assert re.fullmatch(_SUMMARY.format(kind="checkpoint"), cleared.summary), cleared.summary
    assert cleared.perfdata["last_checkpoint_age"].value < 60
    assert cleared.perfdata["checkpoints_requested"].uom == "c"

    # A replica makes a restartpoint only at a checkpoint record it has replayed, and on
    # its own schedule: the primary's checkpoint alone does not clear it.
    quiet_cluster.wait_caught_up()
    assert _checkpoints(replica, "-w", AFTER_A_CHECKPOINT).status == "WARNING"
    replica.execute("CHECKPOINT")
    restarted = _checkpoints(replica, "-w", AFTER_A_CHECKPOINT)
    assert restarted.status == "OK", restarted.stdout
    assert re.fullmatch(_SUMMARY.format(kind="restartpoint"), restarted.summary), restarted.summary


def test_needs_no_privilege(quiet_cluster: PgCluster) -> None:
    """pg_control_checkpoint() and the statistics views are every role's to read."""
    run = _checkpoints(quiet_cluster.primary, role=NOPRIV_USER)
    assert run.status == "OK", run.stdout
    assert set(run.perfdata) == {
        "wal_since_checkpoint",
        "wal_since_checkpoint_pct",
        "last_checkpoint_age",
        "checkpoints_timed",
        "checkpoints_requested",
    }
