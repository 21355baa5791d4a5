"""contrib/consul-conf.d/prepared-queries/apply: when is Consul's copy up to date."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "contrib/consul-conf.d/prepared-queries/apply"
_loader = importlib.machinery.SourceFileLoader("prepared_queries_apply", str(SCRIPT))
_spec = importlib.util.spec_from_loader(_loader.name, _loader)
assert _spec is not None
apply = importlib.util.module_from_spec(_spec)
_loader.exec_module(apply)

WANTED = {"Name": "q", "Service": {"Service": "pg-db", "Tags": ["follower"]}}
# what Consul 1.8 answers for it: its own fields and zero values for everything left out
STORED = {
    "ID": "abc",
    "CreateIndex": 5,
    "ModifyIndex": 5,
    "Token": "<hidden>",
    "Name": "q",
    "Session": "",
    "Service": {"Service": "pg-db", "Tags": ["follower"], "Near": "", "NodeMeta": None},
}


def test_consuls_own_fields_and_zero_values_are_no_difference() -> None:
    assert apply.matches(WANTED, STORED)


def test_a_field_removed_from_the_file_is_a_difference() -> None:
    without_tags = {"Name": "q", "Service": {"Service": "pg-db"}}
    assert not apply.matches(without_tags, STORED)


def test_a_changed_value_is_a_difference() -> None:
    assert not apply.matches({**WANTED, "Service": {"Service": "other"}}, STORED)


def test_objects_of_zero_values_consul_fills_in_are_no_difference() -> None:
    # observed with Consul 1.8.7: a query without a template or failover reads back so
    wanted = {"Name": "q", "Service": {"Service": "pg-db", "Tags": ["leader"]}}
    stored = {
        **STORED,
        "Template": {"Type": "", "Regexp": "", "RemoveEmptyTags": False},
        "Service": {
            "Service": "pg-db",
            "Tags": ["leader"],
            "Failover": {"NearestN": 0, "Datacenters": None},
            "IgnoreCheckIDs": None,
        },
        "DNS": {"TTL": ""},
    }
    assert apply.matches(wanted, stored)


def test_failover_left_in_consul_after_it_was_removed_from_the_file_is_a_difference() -> None:
    wanted = {"Name": "q", "Service": {"Service": "pg-db", "Tags": ["leader"]}}
    stored = {
        **STORED,
        "Service": {"Service": "pg-db", "Tags": ["leader"], "Failover": {"NearestN": 3}},
    }
    assert not apply.matches(wanted, stored)
