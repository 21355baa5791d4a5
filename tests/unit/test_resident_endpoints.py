"""The resident daemon's pure decisions: listen addresses, health statuses, check requests."""

from __future__ import annotations

import socket
from dataclasses import dataclass, replace

import pytest

from checks.postgres.readers.instance import InstanceFacts
from checks.resident import check_endpoint, health
from checks.resident.listen import parse_listen
from checks.status import Status


@dataclass(frozen=True)
class Turn:
    role: str = "primary"
    tag: str | None = "leader"
    holds_lock: bool = True
    fenced_reason: str | None = None
    observed_at: float = 100.0


PRIMARY = InstanceFacts(
    in_recovery=False,
    system_identifier="7",
    timeline=2,
    server_version=150004,
    wal_position=1000,
    received_position=None,
    replayed_position=None,
    replay_lag_bytes=None,
    replay_paused=None,
    receiver_status=None,
)
REPLICA = replace(
    PRIMARY,
    in_recovery=True,
    wal_position=None,
    received_position=900,
    replayed_position=800,
    replay_lag_bytes=100,
    replay_paused=False,
    receiver_status="streaming",
)


def seen(
    facts: InstanceFacts | None, turn: Turn | None = None, alive: bool = True
) -> health.Observation:
    return health.Observation(facts, None if facts else "down", turn, alive, lock_current=alive)


def status(path: str, observation: health.Observation, **query: str) -> int:
    return health.status_for(path, query, observation)


@pytest.mark.parametrize("path", ["/", "/primary", "/read-write", "/read-only", "/health"])
def test_a_locked_primary_is_primary_read_only_and_healthy(path: str) -> None:
    assert status(path, seen(PRIMARY, Turn())) == 200


@pytest.mark.parametrize(
    "turn, alive",
    [
        (Turn(holds_lock=False, tag=None), True),
        (Turn(fenced_reason="lock held by db2"), True),
        (Turn(), False),  # the loop stopped turning: its lock verdict is stale
        (None, True),
    ],
)
def test_a_primary_without_the_lock_is_not_primary(turn: Turn | None, alive: bool) -> None:
    observation = seen(PRIMARY, turn, alive)
    assert status("/primary", observation) == 503
    assert status("/read-only", observation) == 503
    assert status("/health", observation) == 200


def test_a_replica_is_replica_within_its_lag_and_never_primary() -> None:
    observation = seen(REPLICA, Turn(role="replica", tag="follower", holds_lock=False))
    assert status("/primary", observation) == 503
    assert status("/replica", observation) == 200
    assert status("/asynchronous", observation) == 200
    assert status("/synchronous", observation) == 503
    assert status("/replica", observation, lag="100") == 200
    assert status("/replica", observation, lag="99B") == 503
    assert status("/read-only", observation, lag="1kB") == 200
    assert status("/readiness", observation) == 200


def test_a_replica_without_wal_receiver_has_no_known_lag() -> None:
    lost = replace(REPLICA, receiver_status=None, replay_lag_bytes=None)
    assert status("/replica", seen(lost)) == 200
    assert status("/replica", seen(lost), lag="16MB") == 503
    assert status("/readiness", seen(lost)) == 503


def test_an_unreachable_server_is_nothing_but_the_loop_may_be_alive() -> None:
    observation = seen(None, Turn())
    for path in ("/primary", "/replica", "/read-only", "/health", "/readiness"):
        assert status(path, observation) == 503
    assert status("/liveness", observation) == 200
    assert status("/liveness", seen(None, Turn(), alive=False)) == 503


@pytest.mark.parametrize(
    "text, expected", [("1048576", 1048576), ("1024kB", 1048576), ("16MB", 16 << 20)]
)
def test_lag_takes_bytes_with_units(text: str, expected: int) -> None:
    assert health.parse_lag({"lag": text}) == expected


@pytest.mark.parametrize("text", ["abc", "30s", "-1", "90%"])
def test_a_lag_that_is_not_bytes_is_a_bad_query(text: str) -> None:
    with pytest.raises(health.BadQuery):
        health.parse_lag({"lag": text})


def test_loop_alive_reads_the_age_of_the_latest_turn() -> None:
    assert health.loop_alive(Turn(observed_at=100.0), 5, now=104.0)
    assert not health.loop_alive(Turn(observed_at=100.0), 5, now=106.0)
    assert not health.loop_alive(None, 5, now=100.0)


def test_a_lock_verdict_older_than_its_trust_is_not_primary() -> None:
    # the loop still counts as alive, but its session may have expired since that turn
    observation = health.Observation(PRIMARY, None, Turn(), loop_alive=True, lock_current=False)
    assert status("/primary", observation) == 503
    assert status("/liveness", observation) == 200
    assert health.lock_trust_seconds(15) == 10


