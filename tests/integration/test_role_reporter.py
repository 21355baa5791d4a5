"""pg-role-reporter against a real Consul agent and real PostgreSQL (primary + 2 replicas).

Every scenario asserts what a client sees: Consul's HTTP API
(`/v1/health/service/pg-db?tag=leader&passing`) and its DNS (SRV answers carry each
instance's port). Deployment shape: see tests/integration/reporter_deployment.py (one agent,
services pg-db-1..3 named pg-db, one reporter process per instance). One PostgreSQL major
only, but for the start + failover scenario, which runs on every supported major: the
others are about Consul and the loop.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness import pgbin
from harness.consul import ConsulAgent, wait_until
from harness.postgres import PgCluster, PgServer
from tests.integration.fixtures_consul import ConsulAgentFactory
from tests.integration.reporter_deployment import (
    FOLLOWER,
    LEADER,
    ReporterProcess,
    agent_service,
    leaders_http,
    never_during,
    service_definition,
    srv_ports,
    wait_for_dns,
)
from tests.plugin_run import check_postgresql

pytestmark = pytest.mark.integration

# docs/design.md §5 / issue 4: the tag is back within 2 s of a reload or an agent restart.
RETAG_DEADLINE_SECONDS = 2.0
# What the reporter's token needs (man/pg-role-reporter.1, ACL POLICY): write its service,
# the leader lock's key and sessions on its node. No node:read: the fence reads the lock,
# not the catalog.
SERVICE_ONLY_RULES = 'service "pg-db" { policy = "write" }'
KEY_RULES = SERVICE_ONLY_RULES + '\nkey "service/pg-db/leader" { policy = "write" }'
FULL_RULES = KEY_RULES + '\nsession_prefix "" { policy = "write" }'


@pytest.fixture(scope="module")
def pg_install_one() -> pgbin.PgInstallation:
    found = pgbin.discover_installations()
    if not found:
        pytest.fail("no PostgreSQL installation found; run ./scripts/bootstrap --test")
    return pgbin.usable_installation(found[0])


def new_cluster(install: pgbin.PgInstallation) -> PgCluster:
    return PgCluster(install, replicas=2)


@pytest.fixture(scope="module")
def shared_cluster(pg_install_one: pgbin.PgInstallation) -> Iterator[PgCluster]:
    """For scenarios that leave PostgreSQL as they found it."""
    with new_cluster(pg_install_one) as cluster:
        yield cluster


@dataclass
class Deployment:
    agent: ConsulAgent
    cluster: PgCluster
    log_dir: Path
    servers: dict[str, PgServer] = field(default_factory=dict)
    reporters: dict[str, ReporterProcess] = field(default_factory=dict)

    def port(self, service_id: str) -> int:
        return self.servers[service_id].port

    def ports(self, *service_ids: str) -> set[int]:
        return {self.port(s) for s in service_ids}

    def start_reporter(
        self,
        service_id: str,
        *,
        token: str | None = None,
        extra_args: tuple[str, ...] = (),
        server: PgServer | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> ReporterProcess:
        env = self.agent.env(token=token if token is not None else None)
        if token == "":
            env.pop("CONSUL_HTTP_TOKEN", None)
        reporter = ReporterProcess(
            service_id,
            server or self.servers[service_id],
            self.log_dir / f"{service_id}-{len(self.reporters)}.log",
            consul_env=env,
            extra_args=extra_args,
            extra_env=extra_env,
        )
        # a second running reporter for the same service keeps the first one stoppable
        running = self.reporters.get(service_id)
        key = f"{service_id}#{reporter.pid}" if running and running.alive() else service_id
        if running and key == service_id:
            running.stop()
        self.reporters[key] = reporter
        return reporter

    def stop(self) -> None:
        for reporter in self.reporters.values():
            reporter.stop()


def deploy(
    factory: ConsulAgentFactory,
    cluster: PgCluster,
    tmp_path: Path,
    *,
    guard_check: bool = False,
    start_reporters: bool = True,
    **agent_options: object,
) -> Deployment:
    servers = {f"pg-db-{n}": s for n, s in enumerate([cluster.primary, *cluster.replicas], 1)}
    agent = factory(start=False, **agent_options)
    for service_id, server in servers.items():
        agent.write_config(
            service_id,
            service_definition(service_id, server, guard_check=guard_check, agent=agent),
        )
    agent.start()
    deployment = Deployment(agent, cluster, tmp_path, servers)
    if start_reporters:
        for service_id in servers:
            deployment.start_reporter(service_id)
    return deployment


Deploy = Callable[..., Deployment]


@pytest.fixture
def deployed(consul_agent_factory: ConsulAgentFactory, tmp_path: Path) -> Iterator[Deploy]:
    """deploy() on this test's agent factory and temp dir; stops what it made."""
    made: list[Deployment] = []

    def make(cluster: PgCluster, **options: object) -> Deployment:
        made.append(deploy(consul_agent_factory, cluster, tmp_path, **options))
        return made[-1]

    yield make
    for deployment in made:
        deployment.stop()


