"""lag: the replica's own view, idle primary, paused replay, and a receiver that is gone."""

from __future__ import annotations

import re
import threading
import time

import pytest

from harness.consul import ConsulAgent
from harness.ports import free_port
from harness.postgres import PgCluster, PgServer, wait_for
from tests.plugin_run import PluginRun, check_postgresql

# Scenario runs on every supported major, not only the full-suite ones.
pytestmark = pytest.mark.pg_matrix


def test_primary_says_there_is_no_lag_to_measure(pg_cluster: PgCluster) -> None:
    run = check_postgresql("lag", env=pg_cluster.primary.env())
    assert run.first_line == "PG_LAG OK - primary (not in recovery): no replay lag to measure"
    failing = check_postgresql("lag", "--role-mismatch", "critical", env=pg_cluster.primary.env())
    assert failing.status == "CRITICAL"


def test_idle_primary_is_not_lag(pg_cluster: PgCluster) -> None:
    replica = pg_cluster.replicas[0]
    pg_cluster.primary.execute("CREATE TABLE IF NOT EXISTS idle_probe (x int)")
    pg_cluster.primary.execute("INSERT INTO idle_probe VALUES (1)")
    # the last replayed commit ages past the thresholds while nothing new arrives
    wait_for(
        lambda: replica.scalar(
            "SELECT now() - pg_last_xact_replay_timestamp() > interval '2.5 s'"
            " AND pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()"
        ),
        what="an idle primary",
        timeout=30,
    )
    run = check_postgresql("lag", "-w", "1s", "-c", "2s", env=replica.env())
    assert run.status == "OK", run.stdout
    assert run.perfdata["replay_lag_seconds"].value == 0
    assert run.perfdata["replay_lag_bytes"].value == 0
    assert run.perfdata["receiver_streaming"].value == 1
    assert run.summary.startswith("replay lag 0 B, 0ms, streaming from 127.0.0.1:")


_LATEST_END = "SELECT latest_end_lsn::text FROM pg_stat_wal_receiver"


def test_paused_replay_with_writes_passes_byte_and_second_thresholds(
    pg_cluster: PgCluster,
) -> None:
    primary, replica = pg_cluster.primary, pg_cluster.replicas[0]
    # a replayed commit gives the replica a replay timestamp for the seconds to age from
    primary.execute("CREATE TABLE IF NOT EXISTS lag_probe (x int, pad text)")
    pg_cluster.wait_caught_up()
    replica.pause_replay()
    try:
        primary.execute(
            "INSERT INTO lag_probe SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g"
        )

        # Seconds count how long the waiting WAL has waited: here since the primary wrote
        # it (latest_end_time), which the replica measures while replay stands still.
        def check_while_no_wal_arrives() -> PluginRun | None:
            wait_for(
                lambda: replica.scalar(
                    "SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())"
                    " > 2 * 1024 * 1024"
                    " AND now() - latest_end_time > interval '2.5 s' FROM pg_stat_wal_receiver"
                ),
                what="WAL received but not replayed for 2.5 s",
                timeout=30,
            )
            # WAL the primary writes by itself (the bgwriter's running-transactions record
            # every 15 s after activity, autovacuum) is newer: it rightly restarts the lower
            # bound, so a run during which some arrived proves nothing and is made again.
            before = replica.scalar(_LATEST_END)
            run = check_postgresql(
                "lag", "-w", "1MB", "-c", "2MB", "-w", "1s", "-c", "2s", env=replica.env()
            )
            return run if replica.scalar(_LATEST_END) == before else None

        run = wait_for(
            check_while_no_wal_arrives, what="a lag check while no WAL arrives", timeout=120
        )
    finally:
        replica.resume_replay()
    assert run.status == "CRITICAL"
    assert "replay lag" in run.summary and "(above 2.0 MiB)" in run.summary
    assert re.search(r"replay lag at least \d+\.\ds \(above 2\.0s\)", run.summary), run.summary
    perf = run.perfdata
    assert perf["replay_lag_bytes"].value > 2 * 1024 * 1024
    assert perf["replay_lag_bytes"].uom == "B"
    assert (perf["replay_lag_bytes"].warn, perf["replay_lag_bytes"].crit) == ("1048576", "2097152")
    assert perf["replay_lag_seconds"].value > 2
    assert perf["replay_paused"].value == 1


