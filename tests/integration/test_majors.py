"""Every check_postgresql subcommand on every supported PostgreSQL major, primary and
replica, as the pg_monitor-only role: state, status line and perfdata labels.

consul-role needs a Consul agent and is run per major by the reporter's failover scenario
(test_role_reporter.py). A major older than the oldest supported gets a plain UNKNOWN.
"""

from __future__ import annotations

import re

import pytest

from checks.postgres.connection import OLDEST_SUPPORTED_MAJOR
from harness.postgres import PgCluster
from tests.plugin_run import check_postgresql

pytestmark = pytest.mark.pg_matrix

_TRANSACTIONS_PERF = {
    "idle_in_transaction",
    "oldest_idle_in_xact_age",
    "oldest_prepared_age",
    "oldest_xact_age",
    "open_transactions",
    "prepared_xacts",
    "prepared_xid_age",
}
_WRAPAROUND_PERF = {"mxid_age", "mxid_age_pct", "xid_age", "xid_age_pct", "xmin_horizon_age"}
_CONNECTIONS_PERF = {"connections", "connections_pct", "max_connections"}
_CHECKPOINTS_PERF = {
    "wal_since_checkpoint",
    "wal_since_checkpoint_pct",
    "last_checkpoint_age",
    "checkpoints_timed",
    "checkpoints_requested",
}
_CHECKPOINTS_LINE = (
    r"\d+(\.\d)? (B|KiB|MiB) of WAL since the last {kind} began "
    r"\(\d+% of max_wal_size 64\.0 MiB\)"
)
_LAG_LINE = r"replay lag \d+ B, \d+ms, streaming from 127\.0\.0\.1:(?P<primary_port>\d+)"

# (node, subcommand) -> (summary pattern, perfdata labels) on the healthy shared cluster;
# every one is OK. Patterns leave out what varies between runs (ages, counts of others'
# sessions); {replica} stands for the replica's name.
EXPECTED: dict[tuple[str, str], tuple[str, set[str]]] = {
    ("primary", "alive"): (
        r"127\.0\.0\.1:\d+ accepts connections \(PostgreSQL {major}\.\d+, primary\)",
        {"connect_time", "query_time"},
    ),
    ("replica", "alive"): (
        r"127\.0\.0\.1:\d+ accepts connections \(PostgreSQL {major}\.\d+, replica\)",
        {"connect_time", "query_time"},
    ),
    ("primary", "role"): (
        r"primary, writable, timeline 1",
        {"is_primary", "is_writable", "timeline"},
    ),
    ("replica", "role"): (
        r"replica, read-only, timeline 1",
        {"is_primary", "is_writable", "timeline"},
    ),
    ("primary", "lag"): (r"primary \(not in recovery\): no replay lag to measure", set()),
    ("replica", "lag"): (
        _LAG_LINE,
        {
            "receiver_message_age",
            "receiver_streaming",
            "replay_lag_bytes",
            "replay_lag_seconds",
            "replay_paused",
        },
    ),
    ("primary", "standbys"): (
        # a standby may be a few KiB behind at the moment of the check
        r"1 streaming \({replica}\), replay lag at most \d+(\.\d+)? (B|KiB|MiB), "
        r"\d+(\.\d+)?(us|ms|s)",
        {
            "standbys",
            "sync_standbys",
            "max_replay_lag_bytes",
            "{replica}_replay_lag_bytes",
            "{replica}_replay_lag",
            "{replica}_write_lag",
            "{replica}_flush_lag",
        },
    ),
    ("replica", "standbys"): (r"replica \(in recovery\) with no standbys of its own", set()),
    ("primary", "slots"): (
        r"1 slot active, most WAL retained by {replica}: \d+ B",
        {
            "slots",
            "inactive_slots",
            "max_retained_bytes",
            "{replica}_retained_bytes",
            "{replica}_active",
        },
    ),
    ("replica", "slots"): (
        r"no replication slots",
        {"slots", "inactive_slots", "max_retained_bytes"},
    ),
    ("primary", "transactions"): (r"no open transaction", _TRANSACTIONS_PERF),
    ("replica", "transactions"): (r"no open transaction", _TRANSACTIONS_PERF),
    ("primary", "wraparound"): (r"database \w+ XID age \d+ \(0\.0% of 2\^31\)", _WRAPAROUND_PERF),
    ("replica", "wraparound"): (r"database \w+ XID age \d+ \(0\.0% of 2\^31\)", _WRAPAROUND_PERF),
    ("primary", "archiver"): (r"archive_mode is off: WAL is not archived", set()),
    ("replica", "archiver"): (r"archive_mode is off: WAL is not archived", set()),
    ("primary", "connections"): (
        r"\d+ of 47 usable connections in use \(\d+\.\d%\), most on \w+ \(\d+\)",
        _CONNECTIONS_PERF,
    ),
    ("replica", "connections"): (
        r"\d+ of 47 usable connections in use \(\d+\.\d%\), most on \w+ \(\d+\)",
        _CONNECTIONS_PERF,
    ),
    ("primary", "checkpoints"): (_CHECKPOINTS_LINE.format(kind="checkpoint"), _CHECKPOINTS_PERF),
    ("replica", "checkpoints"): (
        _CHECKPOINTS_LINE.format(kind="restartpoint"),
        _CHECKPOINTS_PERF,
    ),
}


@pytest.mark.parametrize(("node", "command"), list(EXPECTED))
def test_subcommand_as_pg_monitor(pg_cluster: PgCluster, node: str, command: str) -> None:
    pg_cluster.wait_streaming()
    primary, replica = pg_cluster.primary, pg_cluster.replicas[0]
    server = primary if node == "primary" else replica
    pattern, perf_labels = EXPECTED[node, command]
    fill = {"major": str(server.major), "replica": replica.name}
    run = check_postgresql(command, env=server.env("monitor"))
    assert run.status == "OK", run.stdout
    assert run.first_line.startswith(f"PG_{command.upper()} OK - "), run.stdout
    match = re.fullmatch(pattern.format(**fill), run.summary)
    assert match, f"{run.summary!r} does not match {pattern.format(**fill)!r}"
    if "primary_port" in match.groupdict():
        assert int(match["primary_port"]) == primary.port
    assert set(run.perfdata) == {label.format(**fill) for label in perf_labels}, run.first_line


@pytest.mark.pg(f"< {OLDEST_SUPPORTED_MAJOR}")
@pytest.mark.parametrize("command", ["alive", "role", "lag", "slots", "wraparound"])
@pytest.mark.parametrize("node", ["primary", "replica"])
def test_unsupported_major_is_unknown_by_name(
    pg_cluster: PgCluster, node: str, command: str
) -> None:
    server = pg_cluster.primary if node == "primary" else pg_cluster.replicas[0]
    run = check_postgresql(command, env=server.env("monitor"))
    assert run.status == "UNKNOWN"
    assert run.summary == (
        f"PostgreSQL {server.major} is not supported (oldest supported: {OLDEST_SUPPORTED_MAJOR})"
    )
    assert run.perfdata == {}