def assert_roles(d: Deployment, leader: str, followers: set[str], *, timeout: float = 15) -> None:
    wait_until(
        lambda: (
            leaders_http(d.agent) == {leader} and leaders_http(d.agent, tag="follower") == followers
        ),
        timeout=timeout,
        what=f"HTTP: leader {leader}, followers {sorted(followers)}",
    )
    wait_for_dns(d.agent, LEADER, d.ports(leader), timeout=timeout)
    wait_for_dns(d.agent, FOLLOWER, d.ports(*followers), timeout=timeout)


def consul_role(d: Deployment, service_id: str, server: PgServer):
    """The stale-tag guard for ``service_id``, run as the check Consul runs."""
    return check_postgresql(
        "consul-role",
        "--service-id",
        service_id,
        "--consul-addr",
        d.agent.http_addr,
        env=server.env(),
    )


def tags_right(d: Deployment, leader: str, followers: set[str]) -> bool:
    for service_id in [leader, *followers]:
        want = "leader" if service_id == leader else "follower"
        service = agent_service(d.agent, service_id)
        if want not in service.get("Tags", []) or "postgresql" not in service.get("Tags", []):
            return False
    return True


# -- scenarios --------------------------------------------------------------------------


@pytest.mark.pg_matrix
def test_start_failover_and_the_old_primary_coming_back(
    pg_install: pgbin.PgInstallation,
    deployed: Deploy,
) -> None:
    with new_cluster(pg_install) as cluster:
        d = deployed(cluster, guard_check=True)

        # start: leader = the primary, follower = both replicas, Meta published
        assert_roles(d, "pg-db-1", {"pg-db-2", "pg-db-3"})
        meta = agent_service(d.agent, "pg-db-1")["Meta"]
        assert meta["pg_role"] == "primary"
        assert meta["pg_timeline"] == "1"
        assert meta["site"] == "test", "the read-modify-write must keep other Meta"
        assert (
            meta["pg_system_identifier"]
            == agent_service(d.agent, "pg-db-2")["Meta"]["pg_system_identifier"]
        )

        # failover: primary stopped, replica 2 promoted, replica 3 repointed
        old_primary = cluster.primary
        old_primary.stop()
        wait_for_dns(d.agent, LEADER, set())
        cluster.promote(d.servers["pg-db-2"])
        assert_roles(d, "pg-db-2", {"pg-db-3"})
        assert d.port("pg-db-1") not in srv_ports(d.agent, LEADER) | srv_ports(d.agent, FOLLOWER)
        assert agent_service(d.agent, "pg-db-2")["Meta"]["pg_timeline"] == "2"

        # the old primary comes back as a primary on its old timeline
        old_reporter = d.reporters["pg-db-1"]
        old_primary.start()
        assert not old_primary.is_in_recovery()

        def old_in_leader() -> bool:
            return d.port("pg-db-1") in srv_ports(d.agent, LEADER) or "pg-db-1" in leaders_http(
                d.agent
            )

        never_during(
            old_in_leader,
            lambda: (
                "fenced" in old_reporter.log()
                and "pg_fenced_reason" in agent_service(d.agent, "pg-db-1").get("Meta", {})
            ),
            timeout=20,
            what="the resurrected old primary must never be leader",
        )
        log = old_reporter.log()
        assert "ERROR NOT tagging leader: fenced: service pg-db-2" in log
        assert "newer timeline 2" in log
        service = agent_service(d.agent, "pg-db-1")
        assert "leader" not in service["Tags"]
        assert "newer timeline 2" in service["Meta"]["pg_fenced_reason"]
        assert srv_ports(d.agent, LEADER) == d.ports("pg-db-2")

        # and the stale-tag guard says why, as the check Consul runs
        run = consul_role(d, "pg-db-1", old_primary)
        assert run.status == "CRITICAL", run.stdout
        assert "fenced" in run.summary
        assert run.summary.startswith("fenced: pg-db-2 on node ")
        assert "holds the lock on newer timeline 2 (this primary: 1)" in run.summary
        assert run.perfdata["is_primary"].value == 1
        assert run.perfdata["timeline"].value == 1
        d.agent.wait_for_check("pg-db-1-consul-role", "critical", timeout=15)
        assert all(r.alive() for r in d.reporters.values())
        d.stop()


