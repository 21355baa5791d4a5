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
    """Instances other than ours in a `/v1/health/service` answer that carry the leader tag.

    Ours is the entry with our service ID on our node; when the node name is unknown, every
    entry with another service ID, or on another node, is a rival only if it publishes a
    timeline (ours cannot outrank itself, so the comparison stays safe).
    """
    rivals = []
    for entry in entries:
        service = entry.get("Service") or {}
        entry_node = (entry.get("Node") or {}).get("Node", "?")
        entry_id = service.get("ID", "")
        if entry_id == service_id and (node is None or entry_node == node):
            continue
        if leader_tag not in (service.get("Tags") or []):
            continue
        timeline = _timeline(service.get("Meta") or {})
        if timeline is None:
            continue
        rivals.append(RivalLeader(node=entry_node, service_id=entry_id, timeline=timeline))
    return rivals


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
    """What the stale-tag check concludes: `problem` is None when tag and role agree."""

    problem: str | None
    summary: str


def judge_tags(
    *,
    role_tags: list[str],
    leader_tag: str,
    follower_tag: str,
    is_primary: bool,
    writable: bool,
    timeline: int,
    newer: RivalLeader | None,
) -> TagVerdict:
    """The consul-role check's decision, from the service's tags and the real role."""
    role = ("primary" if writable else "read-only primary") if is_primary else "replica"
    if newer is not None and is_primary:
        return TagVerdict(
            f"fenced: primary on timeline {timeline} but {newer.service_id} holds "
            f"{leader_tag} on newer timeline {newer.timeline} on node {newer.node}",
            "",
        )
    if leader_tag in role_tags and not (is_primary and writable):
        return TagVerdict(f"tagged {leader_tag} but this is a {role}", "")
    if follower_tag in role_tags and is_primary:
        return TagVerdict(f"tagged {follower_tag} but this is a {role}", "")
    if not role_tags:
        return TagVerdict(None, f"no role tag, {role} on timeline {timeline}")
    return TagVerdict(None, f"tagged {','.join(role_tags)}, {role} on timeline {timeline}")