def test_paused_replay_alone_is_a_warning(pg_cluster: PgCluster) -> None:
    replica = pg_cluster.replicas[0]
    replica.pause_replay()
    try:
        run = check_postgresql("lag", env=replica.env())
    finally:
        replica.resume_replay()
    assert run.status == "WARNING"
    assert run.summary == "WAL replay is paused (pg_wal_replay_resume() resumes it)"


# --------------------------------------------------------------------------------------
# Issue 9 and 8: what a replica can and cannot know.


def _quiet_spell(replica: PgServer, seconds: float) -> None:
    wait_for(
        lambda: replica.scalar(
            f"SELECT now() - pg_last_xact_replay_timestamp() > interval '{seconds} s'"
            " AND pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()"
        ),
        what=f"{seconds}s without a commit",
        timeout=seconds + 30,
    )


def test_long_transaction_after_a_quiet_spell_is_not_minutes_of_lag(make_pg_cluster) -> None:
    """The quiet spell (here 8 s, the 'minutes' of the report scaled down) is not lag.

    A query on the replica holds back replay of the long transaction's first record (a
    recovery conflict, max_standby_streaming_delay = -1), so WAL is waiting when the check
    runs; the WAL has waited about a second, the last replayed commit is 8 s old.
    """
    cluster: PgCluster = make_pg_cluster(replicas=1)
    primary, replica = cluster.primary, cluster.replicas[0]
    replica.set_config(max_standby_streaming_delay=-1)
    primary.execute("CREATE TABLE quiet (x int, pad text)")
    primary.execute("INSERT INTO quiet VALUES (1, '')")
    cluster.wait_caught_up()
    _quiet_spell(replica, 8)
    with replica.connect() as reader, primary.connect() as writer:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM quiet")
        writer.execute("BEGIN")
        writer.execute("LOCK TABLE quiet IN ACCESS EXCLUSIVE MODE")
        writer.execute(
            "INSERT INTO quiet SELECT g, repeat('x', 200) FROM generate_series(1, 5000) g"
        )
        wait_for(
            lambda: replica.scalar(
                "SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())"
                " > 512 * 1024"
            ),
            what="the long transaction's WAL waiting on the replica",
            timeout=30,
        )
        run = check_postgresql("lag", "-w", "6s", "-c", "7s", env=replica.env())
        writer.execute("ROLLBACK")
        reader.execute("ROLLBACK")
    # Today's figure, the age of the last replayed commit, would be CRITICAL "8.xs".
    assert run.status == "OK", run.stdout
    assert run.summary.startswith("replay lag "), run.summary
    assert re.search(
        r", seconds unknown: last replayed commit (\d+\.\ds|1min \d+s) ago, the waiting WAL "
        r"may be newer \(waited at least (\d+ms|\d\.\ds)\)$",
        run.summary,
    ), run.summary
    assert "replay_lag_seconds" not in run.perfdata
    assert run.perfdata["replay_lag_bytes"].value > 512 * 1024


