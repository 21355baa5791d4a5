"""archiver: off, working, failing and recovering, on a primary and on a replica."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.postgres import PgServer
from tests.plugin_run import check_postgresql

# Scenario runs on every supported major, not only the full-suite ones.
pytestmark = pytest.mark.pg_matrix


def test_archive_mode_off_is_ok_with_a_note_or_critical_when_expected(
    pg_primary: PgServer,
) -> None:
    run = check_postgresql("archiver", env=pg_primary.env())
    assert run.first_line == "PG_ARCHIVER OK - archive_mode is off: WAL is not archived"
    run = check_postgresql("archiver", "--expect-archiving", env=pg_primary.env())
    assert run.first_line == "PG_ARCHIVER CRITICAL - archive_mode is off: WAL is not archived"


@pytest.fixture(scope="module")
def archive_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pg-ha-checks-archive-") as name:
        path = Path(name)
        path.chmod(0o777)  # the PostgreSQL OS user copies segments into it
        yield path


def _stats(server: PgServer) -> dict:
    with server.connect() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT archived_count, failed_count, last_archived_wal, last_failed_wal,"
            " coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false)"
            "   AS failing FROM pg_stat_archiver"
        )
        names = [c.name for c in cur.description]
        return dict(zip(names, cur.fetchone(), strict=True))


def _ready(server: PgServer) -> int:
    return server.scalar("SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'")


def _new_segment(primary: PgServer) -> str:
    primary.execute("CREATE TABLE IF NOT EXISTS archive_probe (x int)")
    primary.execute("INSERT INTO archive_probe VALUES (1)")
    return primary.scalar("SELECT pg_walfile_name(pg_switch_wal())")


def test_archiving_works_then_fails_then_recovers(make_pg_cluster, archive_dir: Path) -> None:
    copy = f"cp %p {archive_dir}/%f"
    with make_pg_cluster(replicas=1, archive_mode="on", archive_command=copy) as cluster:
        primary, replica = cluster.primary, cluster.replicas[0]

        # a replica with archive_mode=on leaves archiving to its primary
        run = check_postgresql("archiver", "--expect-archiving", env=replica.env())
        assert run.first_line == (
            "PG_ARCHIVER OK - replica with archive_mode=on: the primary archives "
            "(archive_mode=always archives here too)"
        )

        segment = _new_segment(primary)
        primary.wait_until(
            lambda: _stats(primary)["last_archived_wal"] == segment and not _ready(primary),
            f"{segment} archived",
        )
        run = check_postgresql("archiver", env=primary.env())
        assert run.status == "OK", run.stdout
        assert re.fullmatch(
            # ms when quick; a loaded machine can take over a second (then "1.2s")
            rf"last archived {segment} \d+(ms|\.\ds|s) ago, 0 WAL files waiting",
            run.summary,
        ), run.summary
        perf = run.perfdata
        assert perf["archive_failing"].value == 0
        assert perf["archive_delay"].value == 0
        assert (perf["archive_delay"].warn, perf["archive_delay"].crit) == ("300", "900")
        assert perf["ready_wal_files"].value == 0
        assert perf["archived_count"].uom == "c" and perf["archived_count"].value >= 1
        assert perf["failed_count"].value == 0
        assert (archive_dir / segment).exists()

        # nopriv may read pg_stat_archiver but not list pg_wal/archive_status
        run = check_postgresql("archiver", env=primary.env("nopriv"))
        assert run.first_line == (
            "PG_ARCHIVER UNKNOWN - cannot list pg_wal/archive_status as role nopriv: "
            "GRANT pg_monitor TO nopriv (or EXECUTE on pg_ls_archive_statusdir())"
        )

        primary.set_config(archive_command="false")
        failing = _new_segment(primary)
        primary.wait_until(lambda: _stats(primary)["failing"], "the archive command to fail")
        run = check_postgresql("archiver", env=primary.env())
        assert run.status == "CRITICAL", run.stdout
        assert re.fullmatch(
            rf"archiving {failing} failed \S+ ago, last success \S+( \S+)? ago", run.summary
        ), run.summary
        assert run.perfdata["archive_failing"].value == 1
        assert run.perfdata["failed_count"].value >= 1
        assert run.perfdata["ready_wal_files"].value >= 1
        assert f"last failed: {failing}, " in "\n".join(run.long_output)

        # WAL waiting counted against a plain-number threshold
        run = check_postgresql("archiver", "-w", "0", env=primary.env())
        assert run.perfdata["ready_wal_files"].warn == "0"
        assert f"WAL files waiting: {int(run.perfdata['ready_wal_files'].value)}" in run.long_output

        primary.set_config(archive_command=copy)
        primary.wait_until(
            lambda: not _stats(primary)["failing"] and not _ready(primary), "archiving to recover"
        )
        run = check_postgresql("archiver", env=primary.env())
        assert run.status == "OK", run.stdout
        assert (archive_dir / failing).exists()


def test_replica_with_archive_mode_always_archives_itself(make_pg_cluster) -> None:
    with tempfile.TemporaryDirectory(prefix="pg-ha-checks-archive-") as name:
        target = Path(name)
        target.chmod(0o777)
        copy = f"cp %p {target}/%f"
        with make_pg_cluster(replicas=1, archive_mode="always", archive_command=copy) as cluster:
            primary, replica = cluster.primary, cluster.replicas[0]
            segment = _new_segment(primary)
            replica.wait_until(
                lambda: _stats(replica)["last_archived_wal"] == segment and not _ready(replica),
                f"{segment} archived by the replica",
            )
            run = check_postgresql("archiver", env=replica.env())
            assert run.status == "OK", run.stdout
            assert run.summary.startswith(f"last archived {segment} ")

            replica.set_config(archive_command="false")
            failing = _new_segment(primary)
            replica.wait_until(
                lambda: _stats(replica)["failing"], "the replica's archiving to fail"
            )
            run = check_postgresql("archiver", env=replica.env())
            assert run.status == "CRITICAL", run.stdout
            assert run.summary.startswith(f"archiving {failing} failed ")
