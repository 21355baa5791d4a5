"""The shipped contrib/consul-conf.d snippets on a real Consul 1.8.7 agent and real PostgreSQL.

Deployment shape: one dev agent per datacenter on 127.0.0.1, every PostgreSQL instance of
the test registered on it from the shipped file rewritten by `harness.snippets` (this
venv's executables, the instance's `-H/-p/-U/-d`, ids suffixed per instance, 1 s
intervals). All instances share the node address, so answers are told apart by the SRV
port. The monitor role's password reaches the checks through `PGPASSFILE` in the agent's
environment (script checks inherit it), never through argv.
"""

from __future__ import annotations

import json
import subprocess
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from harness import snippets
from harness.consul import ConsulAgent, wait_until
from harness.postgres import PgCluster, PgServer
from tests.integration.fixtures_consul import ConsulAgentFactory

pytestmark = pytest.mark.integration

CONSUL_OUTPUT_LIMIT = 4096  # Consul keeps the last 4 KB of a check's output (docs/design.md §5)


# -- helpers -------------------------------------------------------------------------------


def wait_srv(agent: ConsulAgent, name: str, ports: Iterable[int], *, timeout: float = 30) -> None:
    expected = sorted(ports)
    wait_until(
        lambda: agent.srv_ports(name) == expected,
        timeout=timeout,
        what=f"{name} to answer ports {expected} (last: {agent.srv_ports(name)})",
    )


def instance(server: PgServer) -> snippets.Instance:
    return snippets.Instance.from_env(server.env())


def start_agent(
    factory: ConsulAgentFactory,
    monkeypatch: pytest.MonkeyPatch,
    cluster: PgCluster,
    configs: dict[str, dict[str, Any]],
    **options: Any,
) -> ConsulAgent:
    """An agent with the shipped agent.json plus `configs`, its checks able to log in."""
    agent = factory(start=False, **options)
    agent.write_config("agent.json", snippets.load("agent.json"))
    for name, content in configs.items():
        agent.write_config(name, content)
    # Script checks inherit the agent's environment: the passfile for the monitor role,
    # and the agent's own address for the stale-tag guard.
    monkeypatch.setenv("PGPASSFILE", str(cluster.passfile))
    monkeypatch.setenv("CONSUL_HTTP_ADDR", agent.http_addr)
    agent.start()
    return agent


def checks_seen(agent: ConsulAgent) -> dict[str, dict[str, Any]]:
    checks: dict[str, dict[str, Any]] = agent.api("GET", "/v1/agent/checks")
    for check in checks.values():
        size = len(check["Output"].encode())
        assert size < CONSUL_OUTPUT_LIMIT, f"{check['CheckID']} output is {size} bytes"
    return checks


def wait_states(agent: ConsulAgent, expected: dict[str, str], *, timeout: float = 30) -> None:
    def reached() -> bool:
        seen = checks_seen(agent)
        return all(seen.get(cid, {}).get("Status") == status for cid, status in expected.items())

    try:
        wait_until(reached, timeout=timeout, what=f"checks {expected}")
    except TimeoutError:
        seen = {cid: (c["Status"], c["Output"][:200]) for cid, c in checks_seen(agent).items()}
        raise AssertionError(f"checks never reached {expected}; they are {seen}") from None


