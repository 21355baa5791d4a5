"""standbys: the primary's view of its replicas."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.postgres import PgCluster
from tests.plugin_run import check_postgresql


def test_one_standby_streaming(pg_cluster: PgCluster) -> None:
    pg_cluster.wait_streaming()
    run = check_postgresql("standbys", env=pg_cluster.primary.env())
    assert run.first_line.startswith("PG_STANDBYS OK - 1 streaming (replica1), replay lag")
    perf = run.perfdata
    assert perf["standbys"].value == 1
    # aggregates first: a cut first line keeps them
    assert list(perf)[:3] == ["standbys", "sync_standbys", "max_replay_lag_bytes"]
    assert perf["max_replay_lag_bytes"].uom == "B"
    assert {
        "replica1_replay_lag_bytes",
        "replica1_replay_lag",
        "replica1_write_lag",
        "replica1_flush_lag",
    } <= set(perf)
    assert perf["replica1_replay_lag_bytes"].uom == "B"
    assert any(
        line.startswith("replica1 (127.0.0.1): streaming, async") for line in run.long_output
    )


def test_replica_without_standbys_of_its_own(pg_cluster: PgCluster) -> None:
    replica = pg_cluster.replicas[0]
    run = check_postgresql("standbys", env=replica.env())
    assert run.first_line == ("PG_STANDBYS OK - replica (in recovery) with no standbys of its own")
    strict = check_postgresql("standbys", "--role-mismatch", "critical", env=replica.env())
    assert strict.status == "CRITICAL"


def test_fewer_standbys_than_expected_is_critical(pg_cluster: PgCluster) -> None:
    run = check_postgresql("standbys", "--min-standbys", "2", env=pg_cluster.primary.env())
    assert run.status == "CRITICAL"
    assert run.summary == "streaming standbys 1 (below 2)"
    assert run.perfdata["standbys"].crit == "2:"


def test_named_standby_missing_is_critical(pg_cluster: PgCluster) -> None:
    run = check_postgresql(
        "standbys", "--standby", "replica1", "--standby", "replica9", env=pg_cluster.primary.env()
    )
    assert run.status == "CRITICAL"
    assert run.summary == "standby replica9 not streaming"


def test_sync_expectation(pg_cluster: PgCluster) -> None:
    run = check_postgresql("standbys", "--sync", "1", env=pg_cluster.primary.env())
    assert run.status == "CRITICAL"
    assert run.summary == "synchronous standbys 0 (below 1)"


def test_commits_waiting_for_a_missing_synchronous_standby_is_critical(
    make_pg_cluster: Callable[..., PgCluster],
) -> None:
    with make_pg_cluster(replicas=1) as cluster:
        # no writing statement from here on: every commit would hang
        cluster.primary.set_config(synchronous_standby_names='FIRST 1 ("replica 9")')
        run = check_postgresql("standbys", env=cluster.primary.env())
        run.assert_contract()
        assert run.status == "CRITICAL", run.stdout
        assert run.summary == "commits wait: 1 synchronous standby(s) required, 0 streaming"
        assert run.perfdata["sync_standbys"].crit == "1:"
        # an explicit --sync is the user's word
        assert check_postgresql("standbys", "--sync", "0", env=cluster.primary.env()).status == "OK"
        # naming the replica that streams satisfies it
        cluster.primary.set_config(synchronous_standby_names="replica1")
        cluster.primary.wait_until(
            lambda: cluster.primary.scalar(
                "SELECT sync_state = 'sync' FROM pg_stat_replication "
                "WHERE application_name = 'replica1'"
            ),
            "replica1 to become synchronous",
        )
        run = check_postgresql("standbys", env=cluster.primary.env())
        assert run.status == "OK", run.stdout
        assert run.perfdata["sync_standbys"].value == 1


def test_pg_receivewal_is_a_wal_receiver_not_a_standby(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    primary = pg_cluster.primary
    log = (tmp_path / "pg_receivewal.log").open("w")
    receiver = subprocess.Popen(
        [
            str(pg_cluster.install.program("pg_receivewal")),
            "--no-loop",
            "--no-password",
            "-D",
            str(tmp_path),
            "-d",
            primary.replication_conninfo(application_name="walarchive"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        primary.wait_until(
            lambda: primary.scalar(
                "SELECT count(*) FROM pg_stat_replication WHERE application_name = "
                "'walarchive' AND state = 'streaming' AND write_lsn IS NOT NULL"
            ),
            "pg_receivewal to stream",
        )
        run = check_postgresql("standbys", env=primary.env())
        run.assert_contract()
        assert run.status == "OK", run.stdout
        assert run.first_line.startswith("PG_STANDBYS OK - 1 streaming (replica1), replay lag")
        assert ", 1 WAL receiver(s) |" in run.first_line
        assert run.perfdata["standbys"].value == 1
        assert not [label for label in run.perfdata if label.startswith("walarchive")]
        assert any(
            line.startswith("WAL receiver (not a standby): walarchive (127.0.0.1): streaming")
            for line in run.long_output
        ), run.stdout
        strict = check_postgresql("standbys", "--min-standbys", "2", env=primary.env())
        assert strict.summary == "streaming standbys 1 (below 2)"
    finally:
        receiver.terminate()
        receiver.wait(timeout=30)
        log.close()
        # leave the shared cluster as it was: the WAL sender goes with its client
        primary.wait_until(
            lambda: primary.scalar(
                "SELECT count(*) = 0 FROM pg_stat_replication WHERE application_name = 'walarchive'"
            ),
            "pg_receivewal's WAL sender to exit",
        )


def test_commits_that_do_not_wait_are_not_critical(
    make_pg_cluster: Callable[..., PgCluster],
) -> None:
    """synchronous_commit = local server-wide: a missing synchronous standby makes no
    commit wait, so it is a WARNING that says so, not "commits wait"."""
    with make_pg_cluster(replicas=1, synchronous_commit="local") as cluster:
        cluster.primary.set_config(synchronous_standby_names='FIRST 1 ("replica 9")')
        run = check_postgresql("standbys", env=cluster.primary.env())
        assert run.status == "WARNING", run.stdout
        assert run.summary == (
            "1 synchronous standby(s) named, 0 streaming: commits do not wait "
            "(synchronous_commit local)"
        )
        assert run.perfdata["sync_standbys"].value == 0
        assert run.perfdata["sync_standbys"].crit == ""
        assert any(
            "commits do not wait (synchronous_commit = local)" in line for line in run.long_output
        ), run.stdout
        # a login's own synchronous_commit hides the server's from a pg_monitor role:
        # the check assumes the default (on) and says why
        own = check_postgresql(
            "standbys",
            env={**cluster.primary.env(), "PGOPTIONS": "-c synchronous_commit=local"},
        )
        assert own.status == "CRITICAL", own.stdout
        assert own.summary == "commits wait: 1 synchronous standby(s) required, 0 streaming"
        assert any(
            line.startswith("synchronous_commit is set for this login") for line in own.long_output
        ), own.stdout
        cluster.primary.set_config(synchronous_commit="off")
        off = check_postgresql("standbys", env=cluster.primary.env())
        assert off.status == "WARNING"
        assert off.summary.endswith("commits do not wait (synchronous_commit off)")


@pytest.fixture(scope="module")
def publisher(make_pg_cluster: Callable[..., PgCluster]) -> PgCluster:
    """A primary (wal_level logical) with one physical standby, for logical and delayed
    standbys; tests leave it with exactly that."""
    return make_pg_cluster(replicas=1, wal_level="logical")


def test_logical_subscriber_is_not_a_standby(
    publisher: PgCluster, make_pg_cluster: Callable[..., PgCluster]
) -> None:
    primary = publisher.primary
    primary.execute("CREATE PUBLICATION everything FOR ALL TABLES")
    with make_pg_cluster(replicas=0) as subscriber_cluster:
        subscriber = subscriber_cluster.primary
        subscriber.execute(
            "CREATE SUBSCRIPTION shop CONNECTION "
            f"'host={primary.host} port={primary.port} user=postgres dbname=postgres' "
            "PUBLICATION everything"
        )
        try:
            primary.wait_until(
                lambda: primary.scalar(
                    "SELECT count(*) FROM pg_stat_replication "
                    "WHERE application_name = 'shop' AND state = 'streaming'"
                ),
                "the subscription to stream",
            )
            run = check_postgresql("standbys", env=primary.env())
            assert run.status == "OK", run.stdout
            assert run.first_line.startswith(
                "PG_STANDBYS OK - 1 streaming (replica1), replay lag at most "
            )
            assert ", 1 logical (not counted) |" in run.first_line
            assert run.perfdata["standbys"].value == 1
            assert not [label for label in run.perfdata if label.startswith("shop")]
            assert any(
                line.startswith("logical replication (not a standby): shop (127.0.0.1): streaming")
                for line in run.long_output
            ), run.stdout
            strict = check_postgresql("standbys", "--min-standbys", "2", env=primary.env())
            assert strict.status == "CRITICAL"
            assert strict.summary == "streaming standbys 1 (below 2)"
        finally:
            subscriber.execute("DROP SUBSCRIPTION shop")
            primary.execute("DROP PUBLICATION everything")


def test_a_subscriptions_initial_copy_is_not_a_standby(
    make_pg_cluster: Callable[..., PgCluster],
) -> None:
    """A subscription copies each table through a WAL sender of its own that holds no
    active slot while it copies (state 'startup'): logical all the same."""
    # a cluster of its own: the stopped copy must not disturb the module's publisher
    with make_pg_cluster(replicas=1, wal_level="logical") as own:
        primary = own.primary
        primary.execute(
            "CREATE TABLE parcels AS SELECT g AS id, repeat('x', 200) AS pad "
            "FROM generate_series(1, 300000) AS g"
        )
        primary.execute("CREATE PUBLICATION parcels FOR TABLE parcels")
        with make_pg_cluster(replicas=0) as subscriber_cluster:
            subscriber = subscriber_cluster.primary
            subscriber.execute("CREATE TABLE parcels (id int, pad text)")
            subscriber.execute(
                "CREATE SUBSCRIPTION parcels CONNECTION "
                f"'host={primary.host} port={primary.port} user=postgres dbname=postgres' "
                "PUBLICATION parcels"
            )
            copier = None
            try:
                # catch the copying WAL sender and stop it mid-copy (60 MB), so it stays
                deadline = time.monotonic() + 60
                while copier is None and time.monotonic() < deadline:
                    copier = primary.scalar(
                        "SELECT pid FROM pg_stat_replication "
                        "WHERE application_name LIKE 'pg\\_%\\_sync\\_%' AND state = 'startup' "
                        # copying, its slot made and released
                        "AND NOT EXISTS (SELECT FROM pg_replication_slots WHERE active_pid = pid)"
                    )
                assert copier is not None, "the subscription's table copy never showed"
                os.kill(copier, signal.SIGSTOP)
                run = check_postgresql("standbys", env=primary.env())
                assert run.status == "OK", run.stdout
                assert run.first_line.startswith("PG_STANDBYS OK - 1 streaming (replica1), "), (
                    run.stdout
                )
                assert not [label for label in run.perfdata if label.startswith("pg_")], run.stdout
                assert not [line for line in run.long_output if line.startswith("pg_")], run.stdout
            finally:
                if copier is not None:
                    os.kill(copier, signal.SIGCONT)
                subscriber.execute("DROP SUBSCRIPTION parcels")
                primary.execute("DROP PUBLICATION parcels")
                primary.execute("DROP TABLE parcels")


class _Committer:
    """Commits on the primary every few tenths of a second, so that replay lag is measured
    continuously (pg_stat_replication clears it once a standby is idle and caught up)."""

    def __init__(self, primary) -> None:
        import threading

        self.primary = primary
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.primary.connect() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS ticks (at timestamptz)")
            while not self.stop.wait(0.3):
                conn.execute("INSERT INTO ticks VALUES (now())")

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


# 'délai': the server shows non-ASCII characters of application_name rewritten
DELAYED = "d\u00e9lai"
DELAY_SECONDS = 5


def test_delayed_standby_judged_beyond_its_delay_or_excluded(publisher: PgCluster) -> None:
    primary = publisher.primary
    delayed = publisher.add_replica("replica2", wait=False)
    delayed.set_config(
        recovery_min_apply_delay=f"{DELAY_SECONDS}s",
        primary_conninfo=primary.replication_conninfo(application_name=DELAYED),
    )
    shown = "d??lai" if primary.major < 16 else "d\\xc3\\xa9lai"
    try:
        with _Committer(primary):
            # The delay counts from the commit's timestamp, taken a little before the
            # primary writes it, so replay_lag settles just under the delay (4.95 s for 5 s).
            primary.wait_until(
                lambda: primary.scalar(
                    "SELECT extract(epoch FROM replay_lag) > %s FROM pg_stat_replication "
                    "WHERE application_name = %s",
                    [DELAY_SECONDS - 1, shown],
                ),
                "the delayed standby's replay lag to show its delay",
                timeout=60,
            )
            thresholds = ("-w", "3s", "-c", f"{DELAY_SECONDS - 1}s")
            plain = check_postgresql("standbys", *thresholds, env=primary.env())
            assert plain.status == "CRITICAL", plain.stdout
            assert plain.summary.startswith(f"{shown} replay lag ")

            run = check_postgresql(
                "standbys",
                *thresholds,
                "--delayed",
                f"{DELAYED}={DELAY_SECONDS}s",
                env=primary.env(),
            )
            assert run.status == "OK", run.stdout
            assert run.summary.startswith("2 streaming (")
            assert ", 1 delayed on purpose" in run.summary
            perf = run.perfdata
            beyond = [v for k, v in perf.items() if k.endswith("_replay_lag_beyond_delay")]
            assert len(beyond) == 1 and beyond[0].value < 3 and beyond[0].crit == "4"
            assert any(k.endswith("_flush_lag_bytes") for k in perf)
            assert perf["standbys"].value == 2
            assert any(
                line.startswith(f"'{DELAYED}' is shown by the server as '{shown}'")
                for line in run.long_output
            ), run.stdout

            excluded = check_postgresql(
                "standbys", *thresholds, "--exclude", DELAYED, env=primary.env()
            )
            assert excluded.status == "OK", excluded.stdout
            assert excluded.summary.startswith("1 streaming (replica1), replay lag at most ")
            assert excluded.summary.endswith(", 1 excluded")
            assert excluded.perfdata["standbys"].value == 1
            assert any(
                line.startswith(f"excluded (--exclude): {shown} ") for line in excluded.long_output
            ), excluded.stdout
    finally:
        delayed.stop()
        publisher.replicas.remove(delayed)
        primary.execute("SELECT pg_drop_replication_slot('replica2')")