REPORTER_SESSIONS = (
    "select array_agg(pid order by pid) from pg_stat_activity "
    "where application_name = 'pg-role-reporter'"
)


def test_the_kept_connection_shows_a_crash_at_once_and_a_killed_session_is_no_outage(
    pg_install: pgbin.PgInstallation, deployed: Deploy
) -> None:
    """The loop also sleeps on its connection's socket, which PostgreSQL closes when the
    session ends: with a 60 s poll, a terminated session is replaced at once without the
    leader leaving DNS, and a crashed primary leaves DNS within seconds."""
    with new_cluster(pg_install) as cluster:
        d = deployed(cluster, start_reporters=False)
        for service_id in d.servers:
            d.start_reporter(service_id, extra_args=("--interval", "60"))
        assert_roles(d, "pg-db-1", {"pg-db-2", "pg-db-3"})
        primary = d.servers["pg-db-1"]
        before = primary.scalar(REPORTER_SESSIONS)
        assert before, "the reporter keeps a session"
        primary.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity "
            "where application_name = 'pg-role-reporter'"
        )

        def replaced() -> bool:
            now = primary.scalar(REPORTER_SESSIONS) or []
            return bool(now) and not set(now) & set(before)

        never_during(
            lambda: leaders_http(d.agent) != {"pg-db-1"},
            replaced,
            timeout=10,
            what="a terminated reporter session must not take the leader out of DNS",
        )
        assert replaced(), "the reporter made a new session at once, not a poll (60 s) later"
        assert "unreachable" not in d.reporters["pg-db-1"].log()

        started = time.monotonic()
        primary.kill()
        wait_for_dns(d.agent, LEADER, set(), timeout=15)
        assert time.monotonic() - started < 15
        assert leaders_http(d.agent) == set()


def test_reload_and_agent_restart_retag_within_two_seconds(
    shared_cluster: PgCluster,
    deployed: Deploy,
) -> None:
    d = deployed(shared_cluster)
    everyone = ("pg-db-1", {"pg-db-2", "pg-db-3"})
    assert_roles(d, *everyone)

    started = time.monotonic()
    d.agent.reload()
    wait_until(lambda: tags_right(d, *everyone), timeout=RETAG_DEADLINE_SECONDS, what="retag")
    after_reload = time.monotonic() - started
    wait_for_dns(d.agent, LEADER, d.ports("pg-db-1"), timeout=RETAG_DEADLINE_SECONDS)

    d.agent.restart(keep_data=True)
    started = time.monotonic()
    wait_until(lambda: tags_right(d, *everyone), timeout=RETAG_DEADLINE_SECONDS, what="retag")
    after_restart = time.monotonic() - started
    wait_for_dns(d.agent, LEADER, d.ports("pg-db-1"), timeout=RETAG_DEADLINE_SECONDS)
    assert_roles(d, *everyone)
    print(f"retagged {after_reload:.2f}s after reload, {after_restart:.2f}s after restart")
    assert all(r.alive() for r in d.reporters.values())


def test_consul_stopped_then_started_reporters_recover(
    shared_cluster: PgCluster,
    deployed: Deploy,
) -> None:
    d = deployed(shared_cluster)
    assert_roles(d, "pg-db-1", {"pg-db-2", "pg-db-3"})
    d.agent.stop()
    for reporter in d.reporters.values():
        reporter.wait_for_log("WARNING Consul: cannot reach the Consul agent")
    d.agent.start()
    assert_roles(d, "pg-db-1", {"pg-db-2", "pg-db-3"})
    for reporter in d.reporters.values():
        reporter.wait_for_log("Consul agent answering again")
        assert reporter.alive()
        assert reporter.log().count("cannot reach the Consul agent") <= 2, reporter.log()