# -- consul validate -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "files",
    [
        ["agent.json", "pg-db.json", "mem-check.json"],
        ["agent.json", "zero-write/pg-db-roles.json", "mem-check.json"],
        ["resident/pg-db.json", "resident/mem-check.json"],
    ],
    ids=["reporter-profile", "zero-write-profile", "resident-profile"],
)
def test_shipped_snippets_pass_consul_validate(
    consul_bin: Path, tmp_path: Path, files: list[str]
) -> None:
    # validate needs a data_dir beside the snippets, as an operator's base file has.
    conf_dir = tmp_path / "consul.d"
    conf_dir.mkdir()
    (conf_dir / "00-base.json").write_text(json.dumps({"data_dir": str(tmp_path / "data")}))
    for name in files:
        (conf_dir / Path(name).name).write_text((snippets.SNIPPETS_DIR / name).read_text())
    done = subprocess.run(
        [str(consul_bin), "validate", str(conf_dir)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_shipped_checks_use_args_ids_and_timeouts_above_the_plugin() -> None:
    for name in ("pg-db.json", "zero-write/pg-db-roles.json", "mem-check.json"):
        for service in snippets.services_of(snippets.load(name)):
            for check in service["checks"]:
                assert "script" not in check and check["args"], check
                assert check["id"] and check["notes"], check
                plugin_timeout = float(check["args"][check["args"].index("-t") + 1])
                assert float(check["timeout"].rstrip("s")) > plugin_timeout, check
                if "consul-role" in check["args"]:
                    # the guard names its own service: a second instance's copy must too
                    args = check["args"]
                    assert args[args.index("--service-id") + 1] == service["id"], check
    assert "enable_script_checks" not in snippets.load("agent.json")


# -- the reporter profile's checks follow the server -----------------------------------------


def test_pg_db_checks_report_passing_warning_and_critical(
    make_pg_cluster: Callable[..., PgCluster],
    consul_agent_factory: ConsulAgentFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with make_pg_cluster(replicas=1) as cluster:
        primary, replica = cluster.primary, cluster.replicas[0]
        skipped: list[str] = []
        configs = {
            f"pg-db-{name}": snippets.for_instance(
                snippets.load("pg-db.json"),
                instance(server),
                suffix=name,
                interval="1s",
                skipped=skipped,
            )
            for name, server in (("primary", primary), ("replica", replica))
        }
        agent = start_agent(consul_agent_factory, monkeypatch, cluster, configs)

        expected = {
            "pg-db-primary-alive": "passing",
            "pg-db-primary-lag": "passing",  # --role-mismatch ok on the primary
            "pg-db-replica-alive": "passing",
            "pg-db-replica-lag": "passing",
            # The stale-tag guard: no role tag is no stale tag, but no reporter either
            # ("no role tag: is pg-role-reporter running?"): warning, still in DNS.
            "pg-db-primary-role-tag": "warning",
            "pg-db-replica-role-tag": "warning",
        }
        wait_states(agent, {cid: s for cid, s in expected.items() if cid not in skipped})
        # Role-neutral conf.d tags: without a reporter nobody is leader or follower.
        assert agent.srv_ports("leader.pg-db.service.consul") == []
        assert agent.srv_ports("follower.pg-db.service.consul") == []

        replica.pause_replay()
        wait_states(agent, {"pg-db-replica-lag": "warning"})
        # Warning stays in DNS: a paused replica is still served. Waited for, not sampled:
        # on a loaded machine a 1 s check may be mid-flight when DNS is asked.
        wait_until(
            lambda: replica.port in agent.srv_ports("pg-db.service.consul"),
            timeout=15,
            what="the paused (warning) replica to be served by pg-db.service.consul",
        )
        replica.resume_replay()
        wait_states(agent, {"pg-db-replica-lag": "passing"})

        replica.stop()
        wait_states(
            agent,
            {
                "pg-db-replica-alive": "critical",
                "pg-db-replica-lag": "critical",
                "pg-db-primary-alive": "passing",
            },
        )
        wait_until(
            lambda: replica.port not in agent.srv_ports("pg-db.service.consul"),
            timeout=10,
            what="the stopped replica to leave pg-db.service.consul",
        )
        checks_seen(agent)  # every output still under 4 KB
        if skipped:
            warnings.warn(
                f"left out {skipped}: this check_postgresql lacks the subcommand", stacklevel=1
            )


# -- zero-write profile: Consul's own health picks leader and follower -----------------------


def test_zero_write_profile_answers_leader_and_follower_in_dns(
    make_pg_cluster: Callable[..., PgCluster],
    consul_agent_factory: ConsulAgentFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with make_pg_cluster(replicas=1) as cluster:
        primary, replica = cluster.primary, cluster.replicas[0]
        profile = snippets.load("zero-write/pg-db-roles.json")
        configs = {
            f"pg-db-{name}": snippets.for_instance(
                profile, instance(server), suffix=name, interval="1s"
            )
            for name, server in (("a", primary), ("b", replica))
        }
        agent = start_agent(consul_agent_factory, monkeypatch, cluster, configs)
        wait_srv(agent, "leader.pg-db.service.consul", [primary.port])
        wait_srv(agent, "follower.pg-db.service.consul", [replica.port])
        checks = checks_seen(agent)
        # The trade-off written in the README: a critical check is always present.
        assert checks["pg-db-leader-b-role"]["Status"] == "critical"
        assert checks["pg-db-follower-a-role"]["Status"] == "critical"

        primary.stop()
        wait_srv(agent, "leader.pg-db.service.consul", [])
        cluster.promote(replica)
        wait_srv(agent, "leader.pg-db.service.consul", [replica.port])
        wait_srv(agent, "follower.pg-db.service.consul", [])
