"""The Patroni-compatible health endpoints: which status each path answers, and the body.

Configurations written for Patroni's REST API (HAProxy's ``option httpchk OPTIONS
/primary``, keepalived, cloud load balancers) work by changing only the port
(docs/design.md §8). 200 when the instance is what the path asks, 503 otherwise, a JSON
body on GET. Where this differs from Patroni (the man page says so too):

- There is no Patroni leader key. ``/primary`` is 200 only for a primary whose reporter
  holds the Consul leader lock, is not fenced, and has turned its loop recently: the lock is
  what keeps two primaries from both being served (docs/design.md §5).
- ``?lag=`` on a replica counts the bytes it has received or been told of by its primary
  (``latest_end_lsn``) and not replayed; with no WAL receiver that is unknown, and a
  replica whose lag is unknown is not within a limit. An unreadable ``lag`` is a 400, not
  "no limit".
- PostgreSQL tells a standby nothing about whether its primary waits for it, and the daemon
  asks only its own instance: ``/synchronous`` is 503 on every instance and
  ``/asynchronous`` answers as ``/replica`` (Patroni's answers without synchronous_mode).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from checks.units import Unit, UnitError, parse_quantity

if TYPE_CHECKING:
    from checks.postgres.probes.instance import InstanceFacts

PRIMARY_PATHS = frozenset({"/", "/primary", "/read-write"})
REPLICA_PATHS = frozenset({"/replica", "/asynchronous", "/async"})
SYNCHRONOUS_PATHS = frozenset({"/synchronous", "/sync"})
# answered without asking PostgreSQL
DAEMON_PATHS = frozenset({"/liveness"})
PATHS = (
    PRIMARY_PATHS
    | REPLICA_PATHS
    | SYNCHRONOUS_PATHS
    | DAEMON_PATHS
    | {"/read-only", "/health", "/readiness"}
)
# Patroni's default maximum_lag_on_failover, the limit /readiness uses when none is given
READINESS_DEFAULT_LAG_BYTES = 1048576


class RoleView(Protocol):
    """What the endpoints read of the reporter loop's latest turn (``RoleSnapshot``)."""

    @property
    def role(self) -> str: ...

    @property
    def tag(self) -> str | None: ...

    @property
    def holds_lock(self) -> bool: ...

    @property
    def fenced_reason(self) -> str | None: ...

    @property
    def observed_at(self) -> float: ...


class BadQuery(ValueError):
    """A query parameter the endpoint cannot use: 400."""


@dataclass(frozen=True)
class Observation:
    """One request's view: PostgreSQL's answer (or why none) and the loop's latest turn."""

    facts: InstanceFacts | None
    error: str | None
    loop: RoleView | None
    # the loop's turn is recent enough to trust its lock verdict
    loop_alive: bool


def loop_alive(loop: RoleView | None, stale_after: float, now: float | None = None) -> bool:
    if loop is None:
        return False
    now = time.monotonic() if now is None else now
    return now - loop.observed_at <= stale_after


def parse_lag(query: Mapping[str, str], key: str = "lag") -> int | None:
    """``?lag=16MB``: bytes, plain or with a unit, as Patroni takes it (1048576, 1024kB)."""
    text = query.get(key)
    if text is None:
        return None
    try:
        quantity = parse_quantity(text)
    except UnitError as exc:
        raise BadQuery(f"lag: {exc}") from None
    if quantity.unit not in (Unit.BYTES, Unit.NUMBER) or quantity.value < 0:
        raise BadQuery(f"lag: {text!r} is not an amount of WAL (e.g. 16MB or 1048576)")
    return int(quantity.value)


def needs_postgres(path: str) -> bool:
    return path not in DAEMON_PATHS


def status_for(path: str, query: Mapping[str, str], seen: Observation) -> int:
    """200 or 503 for a path of :data:`PATHS`; raises BadQuery for an unusable parameter."""
    if path in DAEMON_PATHS:
        return 200 if seen.loop_alive else 503
    max_lag = parse_lag(query)
    facts = seen.facts
    if path in PRIMARY_PATHS:
        ok = _is_leader(seen)
    elif path in REPLICA_PATHS:
        ok = _is_replica_within(facts, max_lag)
    elif path == "/read-only":
        ok = _is_leader(seen) or _is_replica_within(facts, max_lag)
    elif path == "/health":
        ok = facts is not None
    elif path == "/readiness":
        limit = READINESS_DEFAULT_LAG_BYTES if max_lag is None else max_lag
        ok = _is_leader(seen) or (
            _is_replica_within(facts, limit)
            and facts is not None
            and facts.receiver_status == "streaming"
        )
    else:  # SYNCHRONOUS_PATHS: see the module's docstring
        ok = False
    return 200 if ok else 503


def _is_leader(seen: Observation) -> bool:
    loop = seen.loop
    return (
        seen.facts is not None
        and not seen.facts.in_recovery
        and seen.loop_alive
        and loop is not None
        and loop.holds_lock
        and loop.fenced_reason is None
    )


def _is_replica_within(facts: InstanceFacts | None, max_lag: int | None) -> bool:
    if facts is None or not facts.in_recovery:
        return False
    if max_lag is None:
        return True
    return facts.replay_lag_bytes is not None and facts.replay_lag_bytes <= max_lag


def body(seen: Observation, *, asked_postgres: bool = True) -> dict[str, Any]:
    """The JSON document: Patroni's field names where it has one, then ours; the reporter
    loop's part alone when PostgreSQL was not asked (``/liveness``)."""
    document = _postgres_part(seen.facts, seen.error) if asked_postgres else {}
    loop = seen.loop
    document["leader_lock"] = bool(loop is not None and loop.holds_lock)
    document["tag"] = loop.tag if loop is not None else None
    document["fenced_reason"] = loop.fenced_reason if loop is not None else None
    document["reporter_alive"] = seen.loop_alive
    return document


def _postgres_part(facts: InstanceFacts | None, error: str | None) -> dict[str, Any]:
    if facts is None:
        return {"state": "unreachable", "role": "unknown", "error": error}
    document: dict[str, Any] = {
        "state": "running",
        "role": facts.role,
        "server_version": facts.server_version,
        "timeline": facts.timeline,
        "database_system_identifier": facts.system_identifier,
    }
    if facts.in_recovery:
        document["xlog"] = {
            "received_location": facts.received_position,
            "replayed_location": facts.replayed_position,
            "paused": facts.replay_paused,
        }
        document["replication_state"] = facts.receiver_status
        document["lag"] = facts.replay_lag_bytes
    else:
        document["xlog"] = {"location": facts.wal_position}
    return document