def test_cascaded_replica_is_judged_against_the_leader(
    make_pg_cluster, consul_agent: ConsulAgent
) -> None:
    """replica2 streams from replica1, which lost the primary: replica2 has replayed all
    it received, but the leader is megabytes ahead."""
    cluster: PgCluster = make_pg_cluster(replicas=2)
    primary, upstream, cascaded = cluster.primary, *cluster.replicas
    cascaded.repoint(upstream)
    cascaded.wait_until(
        lambda: cascaded.scalar("SELECT sender_port FROM pg_stat_wal_receiver") == upstream.port,
        "streaming from replica1",
    )
    upstream.set_config(primary_conninfo=f"host=127.0.0.1 port={free_port()} user=replicator")
    upstream.wait_until(lambda: upstream.wal_receiver_status() != "streaming", "losing primary")
    primary.execute(
        "CREATE TABLE ahead AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 20000) g"
    )
    leader_lsn = primary.scalar("SELECT pg_current_wal_lsn()::text")
    system_identifier = primary.scalar("SELECT system_identifier::text FROM pg_control_system()")
    cascaded.wait_until(
        lambda: cascaded.scalar("SELECT pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()"),
        "replica2 caught up with replica1",
    )
    service = "pg-db-lag-cascade"
    consul_agent.api(
        "PUT",
        "/v1/agent/service/register",
        json_body={
            "ID": service,
            "Name": service,
            "Port": primary.port,
            "Tags": ["leader"],
            "Meta": {"pg_wal_lsn": leader_lsn, "pg_system_identifier": system_identifier},
        },
    )
    try:
        alone = check_postgresql("lag", "-w", "1MB", "-c", "2MB", env=cascaded.env())
        env = {**cascaded.env(), **consul_agent.env()}
        judged = check_postgresql(
            "lag", "-w", "1MB", "-c", "2MB", "--consul-service", service, env=env
        )
        # replica1 itself: receiver down, and behind the leader by more than the critical
        # threshold: no grace for it
        orphan = _lag_against_leader(upstream, consul_agent, service, "-w", "1MB", "-c", "2MB")
    finally:
        consul_agent.api("PUT", f"/v1/agent/service/deregister/{service}")
    with_primary = check_postgresql(
        "lag",
        "-w",
        "1MB",
        "-c",
        "2MB",
        "--primary",
        f"host=127.0.0.1 port={primary.port} dbname=postgres",
        env=cascaded.env(),
    )
    # Alone, it can only say that its figure is relative to its upstream.
    assert alone.status == "OK"
    assert alone.perfdata["replay_lag_bytes"].value == 0
    assert any(
        f"figures are relative to the upstream 127.0.0.1:{upstream.port}" in line
        for line in alone.long_output
    ), alone.stdout
    assert orphan.status == "CRITICAL", orphan.stdout
    assert re.search(
        r"(no WAL receiver|WAL receiver \w+, not streaming) and \d+\.\d MiB behind", orphan.summary
    ), orphan.summary
    for run, source in ((judged, "the leader "), (with_primary, "the primary ")):
        assert run.status == "CRITICAL", run.stdout
        assert run.summary.startswith("replay lag "), run.summary
        assert "(above 2.0 MiB)" in run.summary
        assert run.perfdata["replay_lag_bytes"].value > 2 * 1024 * 1024
        assert any(line.startswith(f"compared with {source}") for line in run.long_output)


def _lag_against_leader(
    server: PgServer, agent: ConsulAgent, service: str, *options: str
) -> PluginRun:
    """`lag --consul-service` on `server`, asking `agent` for the leader's position."""
    return check_postgresql(
        "lag", *options, "--consul-service", service, env={**server.env(), **agent.env()}
    )


def _register_leaders(consul_agent: ConsulAgent, service: str, leaders: dict[str, dict]) -> None:
    for service_id, meta in leaders.items():
        consul_agent.api(
            "PUT",
            "/v1/agent/service/register",
            json_body={"ID": service_id, "Name": service, "Tags": ["leader"], "Meta": meta},
        )


def test_a_published_position_at_the_end_of_the_lsn_range_is_judged_not_unknown(
    pg_cluster: PgCluster, consul_agent: ConsulAgent
) -> None:
    """FFFFFFFF/FFFFFFFF is a valid LSN 2^64 - 1 bytes ahead: past a bigint. UNKNOWN would
    be critical for Consul on every replica at once; it is a figure like any other."""
    replica = pg_cluster.replicas[0]
    system_identifier = replica.scalar("SELECT system_identifier::text FROM pg_control_system()")
    service = "pg-db-lag-far"
    _register_leaders(
        consul_agent,
        service,
        {service: {"pg_wal_lsn": "FFFFFFFF/FFFFFFFF", "pg_system_identifier": system_identifier}},
    )
    try:
        run = _lag_against_leader(replica, consul_agent, service)
    finally:
        consul_agent.api("PUT", f"/v1/agent/service/deregister/{service}")
    assert run.status == "CRITICAL", run.stdout
    assert run.perfdata["replay_lag_bytes"].value > 2**63
    assert any(line.startswith("compared with the leader ") for line in run.long_output)


