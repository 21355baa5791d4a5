"""transactions: a long running transaction and a session idle in one, named by pid."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator

import psycopg
import pytest

from harness.postgres import PgCluster, PgServer, wait_for
from tests.plugin_run import check_postgresql

# Scenario runs on every supported major, not only the full-suite ones.
pytestmark = pytest.mark.pg_matrix


def _session(server: PgServer, application_name: str) -> psycopg.Connection:
    return psycopg.connect(
        host=server.host,
        port=server.port,
        user="postgres",
        dbname="postgres",
        application_name=application_name,
    )


@pytest.fixture
def busy_and_idle(pg_primary: PgServer) -> Iterator[tuple[int, int]]:
    """pid of a session running a long statement in a transaction, and of one idle in one."""
    with _session(pg_primary, "busy_probe") as busy, _session(pg_primary, "idle_probe") as idle:
        busy_pid, idle_pid = busy.info.backend_pid, idle.info.backend_pid
        # the busy transaction starts first: it is the oldest
        busy.execute("SELECT txid_current()")
        sleeper = threading.Thread(target=_sleep, args=(busy,), daemon=True)
        sleeper.start()
        idle.execute("SELECT txid_current()")
        try:
            yield busy_pid, idle_pid
        finally:
            pg_primary.execute("SELECT pg_cancel_backend(%s)", [busy_pid])
            sleeper.join(30)
            idle.rollback()


def _sleep(conn: psycopg.Connection) -> None:
    with contextlib.suppress(psycopg.Error):
        conn.execute("SELECT pg_sleep(60)")


def test_no_open_transaction_is_ok(pg_cluster: PgCluster) -> None:
    run = check_postgresql("transactions", env=pg_cluster.primary.env())
    assert run.status == "OK", run.stdout
    assert run.summary == "no open transaction"
    perf = run.perfdata
    assert perf["oldest_xact_age"].value == 0
    assert (perf["oldest_xact_age"].uom, perf["oldest_xact_age"].warn) == ("s", "1800")
    assert perf["oldest_idle_in_xact_age"].crit == "1800"
    assert perf["open_transactions"].value == 0
    # sorted by label, as it has always been: PNP4Nagios maps perfdata by position
    assert list(perf) == sorted(perf)


def test_long_and_idle_transactions_past_thresholds(
    pg_primary: PgServer, busy_and_idle: tuple[int, int]
) -> None:
    busy_pid, idle_pid = busy_and_idle
    wait_for(
        lambda: (
            pg_primary.scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)"
                " AND now() - xact_start > interval '2 s'"
                " AND now() - state_change > interval '1.5 s'"
                " AND state IN ('active', 'idle in transaction')",
                [[busy_pid, idle_pid]],
            )
            == 2
        ),
        what="both transactions older than 2s",
        timeout=20,
    )
    run = check_postgresql(
        "transactions",
        "-w",
        "1s",
        "-c",
        "1h",
        "--idle-warning",
        "500ms",
        "--idle-critical",
        "1s",
        env=pg_primary.env(),
    )
    assert run.status == "CRITICAL", run.stdout
    # only the worst state is in the summary: the idle session, by pid and name
    assert re.fullmatch(
        rf"pid {idle_pid} \(idle_probe\) idle in transaction for \d+\.\ds \(above 1\.0s\)",
        run.summary,
    ), run.summary
    assert run.perfdata["open_transactions"].value == 2
    assert run.perfdata["idle_in_transaction"].value == 1
    assert run.perfdata["oldest_xact_age"].value > run.perfdata["oldest_idle_in_xact_age"].value
    details = "\n".join(run.long_output)
    assert f"oldest transaction: pid {busy_pid} (busy_probe) postgres@postgres, " in details
    assert f"oldest idle in transaction: pid {idle_pid} (idle_probe) postgres@postgres, " in details

    warning = check_postgresql("transactions", "-w", "1s", env=pg_primary.env())
    assert warning.status == "WARNING", warning.stdout
    assert re.fullmatch(
        rf"pid {busy_pid} \(busy_probe\) in transaction for \d+\.\ds \(above 1\.0s\)",
        warning.summary,
    ), warning.summary


def test_hidden_sessions_are_unknown(pg_primary: PgServer, busy_and_idle) -> None:
    run = check_postgresql("transactions", env=pg_primary.env("nopriv"))
    assert run.status == "UNKNOWN"
    assert run.summary.endswith(
        "other sessions in pg_stat_activity as role nopriv: "
        "GRANT pg_monitor TO nopriv (or pg_read_all_stats)"
    )


def test_transaction_on_the_replica(pg_replica: PgServer) -> None:
    with _session(pg_replica, "report_on_replica") as conn:
        conn.execute("SELECT 1")  # opens the transaction: idle in it from now on
        pid = conn.info.backend_pid
        run = check_postgresql("transactions", "--idle-warning", "0", env=pg_replica.env())
        conn.rollback()
    assert run.status == "WARNING", run.stdout
    assert run.summary.startswith(f"pid {pid} (report_on_replica) idle in transaction for ")


def test_prepared_transaction_left_behind_is_judged(make_pg_cluster) -> None:
    """A prepared transaction belongs to no session: never 'no open transaction' while
    pg_prepared_xacts has rows, and judged by its age, also as the pg_monitor role."""
    with make_pg_cluster(replicas=0, max_prepared_transactions=5) as cluster:
        primary = cluster.primary
        with _session(primary, "two_phase") as conn:
            conn.execute("CREATE TABLE ledger (x int)")
            conn.commit()
            conn.execute("INSERT INTO ledger VALUES (1)")
            conn.execute("PREPARE TRANSACTION 'forgotten_tx'")
        try:
            wait_for(
                lambda: (
                    primary.scalar(
                        "SELECT count(*) FROM pg_prepared_xacts "
                        "WHERE gid = 'forgotten_tx' AND now() - prepared > interval '1 s'"
                    )
                    == 1
                ),
                what="the prepared transaction to be older than 1s",
                timeout=20,
            )
            run = check_postgresql("transactions", env=primary.env())
            assert run.status == "OK", run.stdout
            assert re.fullmatch(
                r"no session in a transaction, 1 prepared, oldest \d+\.\ds", run.summary
            ), run.summary
            assert run.perfdata["prepared_xacts"].value == 1
            prepared_age = run.perfdata["oldest_prepared_age"]
            assert prepared_age.value >= 1
            assert (prepared_age.uom, prepared_age.warn, prepared_age.crit) == ("s", "300", "1800")

            run = check_postgresql(
                "transactions", "--prepared-warning", "1s", env=primary.env("monitor")
            )
            assert run.status == "WARNING", run.stdout
            assert re.fullmatch(
                r"prepared transaction 'forgotten_tx' \(postgres@postgres\) prepared "
                r"\d+\.\ds ago \(above 1\.0s\)",
                run.summary,
            ), run.summary
            assert any(
                line.startswith(
                    "prepared transactions: 1, oldest prepared transaction "
                    "'forgotten_tx' (postgres@postgres), "
                )
                for line in run.long_output
            ), run.stdout
        finally:
            primary.execute("COMMIT PREPARED 'forgotten_tx'")


def test_one_session_oldest_in_both_ways_is_named_once(pg_primary: PgServer) -> None:
    with _session(pg_primary, "lone_idler") as idle:
        pid = idle.info.backend_pid
        idle.execute("SELECT txid_current()")
        try:
            wait_for(
                lambda: pg_primary.scalar(
                    "SELECT now() - state_change > interval '1.5 s' FROM pg_stat_activity "
                    "WHERE pid = %s AND state = 'idle in transaction'",
                    [pid],
                ),
                what="the session to be idle in its transaction for 1.5s",
                timeout=20,
            )
            run = check_postgresql(
                "transactions", "-w", "1s", "--idle-warning", "1s", env=pg_primary.env()
            )
        finally:
            idle.rollback()
    assert run.status == "WARNING", run.stdout
    assert re.fullmatch(
        rf"pid {pid} \(lone_idler\) in transaction for \d+\.\ds \(above 1\.0s\), "
        r"idle for \d+\.\ds \(above 1\.0s\)",
        run.summary,
    ), run.summary
    assert run.summary.count(f"pid {pid}") == 1
    assert run.perfdata["oldest_idle_in_xact_age"].value >= 1.5
