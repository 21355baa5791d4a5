"""checks.reporter.guard: who else holds the leader tag, and the consul-role verdict."""

from __future__ import annotations

import pytest

from checks.reporter.guard import (
    blind_reason,
    blind_summary,
    fenced_reason,
    judge_tags,
    newer_rival,
    rival_leaders,
    sees_itself,
)


def entry(
    node: str, service_id: str, tags: list[str], timeline: str | None, *, status="passing"
) -> dict:
    meta = {"pg_timeline": timeline} if timeline is not None else {}
    return {
        "Node": {"Node": node},
        "Service": {"ID": service_id, "Tags": tags, "Meta": meta},
        "Checks": [
            {"CheckID": "serfHealth", "Status": "passing"},
            {"CheckID": f"{service_id}-role-tag", "Status": status},
        ],
    }


ENTRIES = [
    entry("db1", "pg-db", ["leader"], "1"),  # ourselves, on node db1
    entry("db2", "pg-db", ["leader"], "2"),
    entry("db3", "pg-db", ["follower"], "2"),
    entry("db4", "pg-db", ["leader"], None),
]


def test_rivals_exclude_ourselves_followers_and_entries_without_timeline() -> None:
    rivals = rival_leaders(ENTRIES, service_id="pg-db", node="db1", leader_tag="leader")
    assert [(r.node, r.timeline) for r in rivals] == [("db2", 2)]


def test_unknown_node_counts_every_leader_and_ours_cannot_fence_us() -> None:
    entries = [entry("n", "pg-db-1", ["leader"], "1"), entry("n", "pg-db-2", ["leader"], "2")]
    rivals = rival_leaders(entries, service_id="pg-db-1", node=None, leader_tag="leader")
    assert [r.service_id for r in rivals] == ["pg-db-1", "pg-db-2"]
    assert newer_rival(rivals, 1).service_id == "pg-db-2"
    assert newer_rival(rivals[:1], 1) is None


def test_same_service_id_on_every_host_still_fences() -> None:
    # the shipped conf.d gives the service the ID pg-db on every host
    entries = [entry("db1", "pg-db", [], "1"), entry("db2", "pg-db", ["leader"], "2")]
    rivals = rival_leaders(entries, service_id="pg-db", node=None, leader_tag="leader")
    rival = newer_rival(rivals, 1)
    assert rival is not None and rival.node == "db2"


def test_only_passing_rivals_count() -> None:
    entries = [
        entry("db2", "pg-db-2", ["leader"], "2", status="critical"),
        entry("db3", "pg-db-3", ["leader"], "3", status="warning"),
    ]
    assert rival_leaders(entries, service_id="pg-db-1", node="db1", leader_tag="leader") == []


def test_the_guard_must_see_itself() -> None:
    assert sees_itself(ENTRIES, service_id="pg-db")
    assert sees_itself(ENTRIES, service_id="pg-db", node="db3")
    assert not sees_itself(ENTRIES, service_id="pg-db", node="db9")
    # what a token without node:read gets: an empty list, ourselves included
    assert not sees_itself([], service_id="pg-db-1")
    # a critical instance is still in the unfiltered answer: not blind
    assert sees_itself([entry("n", "pg-db-1", [], "1", status="critical")], service_id="pg-db-1")


def test_blind_reason_names_the_missing_permissions_on_the_service_name() -> None:
    reason = blind_reason("pg-db", "pg-db-1")
    assert reason.startswith("split-brain guard blind: service pg-db-1 is missing")
    assert 'service:read on "pg-db"' in reason
    assert "node:read" in reason
    assert 'node_prefix "" { policy = "read" }' in reason
    summary = blind_summary("pg-db")
    assert summary.startswith("split-brain guard blind:") and "token lacks" in summary
    assert len(summary) < 100


def test_only_a_newer_timeline_fences() -> None:
    rivals = rival_leaders(ENTRIES, service_id="pg-db", node="db1", leader_tag="leader")
    assert newer_rival(rivals, 2) is None
    rival = newer_rival(rivals, 1)
    assert rival is not None
    assert "newer timeline 2" in fenced_reason(rival, 1)
    assert "node db2" in fenced_reason(rival, 1)


def verdict(role_tags: list[str], *, primary: bool, writable: bool = True, newer=None, blind=None):
    return judge_tags(
        role_tags=role_tags,
        leader_tag="leader",
        follower_tag="follower",
        is_primary=primary,
        writable=writable and primary,
        timeline=1,
        newer=newer,
        blind=blind,
    )


