"""checks.consul against a real Consul agent (1.8.7 from scripts/fetch-consul).

These pin the Consul facts the role reporter is built on (docs/design.md §5): the
read-modify-write of a conf.d service, tags reverting on reload and restart, blocking
queries waking on change, ACL denials an operator can act on, and every address form.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from checks.consul import (
    ConsulClient,
    ConsulError,
    ConsulNotFound,
    ConsulPermissionDenied,
    ConsulSettings,
    ConsulUnreachable,
)
from checks.roletag.plan import registration_from_agent_service
from harness.consul import ConsulAgent, ConsulHarnessError, wait_until
from tests.integration.fixtures_consul import ConsulAgentFactory

pytestmark = pytest.mark.integration

FILE_TAGS = ["pg", "cluster-main"]
PG_DB_SNIPPET: dict[str, Any] = {
    "service": {
        "id": "pg-db",
        "name": "pg-db",
        "port": 5432,
        "tags": FILE_TAGS,
        "meta": {"cluster": "main"},
        "weights": {"passing": 3, "warning": 1},
        "checks": [
            {
                "id": "pg-db-alive",
                "name": "PostgreSQL alive",
                "args": ["/bin/true"],
                "interval": "1s",
                "timeout": "5s",
            }
        ],
    }
}


def client_for(agent: ConsulAgent, **env: str) -> ConsulClient:
    return ConsulClient(ConsulSettings.from_env({**agent.env(), **env}))


def add_tag(client: ConsulClient, service_id: str, tag: str) -> dict[str, Any]:
    """The reporter's read-modify-write: keep every field, add one tag."""
    service, _ = client.agent_service(service_id)
    registration = registration_from_agent_service(service)
    registration["Tags"] = [*service["Tags"], tag]
    client.register_service(registration)
    return service


def without_hash(service: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in service.items() if key != "ContentHash"}


@pytest.fixture
def pg_agent(consul_agent_factory: ConsulAgentFactory) -> ConsulAgent:
    """An agent of its own with pg-db defined in conf.d, its check passing."""
    agent = consul_agent_factory(config_files={"pg-db": PG_DB_SNIPPET})
    agent.wait_for_check("pg-db-alive", "passing")
    return agent


def test_conf_d_service_is_read_with_its_hash(pg_agent: ConsulAgent) -> None:
    with client_for(pg_agent) as client:
        service, content_hash = client.agent_service("pg-db")
    assert service["Service"] == "pg-db"
    assert service["Tags"] == FILE_TAGS
    assert service["Meta"] == {"cluster": "main"}
    assert service["Weights"] == {"Passing": 3, "Warning": 1}
    assert content_hash
    assert content_hash == service["ContentHash"]


def test_unknown_service_is_not_found(consul_agent: ConsulAgent) -> None:
    with client_for(consul_agent) as client, pytest.raises(ConsulNotFound, match="unknown"):
        client.agent_service("no-such-service")


def test_read_modify_write_keeps_every_field_and_the_conf_d_checks(
    pg_agent: ConsulAgent,
) -> None:
    with client_for(pg_agent) as client:
        before = add_tag(client, "pg-db", "leader")
        after, _ = client.agent_service("pg-db")
        checks = client.agent_checks()

        assert after["Tags"] == [*FILE_TAGS, "leader"]
        assert without_hash({**after, "Tags": before["Tags"]}) == without_hash(before)
        # Re-registering without Checks leaves the conf.d check attached (docs/design.md §5).
        assert checks["pg-db-alive"]["ServiceID"] == "pg-db"
        # Observed in 1.8.7: the agent's own copy of the check keeps the tags it was
        # registered with (still the file's after 10 s), and the catalog's copy follows
        # the service only sometimes. Read the role tag from the service, never a check.
        assert checks["pg-db-alive"]["ServiceTags"] == FILE_TAGS

        entries = wait_until(
            lambda: client.health_service("pg-db", tag="leader", passing=True),
            timeout=10,
            what="pg-db with the leader tag passing in the catalog",
        )
        assert [entry["Service"]["ID"] for entry in entries] == ["pg-db"]
        assert client.health_service("pg-db", tag="follower") == []


def test_unchanged_registration_keeps_the_content_hash(pg_agent: ConsulAgent) -> None:
    # The reporter writes only when something differs; an identical PUT must not even
    # look like a change to the blocking query.
    with client_for(pg_agent) as client:
        service, first_hash = client.agent_service("pg-db")
        client.register_service(registration_from_agent_service(service))
        _, second_hash = client.agent_service("pg-db")
    assert second_hash == first_hash


def test_reload_reverts_the_tag_to_the_files_tags(pg_agent: ConsulAgent) -> None:
    with client_for(pg_agent) as client:
        add_tag(client, "pg-db", "leader")
        seconds = pg_agent.reload()
        service, _ = client.agent_service("pg-db")
        checks = client.agent_checks()
    assert service["Tags"] == FILE_TAGS, "the API-written tag survived the reload"
    assert "pg-db-alive" in checks
    assert seconds < 5, f"consul reload took {seconds:.2f}s"


