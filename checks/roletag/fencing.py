"""The fence: who may carry the leader tag, decided by a Consul KV lock (pure logic).

Reading the catalog to ask "is there a newer leader?" is no fence (docs/design.md §5): the
catalog is eventually consistent, DNS serves *warning* instances too, and two primaries
promoted by mistake share a timeline. A KV lock is decided by the servers' raft
consensus: `PUT /v1/kv/<key>?acquire=<session>` succeeds for one session at a time.
So a writable primary carries the leader tag only while its session holds the lock:

- acquire the lock first, then add the tag; remove the tag first, then release the lock,
  so there is no moment at which two services both carry the tag with a lock between them;
- a writable primary that finds the lock held by another session is *fenced*: no tag,
  the reason published in Meta (`pg_fenced_reason`) and logged at ERROR;
- a primary that becomes read-only, a replica or unreachable releases the lock explicitly,
  which imposes no lock-delay, so a planned switchover stays fast.

Consul facts this relies on (docs/design.md §5, Consul's session documentation): a session
is invalidated when its node is deregistered or fails (serfHealth), when any check bound to
it goes critical (warning does not) or is deregistered, when it is destroyed, or when its
TTL runs out (Consul waits up to twice the TTL); with behavior `release` its locks are then
released, and the *lock-delay* keeps anyone from acquiring them for that long afterwards
(an explicit release has none; destroying a session that holds it is an invalidation
and does impose it, observed with 1.8.7). Patroni holds its leader key the same way
(TTL session, lock-delay of a millisecond, a blocking query on the key).

Leaf module: imports nothing heavier than the standard library.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any


def default_lock_key(service_name: str) -> str:
    return f"service/{service_name}/leader"


@dataclass(frozen=True)
class LockHolder:
    """The session holding the lock and what its value says about the holder."""

    session: str
    node: str = "?"
    service_id: str = "?"
    timeline: int | None = None
    system_identifier: str | None = None

    @property
    def foreign(self) -> bool:
        """The value is not one a reporter writes (`consul lock`, a hand-made session):
        only the session can lead an operator to whoever holds it."""
        return self.service_id == "?" and self.node == "?"

    def __str__(self) -> str:
        if self.foreign:
            return f"session {self.session} (not a pg-role-reporter's value)"
        return f"service {self.service_id} on node {self.node}"


def lock_value(
    *, node: str, service_id: str, timeline: int | None, system_identifier: str | None
) -> str:
    """The JSON the holder writes into the key (compact: it is replicated by raft)."""
    return json.dumps(
        {
            "node": node,
            "service_id": service_id,
            "timeline": timeline,
            "system_identifier": system_identifier,
        },
        separators=(",", ":"),
        sort_keys=True,
    )


def holder_of(entry: Mapping[str, Any] | None) -> LockHolder | None:
    """The holder in a `GET /v1/kv/<key>` entry; None when nobody holds the lock.

    A key without `Session` is free: released, or its session invalidated. A value that is
    not ours (another tool, hand-edited) still names a holder: the session.
    """
    if not entry or not entry.get("Session"):
        return None
    session = str(entry["Session"])
    value = _decode_value(entry.get("Value"))
    try:
        data = json.loads(value) if value else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    timeline = data.get("timeline")
    return LockHolder(
        session=session,
        node=str(data.get("node") or "?"),
        service_id=str(data.get("service_id") or "?"),
        timeline=timeline if isinstance(timeline, int) else None,
        system_identifier=(
            str(data["system_identifier"]) if data.get("system_identifier") else None
        ),
    )


def _decode_value(raw: Any) -> str:
    """KV values come base64-encoded in the JSON answer."""
    if not raw:
        return ""
    import base64
    import binascii

    try:
        return base64.b64decode(raw).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return ""


class Step(Enum):
    ACQUIRE = "acquire"  # lock free: take it (and only then tag)
    HOLD = "hold"  # ours: keep the tag
    REFRESH = "refresh"  # ours, but its value is out of date (new timeline): rewrite it
    FENCED = "fenced"  # another session holds it: no tag
    RELEASE = "release"  # ours but we must not lead: untag, then release
    IDLE = "idle"  # neither wanted nor held


def fence_step(
    *,
    wants_leader: bool,
    holder: LockHolder | None,
    our_session: str | None,
    timeline: int | None = None,
) -> Step:
    ours = holder is not None and our_session is not None and holder.session == our_session
    if not wants_leader:
        return Step.RELEASE if ours else Step.IDLE
    if holder is None:
        return Step.ACQUIRE
    if ours:
        assert holder is not None
        return Step.REFRESH if timeline is not None and holder.timeline != timeline else Step.HOLD
    return Step.FENCED


FENCED_PREFIX = "fenced"


def fenced_reason(holder: LockHolder, *, key: str, timeline: int | None) -> str:
    """Why a writable primary may not lead, naming the holder (log, Meta, consul-role)."""
    where = ""
    if holder.timeline is not None and timeline is not None:
        if holder.timeline > timeline:
            where = f" on newer timeline {holder.timeline} (this primary is on {timeline})"
        elif holder.timeline == timeline:
            where = f" on the same timeline {timeline}: two primaries (replicas promoted twice?)"
        else:
            where = f" on older timeline {holder.timeline} (this primary is on {timeline})"
    return (
        f"{FENCED_PREFIX}: {holder} holds the leader lock {key}{where}; rebuild this one "
        "as a replica (pg_rewind) or stop it"
    )


def fenced_summary(holder: LockHolder, *, timeline: int | None) -> str:
    """fenced_reason() short enough for a check's first line."""
    where = ""
    if holder.timeline is not None and timeline is not None:
        relation = (
            "newer"
            if holder.timeline > timeline
            else "the same"
            if holder.timeline == timeline
            else "older"
        )
        where = f" on {relation} timeline {holder.timeline} (this primary: {timeline})"
    who = str(holder) if holder.foreign else f"{holder.service_id} on node {holder.node}"
    return f"{FENCED_PREFIX}: {who} holds the lock{where}"


