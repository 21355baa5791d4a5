"""alive: connect and query, against real servers that answer, refuse, or reject the login."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.postgres import PgCluster, PgServer
from tests.plugin_run import check_postgresql


@pytest.mark.parametrize("node", ["primary", "replica"])
def test_alive_ok_on_primary_and_replica(pg_cluster: PgCluster, node: str) -> None:
    server = pg_cluster.primary if node == "primary" else pg_cluster.replicas[0]
    run = check_postgresql("alive", env=server.env())
    assert run.status == "OK"
    assert run.first_line.startswith(
        f"PG_ALIVE OK - 127.0.0.1:{server.port} accepts connections (PostgreSQL "
    )
    assert f"{node})" in run.summary
    perf = run.perfdata
    assert set(perf) == {"connect_time", "query_time"}
    assert perf["connect_time"].uom == "s" and perf["connect_time"].warn == "2"


def test_no_subcommand_means_alive(pg_primary: PgServer) -> None:
    run = check_postgresql(env=pg_primary.env())
    assert run.first_line.startswith("PG_ALIVE OK - ")


def test_connect_threshold_applies(pg_primary: PgServer) -> None:
    # any real connect takes longer than a microsecond
    run = check_postgresql("alive", "-w", "1us", env=pg_primary.env())
    assert run.status == "WARNING"
    assert run.summary.startswith("connect time ")
    assert "(above 1us)" in run.summary


def test_conninfo_in_dbname_like_psql(pg_primary: PgServer) -> None:
    env = pg_primary.env()
    conninfo = f"host=127.0.0.1 port={pg_primary.port} dbname=postgres"
    run = check_postgresql(
        "alive", "-d", conninfo, env={"PGPASSFILE": env["PGPASSFILE"], "PGUSER": env["PGUSER"]}
    )
    assert run.status == "OK"


def test_stopped_server_is_critical_naming_host_and_port(make_pg_cluster) -> None:
    cluster: PgCluster = make_pg_cluster(replicas=0)
    server = cluster.primary
    env = server.env()
    server.stop()
    run = check_postgresql("alive", env=env)
    assert run.status == "CRITICAL"
    assert run.summary == f"cannot connect to 127.0.0.1:{server.port}: Connection refused"


def test_wrong_password_is_critical_and_never_printed(pg_primary: PgServer) -> None:
    env = pg_primary.env()
    env.pop("PGPASSFILE")
    env["PGPASSWORD"] = "not-the-Secret-42"
    run = check_postgresql("alive", "-v", env=env)
    assert run.status == "CRITICAL"
    assert "password authentication failed for user" in run.summary
    assert "not-the-Secret-42" not in run.stdout


def test_unknown_database_is_critical(pg_primary: PgServer) -> None:
    run = check_postgresql("alive", "-d", "no_such_db", env=pg_primary.env())
    assert run.status == "CRITICAL"
    assert 'database "no_such_db" does not exist' in run.summary


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({"PGSERVICE": "no_such_service"}, [], 'definition of service "no_such_service"'),
        ({"PGSSLMODE": "bogus"}, [], 'invalid sslmode value: "bogus"'),
        ({}, ["-d", "dbname='unterminated"], "unterminated quoted string"),
    ],
)
def test_bad_connection_settings_are_unknown_not_an_outage(
    pg_primary: PgServer, env: dict[str, str], args: list[str], message: str
) -> None:
    run = check_postgresql("alive", *args, env={**pg_primary.env(), **env})
    assert run.status == "UNKNOWN"
    assert run.summary.startswith("bad connection settings: ")
    assert message in run.summary


def test_libpq_warnings_reach_the_summary_not_stderr(pg_primary: PgServer, tmp_path) -> None:
    # libpq ignores a group-readable password file and says why on fd 2 only
    env = pg_primary.env()
    loose = tmp_path / "pgpass"
    loose.write_text(Path(env["PGPASSFILE"]).read_text())
    loose.chmod(0o644)
    run = check_postgresql("alive", env={**env, "PGPASSFILE": str(loose)})
    assert run.status == "CRITICAL"
    assert "no password supplied (libpq: password file" in run.summary
    assert "has group or world access" in run.summary
    assert run.stderr == ""
