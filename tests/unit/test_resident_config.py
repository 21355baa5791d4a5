"""The resident profile is two files that must agree: the systemd drop-in that starts
pg-role-reporter with its --push checks and --listen address
(contrib/systemd/pg-role-reporter-resident.conf), and the conf.d snippets that declare
the TTL checks it pushes into and the liveness check Consul asks it
(contrib/consul-conf.d/resident/). A check pushed into an ID the agent lacks is never
seen; a TTL check nobody pushes is critical for ever; a liveness URL on another port
than --listen takes every instance out of DNS.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import click
import pytest

from checks.reporter.cli import cli
from checks.resident.push import PushSpec
from harness import snippets

RESIDENT_FILES = ("resident/pg-db.json", "resident/mem-check.json")


def daemon_params() -> dict[str, Any]:
    """The drop-in's options as the real reporter parses them (specs validated too)."""
    argv = snippets.resident_exec_start()
    assert argv[0] == "/usr/local/bin/pg-role-reporter"
    with cli.make_context("pg-role-reporter", argv[1:]) as ctx:
        return dict(ctx.params)


def resident_checks() -> dict[str, dict[str, Any]]:
    checks: dict[str, dict[str, Any]] = {}
    for name in RESIDENT_FILES:
        for service in snippets.services_of(snippets.load(name)):
            for check in service["checks"]:
                checks[check["id"]] = {**check, "service": service["id"]}
    return checks


def seconds(duration: str) -> float:
    assert duration.endswith("s") and not duration.endswith("ms"), duration
    return float(duration[:-1])


def test_every_ttl_check_is_pushed_and_every_push_has_its_ttl_check() -> None:
    specs: tuple[PushSpec, ...] = daemon_params()["push_specs"]
    ttl_checks = {cid for cid, check in resident_checks().items() if "ttl" in check}
    assert sorted(spec.check_id for spec in specs) == sorted(ttl_checks)


def test_each_ttl_outlasts_two_intervals_plus_the_checks_own_timeout() -> None:
    checks = resident_checks()
    for spec in daemon_params()["push_specs"]:
        ttl = seconds(checks[spec.check_id]["ttl"])
        # one late run (its -t) and one missed push still leave it passing
        assert ttl >= 2 * spec.interval + spec.timeout, (spec, ttl)


def test_pushed_checks_start_critical_and_none_is_a_script() -> None:
    for check_id, check in resident_checks().items():
        assert "args" not in check and "script" not in check, check_id
        assert check["notes"], check_id
        if "ttl" in check:
            # until the daemon's first push nothing vouches for the instance
            assert check["status"] == "critical", check_id


def test_the_liveness_check_asks_the_daemons_listen_address_and_fails_within_3s() -> None:
    params = daemon_params()
    (liveness,) = [c for c in resident_checks().values() if "http" in c]
    url = urlsplit(liveness["http"])
    assert url.path == "/liveness"
    listen = params["listen"]
    assert (url.hostname, url.port) == (listen.host, listen.port), "liveness URL != --listen"
    assert liveness["service"] == params["service_id"]
    assert seconds(liveness["interval"]) + seconds(liveness["timeout"]) <= 3


def test_the_lock_session_keeps_its_default_binding_to_alive_never_to_liveness() -> None:
    """Bound to the liveness check, the lock would pass to a new primary while a frozen
    daemon's pushed verdicts still stand; /liveness answers the moment it runs again,
    before its loop takes the stale leader tag off. The default binds the session to
    `<service-id>-alive`, here a pushed TTL check that stays critical once expired until
    a push, which only follows a turn of the loop (checks/resident/push.py)."""
    params = daemon_params()
    assert params["session_checks"] == ()
    assert f"{params['service_id']}-alive" in resident_checks()


def test_the_resident_agent_needs_no_script_checks() -> None:
    # TTL and http checks need neither enable_local_script_checks nor
    # enable_script_checks: the resident directory ships no agent.json at all
    assert not (snippets.SNIPPETS_DIR / "resident" / "agent.json").exists()


@pytest.mark.parametrize("check_id", ["pg-db-alive", "pg-db-role-tag", "pg-db-lag"])
def test_the_snippet_notes_quote_the_drop_ins_push(check_id: str) -> None:
    """The notes are what an operator reads in the UI: they must not drift from the unit."""
    argv = snippets.resident_exec_start()
    (value,) = [v for v in argv if v.startswith(f"{check_id}=")]
    assert f"--push '{value}'" in resident_checks()[check_id]["notes"]


def test_a_bad_push_in_the_drop_in_would_stop_the_start() -> None:
    argv = [*snippets.resident_exec_start()[1:], "--push", "pg-db-x=5s:alive -H elsewhere"]
    with pytest.raises(click.BadParameter, match="connection options"):
        cli.make_context("pg-role-reporter", argv)
