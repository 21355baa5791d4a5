"""Split-brain guard: who else holds the leader tag, and on which timeline (pure logic).

DNS is discovery, not fencing (DESIGN.md §5): an old primary that comes back still answers
`pg_is_in_recovery() = false`. A promotion always starts a new timeline, so a primary whose
timeline is lower than that of another passing leader is the stale one. The timeline is the
current one (checks/postgres/probes/role.py), not the checkpoint's, which lags by minutes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from checks.reporter.reconcile import META_TIMELINE


@dataclass(frozen=True)
class RivalLeader:
    node: str
    service_id: str
    timeline: int

    def __str__(self) -> str:
        return f"service {self.service_id} on node {self.node}"


def rival_leaders(
    entries: Iterable[Mapping[str, Any]],
    *,
    service_id: str,
    node: str | None,
    leader_tag: str,
) -> list[RivalLeader]:
    """Passing instances other than ours in a `/v1/health/service` answer with the leader tag.

    Ours is the entry with our service ID on our node. When the node name is unknown, an
    entry with our service ID may be ours or another host's (conf.d ships the same ID on
    every host), so it counts too: a rival only matters on a timeline newer than ours,
    and our own entry publishes our timeline or an older one, so it never fences us.
    Entries without a published timeline, and entries with any check not passing, are not
    rivals (an instance the stale-tag guard dropped from DNS is no leader).
    """
    rivals = []
    for entry in entries:
        service = entry.get("Service") or {}
        entry_node = (entry.get("Node") or {}).get("Node", "?")
        entry_id = service.get("ID", "")
        if node is not None and entry_id == service_id and entry_node == node:
            continue
        if leader_tag not in (service.get("Tags") or []) or not is_passing(entry):
            continue
        timeline = _timeline(service.get("Meta") or {})
        if timeline is None:
            continue
        rivals.append(RivalLeader(node=entry_node, service_id=entry_id, timeline=timeline))
    return rivals


def is_passing(entry: Mapping[str, Any]) -> bool:
    """What `?passing` keeps: every check of the entry passing (warning is not)."""
    return all(check.get("Status") == "passing" for check in entry.get("Checks") or [])


def sees_itself(
    entries: Iterable[Mapping[str, Any]], *, service_id: str, node: str | None = None
) -> bool:
    """Whether our own instance is in a `/v1/health/service` answer (read without
    `?passing`, so our own state does not matter).

    Consul filters that list by ACL instead of refusing it: a token without
    `service:read` on the service or `node:read` on a node silently gets fewer entries.
    Our own entry missing is the one symptom we can see, and it means the guard may be
    blind to rivals too.
    """
    return any(
        (entry.get("Service") or {}).get("ID") == service_id
        and (node is None or (entry.get("Node") or {}).get("Node") == node)
        for entry in entries
    )


BLIND_SUMMARY = "split-brain guard blind"


def blind_reason(service_name: str, service_id: str) -> str:
    """Why the guard cannot vouch for this primary, naming the permission it lacks."""
    return (
        f"{BLIND_SUMMARY}: service {service_id} is missing from Consul's health answer "
        f'for "{service_name}", so a rival leader may be hidden too; the token needs '
        f'service:read on "{service_name}" and node:read on the nodes '
        '(e.g. node_prefix "" { policy = "read" }), unless the service was registered '
        "a moment ago and has not reached the catalog yet"
    )


def blind_summary(service_name: str) -> str:
    """The short form of blind_reason() for a check's first line."""
    return (
        f"{BLIND_SUMMARY}: not in the catalog yet, or token lacks service:read on "
        f'"{service_name}", node:read'
    )


def _timeline(meta: Mapping[str, str]) -> int | None:
    try:
        return int(meta.get(META_TIMELINE, ""))
    except ValueError:
        return None


def newer_rival(rivals: Iterable[RivalLeader], timeline: int) -> RivalLeader | None:
    """The rival on the newest timeline above ours, if any."""
    newer = [rival for rival in rivals if rival.timeline > timeline]
    return max(newer, key=lambda rival: rival.timeline, default=None)


def fenced_reason(rival: RivalLeader, timeline: int) -> str:
    return (
        f"fenced: {rival} holds the leader tag on newer timeline {rival.timeline} "
        f"(this primary is on timeline {timeline}); rebuild it as a replica "
        "(pg_rewind) or stop it"
    )


@dataclass(frozen=True)
class TagVerdict:
    """What the stale-tag check concludes: `problem` is None when all is well.

    `critical` problems must drop the instance from DNS (Consul: exit 2); the others are
    WARNING, which keeps it there (DESIGN.md §5).
    """

    problem: str | None
    summary: str
    critical: bool = False


def judge_tags(
    *,
    role_tags: list[str],
    leader_tag: str,
    follower_tag: str,
    is_primary: bool,
    writable: bool,
    timeline: int,
    newer: RivalLeader | None,
    blind: str | None = None,
) -> TagVerdict:
    """The consul-role check's decision, from the service's tags and the real role.

    CRITICAL only when this instance must leave DNS: fenced by a newer timeline, or
    tagged leader without being a writable primary. WARNING (stays in DNS): the guard is
    blind (`blind` is the short reason), tagged follower but a primary (the moment between
    a promotion and the reporter's retag: such an instance is not in `leader.` anyway),
    and no role tag where the reporter would set one (it is probably not running).
    """
    role = ("primary" if writable else "read-only primary") if is_primary else "replica"
    if newer is not None and is_primary:
        return TagVerdict(
            f"fenced: primary on timeline {timeline} but {newer.service_id} holds "
            f"{leader_tag} on newer timeline {newer.timeline} on node {newer.node}",
            "",
            critical=True,
        )
    if leader_tag in role_tags and not (is_primary and writable):
        return TagVerdict(f"tagged {leader_tag} but this is a {role}", "", critical=True)
    if blind is not None:
        return TagVerdict(blind, "")
    if follower_tag in role_tags and is_primary:
        return TagVerdict(f"tagged {follower_tag} but this is a {role}", "")
    if not role_tags:
        if is_primary and not writable:
            # the reporter tags no read-only primary: nothing is missing
            return TagVerdict(None, f"no role tag, {role} on timeline {timeline}")
        return TagVerdict("no role tag: is pg-role-reporter running?", "")
    return TagVerdict(None, f"tagged {','.join(role_tags)}, {role} on timeline {timeline}")
