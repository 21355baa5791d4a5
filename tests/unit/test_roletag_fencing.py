"""checks.roletag.fencing and .verdict: the lock decisions, identity, and the consul-role
verdict."""

from __future__ import annotations

import base64
from typing import Any

from checks.roletag.fencing import (
    TWIN,
    LockHolder,
    Step,
    default_lock_key,
    fence_step,
    fenced_by,
    fenced_reason,
    fenced_summary,
    holder_of,
    identity_problem,
    is_transient,
    is_twin,
    lock_delay_reason,
    lock_value,
    waiting_for_check_reason,
)
from checks.roletag.verdict import ReporterPresence, RoleVerdict, judge_role


def entry(value: str, session: str | None = "s-1") -> dict[str, str]:
    made = {"Key": "service/pg-db/leader", "Value": base64.b64encode(value.encode()).decode()}
    if session:
        made["Session"] = session
    return made


KEY = "service/pg-db/leader"
HOLDER = LockHolder(session="s-2", node="db2", service_id="pg-db-2", timeline=2)


def test_default_key_is_per_service_name() -> None:
    assert default_lock_key("pg-db") == "service/pg-db/leader"


def test_lock_value_round_trips_through_the_kv_entry() -> None:
    value = lock_value(node="db1", service_id="pg-db", timeline=3, system_identifier="742")
    assert holder_of(entry(value)) == LockHolder("s-1", "db1", "pg-db", 3, "742")


def test_a_key_without_session_is_free_and_a_foreign_value_still_names_the_holder() -> None:
    assert holder_of(None) is None
    assert holder_of(entry("{}", session=None)) is None
    foreign = holder_of(entry("not json"))
    assert foreign is not None and foreign.session == "s-1" and foreign.service_id == "?"


def test_a_foreign_holder_is_named_by_its_session() -> None:
    # was "service ? on node ? holds the leader lock": nothing to find the holder by
    foreign = holder_of(entry("\ufffd garbage"))
    assert foreign is not None
    assert "session s-1 (not a pg-role-reporter's value)" in fenced_reason(
        foreign, key="service/pg-db/leader", timeline=1
    )
    assert fenced_summary(foreign, timeline=1) == (
        "fenced: session s-1 (not a pg-role-reporter's value) holds the lock"
    )


def test_steps() -> None:
    def step(wants: bool, holder: LockHolder | None, ours: str | None, tl: int = 2) -> Step:
        return fence_step(wants_leader=wants, holder=holder, our_session=ours, timeline=tl)

    assert step(True, None, "s-1") is Step.ACQUIRE
    assert step(True, HOLDER, "s-2") is Step.HOLD
    assert step(True, HOLDER, "s-2", tl=3) is Step.REFRESH  # promoted again: new value
    assert step(True, HOLDER, "s-1") is Step.FENCED
    assert step(True, HOLDER, None) is Step.FENCED
    assert step(False, HOLDER, "s-2") is Step.RELEASE
    assert step(False, HOLDER, "s-1") is Step.IDLE
    assert step(False, None, "s-1") is Step.IDLE


def test_fenced_reason_names_the_holder_and_the_timelines() -> None:
    newer = fenced_reason(HOLDER, key="service/pg-db/leader", timeline=1)
    assert newer.startswith("fenced: service pg-db-2 on node db2 holds the leader lock")
    assert "newer timeline 2 (this primary is on 1)" in newer
    same = fenced_reason(HOLDER, key="k", timeline=2)
    assert "same timeline 2: two primaries" in same
    assert fenced_summary(HOLDER, timeline=2) == (
        "fenced: pg-db-2 on node db2 holds the lock on the same timeline 2 (this primary: 2)"
    )
    assert len(fenced_summary(HOLDER, timeline=1)) < 100


def test_identity_port_and_system_identifier() -> None:
    ok = identity_problem(
        service_id="pg-db",
        service_port=5432,
        server_port=5432,
        published_system_identifier="1",
        system_identifier="1",
    )
    assert ok is None
    wrong_port = identity_problem(
        service_id="pg-db-2",
        service_port=5433,
        server_port=5432,
        published_system_identifier=None,
        system_identifier="1",
    )
    assert wrong_port is not None and "wrong --service-id or PGPORT" in wrong_port
    wrong_cluster = identity_problem(
        service_id="pg-db",
        service_port=None,
        server_port=5432,
        published_system_identifier="1",
        system_identifier="2",
    )
    assert wrong_cluster is not None and "system identifier 1" in wrong_cluster


def judge(**overrides: object) -> RoleVerdict:
    args: dict[str, Any] = dict(
        role_tags=["leader"],
        leader_tag="leader",
        follower_tag="follower",
        is_primary=True,
        writable=True,
        timeline=2,
        lock_key="service/pg-db/leader",
        holder=HOLDER,
        lock_error=None,
        our_session="s-2",
        published_reason=None,
        reporter=ReporterPresence(1, 0.4),
        silent_limit=8.0,
    )
    args.update(overrides)
    return judge_role(**args)