def test_restart_reverts_the_tag_and_the_agent_is_unreachable_meanwhile(
    pg_agent: ConsulAgent,
) -> None:
    with client_for(pg_agent) as client:
        add_tag(client, "pg-db", "leader")
        pg_agent.stop()
        with pytest.raises(ConsulUnreachable, match="CONSUL_HTTP_ADDR"):
            client.agent_service("pg-db")
        pg_agent.start()
        service, _ = client.agent_service("pg-db")
    assert service["Tags"] == FILE_TAGS


def test_blocking_query_waits_while_unchanged(pg_agent: ConsulAgent) -> None:
    with client_for(pg_agent) as client:
        service, content_hash = client.agent_service("pg-db")
        started = time.monotonic()
        again, same_hash = client.agent_service("pg-db", index_hash=content_hash, wait=1.0)
        elapsed = time.monotonic() - started
    assert same_hash == content_hash
    assert again == service
    # Consul adds up to wait/16 of jitter.
    assert 0.9 <= elapsed < 3, f"a 1 s blocking query took {elapsed:.2f}s"


def test_blocking_query_returns_promptly_on_change(pg_agent: ConsulAgent) -> None:
    with client_for(pg_agent) as watcher, client_for(pg_agent) as writer:
        _, content_hash = watcher.agent_service("pg-db")
        result: dict[str, Any] = {}

        def watch() -> None:
            result["service"], result["hash"] = watcher.agent_service(
                "pg-db", index_hash=content_hash, wait=30.0
            )
            result["at"] = time.monotonic()

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        thread.join(timeout=0.3)
        assert thread.is_alive(), "the blocking query returned before anything changed"

        changed_at = time.monotonic()
        add_tag(writer, "pg-db", "leader")
        thread.join(timeout=10)
        assert not thread.is_alive(), "the blocking query did not return after the change"

    latency = result["at"] - changed_at
    assert result["hash"] != content_hash
    assert "leader" in result["service"]["Tags"]
    assert latency < 1.0, f"the blocking query returned {latency:.2f}s after the change"


def test_blocking_query_wakes_on_reload(pg_agent: ConsulAgent) -> None:
    # What lets the reporter re-assert its tag within a second of a reload.
    with client_for(pg_agent) as client:
        add_tag(client, "pg-db", "leader")
        _, tagged_hash = client.agent_service("pg-db")
        result: dict[str, Any] = {}

        def watch() -> None:
            result["service"], _ = client.agent_service("pg-db", index_hash=tagged_hash, wait=30.0)

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        thread.join(timeout=0.3)
        pg_agent.reload()
        thread.join(timeout=10)
        assert not thread.is_alive(), "the blocking query slept through the reload"
    assert result["service"]["Tags"] == FILE_TAGS


# -- ACLs ------------------------------------------------------------------------------


@pytest.fixture
def acl_agent(consul_agent_factory: ConsulAgentFactory) -> ConsulAgent:
    return consul_agent_factory(acl=True, config_files={"pg-db": PG_DB_SNIPPET})


def test_token_with_service_write_on_pg_db_can_update_it(acl_agent: ConsulAgent) -> None:
    token = acl_agent.create_token('service "pg-db" { policy = "write" }')
    with client_for(acl_agent, CONSUL_HTTP_TOKEN=token) as client:
        add_tag(client, "pg-db", "leader")
        service, _ = client.agent_service("pg-db")
    assert service["Tags"] == [*FILE_TAGS, "leader"]


def test_anonymous_is_denied_with_the_permission_named(acl_agent: ConsulAgent) -> None:
    with client_for(acl_agent, CONSUL_HTTP_TOKEN="") as client:
        assert client.settings.token is None
        with pytest.raises(ConsulPermissionDenied) as read_denied:
            client.agent_service("pg-db")
        with pytest.raises(ConsulPermissionDenied) as write_denied:
            client.register_service({"ID": "pg-db", "Name": "pg-db", "Port": 5432})
    assert read_denied.value.status == 403
    assert "anonymous" in str(read_denied.value)
    assert 'service:read on "pg-db"' in str(read_denied.value)
    assert "service:write" in str(write_denied.value)
    assert "pg-db" in str(write_denied.value)


def test_token_for_another_service_cannot_write_pg_db(acl_agent: ConsulAgent) -> None:
    token = acl_agent.create_token('service "other" { policy = "write" }')
    with (
        client_for(acl_agent, CONSUL_HTTP_TOKEN=token) as client,
        pytest.raises(ConsulPermissionDenied) as denied,
    ):
        client.register_service({"ID": "pg-db", "Name": "pg-db", "Port": 5432})
    message = str(denied.value)
    assert "Missing service:write on pg-db" in message  # Consul's own words
    assert "CONSUL_HTTP_TOKEN" in message  # where the token came from
    assert token not in message


