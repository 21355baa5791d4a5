"""The resident profile on a real Consul 1.8.7 agent: contrib/consul-conf.d/resident/ and
pg-role-reporter started with the shipped drop-in's options (issue 11, items 4-6a).

Deployment as test_consul_snippets.py builds the script profile's: one agent stands for
every host, each PostgreSQL instance is the shipped resident `pg-db.json` rewritten by
`harness.snippets` (ids suffixed per instance, the instance's port, its daemon's liveness
port), the host's `mem-check.json` once; each instance has its own pg-role-reporter run
with `snippets.resident_daemon_args` (the drop-in's ExecStart, per instance, pushes every
second instead of every 5 s so a state change shows in a second). The liveness check
keeps its shipped 2 s interval and 1 s timeout: the fail-closed tests measure those.

One deployment for the module, scenario after scenario; each leaves it as it found it,
except the failover, which comes last. DNS is sampled every 100 ms in a thread for the
whole module (test_fence's sampler): no sample may name two leaders.
"""

from __future__ import annotations

import itertools
import os
import shlex
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness import pgbin, snippets
from harness.consul import ConsulAgent, ConsulHarnessError, consul_binary
from harness.ports import free_port
from harness.postgres import PgCluster, PgServer
from harness.waiting import wait_until
from tests.integration.reporter_deployment import (
    FOLLOWER,
    LEADER,
    ReporterProcess,
    srv_ports,
)
from tests.integration.test_fence import LeaderSampler
from tests.integration.test_role_reporter import pg_install_one
from tests.plugin_run import check_postgresql

pytestmark = pytest.mark.integration

__all__ = ["pg_install_one"]

# The shipped liveness check (resident/pg-db.json): interval 2 s, timeout 1 s.
LIVENESS_SECONDS = 3.0
# What the catalog and DNS add to a check turning critical: the agent syncs a status
# change at once; DNS answers from the local agent's catalog.
SYNC_SLACK_SECONDS = 1.0
PUSH_INTERVAL = "1s"


@dataclass
class Resident:
    agent: ConsulAgent
    cluster: PgCluster
    log_dir: Path
    servers: dict[str, PgServer] = field(default_factory=dict)
    listen: dict[str, int] = field(default_factory=dict)
    daemons: dict[str, ReporterProcess] = field(default_factory=dict)
    dns: LeaderSampler | None = None

    def service_id(self, name: str) -> str:
        return f"pg-db-{name}"

    def start_daemon(self, name: str) -> ReporterProcess:
        service_id = self.service_id(name)
        args = snippets.resident_daemon_args(
            name,
            listen=f"127.0.0.1:{self.listen[name]}",
            interval=PUSH_INTERVAL,
            memory=name == "a",
        )
        daemon = ReporterProcess(
            service_id,
            self.servers[name],
            self.log_dir / f"{service_id}.log",
            consul_env=self.agent.env(),
            extra_args=tuple(args),
        )
        self.daemons[name] = daemon
        return daemon

    def checks(self) -> dict[str, dict[str, str]]:
        found: dict[str, dict[str, str]] = self.agent.api("GET", "/v1/agent/checks")
        return found

    def wait_checks(self, expected: dict[str, str], *, timeout: float = 20) -> None:
        def reached() -> bool:
            seen = self.checks()
            return all(seen.get(cid, {}).get("Status") == st for cid, st in expected.items())

        try:
            wait_until(reached, timeout=timeout, what=f"checks {expected}")
        except TimeoutError:
            seen = {cid: (c["Status"], c["Output"][:160]) for cid, c in self.checks().items()}
            raise AssertionError(f"checks never reached {expected}; they are {seen}") from None

    def wait_dns(self, name: str, ports: set[int], *, timeout: float = 20) -> float:
        """Seconds until DNS answers `name` with exactly `ports`."""
        started = time.monotonic()
        wait_until(
            lambda: srv_ports(self.agent, name) == ports,
            timeout=timeout,
            interval=0.05,
            what=f"{name} -> {sorted(ports)} (last {sorted(srv_ports(self.agent, name))})",
        )
        return time.monotonic() - started

    def port(self, name: str) -> int:
        return self.servers[name].port


