"""The consul-role check's verdict: does the role tag tell the truth? (pure logic)

What consul-role decides from the service's tags, PostgreSQL's role, the leader lock's
holder, the reporter's published reason and its presence on PostgreSQL. CRITICAL removes
the instance from DNS (Consul: exit 2), WARNING keeps it there (docs/design.md §5).

Leaf package: standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass

from checks.roletag.fencing import LockHolder, fenced_summary


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