def test_the_holding_leader_is_ok() -> None:
    verdict = judge()
    assert verdict.problem is None
    assert verdict.summary == "tagged leader, primary on timeline 2, holds the leader lock"


def test_leader_tag_without_the_lock_is_critical() -> None:
    stolen = judge(our_session="s-9")
    assert stolen.critical and "held by service pg-db-2 on node db2" in str(stolen.problem)
    free = judge(holder=None)
    assert free.critical and str(free.problem).endswith("(free)")


def test_unreadable_lock_never_evicts() -> None:
    verdict = judge(holder=None, lock_error="Consul refused ...")
    assert not verdict.critical and "cannot read the leader lock" in str(verdict.problem)


def test_fenced_primary_is_critical_naming_the_holder() -> None:
    verdict = judge(role_tags=[], our_session=None, timeline=1)
    assert verdict.critical
    assert verdict.problem == (
        "fenced: pg-db-2 on node db2 holds the lock on newer timeline 2 (this primary: 1)"
    )


def test_the_reporters_published_reason_wins_over_guessing() -> None:
    reason = "pg-role-reporter: PostgreSQL refused the reporter's login (...)"
    on_primary = judge(role_tags=[], holder=None, our_session=None, published_reason=reason)
    assert on_primary.critical and on_primary.problem == reason
    on_replica = judge(
        role_tags=[], is_primary=False, writable=False, holder=None, published_reason=reason
    )
    assert not on_replica.critical and on_replica.problem == reason


def test_a_hung_reporter_takes_its_leader_out_but_only_warns_elsewhere() -> None:
    hung = ReporterPresence(1, 30.0)
    leader = judge(reporter=hung)
    assert leader.critical and "hung" in str(leader.problem)
    replica = judge(role_tags=["follower"], is_primary=False, writable=False, reporter=hung)
    assert not replica.critical and "hung (no query for 30s)" in str(replica.problem)


def test_a_leader_whose_reporter_died_leaves_dns() -> None:
    # a clean stop untags first, so a tag without a connection is a reporter killed
    verdict = judge(reporter=ReporterPresence(0, None))
    assert verdict.critical and "not connected: nothing keeps the fence" in str(verdict.problem)


def test_a_stopped_reporter_is_a_warning() -> None:
    verdict = judge(
        role_tags=["follower"], is_primary=False, writable=False, reporter=ReporterPresence(0, None)
    )
    assert not verdict.critical
    assert verdict.problem == "pg-role-reporter is not connected to this server (stopped?)"


def test_leader_tag_on_a_replica_is_critical_whatever_the_lock() -> None:
    verdict = judge(is_primary=False, writable=False)
    assert verdict.critical and verdict.problem == "tagged leader but this is a replica"


def test_read_only_primary_without_tag_is_fine() -> None:
    verdict = judge(role_tags=[], writable=False, holder=None, our_session=None)
    assert verdict.problem is None


def modules_imported_by(*modules: str) -> set[str]:
    """sys.modules of a fresh interpreter after importing `modules`."""
    import json
    import subprocess
    import sys

    code = f"import json, sys, {', '.join(modules)}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return set(json.loads(result.stdout))


ROLETAG = ("checks.roletag.fencing", "checks.roletag.plan", "checks.roletag.verdict")


def test_the_decision_modules_stay_light() -> None:
    """Both the daemon and every consul-role run import them: stdlib only."""
    loaded = modules_imported_by(*ROLETAG, "checks.reporter.problems")
    assert not {"httpx", "psycopg", "click", "nagiosplugin"} & loaded


def test_the_role_tag_package_imports_nothing_else_of_ours() -> None:
    """The check and the daemon both depend on it, so it may depend on neither."""
    ours = {m for m in modules_imported_by(*ROLETAG) if m.startswith("checks.")}
    assert {m for m in ours if not m.startswith("checks.roletag")} == set()


def test_a_lock_held_by_this_same_service_is_a_twin_not_a_fence() -> None:
    twin = LockHolder(session="s-9", node="db1", service_id="pg-db", timeline=2)
    reason = fenced_by(twin, service_id="pg-db", node="db1", key=KEY, timeline=2)
    assert is_twin(reason) and reason.startswith(TWIN)
    assert "s-9" in reason


def test_a_lock_held_by_another_service_fences() -> None:
    reason = fenced_by(HOLDER, service_id="pg-db", node="db1", key=KEY, timeline=1)
    assert reason == fenced_reason(HOLDER, key=KEY, timeline=1)
    assert not is_twin(reason) and not is_transient(reason, key=KEY)


def test_an_unknown_node_is_never_a_twin() -> None:
    """Without our session's node the same service id may be another agent's."""
    same_id = LockHolder(session="s-9", node="?", service_id="pg-db")
    assert not is_twin(fenced_by(same_id, service_id="pg-db", node="?", key=KEY, timeline=1))


def test_lock_delay_and_a_starting_check_are_transient() -> None:
    assert is_transient(lock_delay_reason(KEY), key=KEY)
    assert is_transient(waiting_for_check_reason("check alive is critical"), key=KEY)
    assert not is_transient(None, key=KEY) and not is_twin(None)