@pytest.fixture(scope="module")
def resident(
    pg_install_one: pgbin.PgInstallation, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Resident]:
    try:
        binary = consul_binary()
    except ConsulHarnessError as exc:
        pytest.fail(f"no consul binary for the integration tests: {exc}", pytrace=False)
    base = tmp_path_factory.mktemp("resident")
    with PgCluster(pg_install_one, replicas=1) as cluster:
        agent = ConsulAgent(base_dir=base / "consul", binary=binary, node_name="pg-ha-resident")
        d = Resident(agent, cluster, base)
        d.servers = {"a": cluster.primary, "b": cluster.replicas[0]}
        for name, server in d.servers.items():
            d.listen[name] = free_port()
            agent.write_config(
                d.service_id(name),
                snippets.for_instance(
                    snippets.load("resident/pg-db.json"),
                    snippets.Instance.from_env(server.env()),
                    suffix=name,
                    listen_port=d.listen[name],
                ),
            )
        agent.write_config("mem-check", snippets.host_snippet("resident/mem-check.json"))
        try:
            agent.start()
            for name in d.servers:
                d.start_daemon(name)
            d.dns = LeaderSampler(agent)
            d.dns.start()
            yield d
        finally:
            if d.dns is not None:
                d.dns.stop()
            for daemon in d.daemons.values():
                if daemon.alive():
                    os.kill(daemon.pid, signal.SIGCONT)  # a stopped one cannot take SIGTERM
                daemon.stop()
            agent.stop()


@pytest.fixture(autouse=True)
def never_two_leaders(resident: Resident) -> Iterator[None]:
    """Over each test's own samples: never two leaders, and sampled often enough to tell."""
    assert resident.dns is not None
    first = len(resident.dns.samples)
    yield
    samples = resident.dns.samples[first:]
    doubles = [(round(t, 2), sorted(p)) for t, p in samples if len(p) > 1]
    assert not doubles, f"two leaders in DNS at {doubles[:5]} ({len(doubles)} samples)"
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(samples)]
    assert gaps and max(gaps) < 0.5, f"DNS sampled too slowly: max gap {max(gaps):.2f}s"


def test_start_tags_leader_and_follower_and_every_pushed_check_passes(resident: Resident) -> None:
    d = resident
    d.wait_dns(LEADER, {d.port("a")}, timeout=30)
    d.wait_dns(FOLLOWER, {d.port("b")}, timeout=30)
    d.wait_checks(
        {
            f"pg-db-{name}-{check}": "passing"
            for name in ("a", "b")
            for check in ("liveness", "alive", "role-tag", "lag")
        }
    )
    checks = d.checks()
    # What is pushed is what the executable prints for the same options: the same status
    # line and the same perfdata labels (the figures are timings of two different runs).
    argv = snippets.resident_daemon_args("a", listen="127.0.0.1:1", interval=PUSH_INTERVAL)
    alive_args = shlex.split(argv[argv.index("--push") + 1].split(":", 1)[1])
    run = check_postgresql(*alive_args, env=d.servers["a"].env())
    pushed = checks["pg-db-a-alive"]["Output"]
    assert run.code == 0 and pushed.split(" | ")[0] == run.first_line.split(" | ")[0], pushed
    assert labels(pushed) == labels(run.stdout)
    assert checks["pg-db-b-lag"]["Output"].startswith("PG_LAG OK - ")
    memory = checks["pg-host-memory"]
    assert memory["Output"].startswith("MEM "), memory
    assert all(len(c["Output"].encode()) < 4096 for c in checks.values())


def labels(output: str) -> list[str]:
    perfdata = output.split("\n")[0].partition(" | ")[2]
    return [item.split("=")[0] for item in perfdata.split()]


def test_a_paused_replica_stays_warning_and_in_dns(resident: Resident) -> None:
    d = resident
    replica = d.servers["b"]
    replica.pause_replay()
    try:
        d.wait_checks({"pg-db-b-lag": "warning"})
        assert "paused" in d.checks()["pg-db-b-lag"]["Output"]
        # warning stays in DNS (waited for: the catalog syncs the status a moment later)
        d.wait_dns(FOLLOWER, {d.port("b")}, timeout=5)
    finally:
        replica.resume_replay()
    d.wait_checks({"pg-db-b-lag": "passing"})