def test_two_tagged_leaders_the_replica_is_judged_against_its_clusters_newest(
    make_pg_cluster, consul_agent: ConsulAgent
) -> None:
    """A resurrected old primary (older timeline, its own WAL further) and an instance of
    another cluster, both tagged leader and both ahead: neither is what this replica has
    to reach, and neither may make it CRITICAL or hide the real leader."""
    cluster: PgCluster = make_pg_cluster(replicas=2)
    old, new, replica = cluster.primary, *cluster.replicas
    cluster.promote(new)
    replica.wait_until(
        lambda: replica.scalar("SELECT sender_port FROM pg_stat_wal_receiver") == new.port,
        "streaming from the new primary",
    )
    # the old primary was never fenced: it writes on, far past the new leader
    old.execute(
        "CREATE TABLE diverged AS SELECT g, repeat('x', 200) AS pad"
        " FROM generate_series(1, 20000) g"
    )
    cluster.wait_caught_up()
    system_identifier = new.scalar("SELECT system_identifier::text FROM pg_control_system()")

    def published(server):
        return {
            "pg_wal_lsn": server.scalar("SELECT pg_current_wal_lsn()::text"),
            # the timeline of the WAL it writes now (a checkpoint may not have followed
            # the promotion yet, so not pg_control_checkpoint())
            "pg_timeline": str(
                server.scalar(
                    "SELECT ('x' || left(pg_walfile_name(pg_current_wal_lsn()), 8))::bit(32)::int"
                )
            ),
            "pg_system_identifier": system_identifier,
        }

    service = "pg-db-lag-two"
    leaders = {f"{service}-old": published(old), f"{service}-new": published(new)}
    leaders[f"{service}-other"] = {
        "pg_wal_lsn": "FF/0",
        "pg_timeline": "99",
        "pg_system_identifier": "1234567890",
    }
    assert leaders[f"{service}-new"]["pg_timeline"] == "2"
    _register_leaders(consul_agent, service, leaders)
    try:
        run = _lag_against_leader(replica, consul_agent, service, "-w", "1MB")
    finally:
        for service_id in leaders:
            consul_agent.api("PUT", f"/v1/agent/service/deregister/{service_id}")
    assert run.status == "OK", run.stdout
    assert run.perfdata["replay_lag_bytes"].value < 1024 * 1024
    assert any(
        line == f"compared with the leader {consul_agent.node_name} (Consul) at "
        f"{leaders[f'{service}-new']['pg_wal_lsn']}"
        for line in run.long_output
    ), run.stdout


def test_a_frozen_primary_given_with_several_hosts_costs_only_its_share_of_the_timeout(
    pg_cluster: PgCluster,
) -> None:
    """libpq waits at least 2 s per host: two frozen hosts outlast -t 3. The comparison is
    given up, the replica's own answer stands (not a CRITICAL timeout naming the replica)."""
    primary, replica = pg_cluster.primary, pg_cluster.replicas[0]
    conninfo = f"host=127.0.0.1,127.0.0.1 port={primary.port},{primary.port} dbname=postgres"
    primary.freeze()
    try:
        run = check_postgresql("lag", "-t", "3", "--primary", conninfo, env=replica.env())
    finally:
        primary.thaw()
    assert run.status == "OK", run.stdout
    assert "not compared with the primary: --primary: no answer within 0.9s" in run.summary


def test_a_token_that_may_not_read_the_leader_is_not_told_there_is_none(
    pg_cluster: PgCluster, consul_agent_factory
) -> None:
    """Consul filters what a token may not read out of the answer: an empty list then
    means "not allowed to see" as much as "no leader", and the summary must say both."""
    agent: ConsulAgent = consul_agent_factory(acl=True)
    primary, replica = pg_cluster.primary, pg_cluster.replicas[0]
    service = "pg-db-lag-acl"
    _register_leaders(
        agent,
        service,
        {service: {"pg_wal_lsn": primary.scalar("SELECT pg_current_wal_lsn()::text")}},
    )
    token = agent.create_token('node_prefix "" { policy = "read" }')
    run = check_postgresql(
        "lag", "--consul-service", service, env={**replica.env(), **agent.env(token=token)}
    )
    assert run.status == "OK", run.stdout
    assert (
        f"Consul: no instance of {service} tagged leader is visible (none, or the token "
        "lacks service:read or node:read)" in run.summary
    ), run.summary