def lock_delay_reason(key: str) -> str:
    return (
        f"the leader lock {key} is free but in its lock-delay (its last holder's session "
        "ended without releasing it); retrying"
    )


WAITING_FOR_CHECK = "waiting for a check bound to the session to pass"
TWIN = "another session holds the leader lock for this same service"


def twin_reason(holder: LockHolder) -> str:
    return (
        f"{TWIN} (session {holder.session}): a second pg-role-reporter for it, or this "
        "one's previous run (then until its session's TTL ends); leaving the service as it is"
    )


def waiting_for_check_reason(consul_said: str) -> str:
    return f"{WAITING_FOR_CHECK} before taking the leader lock ({consul_said})"


def fenced_by(
    holder: LockHolder, *, service_id: str, node: str, key: str, timeline: int | None
) -> str:
    """Why a writable primary whose session is not `holder`'s may not lead.

    When the holder is this very service (the id is unique on its agent, `node` is this
    reporter's session's node), it is a second reporter for it or this reporter's previous
    run, killed before it could release (its session lives until the TTL). Fencing would
    take the tag off the one legitimate leader for that long (and two live reporters would
    flip it on and off); the lock covers the tag, so that is a twin, not a fence.
    """
    if holder.service_id == service_id and holder.node == node != "?":
        return twin_reason(holder)
    return fenced_reason(holder, key=key, timeline=timeline)


def is_twin(reason: str | None) -> bool:
    """The holder of the lock is this service itself (see fenced_by): leave it alone."""
    return reason is not None and reason.startswith(TWIN)


def is_transient(reason: str | None, *, key: str) -> bool:
    """A reason that ends on its own within seconds (the lock-delay, a bound check still
    starting): logged at INFO, not as a fault."""
    return reason is not None and (
        reason == lock_delay_reason(key) or reason.startswith(WAITING_FOR_CHECK)
    )


# -- identity: is this service the server we read? ---------------------------------------


def identity_problem(
    *,
    service_id: str,
    service_port: int | None,
    server_port: int | None,
    published_system_identifier: str | None,
    system_identifier: str | None,
) -> str | None:
    """Why the reporter must not tag this service for this server, or None.

    A reporter started with the wrong --service-id (another instance's) would otherwise
    tag that instance with this server's role: a replica in `leader.`.
    """
    if service_port and server_port and service_port != server_port:
        return (
            f"service {service_id} is registered with port {service_port} but this "
            f"PostgreSQL listens on {server_port}: wrong --service-id or PGPORT?"
        )
    if (
        published_system_identifier
        and system_identifier
        and published_system_identifier != system_identifier
    ):
        return (
            f"service {service_id} publishes system identifier {published_system_identifier} "
            f"but this PostgreSQL is {system_identifier}: wrong --service-id, or a rebuilt "
            "cluster (consul reload clears the published one)"
        )
    return None