def test_consistent_tags_are_ok() -> None:
    assert verdict(["leader"], primary=True).problem is None
    assert verdict(["follower"], primary=False).problem is None
    # the reporter tags no read-only primary: nothing is missing
    ok = verdict([], primary=True, writable=False)
    assert ok.problem is None and ok.summary.startswith("no role tag")


def test_leaving_dns_is_critical() -> None:
    stale = verdict(["leader"], primary=False)
    assert stale.problem == "tagged leader but this is a replica" and stale.critical
    read_only = verdict(["leader"], primary=True, writable=False)
    assert "read-only primary" in read_only.problem and read_only.critical


def test_just_promoted_is_a_warning() -> None:
    # tagged follower: not in leader. anyway; WARNING keeps it in pg-db.service
    result = verdict(["follower"], primary=True)
    assert result.problem == "tagged follower but this is a primary"
    assert not result.critical


def test_no_role_tag_where_the_reporter_would_set_one_is_a_warning() -> None:
    for primary in (True, False):
        result = verdict([], primary=primary)
        assert result.problem == "no role tag: is pg-role-reporter running?"
        assert not result.critical


def test_a_blind_guard_is_a_warning_but_never_hides_a_critical() -> None:
    blind = "split-brain guard blind: token needs ..."
    for tags in ([], ["leader"], ["follower"]):
        result = verdict(tags, primary=True, blind=blind)
        assert result.problem == blind and not result.critical
    assert verdict(["leader"], primary=False, blind=blind).critical


def test_fenced_primary_is_critical_even_untagged() -> None:
    rivals = rival_leaders(ENTRIES, service_id="pg-db", node="db1", leader_tag="leader")
    result = verdict([], primary=True, newer=newer_rival(rivals, 1), blind="blind")
    assert result.problem is not None and result.critical
    assert "newer timeline 2 on node db2" in result.problem


class FakeConsul:
    def __init__(self, entries: list[dict]) -> None:
        self.entries = entries
        self.reads = 0

    def health_service(self, name: str, **filters: object) -> list[dict]:
        assert name == "pg-db" and not filters, "every instance, not only passing leaders"
        self.reads += 1
        return self.entries


@pytest.fixture(autouse=True)
def propagating_log(monkeypatch: pytest.MonkeyPatch) -> None:
    # the CLI's logging setup (another test may have run it) stops propagation to caplog
    from checks.role_reporter import log

    monkeypatch.setattr(log, "propagate", True)


def reporter(entries: list[dict], *, once: bool = False):
    from checks.consul import ConsulSettings
    from checks.reporter.reconcile import TagNames
    from checks.role_reporter import Options, Reporter

    options = Options("pg-db-1", TagNames(), interval=1.0, dry_run=False, once=once)
    made = Reporter(options, ConsulSettings(), pg=None)  # type: ignore[arg-type]
    made.consul = FakeConsul(entries)  # type: ignore[assignment]
    return made


def observed_primary():
    from checks.reporter.reconcile import Observed

    return Observed(role="primary", writable=True, timeline=1)


def test_reporter_fails_closed_when_blind_and_rechecks_every_loop(caplog) -> None:
    import logging

    made = reporter([])  # what a token without node:read gets
    service = {"ID": "pg-db-1", "Service": "pg-db"}
    with caplog.at_level(logging.INFO, logger="pg-role-reporter"):
        reason = made.fenced_by(service, observed_primary(), force=False)
        assert reason is not None and reason.startswith("split-brain guard blind")
        # within the grace (an agent that has just started): no ERROR yet
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        # blind is never cached: the next loop reads again
        made.fenced_by(service, observed_primary(), force=False)
        assert made.consul.reads == 2
        made.guard_blind_since -= 10
        made.fenced_by(service, observed_primary(), force=False)
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and 'node_prefix "" { policy = "read" }' in errors[0]
        made.consul.entries = [entry("db1", "pg-db-1", [], "1")]
        assert made.fenced_by(service, observed_primary(), force=False) is None
        assert "sees service pg-db-1 again" in caplog.text


def test_reporter_once_logs_blind_at_once(caplog) -> None:
    import logging

    made = reporter([], once=True)
    with caplog.at_level(logging.INFO, logger="pg-role-reporter"):
        made.fenced_by({"Service": "pg-db"}, observed_primary(), force=True)
    assert "ERROR" in [r.levelname for r in caplog.records]
