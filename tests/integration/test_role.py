"""role: primary or replica, expected or not."""

from __future__ import annotations

import pytest

from harness.postgres import PgCluster
from tests.plugin_run import check_postgresql


def test_role_on_primary(pg_cluster: PgCluster) -> None:
    run = check_postgresql("role", "--expect", "primary", env=pg_cluster.primary.env())
    assert run.first_line.startswith("PG_ROLE OK - primary, writable, timeline ")
    assert run.perfdata["is_primary"].value == 1
    assert run.perfdata["is_writable"].value == 1
    identifier = pg_cluster.primary.scalar("SELECT system_identifier FROM pg_control_system()")
    assert f"system identifier: {identifier}" in run.long_output


def test_role_on_replica(pg_cluster: PgCluster) -> None:
    run = check_postgresql("role", "--expect", "replica", env=pg_cluster.replicas[0].env())
    assert run.first_line.startswith("PG_ROLE OK - replica, read-only, timeline ")
    assert run.perfdata["is_primary"].value == 0
    assert run.perfdata["timeline"].value >= 1


@pytest.mark.parametrize(
    ("node", "expect", "summary"),
    [
        ("replica", "primary", "replica (in recovery), expected primary"),
        ("primary", "replica", "primary (not in recovery), expected replica"),
    ],
)
def test_wrong_role_is_critical(
    pg_cluster: PgCluster, node: str, expect: str, summary: str
) -> None:
    server = pg_cluster.primary if node == "primary" else pg_cluster.replicas[0]
    run = check_postgresql("role", "--expect", expect, env=server.env())
    assert run.status == "CRITICAL"
    assert run.summary == summary


def test_timeline_of_promoted_replica_is_new_at_once(make_pg_cluster) -> None:
    cluster: PgCluster = make_pg_cluster(replicas=1)
    replica = cluster.replicas[0]
    before = check_postgresql("role", env=replica.env()).perfdata["timeline"].value
    cluster.primary.stop()
    replica.promote()
    run = check_postgresql("role", "--expect", "primary", env=replica.env())
    assert run.status == "OK"
    assert run.perfdata["timeline"].value == before + 1


@pytest.fixture(scope="module")
def lone_primary(make_pg_cluster) -> PgCluster:
    """A primary of its own: these tests change the monitoring role's settings."""
    return make_pg_cluster(replicas=0)


def _service_file(tmp_path, server, options: str) -> dict[str, str]:
    """A pg_service.conf entry for the server with the given startup options."""
    env = server.env()
    path = tmp_path / "pg_service.conf"
    path.write_text(
        f"[mon]\nhost={env['PGHOST']}\nport={env['PGPORT']}\nuser={env['PGUSER']}\n"
        f"dbname=postgres\noptions={options}\n"
    )
    return {"PGSERVICEFILE": str(path), "PGSERVICE": "mon", "PGPASSFILE": env["PGPASSFILE"]}


@pytest.mark.parametrize(
    "layer", ["role", "role in database", "database", "PGOPTIONS", "service file options"]
)
def test_login_read_only_does_not_make_primary_read_only(
    lone_primary: PgCluster, layer: str, tmp_path
) -> None:
    """A read-only default for the monitoring login is its own, not the server's."""
    primary = lone_primary.primary
    env = primary.env()
    undo, undo_from = None, "postgres"
    if layer == "role":
        primary.execute("ALTER ROLE monitor SET default_transaction_read_only = on")
        undo = "ALTER ROLE monitor RESET default_transaction_read_only"
    elif layer == "role in database":
        primary.execute(
            "ALTER ROLE monitor IN DATABASE postgres SET default_transaction_read_only = on"
        )
        undo = "ALTER ROLE monitor IN DATABASE postgres RESET default_transaction_read_only"
    elif layer == "database":
        primary.execute("ALTER DATABASE postgres SET default_transaction_read_only = on")
        # from another database: the setting makes the superuser's sessions read-only too
        undo, undo_from = "ALTER DATABASE postgres RESET default_transaction_read_only", "template1"
    elif layer == "PGOPTIONS":
        env = {**env, "PGOPTIONS": "-c default_transaction_read_only=on"}
    else:
        env = _service_file(tmp_path, primary, "-c default_transaction_read_only=on")
    try:
        run = check_postgresql("role", "--expect", "primary", env=env)
    finally:
        if undo:
            primary.execute(undo, dbname=undo_from)
    assert run.status == "OK", run.stdout
    assert run.first_line.startswith("PG_ROLE OK - primary, writable, timeline ")
    assert run.perfdata["is_writable"].value == 1
    assert run.perfdata["is_primary"].value == 1
    assert any(
        line.startswith("writable: yes (default_transaction_read_only=on is this login's own")
        for line in run.long_output
    ), run.long_output


def test_login_read_only_in_read_role(lone_primary: PgCluster) -> None:
    """What pg-role-reporter and consul-role read: the same probe, on a session whose
    own default is read-only."""
    import psycopg
    from psycopg.rows import dict_row

    from checks.postgres.readers.role import read_role

    primary = lone_primary.primary
    with psycopg.connect(
        primary.dsn(),
        options="-c default_transaction_read_only=on",
        autocommit=True,
        row_factory=dict_row,
    ) as conn:
        facts = read_role(conn)
    assert facts.is_primary and facts.writable
    assert facts.session_read_only and facts.read_only_source == "client"


def test_server_wide_read_only_is_critical(lone_primary: PgCluster) -> None:
    primary = lone_primary.primary
    primary.set_config(default_transaction_read_only="on")
    try:
        run = check_postgresql("role", "--expect", "primary", env=primary.env())
    finally:
        primary.set_config(default_transaction_read_only=None)
    assert run.status == "CRITICAL"
    assert run.summary == (
        "primary is read-only (default_transaction_read_only is on in its configuration)"
    )
    assert run.perfdata["is_writable"].value == 0
    assert run.perfdata["is_primary"].value == 1