def test_acl_default_deny(
    shared_cluster: PgCluster,
    deployed: Deploy,
) -> None:
    d = deployed(shared_cluster, acl=True, start_reporters=False)
    token = d.agent.create_token(FULL_RULES)

    # a token that cannot even read the service: refused at start, in one line
    anonymous = d.start_reporter("pg-db-2", token="")
    assert anonymous.process.wait(timeout=30) == 2
    last = anonymous.log().strip().splitlines()[-1]
    assert last.startswith("pg-role-reporter: Consul refused GET /v1/agent/service/pg-db-2")
    assert "no token (anonymous)" in last
    # rules match service names: the hint must not send the operator to the ID
    assert "needs service:read on the service's name, not its ID" in last
    assert "Traceback" not in anonymous.log()

    writer = d.start_reporter("pg-db-1", token=token)
    wait_until(
        lambda: "leader" in agent_service(d.agent, "pg-db-1").get("Tags", []),
        timeout=15,
        what="leader tag written with the documented token",
    )
    # the agent's copy is written at once; the catalog that the health API reads syncs after
    wait_until(
        lambda: leaders_http(d.agent) == {"pg-db-1"},
        timeout=15,
        what="the leader tag to reach the catalog",
    )
    assert srv_ports(d.agent, LEADER) == set(), "anonymous DNS sees nothing under default deny"
    assert token not in writer.log()
    assert writer.alive()
    # the anonymous reporter could neither read nor write: its service keeps conf.d's tags
    assert agent_service(d.agent, "pg-db-2")["Tags"] == ["postgresql"]


def test_http_over_a_unix_socket(
    shared_cluster: PgCluster,
    deployed: Deploy,
) -> None:
    d = deployed(shared_cluster, unix_socket=True, start_reporters=False)
    socket = f"unix://{d.agent.unix_socket_path}"
    d.start_reporter("pg-db-1", extra_args=("--consul-addr", socket))
    wait_until(lambda: leaders_http(d.agent) == {"pg-db-1"}, timeout=15, what="leader over unix")
    wait_for_dns(d.agent, LEADER, d.ports("pg-db-1"))
    assert f"Consul agent at {socket}" in d.reporters["pg-db-1"].log()


def test_consul_role_check_catches_stale_tags_without_a_reporter(
    shared_cluster: PgCluster,
    deployed: Deploy,
) -> None:
    d = deployed(shared_cluster, start_reporters=False)
    replica = d.servers["pg-db-2"]

    # a service registered a moment ago reaches the catalog (which the guard reads) after
    # the agent's next sync; until then the guard rightly calls itself blind
    wait_until(
        lambda: any(
            entry["Service"]["ID"] == "pg-db-2"
            for entry in d.agent.api("GET", "/v1/health/service/pg-db")
        ),
        timeout=15,
        what="pg-db-2 in the catalog",
    )
    untagged = consul_role(d, "pg-db-2", replica)
    assert untagged.status == "WARNING", untagged.stdout
    assert untagged.summary == "pg-role-reporter is not connected to this server (stopped?)"
    assert untagged.perfdata["is_primary"].value == 0

    # a stale leader tag on a replica (what a dead reporter could leave behind)
    retag(d.agent, "pg-db-2", ["postgresql", "leader"])
    stale = consul_role(d, "pg-db-2", replica)
    assert stale.status == "CRITICAL"
    assert stale.summary == "tagged leader but this is a replica"

    # a primary without a tag: the reporter is not running, no leader in DNS
    primary = consul_role(d, "pg-db-1", d.servers["pg-db-1"])
    assert primary.status == "WARNING", primary.stdout
    assert primary.summary == "pg-role-reporter is not connected to this server (stopped?)"
    assert primary.perfdata["is_primary"].value == 1

    # just promoted, the reporter not yet through: WARNING keeps it in pg-db.service
    retag(d.agent, "pg-db-1", ["postgresql", "follower"])
    promoted = consul_role(d, "pg-db-1", d.servers["pg-db-1"])
    assert promoted.status == "WARNING", promoted.stdout

    # a leader tag nobody holds the lock for (written by hand, or left by a reporter
    # whose session ended): out of DNS
    retag(d.agent, "pg-db-1", ["postgresql", "leader"])
    unlocked = consul_role(d, "pg-db-1", d.servers["pg-db-1"])
    assert unlocked.status == "CRITICAL", unlocked.stdout
    assert unlocked.summary == (
        "tagged leader without holding the leader lock service/pg-db/leader (free)"
    )

    # the check's own Consul trouble must not evict a healthy primary: WARNING, not UNKNOWN
    missing = consul_role(d, "pg-db-9", d.servers["pg-db-1"])
    assert missing.status == "WARNING", missing.stdout
    assert missing.summary == "service pg-db-9 is not registered on the local Consul agent"

    d.agent.stop()
    unreachable = consul_role(d, "pg-db-2", replica)
    assert unreachable.status == "WARNING"
    assert "cannot reach the Consul agent" in unreachable.summary


def retag(agent: ConsulAgent, service_id: str, tags: list[str]) -> None:
    service = agent_service(agent, service_id)
    agent.api(
        "PUT",
        "/v1/agent/service/register",
        json_body={"ID": service_id, "Name": "pg-db", "Port": service["Port"], "Tags": tags},
    )


