"""What the local service registration should be, given PostgreSQL's role (pure logic).

docs/design.md §5: conf.d holds the service with role-neutral tags; the reporter adds exactly
one role tag and its own Meta keys by read-modify-write, keeping every other field, and
writes only when something differs (an identical PUT would still cost a sync).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

META_ROLE = "pg_role"
META_TIMELINE = "pg_timeline"
META_SYSTEM_IDENTIFIER = "pg_system_identifier"
META_FENCED_REASON = "pg_fenced_reason"
# The leader's current WAL position (pg_current_wal_lsn()::text), for `lag` on replicas.
META_WAL_LSN = "pg_wal_lsn"
# The session holding the leader lock, so consul-role can tell "ours" from the KV entry
# without reading the node name (agent:read) or the session (session:read).
META_LOCK_SESSION = "pg_lock_session"
OUR_META_KEYS = (
    META_ROLE,
    META_TIMELINE,
    META_SYSTEM_IDENTIFIER,
    META_FENCED_REASON,
    META_WAL_LSN,
    META_LOCK_SESSION,
)
# Consul refuses Meta values longer than 512 characters.
META_VALUE_LIMIT = 512
# Keys the agent derives and returns from GET /v1/agent/service/:id that the register
# endpoint refuses. ContentHash is observed in 1.8.7; Datacenter and PeerName come with
# later versions and are read-only there too.
_READ_ONLY_SERVICE_KEYS = frozenset({"ContentHash", "Datacenter", "PeerName"})


@dataclass(frozen=True)
class Observed:
    """What the reporter knows about its PostgreSQL: facts, or why it has none.

    `role` is "primary", "replica" or "unreachable"; `writable` only means something on a
    primary (default_transaction_read_only off).
    """

    role: str
    writable: bool = False
    timeline: int | None = None
    system_identifier: str | None = None
    error: str | None = None
    # the port the server listens on (current_setting('port')), to match the service's
    server_port: int | None = None

    @property
    def reachable(self) -> bool:
        return self.role != "unreachable"


@dataclass(frozen=True)
class TagNames:
    leader: str = "leader"
    follower: str = "follower"

    @property
    def all(self) -> tuple[str, str]:
        return (self.leader, self.follower)


def desired_role_tag(observed: Observed, names: TagNames, *, fenced: bool) -> str | None:
    """The one role tag this instance should carry; None fails closed (no DNS answer)."""
    if observed.role == "primary":
        return names.leader if observed.writable and not fenced else None
    if observed.role == "replica":
        return names.follower
    return None


def desired_meta(
    observed: Observed,
    *,
    fenced_reason: str | None,
    wal_lsn: str | None = None,
    lock_session: str | None = None,
) -> dict[str, str]:
    meta = {META_ROLE: observed.role}
    if observed.role == "primary" and not observed.writable:
        meta[META_ROLE] = "primary-read-only"
    if observed.timeline is not None:
        meta[META_TIMELINE] = str(observed.timeline)
    if observed.system_identifier is not None:
        meta[META_SYSTEM_IDENTIFIER] = observed.system_identifier
    if fenced_reason:
        meta[META_FENCED_REASON] = _fit(fenced_reason)
    if wal_lsn is not None:
        meta[META_WAL_LSN] = wal_lsn
    if lock_session is not None:
        meta[META_LOCK_SESSION] = lock_session
    return meta


def _fit(text: str) -> str:
    return text if len(text) <= META_VALUE_LIMIT else text[: META_VALUE_LIMIT - 1] + "…"


def role_tags_of(tags: Sequence[str], names: TagNames) -> list[str]:
    return [tag for tag in tags if tag in names.all]


def merged_tags(current: Sequence[str], want: str | None, names: TagNames) -> list[str]:
    """Every tag that is not ours, in its order, plus `want`; an existing `want` stays put."""
    tags: list[str] = []
    for tag in current:
        if (tag in names.all and tag != want) or tag in tags:
            continue
        tags.append(tag)
    if want is not None and want not in tags:
        tags.append(want)
    return tags


def merged_meta(current: Mapping[str, str] | None, ours: Mapping[str, str]) -> dict[str, str]:
    meta = {k: v for k, v in (current or {}).items() if k not in OUR_META_KEYS}
    meta.update(ours)
    return meta


@dataclass(frozen=True)
class Change:
    """A registration to PUT, and the words for the log line."""

    registration: dict[str, Any]
    old_tags: list[str]
    new_tags: list[str]
    old_meta: dict[str, str]
    new_meta: dict[str, str]

    def describe(self, names: TagNames) -> str:
        old = ",".join(role_tags_of(self.old_tags, names)) or "none"
        new = ",".join(role_tags_of(self.new_tags, names)) or "none"
        service_id = self.registration.get("ID") or self.registration.get("Name")
        parts = [f"role tag {old} -> {new}" if old != new else f"role tag {new} (unchanged)"]
        changed = sorted(
            key
            for key in set(self.old_meta) | set(self.new_meta)
            if self.old_meta.get(key) != self.new_meta.get(key)
        )
        if changed:
            parts.append(
                "meta "
                + ", ".join(f"{key}={self.new_meta.get(key, '(removed)')}" for key in changed)
            )
        return f"service {service_id}: " + "; ".join(parts)


def registration_from_agent_service(service: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a `GET /v1/agent/service/:id` answer into a body for `register_service()`.

    Keeps every field (the read-modify-write must not lose what conf.d or another tool
    set); renames `Service` to `Name` and drops the read-only keys the register endpoint
    rejects. Leaves out `Checks`, so the service's existing checks stay attached.
    """
    registration = {
        key: value for key, value in service.items() if key not in _READ_ONLY_SERVICE_KEYS
    }
    if "Service" in registration:
        registration.setdefault("Name", registration["Service"])
        del registration["Service"]
    return registration


def plan(
    service: Mapping[str, Any],
    observed: Observed,
    names: TagNames,
    *,
    fenced_reason: str | None = None,
    leader_allowed: bool = True,
    any_tag_allowed: bool = True,
    wal_lsn: str | None = None,
    lock_session: str | None = None,
) -> Change | None:
    """The registration to PUT so `service` (a GET /v1/agent/service answer) matches
    `observed`, or None when it already does.

    `leader_allowed` is the fence's say (the lock is ours); `any_tag_allowed` False
    withholds every role tag (this service is not the server the reporter reads);
    `fenced_reason` is published whenever a tag is withheld for a reason an operator must
    fix.
    """
    current_tags = list(service.get("Tags") or [])
    current_meta = dict(service.get("Meta") or {})
    fenced = fenced_reason is not None or not leader_allowed
    want = desired_role_tag(observed, names, fenced=fenced) if any_tag_allowed else None
    new_tags = merged_tags(current_tags, want, names)
    ours = desired_meta(
        observed,
        fenced_reason=fenced_reason,
        wal_lsn=wal_lsn if want == names.leader else None,
        lock_session=lock_session if want == names.leader else None,
    )
    new_meta = merged_meta(current_meta, ours)
    if new_tags == current_tags and new_meta == current_meta:
        return None
    registration = registration_from_agent_service(service)
    registration["Tags"] = new_tags
    registration["Meta"] = new_meta
    return Change(registration, current_tags, new_tags, current_meta, new_meta)