def test_a_missing_consul_agent_neither_slows_nor_breaks_the_check(
    pg_cluster: PgCluster,
) -> None:
    env = {**pg_cluster.replicas[0].env(), "CONSUL_HTTP_ADDR": f"127.0.0.1:{free_port()}"}
    run = check_postgresql("lag", "--consul-service", "pg-db", "-t", "5", env=env)
    assert run.status == "OK", run.stdout
    assert "not compared with the primary: Consul: cannot reach the Consul agent" in run.summary
    assert run.elapsed < 5


def test_receiver_down_is_a_warning_within_the_grace_then_critical(make_pg_cluster) -> None:
    cluster: PgCluster = make_pg_cluster(replicas=1)
    primary, replica = cluster.primary, cluster.replicas[0]
    primary.stop()
    wait_for(lambda: replica.wal_receiver_status() != "streaming", what="receiver gone", timeout=30)
    within = check_postgresql("lag", env=replica.env())
    wait_for(
        lambda: replica.scalar(
            # the check counts from the newer of the last WAL and its own start: a
            # fresh replica's files (from the base backup) may be older than it is
            "SELECT now() - max(modification) > interval '1.5 s'"
            " AND now() - pg_postmaster_start_time() > interval '1.5 s' FROM pg_ls_waldir()"
        ),
        what="no WAL from upstream for 1.5 s",
        timeout=30,
    )
    after = check_postgresql("lag", "--receiver-grace", "1s", env=replica.env())
    # A promoted replica carries no verdict from its replica days.
    replica.promote()
    promoted = check_postgresql("lag", env=replica.env())

    assert within.status == "WARNING", within.stdout  # stays in follower.pg-db
    assert within.summary.startswith("no WAL receiver (nothing from upstream for ")
    assert within.summary.endswith(
        "CRITICAL after 30.0s), lag unknown: no WAL arrives "
        "(--primary or --consul-service would tell)"
    )
    # unknown is left out, never 0
    assert "replay_lag_bytes" not in within.perfdata
    assert within.perfdata["receiver_streaming"].value == 0
    assert after.status == "CRITICAL", after.stdout
    assert after.summary.startswith("no WAL receiver: nothing from upstream for ")
    assert promoted.first_line == "PG_LAG OK - primary (not in recovery): no replay lag to measure"


def test_a_primary_restart_keeps_a_replica_that_was_only_warning_in_dns(
    make_pg_cluster, consul_agent: ConsulAgent
) -> None:
    """Under write load a replica a few MB behind is WARNING (still in follower.pg-db).
    The primary going down for a restart must not turn that into CRITICAL at once."""
    cluster: PgCluster = make_pg_cluster(replicas=1)
    primary, replica = cluster.primary, cluster.replicas[0]
    primary.execute("CREATE TABLE IF NOT EXISTS restart_probe (x int, pad text)")
    cluster.wait_caught_up()
    replica.pause_replay()  # replay stands still: the backlog stays while we look
    primary.execute(
        "INSERT INTO restart_probe SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g"
    )
    service = "pg-db-lag-restart"
    _register_leaders(
        consul_agent,
        service,
        {
            service: {
                "pg_wal_lsn": primary.scalar("SELECT pg_current_wal_lsn()::text"),
                "pg_system_identifier": primary.scalar(
                    "SELECT system_identifier::text FROM pg_control_system()"
                ),
            }
        },
    )
    try:
        primary.stop()
        wait_for(lambda: replica.wal_receiver_status() != "streaming", what="receiver gone")
        run = _lag_against_leader(replica, consul_agent, service, "-w", "1MB")
    finally:
        consul_agent.api("PUT", f"/v1/agent/service/deregister/{service}")
        replica.resume_replay()
    assert run.status == "WARNING", run.stdout
    assert run.perfdata["replay_lag_bytes"].value > 1024 * 1024
    assert run.perfdata["receiver_streaming"].value == 0