def test_consul_role_on_a_hung_agent_says_consul_within_the_timeout(
    shared_cluster: PgCluster,
) -> None:
    """A listener that accepts and never answers: the Consul message, not a PG timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        addr = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        run = check_postgresql(
            "consul-role", "-t", "3", "--consul-addr", addr, env=shared_cluster.primary.env()
        )
        took = time.monotonic() - started
    assert run.status == "WARNING", run.stdout
    assert run.summary.startswith(f"Consul: the Consul agent at http://{addr} did not answer")
    assert took < 3.5, took


def test_a_token_that_cannot_write_the_lock_or_sessions_is_refused_at_start(
    shared_cluster: PgCluster,
    deployed: Deploy,
) -> None:
    """Each missing ACL rule is its own one-line refusal naming the rule; the documented
    policy (no node:read) is enough."""
    d = deployed(shared_cluster, acl=True, start_reporters=False)

    def refusal(rules: str) -> str:
        reporter = d.start_reporter("pg-db-1", token=d.agent.create_token(rules))
        assert reporter.process.wait(timeout=30) == 2, reporter.log()
        assert "Traceback" not in reporter.log()
        return reporter.log().strip().splitlines()[-1]

    no_key = refusal(SERVICE_ONLY_RULES)
    assert no_key.startswith("pg-role-reporter: Consul refused PUT /v1/kv/service/pg-db/leader")
    assert 'needs key:write on "service/pg-db/leader"' in no_key
    no_session = refusal(KEY_RULES)
    assert no_session.startswith("pg-role-reporter: Consul refused PUT /v1/session/create")
    assert "needs session:write on this node" in no_session
    assert leaders_http(d.agent) == set()

    seeing = d.start_reporter("pg-db-1", token=d.agent.create_token(FULL_RULES))
    wait_until(lambda: leaders_http(d.agent) == {"pg-db-1"}, timeout=15, what="leader tag")
    assert "pg_fenced_reason" not in agent_service(d.agent, "pg-db-1")["Meta"]
    assert "ERROR" not in seeing.log()


def test_every_turn_is_published_on_the_board(shared_cluster: PgCluster, deployed: Deploy) -> None:
    """What the HTTP endpoints and the Consul push read (checks/reporter/board.py): the
    loop's verdict after each turn, as Consul holds it. In-process, one turn each."""
    from checks.consul import ConsulSettings
    from checks.postgres.connection import ConnectionSettings
    from checks.reporter.board import RoleBoard
    from checks.reporter.loop import Reporter
    from checks.reporter.options import Options
    from checks.reporter.postgres import PostgresRole
    from checks.roletag.plan import TagNames
    from harness.ports import free_port

    d = deployed(shared_cluster, start_reporters=False)
    consul = ConsulSettings.from_env(address=d.agent.http_addr)

    def one_turn(service_id: str, settings: ConnectionSettings) -> RoleBoard:
        board = RoleBoard()
        options = Options(
            service_id=service_id, names=TagNames(), interval=0.5, dry_run=False, once=True
        )
        reporter = Reporter(options, consul, PostgresRole(settings), board=board)
        try:
            assert board.latest() is None
            before = time.monotonic()
            assert reporter.run_once()
            snapshot = board.latest()
            assert snapshot is not None and before <= snapshot.observed_at <= time.monotonic()
            # what the board says is what Consul holds
            tags = agent_service(d.agent, service_id)["Tags"]
            assert [t for t in tags if t in ("leader", "follower")] == (
                [snapshot.tag] if snapshot.tag else []
            )
            reporter.shutdown()
        finally:
            reporter.close()
        return board

    def settings_of(server: PgServer) -> ConnectionSettings:
        return ConnectionSettings(dbname=server.dsn(), timeout=5)

    primary = one_turn("pg-db-1", settings_of(d.servers["pg-db-1"])).latest()
    assert primary is not None
    assert (primary.role, primary.tag, primary.holds_lock, primary.fenced_reason) == (
        "primary",
        "leader",
        True,
        None,
    )
    replica = one_turn("pg-db-2", settings_of(d.servers["pg-db-2"])).latest()
    assert replica is not None
    assert (replica.role, replica.tag, replica.holds_lock) == ("replica", "follower", False)
    nobody = ConnectionSettings(host="127.0.0.1", port=free_port(), timeout=2)
    down = one_turn("pg-db-3", nobody).latest()
    assert down is not None
    assert (down.role, down.tag, down.holds_lock, down.fenced_reason) == (
        "unknown",
        None,
        False,
        None,
    )
