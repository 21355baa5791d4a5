"""The shipped prepared queries (contrib/consul-conf.d/prepared-queries) in two datacenters.

Two real Consul dev agents, dc1 and dc2, WAN-joined on 127.0.0.1, each with one PostgreSQL
instance registered from the shipped zero-write profile (Consul's own checks pick leader
and follower, no reporter needed): dc1 holds the primary, dc2 a replica. So dc1 has no
follower of its own and dc2 no leader of its own: what each query answers from the other
datacenter is what a client there would get. `apply` runs as the README says, with the
Python that has pg-ha-checks, against each datacenter (queries are per datacenter).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness import snippets
from harness.consul import ConsulAgent
from harness.postgres import PgCluster
from tests.integration.fixtures_consul import ConsulAgentFactory
from tests.integration.test_consul_snippets import instance, start_agent, wait_srv

pytestmark = pytest.mark.integration

QUERIES = snippets.SNIPPETS_DIR / "prepared-queries"
APPLY = QUERIES / "apply"
ANY_DC_LEADER = QUERIES / "opt-in" / "any-dc-leader-db-template.json"
CATCH_ALL = QUERIES / "opt-in" / "catch-all-template.json"


def run_apply(agent: ConsulAgent, *args: str | Path) -> str:
    done = subprocess.run(
        [sys.executable, str(APPLY), *map(str, args)],
        env={**os.environ, **agent.env()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def stored(agent: ConsulAgent) -> dict[str, dict[str, Any]]:
    return {q["Name"]: q for q in agent.api("GET", "/v1/query")}


def execute(agent: ConsulAgent, name: str) -> dict[str, Any]:
    result: dict[str, Any] = agent.api("GET", f"/v1/query/{name}/execute")
    return result


def test_followers_fail_over_to_another_datacenter_and_the_leader_never_does_by_default(
    make_pg_cluster: Callable[..., PgCluster],
    consul_agent_factory: ConsulAgentFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with make_pg_cluster(replicas=1) as cluster:
        primary, replica = cluster.primary, cluster.replicas[0]
        profile = snippets.load("zero-write/pg-db-roles.json")
        dc1 = start_agent(
            consul_agent_factory,
            monkeypatch,
            cluster,
            {"pg-db": snippets.for_instance(profile, instance(primary), suffix="a", interval="1s")},
            datacenter="dc1",
            node_name="db-dc1",
        )
        dc2 = start_agent(
            consul_agent_factory,
            monkeypatch,
            cluster,
            {"pg-db": snippets.for_instance(profile, instance(replica), suffix="b", interval="1s")},
            datacenter="dc2",
            node_name="db-dc2",
        )
        dc1.wan_join(dc2)
        wait_srv(dc1, "leader.pg-db.service.consul", [primary.port])
        wait_srv(dc1, "follower.pg-db.service.consul", [])
        wait_srv(dc2, "follower.pg-db.service.consul", [replica.port])
        wait_srv(dc2, "leader.pg-db.service.consul", [])

        # Default run: the files beside apply, never those in opt-in/.
        for agent in (dc1, dc2):
            first = run_apply(agent)
            assert first.count("created") == 3, first
            assert sorted(stored(agent)) == ["geo-db-", "geo-pg-db-follower", "leader-db-"]

        # The stored leader template: no failover at all, TTL 0 like leader.<service>.
        leader_query = stored(dc2)["leader-db-"]
        assert leader_query["Service"]["Tags"] == ["leader"]
        assert leader_query["Service"]["Failover"]["NearestN"] == 0
        assert not leader_query["Service"]["Failover"]["Datacenters"]
        assert leader_query["DNS"]["TTL"] == "0s"

        # Followers: none in dc1, so dc1's clients get dc2's replica.
        result = execute(dc1, "geo-pg-db-follower")
        assert result["Datacenter"] == "dc2" and result["Failovers"] == 1, result
        assert [n["Service"]["Port"] for n in result["Nodes"]] == [replica.port]
        wait_srv(dc1, "geo-pg-db-follower.query.consul", [replica.port])
        wait_srv(dc1, "geo-db-pg-db-follower.query.consul", [replica.port])

        # The leader: dc1's own; in dc2, which has none, nothing -- never dc1's primary.
        wait_srv(dc1, "leader-db-pg-db.query.consul", [primary.port])
        result = execute(dc2, "leader-db-pg-db")
        assert result["Nodes"] == [] and result["Failovers"] == 0, result
        assert dc2.srv_ports("leader-db-pg-db.query.consul") == []
        # The follower template does not answer a leader name either (its Regexp).
        assert execute(dc2, "geo-db-pg-db-leader")["Nodes"] == []
        assert dc2.srv_ports("geo-db-pg-db-leader.query.consul") == []

        # A second run writes nothing, and says so.
        before = {name: q["ModifyIndex"] for name, q in stored(dc2).items()}
        again = run_apply(dc2)
        assert "created" not in again and "updated" not in again, again
        assert again.splitlines()[-1] == "nothing to change: 3 queries already match their files"
        assert {name: q["ModifyIndex"] for name, q in stored(dc2).items()} == before

        # Explicitly asked for: the opt-in any-dc leader template fails over to dc1.
        opted = run_apply(dc2, ANY_DC_LEADER)
        assert "'any-dc-leader-db-': created" in opted, opted
        result = execute(dc2, "any-dc-leader-db-pg-db")
        assert result["Datacenter"] == "dc1", result
        assert [n["Service"]["Port"] for n in result["Nodes"]] == [primary.port]
        assert result["DNS"]["TTL"] == "0s"
        wait_srv(dc2, "any-dc-leader-db-pg-db.query.consul", [primary.port])
        # ... which does not change what the default leader name answers.
        assert dc2.srv_ports("leader-db-pg-db.query.consul") == []

        # The catch-all, also only when named: any other name, any instance, failover.
        run_apply(dc1, CATCH_ALL)
        assert primary.port in dc1.srv_ports("pg-db.query.consul")
        assert "nothing to change" in run_apply(dc1, CATCH_ALL)


ANONYMOUS_TOKEN = "00000000-0000-0000-0000-000000000002"


def test_dns_answers_the_queries_with_the_shipped_anonymous_policy_which_cannot_list_them(
    consul_agent_factory: ConsulAgentFactory,
) -> None:
    """DNS carries no token, so the anonymous token (acl/dns-read.hcl) is what answers
    `leader-db-pg-db.query.consul`. Executing a query needs no `query` rule (the answer is
    filtered by service and node read), so the policy must not also let anyone without a
    token list every team's query definitions over HTTP (`GET /v1/query`)."""
    agent = consul_agent_factory(acl=True)
    agent.wait_for_leader()
    rules = (snippets.SNIPPETS_DIR / "acl" / "dns-read.hcl").read_text()
    policy = agent.api("PUT", "/v1/acl/policy", json_body={"Name": "dns-read", "Rules": rules})
    agent.api(
        "PUT",
        f"/v1/acl/token/{ANONYMOUS_TOKEN}",
        json_body={"Description": "Anonymous Token", "Policies": [{"ID": policy["ID"]}]},
    )
    agent.api(
        "PUT",
        "/v1/agent/service/register",
        json_body={"ID": "pg-db", "Name": "pg-db", "Port": 5432, "Tags": ["leader"]},
    )
    run_apply(agent)
    wait_srv(agent, "leader-db-pg-db.query.consul", [5432])
    assert agent.api("GET", "/v1/query", token="") == []
