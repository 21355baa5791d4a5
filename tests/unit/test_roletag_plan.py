"""checks.roletag.plan: the registration to PUT, and only when something differs."""

from __future__ import annotations

from typing import Any

from checks.roletag.plan import Observed, TagNames, merged_tags, plan

NAMES = TagNames()
PRIMARY = Observed("primary", writable=True, timeline=3, system_identifier="7301")
REPLICA = Observed("replica", timeline=3, system_identifier="7301")
DOWN = Observed("unreachable", error="cannot connect to 127.0.0.1:5432: Connection refused")


def service(tags: list[str], meta: dict[str, str] | None = None) -> dict[str, Any]:
    """A GET /v1/agent/service/:id answer as Consul 1.8.7 gives it."""
    return {
        "ID": "pg-db",
        "Service": "pg-db",
        "Tags": tags,
        "Meta": meta or {"site": "a"},
        "Port": 5432,
        "Address": "",
        "Weights": {"Passing": 1, "Warning": 1},
        "EnableTagOverride": False,
        "ContentHash": "abc",
    }


def test_primary_gets_leader_and_meta_and_keeps_every_other_field() -> None:
    change = plan(service(["pg", "dc-a"]), PRIMARY, NAMES)
    assert change is not None
    body = change.registration
    assert body["Tags"] == ["pg", "dc-a", "leader"]
    assert body["Meta"] == {
        "site": "a",
        "pg_role": "primary",
        "pg_timeline": "3",
        "pg_system_identifier": "7301",
    }
    assert body["Name"] == "pg-db" and "Service" not in body and "ContentHash" not in body
    assert body["Weights"] == {"Passing": 1, "Warning": 1} and body["Port"] == 5432


def test_no_write_when_everything_matches() -> None:
    first = plan(service(["pg"]), PRIMARY, NAMES)
    assert first is not None
    applied = {**service([]), "Tags": first.new_tags, "Meta": first.new_meta}
    assert plan(applied, PRIMARY, NAMES) is None


def test_existing_role_tag_keeps_its_place() -> None:
    assert merged_tags(["leader", "pg"], "leader", NAMES) == ["leader", "pg"]


def test_replica_swaps_leader_for_follower() -> None:
    change = plan(service(["pg", "leader"]), REPLICA, NAMES)
    assert change is not None
    assert change.new_tags == ["pg", "follower"]
    assert change.describe(NAMES).startswith("service pg-db: role tag leader -> follower")


def test_unreachable_postgres_fails_closed() -> None:
    change = plan(
        service(["pg", "leader"], {"pg_role": "primary", "pg_timeline": "3"}), DOWN, NAMES
    )
    assert change is not None
    assert change.new_tags == ["pg"]
    assert change.new_meta == {"pg_role": "unreachable"}


def test_read_only_primary_is_not_leader() -> None:
    change = plan(service(["pg"]), Observed("primary", writable=False, timeline=1), NAMES)
    assert change is not None
    assert change.new_tags == ["pg"]
    assert change.new_meta["pg_role"] == "primary-read-only"


def test_fenced_primary_is_not_leader_and_says_why() -> None:
    change = plan(service(["pg", "leader"]), PRIMARY, NAMES, fenced_reason="fenced: x" * 100)
    assert change is not None
    assert change.new_tags == ["pg"]
    assert change.new_meta["pg_fenced_reason"].startswith("fenced: x")
    assert len(change.new_meta["pg_fenced_reason"]) <= 512


def test_fence_reason_goes_once_unfenced() -> None:
    fenced = service(["pg"], {"pg_role": "primary", "pg_fenced_reason": "fenced: old"})
    change = plan(fenced, PRIMARY, NAMES)
    assert change is not None
    assert "pg_fenced_reason" not in change.new_meta
    assert "leader" in change.new_tags


def test_custom_tag_names_and_foreign_tags_untouched() -> None:
    names = TagNames(leader="primary", follower="standby")
    change = plan(service(["leader", "standby"]), PRIMARY, names)
    assert change is not None
    assert change.new_tags == ["leader", "primary"]


def test_only_the_lock_holder_carries_leader_wal_position_and_session() -> None:
    from checks.roletag.plan import META_LOCK_SESSION, META_WAL_LSN, Observed, TagNames, plan

    service = {"ID": "pg-db", "Service": "pg-db", "Tags": ["postgresql"], "Meta": {}}
    primary = Observed(role="primary", writable=True, timeline=2, system_identifier="7")
    held = plan(service, primary, TagNames(), wal_lsn="0/3000148", lock_session="s-1")
    assert held is not None and "leader" in held.new_tags
    assert held.new_meta[META_WAL_LSN] == "0/3000148"
    assert held.new_meta[META_LOCK_SESSION] == "s-1"
    fenced = plan(
        service,
        primary,
        TagNames(),
        fenced_reason="fenced: ...",
        leader_allowed=False,
        wal_lsn="0/3000148",
        lock_session="s-1",
    )
    assert fenced is not None and "leader" not in fenced.new_tags
    assert META_WAL_LSN not in fenced.new_meta and META_LOCK_SESSION not in fenced.new_meta


def test_a_service_that_is_not_this_server_gets_no_role_tag_at_all() -> None:
    from checks.roletag.plan import Observed, TagNames, plan

    service = {"ID": "pg-db-2", "Service": "pg-db", "Tags": ["postgresql", "follower"]}
    replica = Observed(role="replica", timeline=1)
    change = plan(service, replica, TagNames(), fenced_reason="port", any_tag_allowed=False)
    assert change is not None and change.new_tags == ["postgresql"]