def test_unknown_token_is_reported_as_unknown(acl_agent: ConsulAgent) -> None:
    bogus = "00000000-1111-2222-3333-444444444444"
    with (
        client_for(acl_agent, CONSUL_HTTP_TOKEN=bogus) as client,
        pytest.raises(ConsulPermissionDenied, match="does not know") as denied,
    ):
        client.self()
    assert bogus not in str(denied.value)


def test_token_file(acl_agent: ConsulAgent, tmp_path: Path) -> None:
    token = acl_agent.create_token('service "pg-db" { policy = "write" }')
    token_file = tmp_path / "consul-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    settings = ConsulSettings.from_env(
        {"CONSUL_HTTP_ADDR": acl_agent.http_addr, "CONSUL_HTTP_TOKEN_FILE": str(token_file)}
    )
    with ConsulClient(settings) as client:
        add_tag(client, "pg-db", "leader")
        service, _ = client.agent_service("pg-db")
    assert "leader" in service["Tags"]


# -- address forms ---------------------------------------------------------------------


def test_unix_socket_address(consul_agent_factory: ConsulAgentFactory) -> None:
    agent = consul_agent_factory(unix_socket=True, config_files={"pg-db": PG_DB_SNIPPET})
    assert agent.unix_socket_path is not None
    with client_for(agent, CONSUL_HTTP_ADDR=f"unix://{agent.unix_socket_path}") as client:
        assert client.self()["Config"]["NodeName"] == agent.node_name
        add_tag(client, "pg-db", "leader")
        service, _ = client.agent_service("pg-db")
    assert "leader" in service["Tags"]


@pytest.mark.parametrize("form", ["{addr}", "http://{addr}", "http://{addr}/"])
def test_tcp_address_forms(consul_agent: ConsulAgent, form: str) -> None:
    address = form.format(addr=consul_agent.http_addr)
    with client_for(consul_agent, CONSUL_HTTP_ADDR=address) as client:
        assert client.self()["Config"]["NodeName"] == consul_agent.node_name


def test_https_against_plain_http_fails_clearly(consul_agent: ConsulAgent) -> None:
    with (
        client_for(consul_agent, CONSUL_HTTP_SSL="true") as client,
        pytest.raises(ConsulError, match="plain HTTP") as failed,
    ):
        client.self()
    assert not isinstance(failed.value, ConsulUnreachable)
    assert "CONSUL_HTTP_SSL" in str(failed.value)


# -- harness ---------------------------------------------------------------------------


def test_second_datacenter_joins_over_wan(consul_agent_factory: ConsulAgentFactory) -> None:
    dc1 = consul_agent_factory(datacenter="dc1")
    dc2 = consul_agent_factory(datacenter="dc2")
    dc2.wan_join(dc1)
    with client_for(dc1) as client:
        assert client.self()["Config"]["Datacenter"] == "dc1"
    assert set(dc1.api("GET", "/v1/catalog/datacenters")) == {"dc1", "dc2"}


def test_persistent_agent_keeps_raft_state_across_restart(
    consul_agent_factory: ConsulAgentFactory,
) -> None:
    agent = consul_agent_factory(persistent=True)
    agent.api("PUT", "/v1/kv/pg-ha/probe", json_body="kept")
    agent.restart(keep_data=True)
    assert agent.api("GET", "/v1/kv/pg-ha/probe")[0]["Key"] == "pg-ha/probe"
    agent.restart(keep_data=False)
    with pytest.raises(httpx.HTTPStatusError):
        agent.api("GET", "/v1/kv/pg-ha/probe")


def test_port_taken_before_the_first_start_gets_new_ports(
    consul_agent_factory: ConsulAgentFactory,
) -> None:
    agent = consul_agent_factory(start=False)
    taken = agent.ports.http
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen(1)
        agent.start()
    assert agent.ports.http != taken
    assert agent.api("GET", "/v1/agent/self")["Config"]["NodeName"] == agent.node_name


def test_agent_that_cannot_start_fails_fast(consul_agent_factory: ConsulAgentFactory) -> None:
    agent = consul_agent_factory(start=False, config_files={"broken": "{not json"})
    started = time.monotonic()
    with pytest.raises(ConsulHarnessError, match="exited"):
        agent.start(timeout=30)
    assert time.monotonic() - started < 10


def test_role_tag_reaches_dns_and_leaves_it_on_reload(pg_agent: ConsulAgent) -> None:
    # The fail-closed model of docs/design.md §5: a reverted tag means no leader in DNS.
    leader = "leader.pg-db.service.consul"
    # single UDP queries may time out on a loaded machine: assert on what a wait returned
    before = wait_until(lambda: [pg_agent.addresses(leader)], timeout=10, what="DNS")
    assert before == [[]]
    with client_for(pg_agent) as client:
        add_tag(client, "pg-db", "leader")
        found = wait_until(lambda: pg_agent.addresses(leader), timeout=10, what=f"{leader} in DNS")
        assert found == ["127.0.0.1"]
        pg_agent.reload()
        wait_until(
            lambda: pg_agent.addresses(leader) == [],
            timeout=10,
            what=f"{leader} gone from DNS after the reload",
        )
