"""Connection failures as a DBA needs to read them: which server, libpq's whole reason
(with its DETAIL), every server of a list, and the GRANT that lets a login in."""

from __future__ import annotations

import re

import psycopg
import pytest

from harness.ports import free_port
from harness.postgres import PgCluster, PgServer
from tests.plugin_run import check_postgresql

NOT_ACCEPTING = "the database system is not accepting connections"
HOT_STANDBY_OFF = "Hot standby mode is disabled."
# Before 14 a standby with hot_standby off says only "the database system is starting up",
# with no DETAIL, so the cold standby below is never seen refusing as these tests expect.
SAYS_HOT_STANDBY_OFF = pytest.mark.pg(">= 14")


def _refuses_with_detail(server: PgServer) -> bool:
    """Up, and turning logins away because hot_standby is off."""
    try:
        with psycopg.connect(server.dsn("postgres"), connect_timeout=2):
            return False
    except psycopg.OperationalError as exc:
        if server._popen is not None and server._popen.poll() is not None:
            raise
        return HOT_STANDBY_OFF in str(exc)


@pytest.fixture(scope="module")
def cold_standby(make_pg_cluster) -> PgServer:
    """A replica with hot_standby off: running, replaying, refusing every login."""
    cluster: PgCluster = make_pg_cluster(replicas=1)
    replica = cluster.replicas[0]
    replica.stop()
    replica.set_config(hot_standby="off")  # offline: written to postgresql.auto.conf
    # start() waits for a query to succeed, which this server never allows
    replica._accepts_connections = lambda: _refuses_with_detail(replica)  # type: ignore[method-assign]
    replica.start()
    return replica


@SAYS_HOT_STANDBY_OFF
def test_detail_line_is_kept(cold_standby: PgServer) -> None:
    run = check_postgresql("alive", env=cold_standby.env())
    assert run.status == "CRITICAL"
    assert run.summary == (
        f"cannot connect to 127.0.0.1:{cold_standby.port}: {NOT_ACCEPTING} ({HOT_STANDBY_OFF})"
    )


@SAYS_HOT_STANDBY_OFF
def test_every_server_of_a_host_list_is_reported(cold_standby: PgServer) -> None:
    closed = free_port()
    env = {**cold_standby.env(), "PGHOST": "127.0.0.1,127.0.0.1"}
    env["PGPORT"] = f"{closed},{cold_standby.port}"
    run = check_postgresql("alive", env=env)
    assert run.status == "CRITICAL"
    first = f"127.0.0.1:{closed}: Connection refused"
    second = f"127.0.0.1:{cold_standby.port}: {NOT_ACCEPTING} ({HOT_STANDBY_OFF})"
    assert run.summary == f"cannot connect to any of 2 servers: {first}, {second}"
    assert run.long_output[:2] == [f"cannot connect to {first}", f"cannot connect to {second}"]
    # the same list in a -d conninfo, with a password that must not be echoed
    conninfo = (
        f"host=127.0.0.1,127.0.0.1 port={closed},{cold_standby.port} dbname=postgres "
        "password=s3cret"
    )
    by_conninfo = check_postgresql("alive", "-d", conninfo, env={"PGUSER": "monitor"})
    assert by_conninfo.summary == run.summary
    assert "s3cret" not in by_conninfo.stdout


def test_service_file_target_is_named(make_pg_cluster, tmp_path) -> None:
    """A server that never answers, reached through a service file or a -d conninfo: the
    status line names it as host:port, not libpq's default socket nor the conninfo."""
    cluster: PgCluster = make_pg_cluster(replicas=0)
    server = cluster.primary
    services = tmp_path / "pg_service.conf"
    services.write_text(
        f"[frozen]\nhost=127.0.0.1\nport={server.port}\nuser=monitor\ndbname=postgres\n"
    )
    server.freeze()
    # libpq gives up after connect_timeout (2s here), unless the whole run's -t (3s) comes
    # first on a loaded host: either way the server tried is the one named
    where = re.escape(f"127.0.0.1:{server.port}")
    expected = re.compile(
        rf"cannot connect to {where}: no answer within 2s|timeout: no answer from {where} within 3s"
    )
    try:
        by_service = check_postgresql(
            "alive",
            "-t",
            "3",
            env={"PGSERVICEFILE": str(services), "PGSERVICE": "frozen"},
        )
        assert by_service.status == "CRITICAL"
        assert expected.fullmatch(by_service.summary), by_service.summary
        by_d = check_postgresql(
            "alive", "-t", "3", "-d", "service=frozen", env={"PGSERVICEFILE": str(services)}
        )
        assert expected.fullmatch(by_d.summary), by_d.summary
        by_conninfo = check_postgresql(
            "alive", "-t", "3", "-d", f"host=127.0.0.1 port={server.port} dbname=postgres"
        )
        assert expected.fullmatch(by_conninfo.summary), by_conninfo.summary
    finally:
        server.thaw()


@pytest.mark.pg(">= 16")  # reserved_connections, pg_use_reserved_connections
def test_reserved_slots_name_the_grant(make_pg_cluster) -> None:
    """PostgreSQL 16+: with only reserved_connections slots left, a login without
    pg_use_reserved_connections is turned away; the message says what to GRANT."""
    cluster: PgCluster = make_pg_cluster(
        replicas=0, max_connections=8, superuser_reserved_connections=1, reserved_connections=2
    )
    primary = cluster.primary
    held = []
    try:
        # every ordinary slot taken: 8 - 1 superuser-reserved - 2 reserved
        for _ in range(5):
            held.append(psycopg.connect(primary.dsn("nopriv")))
        run = check_postgresql("alive", env=primary.env())
        assert run.status == "CRITICAL"
        assert run.summary.startswith(f"cannot connect to 127.0.0.1:{primary.port}: remaining")
        assert run.summary.endswith("(GRANT pg_use_reserved_connections TO monitor)")
        primary.execute("GRANT pg_use_reserved_connections TO monitor")
        assert check_postgresql("alive", env=primary.env()).status == "OK"
    finally:
        for conn in held:
            conn.close()


def test_status_line_names_the_server_reached(pg_primary: PgServer, tmp_path) -> None:
    """A service file or a host list: the OK line names the server that answered."""
    env = pg_primary.env()
    services = tmp_path / "pg_service.conf"
    services.write_text(
        f"[tcp]\nhost=127.0.0.1\nport={pg_primary.port}\nuser=monitor\ndbname=postgres\n"
    )
    by_service = check_postgresql(
        "alive",
        env={"PGSERVICEFILE": str(services), "PGSERVICE": "tcp", "PGPASSFILE": env["PGPASSFILE"]},
    )
    assert by_service.status == "OK", by_service.stdout
    assert by_service.summary.startswith(f"127.0.0.1:{pg_primary.port} accepts connections")
    closed = free_port()
    by_list = check_postgresql(
        "alive",
        env={**env, "PGHOST": "127.0.0.1,127.0.0.1", "PGPORT": f"{closed},{pg_primary.port}"},
    )
    assert by_list.status == "OK", by_list.stdout
    assert by_list.summary.startswith(f"127.0.0.1:{pg_primary.port} accepts connections")
