"""connections: used against usable (max_connections minus the reserved slots), held open."""

from __future__ import annotations

import contextlib
import re

import psycopg
import pytest

from harness.postgres import PgCluster, PgServer
from tests.plugin_run import check_postgresql

# Scenario runs on every supported major, not only the full-suite ones.
pytestmark = pytest.mark.pg_matrix


def test_idle_server_is_ok(pg_primary: PgServer) -> None:
    run = check_postgresql("connections", env=pg_primary.env())
    assert run.status == "OK", run.stdout
    # the check's own session is the one in use
    assert re.fullmatch(
        r"\d+ of 47 usable connections in use \(\d+\.\d%\), most on postgres \(\d+\)", run.summary
    ), run.summary
    perf = run.perfdata
    assert perf["connections"].max == "47"
    assert (perf["connections_pct"].uom, perf["connections_pct"].warn) == ("%", "80")
    assert perf["max_connections"].value == 50
    assert run.long_output[0] == "max_connections 50, reserved 3 for superusers: 47 usable"


def test_connections_held_open_pass_the_thresholds(make_pg_cluster) -> None:
    # reserved_connections (16+) is taken off the usable slots as well
    settings = {"max_connections": 20, "superuser_reserved_connections": 2}
    with make_pg_cluster(replicas=0, **settings) as cluster:
        primary = cluster.primary
        reserved = 3 if primary.major >= 16 else 0
        if reserved:
            primary.set_config(reserved_connections=reserved)
        usable = 20 - 2 - reserved
        primary.execute("CREATE DATABASE busy_app")
        with contextlib.ExitStack() as held:
            for _ in range(12):
                held.enter_context(
                    psycopg.connect(
                        primary.dsn("postgres").replace("dbname=postgres", "dbname=busy_app")
                    )
                )
            # 12 held + the check's own
            used = 13
            run = check_postgresql("connections", env=primary.env())
            pct = 100 * used / usable
            expected = "WARNING" if pct > 80 else "OK"
            assert run.status == expected, run.stdout
            assert run.perfdata["connections"].value == used
            assert run.perfdata["connections"].max == str(usable)
            assert run.perfdata["connections_pct"].value == round(pct, 1)

            counted = check_postgresql("connections", "-w", "10", "-c", "12", env=primary.env())
            assert counted.status == "CRITICAL"
            assert counted.summary == (
                f"connections {used} (above 12): {used} of {usable} usable, most on busy_app (12)"
            )
            assert (counted.perfdata["connections"].warn, counted.perfdata["connections"].crit) == (
                "10",
                "12",
            )
            pct_run = check_postgresql("connections", "-w", "50%", env=primary.env())
            assert pct_run.status in ("WARNING", "CRITICAL")
            assert pct_run.summary.startswith(f"connections used {pct:.1f}% (above ")


def test_hidden_sessions_are_unknown_naming_the_grant(pg_cluster: PgCluster) -> None:
    # the replica's WAL sender is another role's session
    run = check_postgresql("connections", env=pg_cluster.primary.env("nopriv"))
    assert run.status == "UNKNOWN"
    assert re.fullmatch(
        r"cannot see \d+ other sessions in pg_stat_activity as role nopriv: "
        r"GRANT pg_monitor TO nopriv \(or pg_read_all_stats\)",
        run.summary,
    )


def test_replica_counts_its_own_clients(pg_replica: PgServer) -> None:
    run = check_postgresql("connections", env=pg_replica.env())
    assert run.status == "OK"
    assert run.perfdata["connections"].value >= 1