def test_delayed_standby_is_judged_beyond_its_delay(make_pg_cluster) -> None:
    cluster: PgCluster = make_pg_cluster(replicas=1)
    primary, replica = cluster.primary, cluster.replicas[0]
    replica.set_config(recovery_min_apply_delay="5s")
    primary.execute("CREATE TABLE delayed (x int)")
    # Commits every 0.2 s for 7 s: the last 5 s of them wait on purpose.
    deadline = time.monotonic() + 7
    while time.monotonic() < deadline:
        primary.execute("INSERT INTO delayed VALUES (1)")
        time.sleep(0.2)
    run = check_postgresql("lag", "-w", "3s", "-c", "4s", env=replica.env())
    # Today: the delay itself counted, CRITICAL "replay lag 5.xs".
    assert run.status == "OK", run.stdout
    assert re.match(
        r"replay lag (at most )?(\d+ms|[0-2]\.\ds) beyond the apply delay of 5\.0s, "
        r"streaming from 127\.0\.0\.1:\d+, bytes not judged: held back by "
        r"recovery_min_apply_delay$",
        run.summary,
    ), run.summary
    assert run.perfdata["replay_lag_seconds"].value < 3
    assert run.perfdata["apply_delay"].value == 5
    assert run.perfdata["delayed_bytes"].value > 0
    assert "replay_lag_bytes" not in run.perfdata


# before 14 the standby shuts down instead of pausing
@pytest.mark.pg(">= 14")
def test_replay_paused_for_insufficient_parameters_names_the_remedy(make_pg_cluster) -> None:
    cluster: PgCluster = make_pg_cluster(replicas=1)
    primary, replica = cluster.primary, cluster.replicas[0]
    primary.set_config(max_connections=60)
    replica.wait_until(
        lambda: replica.scalar("SELECT pg_get_wal_replay_pause_state()") == "paused",
        "replay to pause on the parameter change",
    )
    run = check_postgresql("lag", env=replica.env())
    assert run.status == "CRITICAL", run.stdout
    assert run.summary == (
        "WAL replay paused for insufficient parameter settings: max_connections is 50 here "
        "but 60 upstream: raise it on this replica and restart it "
        "(resuming replay would shut this standby down)"
    )
    assert "pg_wal_replay_resume" not in run.stdout
    assert run.perfdata["replay_paused"].value == 1


@pytest.mark.pg(">= 14")
def test_replay_held_up_by_a_lock_while_the_primary_writes_on_is_lag(make_pg_cluster) -> None:
    """A query on the replica holds a lock a replayed DROP needs; with
    max_standby_streaming_delay = -1 replay waits for it, forever. The primary writes
    on, so the waiting WAL keeps being reported fresh (latest_end_time): without the
    lock wait's start the seconds were "unknown" and the check OK however long it lasted."""
    cluster: PgCluster = make_pg_cluster(replicas=1)
    primary, replica = cluster.primary, cluster.replicas[0]
    replica.set_config(max_standby_streaming_delay=-1)
    primary.execute("CREATE TABLE held (x int); CREATE TABLE trickle (x int)")
    cluster.wait_caught_up()
    stop = threading.Event()

    def trickle() -> None:
        with primary.connect() as conn:
            conn.autocommit = True
            while not stop.wait(0.1):
                conn.execute("INSERT INTO trickle VALUES (1)")

    writer = threading.Thread(target=trickle, daemon=True)
    with replica.connect() as holder:
        holder.execute("BEGIN")
        holder.execute("SELECT * FROM held")
        primary.execute("DROP TABLE held")
        writer.start()
        try:
            replica.wait_until(
                lambda: replica.scalar(
                    "SELECT now() - min(l.waitstart) > interval '2.5 s' FROM pg_locks AS l"
                    " JOIN pg_stat_activity AS a ON a.pid = l.pid"
                    " WHERE a.backend_type = 'startup' AND NOT l.granted"
                ),
                "replay waiting 2.5 s for the lock",
            )
            run = check_postgresql("lag", "-w", "1s", "-c", "2s", env=replica.env())
        finally:
            stop.set()
            writer.join(10)
    assert run.status == "CRITICAL", run.stdout
    assert re.match(r"replay lag at least \d+\.\ds \(above 2\.0s\)", run.summary), run.summary
    assert run.perfdata["replay_lag_seconds"].value > 2.5


