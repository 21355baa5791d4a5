"""checks.reporter.guard: who else holds the leader tag, and the consul-role verdict."""

from __future__ import annotations

from checks.reporter.guard import (
    fenced_reason,
    judge_tags,
    newer_rival,
    rival_leaders,
)


def entry(node: str, service_id: str, tags: list[str], timeline: str | None) -> dict:
    meta = {"pg_timeline": timeline} if timeline is not None else {}
    return {"Node": {"Node": node}, "Service": {"ID": service_id, "Tags": tags, "Meta": meta}}


ENTRIES = [
    entry("db1", "pg-db", ["leader"], "1"),  # ourselves, on node db1
    entry("db2", "pg-db", ["leader"], "2"),
    entry("db3", "pg-db", ["follower"], "2"),
    entry("db4", "pg-db", ["leader"], None),
]


def test_rivals_exclude_ourselves_followers_and_entries_without_timeline() -> None:
    rivals = rival_leaders(ENTRIES, service_id="pg-db", node="db1", leader_tag="leader")
    assert [(r.node, r.timeline) for r in rivals] == [("db2", 2)]


def test_unknown_node_uses_the_service_id() -> None:
    entries = [entry("n", "pg-db-1", ["leader"], "1"), entry("n", "pg-db-2", ["leader"], "2")]
    rivals = rival_leaders(entries, service_id="pg-db-1", node=None, leader_tag="leader")
    assert [r.service_id for r in rivals] == ["pg-db-2"]


def test_only_a_newer_timeline_fences() -> None:
    rivals = rival_leaders(ENTRIES, service_id="pg-db", node="db1", leader_tag="leader")
    assert newer_rival(rivals, 2) is None
    rival = newer_rival(rivals, 1)
    assert rival is not None
    assert "newer timeline 2" in fenced_reason(rival, 1)
    assert "node db2" in fenced_reason(rival, 1)


def verdict(role_tags: list[str], *, primary: bool, writable: bool = True, newer=None):
    return judge_tags(
        role_tags=role_tags,
        leader_tag="leader",
        follower_tag="follower",
        is_primary=primary,
        writable=writable and primary,
        timeline=1,
        newer=newer,
    )


def test_consistent_tags_are_ok() -> None:
    assert verdict(["leader"], primary=True).problem is None
    assert verdict(["follower"], primary=False).problem is None
    ok = verdict([], primary=True)
    assert ok.problem is None and ok.summary.startswith("no role tag")


def test_stale_tags_are_problems() -> None:
    assert verdict(["leader"], primary=False).problem == "tagged leader but this is a replica"
    assert "read-only primary" in verdict(["leader"], primary=True, writable=False).problem
    assert verdict(["follower"], primary=True).problem == "tagged follower but this is a primary"


def test_fenced_primary_is_a_problem_even_untagged() -> None:
    rivals = rival_leaders(ENTRIES, service_id="pg-db", node="db1", leader_tag="leader")
    result = verdict([], primary=True, newer=newer_rival(rivals, 1))
    assert result.problem is not None
    assert "newer timeline 2 on node db2" in result.problem