@pytest.mark.parametrize("how", ["SIGSTOP", "SIGKILL"])
@pytest.mark.parametrize(("name", "dns_name"), [("b", FOLLOWER), ("a", LEADER)])
def test_a_stopped_or_killed_daemon_takes_its_instance_out_of_dns_within_interval_plus_timeout(
    resident: Resident, name: str, dns_name: str, how: str
) -> None:
    """Fail closed: the pushed verdicts stand until their TTL (15 s), the liveness check
    does not: interval 2 s plus timeout 1 s."""
    d = resident
    d.wait_dns(dns_name, {d.port(name)}, timeout=30)
    daemon = d.daemons[name]
    os.kill(daemon.pid, getattr(signal, how))
    gone = d.wait_dns(dns_name, set(), timeout=15)
    assert gone <= LIVENESS_SECONDS + SYNC_SLACK_SECONDS, f"{dns_name} kept it {gone:.2f}s"
    assert d.checks()[f"pg-db-{name}-liveness"]["Status"] == "critical"
    if how == "SIGSTOP":
        os.kill(daemon.pid, signal.SIGCONT)
    else:
        daemon.stop()
        d.start_daemon(name)
    d.wait_dns(dns_name, {d.port(name)}, timeout=30)


def test_a_stopped_server_leaves_dns_in_one_role_poll_and_comes_back(resident: Resident) -> None:
    d = resident
    replica = d.servers["b"]
    d.wait_dns(FOLLOWER, {d.port("b")}, timeout=30)
    replica.stop()
    try:
        gone = d.wait_dns(FOLLOWER, set(), timeout=10)
        # the tag goes in one poll (0.25 s) and the alive verdict with it, not after the
        # push interval
        d.wait_checks({"pg-db-b-alive": "critical"}, timeout=5)
        assert gone < 2.0, f"a stopped replica stayed in follower. for {gone:.2f}s"
        assert d.port("b") not in srv_ports(d.agent, "pg-db.service.consul")
    finally:
        replica.start()
    d.wait_dns(FOLLOWER, {d.port("b")}, timeout=30)


def test_failover_and_the_old_primary_back_on_its_old_timeline_is_never_leader(
    resident: Resident,
) -> None:
    d = resident
    old, new = d.servers["a"], d.servers["b"]
    d.wait_dns(LEADER, {d.port("a")}, timeout=30)
    old.stop()
    d.wait_dns(LEADER, set(), timeout=10)
    promoted = time.monotonic()
    d.cluster.promote(new)
    d.wait_dns(LEADER, {d.port("b")}, timeout=15)
    took = time.monotonic() - promoted  # figures: benchmarks/failover.py --resident
    # the new primary's pushed checks pass (lag --role-mismatch ok, re-run at once)
    d.wait_checks({"pg-db-b-lag": "passing", "pg-db-b-alive": "passing"}, timeout=10)
    assert took < 5, took
    # the old primary comes back writable, on its old timeline: fenced, never leader
    old.start()
    assert not old.is_in_recovery()
    d.wait_checks({"pg-db-a-role-tag": "critical", "pg-db-a-alive": "passing"}, timeout=20)
    # waited for, not read once: the critical above may still be the verdict from while the
    # server was down ("cannot connect"), the alive one already pushed and this one next
    wait_until(
        lambda: "fenced" in d.checks()["pg-db-a-role-tag"]["Output"],
        timeout=10,
        what="a fenced verdict on pg-db-a-role-tag",
        describe=lambda: str(d.checks()["pg-db-a-role-tag"]),
    )
    time.sleep(3)  # several polls and pushes of both daemons: DNS is sampled meanwhile
    assert srv_ports(d.agent, LEADER) == {d.port("b")}


def test_a_daemon_frozen_past_its_ttl_loses_the_lock_and_wakes_without_a_second_leader(
    resident: Resident,
) -> None:
    """The leader's daemon is SIGSTOPped: its instance leaves DNS through the liveness
    check, its pushed alive check expires after the TTL and ends the lock's session, and
    the other writable primary (the old one, fenced until now) takes the lock. When the
    frozen daemon runs again, /liveness answers at once, but its verdicts wait for a turn
    of its loop, which takes its stale leader tag off first: DNS never names both."""
    d = resident
    leader, other = "b", "a"  # after the failover above; `a` is a fenced writable primary
    d.wait_dns(LEADER, {d.port(leader)}, timeout=30)
    frozen = d.daemons[leader]
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        d.wait_dns(LEADER, set(), timeout=LIVENESS_SECONDS + SYNC_SLACK_SECONDS)
        # TTL 15 s, Consul's TTL reaper and the 1 s lock-delay, then the other's next poll
        d.wait_dns(LEADER, {d.port(other)}, timeout=30)
        d.wait_checks({f"pg-db-{leader}-alive": "critical"}, timeout=5)
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    frozen.wait_for_log("NOT tagging leader: fenced", timeout=15)
    time.sleep(3)  # liveness passes again meanwhile; DNS is sampled every 100 ms
    assert srv_ports(d.agent, LEADER) == {d.port(other)}