def test_log_shipping_standby_is_not_a_missing_receiver(make_pg_cluster, tmp_path) -> None:
    cluster: PgCluster = make_pg_cluster(replicas=1)
    primary, replica = cluster.primary, cluster.replicas[0]
    archive = cluster.workdir / "archive"
    archive.mkdir()
    cluster.os_user.chown(archive)
    primary.set_config(archive_mode="on", archive_command=f"cp %p {archive}/%f")
    replica.set_config(primary_conninfo="", restore_command=f"cp {archive}/%f %p")
    wait_for(lambda: replica.wal_receiver_status() is None, what="receiver gone", timeout=30)
    primary.execute("CREATE TABLE shipped AS SELECT g FROM generate_series(1, 1000) g")
    primary.execute("SELECT pg_switch_wal()")
    alone = check_postgresql("lag", env=replica.env())
    behind = check_postgresql(
        "lag",
        "--primary",
        f"host=127.0.0.1 port={primary.port} dbname=postgres",
        env=replica.env(),
    )
    # Today: CRITICAL "no WAL receiver" for as long as it runs.
    assert alone.status == "OK", alone.stdout
    assert alone.summary == (
        "log-shipping standby (restore_command), lag unknown: nothing to "
        "compare with (--primary or --consul-service would tell)"
    )
    assert "replay_lag_bytes" not in alone.perfdata
    assert behind.status in ("OK", "WARNING", "CRITICAL"), behind.stdout
    assert "replay_lag_bytes" in behind.perfdata
    assert "behind the primary 127.0.0.1:" in behind.stdout


def test_crash_of_an_idle_primary_keeps_a_replica_that_misses_nothing_in_dns(
    make_pg_cluster, consul_agent: ConsulAgent
) -> None:
    """Past the measurable grace, a replica not behind the last known primary position
    stays WARNING; the first published byte it misses makes it CRITICAL."""
    cluster: PgCluster = make_pg_cluster(replicas=1)
    primary, replica = cluster.primary, cluster.replicas[0]
    cluster.wait_caught_up()
    last_lsn = primary.scalar("SELECT pg_current_wal_lsn()::text")
    system_identifier = primary.scalar("SELECT system_identifier::text FROM pg_control_system()")
    service = "pg-db-lag-crash"
    registration = {
        "ID": service,
        "Name": service,
        "Port": primary.port,
        # The old leader's reporter took its tag away when PostgreSQL went: no leader
        # now, but its last published position is still there.
        "Tags": [],
        "Meta": {"pg_wal_lsn": last_lsn, "pg_system_identifier": system_identifier},
    }
    consul_agent.api("PUT", "/v1/agent/service/register", json_body=registration)
    try:
        primary.kill()  # a crash: no shutdown checkpoint reaches the replica
        wait_for(
            lambda: replica.wal_receiver_status() != "streaming", what="receiver gone", timeout=30
        )
        wait_for(
            lambda: replica.scalar(
                # the check counts from the newer of the last WAL and its own start: a
                # fresh replica's files (from the base backup) may be older than it is
                "SELECT now() - max(modification) > interval '1.5 s'"
                " AND now() - pg_postmaster_start_time() > interval '1.5 s' FROM pg_ls_waldir()"
            ),
            what="no WAL from upstream for 1.5 s",
            timeout=30,
        )
        env = {**replica.env(), **consul_agent.env()}
        grace = ("--receiver-grace", "1s")
        alone = check_postgresql("lag", *grace, env=env)
        known = check_postgresql("lag", *grace, "--consul-service", service, env=env)
        # a position the replica never got
        registration["Meta"]["pg_wal_lsn"] = "FF/0"
        consul_agent.api("PUT", "/v1/agent/service/register", json_body=registration)
        missing = check_postgresql("lag", *grace, "--consul-service", service, env=env)
    finally:
        consul_agent.api("PUT", f"/v1/agent/service/deregister/{service}")
    replica.promote()
    promoted = check_postgresql("lag", *grace, "--consul-service", service, env=env)

    assert alone.status == "CRITICAL", alone.stdout
    assert known.status == "WARNING", known.stdout
    assert re.match(
        r"no WAL receiver \(nothing from upstream for \d+\.\ds\), not behind the primary's "
        r"known position$",
        known.summary,
    ), known.summary
    assert known.perfdata["replay_lag_bytes"].value == 0
    assert any(
        line.startswith(f"compared with the last known leader {consul_agent.node_name}")
        for line in known.long_output
    ), known.stdout
    assert missing.status == "CRITICAL", missing.stdout
    assert promoted.first_line == "PG_LAG OK - primary (not in recovery): no replay lag to measure"
