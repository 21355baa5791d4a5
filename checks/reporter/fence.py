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


# -- the consul-role check's verdict -----------------------------------------------------


@dataclass(frozen=True)
class RoleVerdict:
    """`problem` None means OK; `critical` problems must drop the instance from DNS
    (Consul: exit 2), the others are WARNING, which keeps it there (docs/design.md §5)."""

    problem: str | None
    summary: str = ""
    critical: bool = False


@dataclass(frozen=True)
class ReporterPresence:
    """What PostgreSQL says about the reporter's kept connection."""

    connections: int
    silent_seconds: float | None  # since its last query; None when not visible

    def hung(self, limit: float) -> bool:
        return self.silent_seconds is not None and self.silent_seconds > limit


def judge_role(
    *,
    role_tags: list[str],
    leader_tag: str,
    follower_tag: str,
    is_primary: bool,
    writable: bool,
    timeline: int,
    lock_key: str,
    holder: LockHolder | None,
    lock_error: str | None,
    our_session: str | None,
    published_reason: str | None,
    reporter: ReporterPresence | None,
    silent_limit: float,
) -> RoleVerdict:
    """consul-role's decision from the tags, the lock, the reporter's published reason and
    its presence on PostgreSQL.

    CRITICAL only when this instance must leave DNS, or is a writable primary kept out of
    `leader.` by something an operator must fix: tagged leader without being a writable
    primary or without holding the lock; tagged leader while its reporter is hung; fenced
    (another service holds the lock), or the reporter's own published reason on a primary.
    Everything else is WARNING, which keeps the instance in DNS.
    """
    role = ("primary" if writable else "read-only primary") if is_primary else "replica"
    tagged_leader = leader_tag in role_tags
    we_hold = holder is not None and our_session is not None and holder.session == our_session
    absent = reporter is not None and reporter.connections == 0
    hung = reporter is not None and reporter.hung(silent_limit)
    if tagged_leader and not (is_primary and writable):
        return RoleVerdict(f"tagged {leader_tag} but this is a {role}", critical=True)
    if tagged_leader and lock_error is None and not we_hold:
        who = f"held by {holder}" if holder is not None else "free"
        return RoleVerdict(
            f"tagged {leader_tag} without holding the leader lock {lock_key} ({who})",
            critical=True,
        )
    if tagged_leader and absent:
        # a clean stop removes the tag first: this reporter died without doing so
        return RoleVerdict(
            f"tagged {leader_tag} but pg-role-reporter is not connected: nothing keeps the fence",
            critical=True,
        )
    if tagged_leader and hung:
        assert reporter is not None and reporter.silent_seconds is not None
        return RoleVerdict(
            f"tagged {leader_tag} but pg-role-reporter is hung (no query for "
            f"{reporter.silent_seconds:.0f}s): nothing keeps the fence",
            critical=True,
        )
    if is_primary and writable and holder is not None and not we_hold and lock_error is None:
        return RoleVerdict(fenced_summary(holder, timeline=timeline), critical=True)
    if published_reason and not tagged_leader and is_primary:
        return RoleVerdict(published_reason, critical=writable)
    if lock_error is not None and (tagged_leader or (is_primary and writable)):
        return RoleVerdict(f"cannot read the leader lock: {lock_error}")
    if absent:
        return RoleVerdict("pg-role-reporter is not connected to this server (stopped?)")
    if hung:
        assert reporter is not None and reporter.silent_seconds is not None
        return RoleVerdict(
            f"pg-role-reporter is hung (no query for {reporter.silent_seconds:.0f}s)"
        )
    if published_reason and not role_tags:
        return RoleVerdict(published_reason)
    if follower_tag in role_tags and is_primary:
        return RoleVerdict(f"tagged {follower_tag} but this is a {role}")
    if not role_tags:
        if is_primary and not writable:
            # the reporter tags no read-only primary: nothing is missing
            return RoleVerdict(None, f"no role tag, {role} on timeline {timeline}")
        return RoleVerdict("no role tag: is pg-role-reporter running?")
    held = ", holds the leader lock" if tagged_leader else ""
    return RoleVerdict(None, f"tagged {','.join(role_tags)}, {role} on timeline {timeline}{held}")