def test_liveness_allows_a_slow_turn() -> None:
    # an interval, -t on PostgreSQL, three Consul calls at 2 s connect + 5 s read each
    assert health.liveness_limit(interval=1, timeout=10) == 32


def test_the_body_has_patronis_fields_and_the_fence() -> None:
    document = health.body(seen(REPLICA, Turn(fenced_reason=None, holds_lock=False)))
    assert document["role"] == "replica"
    assert document["xlog"] == {"received_location": 900, "replayed_location": 800, "paused": False}
    assert document["lag"] == 100
    assert document["database_system_identifier"] == "7"
    assert document["leader_lock"] is False
    liveness = health.body(seen(None, Turn()), asked_postgres=False)
    assert "state" not in liveness and liveness["reporter_alive"] is True


@pytest.mark.parametrize(
    "text, family, where",
    [
        ("8008", socket.AF_INET, ("127.0.0.1", 8008)),
        ("0.0.0.0:8008", socket.AF_INET, ("0.0.0.0", 8008)),
        ("[::1]:8008", socket.AF_INET6, ("::1", 8008)),
        ("localhost:1", socket.AF_INET, ("localhost", 1)),
    ],
)
def test_listen_addresses(text: str, family: socket.AddressFamily, where: tuple[str, int]) -> None:
    address = parse_listen(text)
    assert (address.family, (address.host, address.port)) == (family, where)


def test_listen_on_a_unix_socket() -> None:
    address = parse_listen("unix:///run/pg/http.sock")
    assert (address.family, address.path, str(address)) == (
        socket.AF_UNIX,
        "/run/pg/http.sock",
        "unix:///run/pg/http.sock",
    )


@pytest.mark.parametrize(
    "text", ["::1:8008", "host:", "host:0", "host:70000", "unix://rel", ":8008"]
)
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(text)


def test_a_query_is_a_command_line_with_values_glued_to_options() -> None:
    query = [("warning", "16MB"), ("warning", "30s"), ("c", "--host=x"), ("verbose", "")]
    assert check_endpoint.command_line(query) == [
        "--warning=16MB",
        "--warning=30s",
        "-c--host=x",
        "--verbose",
    ]


def test_a_check_request_keeps_the_executables_parsing() -> None:
    request = check_endpoint.prepare("lag", [("warning", "16MB"), ("t", "3")])
    assert request is not None
    assert request.args == ("lag", "--warning=16MB", "-t3")
    assert (request.name, request.timeout, request.uses_postgres) == ("CHECK_POSTGRESQL", 3.0, True)
    mem = check_endpoint.prepare("mem", [])
    assert mem is not None and (mem.name, mem.uses_postgres) == ("MEM", False)
    assert check_endpoint.prepare("nosuch", []) is None


@pytest.mark.parametrize(
    "key",
    ["H", "host", "p", "port", "U", "user", "d", "dbname", "conninfo", "token_file", "consul-addr"],
)
def test_connection_options_are_refused_without_echoing_the_value(key: str) -> None:
    with pytest.raises(check_endpoint.Refused) as refused:
        check_endpoint.prepare("consul-role", [(key, "postgresql://u:secret@db")])
    assert refused.value.status == 400
    assert refused.value.report.status is Status.UNKNOWN
    assert "secret" not in refused.value.report.render()


@pytest.mark.parametrize(
    "query, message",
    [
        ([("nosuch", "1")], "No such option"),
        ([("warning", "")], "requires an argument"),
        ([("help", "")], "not served over HTTP"),
    ],
)
def test_usage_errors_are_400_with_clicks_message(
    query: list[tuple[str, str]], message: str
) -> None:
    with pytest.raises(check_endpoint.Refused) as refused:
        check_endpoint.prepare("alive", query)
    assert refused.value.status == 400
    assert message in refused.value.report.render()


@pytest.mark.parametrize(
    "subcommand, key",
    [("lag", "primary"), ("lag", "consul_addr"), ("mem", "root")],
)
def test_options_that_reach_another_server_or_read_files_are_refused(
    subcommand: str, key: str
) -> None:
    """lag's --primary connects to any conninfo with the daemon's passfile; mem's --root
    reads /proc and /sys under any directory."""
    with pytest.raises(check_endpoint.Refused) as refused:
        check_endpoint.prepare(subcommand, [(key, "host=elsewhere password=secret")])
    assert refused.value.status == 400
    assert "connection options are not taken from a request" in refused.value.report.render()
    assert "secret" not in refused.value.report.render()
