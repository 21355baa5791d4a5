"""wraparound: the oldest database by age(datfrozenxid), named, as % of 2^31 or a count."""

from __future__ import annotations

import re

import pytest

from harness.postgres import PgCluster, PgServer
from tests.plugin_run import check_postgresql

# Scenario runs on every supported major, not only the full-suite ones.
pytestmark = pytest.mark.pg_matrix


def test_fresh_cluster_is_ok_naming_the_oldest_database(pg_primary: PgServer) -> None:
    oldest, age = pg_primary.sql(
        "SELECT datname, age(datfrozenxid) FROM pg_database ORDER BY 2 DESC, 1 LIMIT 1"
    )[0]
    run = check_postgresql("wraparound", env=pg_primary.env())
    assert run.status == "OK", run.stdout
    assert run.summary.startswith(f"database {oldest} XID age ")
    assert run.summary.endswith("(0.0% of 2^31)")
    perf = run.perfdata
    assert perf["xid_age"].value >= age
    assert perf["xid_age"].max == str(2**31)
    assert (perf["xid_age_pct"].uom, perf["xid_age_pct"].warn, perf["xid_age_pct"].crit) == (
        "%",
        "50",
        "75",
    )
    assert "mxid_age" in perf
    # sorted by label, as it has always been: PNP4Nagios maps perfdata by position
    assert list(perf) == sorted(perf)
    assert run.long_output[0].startswith("autovacuum_freeze_max_age 200,000,000")


def test_database_left_unfrozen_is_the_one_named(make_pg_cluster) -> None:
    with make_pg_cluster(replicas=0) as cluster:
        primary = cluster.primary
        primary.execute("CREATE DATABASE never_frozen")
        for _ in range(300):  # burn XIDs: each autocommit txid_current() takes one
            primary.execute("SELECT txid_current()")
        primary.execute("ALTER DATABASE template0 ALLOW_CONNECTIONS true")
        for datname in ("postgres", "template0", "template1"):
            primary.execute("VACUUM FREEZE", dbname=datname)
        primary.execute("ALTER DATABASE template0 ALLOW_CONNECTIONS false")
        run = check_postgresql("wraparound", "-w", "200", "-c", "1000000", env=primary.env())
        assert run.status == "WARNING", run.stdout
        assert run.summary.startswith("database never_frozen XID age 3")
        assert run.summary.endswith("(0.0% of 2^31) (above 200)")
        assert run.long_output[1] == (
            "nothing holds the xmin horizon back: vacuum can freeze every database"
        )
        assert run.long_output[2].startswith("never_frozen: XID age ")
        # the same database, judged in percent (rounded to 0.01%, so an inverted range)
        run = check_postgresql("wraparound", "-c", "@0%:50%", env=primary.env())
        assert run.status == "CRITICAL"
        assert run.summary.startswith("database never_frozen XID age ")
        assert run.summary.endswith("(inside 0.0% to 50.0%)")


def test_works_as_nopriv_too(pg_primary: PgServer) -> None:
    # pg_database is readable by every role: nothing is hidden, so OK is the truth
    run = check_postgresql("wraparound", env=pg_primary.env("nopriv"))
    assert run.status == "OK"


def test_multixact_age_is_judged_naming_its_database(pg_primary: PgServer) -> None:
    oldest, age = pg_primary.sql(
        "SELECT datname, mxid_age(datminmxid) FROM pg_database ORDER BY 2 DESC, 1 DESC LIMIT 1"
    )[0]
    run = check_postgresql("wraparound", env=pg_primary.env("monitor"))
    assert run.status == "OK", run.stdout
    mxid = run.perfdata["mxid_age_pct"]
    assert (mxid.uom, mxid.warn, mxid.crit, mxid.max) == ("%", "50", "75", "100")
    assert run.perfdata["mxid_age"].value >= age
    # a fresh cluster is nowhere near: an inverted range shows the judgement and the words
    run = check_postgresql("wraparound", "--mxid-warning", "@0%:50%", env=pg_primary.env())
    assert run.status == "WARNING", run.stdout
    assert run.summary.startswith(f"database {oldest} multixact age "), run.summary
    assert run.summary.endswith("(0.0% of 2^31) (inside 0.0% to 50.0%)")
    run = check_postgresql("wraparound", "--mxid-critical", "1000", env=pg_primary.env())
    assert run.status == "UNKNOWN", run.stdout
    assert "must be in percent" in run.summary


def _burn_xids(primary: PgServer, count: int) -> None:
    """Each autocommit txid_current() takes one XID."""
    with primary.connect() as conn:
        for _ in range(count):
            conn.execute("SELECT txid_current()")


def _freeze_everything(primary: PgServer) -> None:
    primary.execute("ALTER DATABASE template0 ALLOW_CONNECTIONS true")
    for (datname,) in primary.sql("SELECT datname FROM pg_database"):
        primary.execute("VACUUM FREEZE", dbname=datname)
    primary.execute("ALTER DATABASE template0 ALLOW_CONNECTIONS false")


@pytest.fixture(scope="module")
def holding_cluster(make_pg_cluster) -> PgCluster:
    return make_pg_cluster(replicas=0, wal_level="logical", max_prepared_transactions=2)


def test_names_the_slot_that_holds_the_oldest_xid(holding_cluster: PgCluster) -> None:
    primary = holding_cluster.primary
    primary.execute("SELECT pg_create_logical_replication_slot('decoder', 'pgoutput')")
    try:
        _burn_xids(primary, 1500)
        _freeze_everything(primary)
        run = check_postgresql("wraparound", "-w", "1000", env=primary.env())
        assert run.status == "WARNING", run.stdout
        assert re.fullmatch(
            r"database \w+ XID age 1,5\d\d \(0\.0% of 2\^31\) \(above 1000\), held back by "
            r"replication slot 'decoder' \(catalog_xmin\) \(XID age 1,5\d\d\)",
            run.summary,
        ), run.summary
        assert run.perfdata["xmin_horizon_age"].value >= 1500
        assert any(
            line.startswith("oldest xmin held by replication slot 'decoder' (catalog_xmin)")
            for line in run.long_output
        )
    finally:
        primary.execute("SELECT pg_drop_replication_slot('decoder')")


def test_names_the_prepared_transaction_that_holds_the_oldest_xid(
    holding_cluster: PgCluster,
) -> None:
    primary = holding_cluster.primary
    with primary.connect() as conn:
        conn.autocommit = False
        conn.execute("SELECT txid_current()")
        conn.execute("PREPARE TRANSACTION 'pinned'")
    try:
        _burn_xids(primary, 1500)
        _freeze_everything(primary)
        run = check_postgresql("wraparound", "-w", "1000", env=primary.env())
        assert run.status == "WARNING", run.stdout
        assert re.search(
            r", held back by prepared transaction 'pinned' \(XID age 1,5\d\d\)$", run.summary
        ), run.summary
        # transactions judges the same prepared transaction by the XIDs it pins
        xids = check_postgresql(
            "transactions", "--prepared-xids-warning", "1000", env=primary.env()
        )
        assert xids.status == "WARNING", xids.stdout
        assert re.fullmatch(
            r"prepared transaction 'pinned' \(postgres@postgres\) pins XIDs 1,5\d\d "
            r"transactions old \(above 1000\)",
            xids.summary,
        ), xids.summary
        perf = xids.perfdata["prepared_xid_age"]
        assert perf.value >= 1500 and (perf.warn, perf.crit) == ("1000", "100000000")
    finally:
        primary.execute("ROLLBACK PREPARED 'pinned'")
