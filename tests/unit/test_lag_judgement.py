"""lag's judgement from the replica's facts: what each figure may claim, and when not."""

from __future__ import annotations

import math
from dataclasses import replace

import nagiosplugin
import pytest

from checks.postgres.commands.lag import (
    DEFAULTS,
    Verdict,
    insufficient_parameters,
    judge_bytes,
    judge_receiver,
    judge_seconds,
)
from checks.postgres.lag_reference import Reference, lsn_order
from checks.postgres.readers.lag import ReplicaLagFacts
from checks.status import Status
from checks.thresholds import Limits

STREAMING = ReplicaLagFacts(
    in_recovery=True,
    server_version=150000,
    system_identifier="7300000000000000001",
    received_lsn="0/3000000",
    replayed_lsn="0/3000000",
    received_not_replayed_bytes=0,
    behind_reference_bytes=None,
    last_replayed_commit_age=400.0,
    waiting_at_least=0.0,
    apply_delay=0.0,
    replay_paused=False,
    receiver_pid=42,
    receiver_status="streaming",
    receiver_message_age=1.0,
    sender_host="10.0.0.1",
    sender_port=5432,
    wal_receiver_timeout=60.0,
    last_wal_written_age=None,
    streaming_configured=None,
    archive_configured=None,
    server_uptime=10000.0,
)
DOWN = replace(
    STREAMING,
    receiver_pid=None,
    receiver_status=None,
    receiver_message_age=None,
    sender_host=None,
    sender_port=None,
    streaming_configured=True,
    archive_configured=False,
    last_wal_written_age=3.0,
)
SECONDS = DEFAULTS["replay_lag_seconds"]
BYTES = DEFAULTS["replay_lag_bytes"]
LEADER = Reference("0/5000000", "the leader pg1 (Consul)")


def test_an_idle_primary_is_no_lag_however_old_the_last_commit() -> None:
    assert judge_seconds(STREAMING, None, SECONDS).value == 0


def test_a_quiet_spell_is_not_reported_as_lag() -> None:
    # 400 s since the last replayed commit, but WAL only waited 0.3 s for sure
    facts = replace(STREAMING, received_not_replayed_bytes=800_000, waiting_at_least=0.3)
    figure = judge_seconds(facts, None, SECONDS)
    assert figure.value is None
    assert figure.note == (
        "seconds unknown: last replayed commit 6min 40s ago, the waiting WAL may be newer "
        "(waited at least 300ms)"
    )


def test_a_recent_commit_bounds_the_lag_from_above() -> None:
    facts = replace(
        STREAMING,
        received_not_replayed_bytes=800_000,
        last_replayed_commit_age=2.5,
        waiting_at_least=0.1,
    )
    figure = judge_seconds(facts, None, SECONDS)
    assert (figure.value, figure.bound) == (2.5, "at most")


def test_a_measured_wait_past_the_thresholds_is_reported_as_a_lower_bound() -> None:
    facts = replace(STREAMING, received_not_replayed_bytes=1, waiting_at_least=320.0)
    figure = judge_seconds(facts, None, SECONDS)
    assert (figure.value, figure.bound) == (320.0, "at least")


def test_nothing_replayed_since_start_is_unknown_not_zero() -> None:
    facts = replace(STREAMING, received_not_replayed_bytes=250 << 20, last_replayed_commit_age=None)
    figure = judge_seconds(facts, None, SECONDS)
    assert figure.value is None
    assert figure.note == "seconds unknown: no transaction replayed since this server started"


def test_the_apply_delay_is_not_lag() -> None:
    facts = replace(
        STREAMING,
        apply_delay=120.0,
        received_not_replayed_bytes=5_000_000,
        last_replayed_commit_age=123.0,
    )
    figure = judge_seconds(facts, None, SECONDS)
    assert figure.value == pytest.approx(3.0)
    assert judge_bytes(facts, None).value is None
    assert judge_bytes(replace(facts, behind_reference_bytes=6_000_000), LEADER).value == 1_000_000


def test_bytes_count_against_the_leader_when_known() -> None:
    facts = replace(STREAMING, behind_reference_bytes=53 << 20)
    assert judge_bytes(facts, LEADER).value == 53 << 20
    assert judge_bytes(facts, None).value == 0


def test_bytes_are_unknown_not_zero_while_the_receiver_is_down() -> None:
    figure = judge_bytes(DOWN, None)
    assert figure.value is None
    assert figure.note == "lag unknown: no WAL arrives (--primary or --consul-service would tell)"
    assert judge_seconds(DOWN, None, SECONDS).value is None


def test_receiver_down_within_the_grace_is_a_warning_then_critical() -> None:
    behind = judge_bytes(DOWN, None)
    assert judge_receiver(DOWN, behind, BYTES, 30.0).status is Status.WARNING
    late = replace(DOWN, last_wal_written_age=31.0)
    verdict = judge_receiver(late, behind, BYTES, 30.0)
    assert verdict == Verdict(Status.CRITICAL, "no WAL receiver: nothing from upstream for 31.0s")


def test_receiver_down_and_behind_the_leader_gets_no_grace() -> None:
    facts = replace(DOWN, behind_reference_bytes=2 << 30)
    verdict = judge_receiver(facts, judge_bytes(facts, LEADER), BYTES, 30.0)
    assert verdict == Verdict(Status.CRITICAL, "no WAL receiver and 2.0 GiB behind")


def test_a_receiver_blip_does_not_evict_a_replica_that_was_only_warning() -> None:
    """100 MiB behind is WARNING at the defaults: in follower.pg-db. A one-second primary
    restart under write load must not take it out (CRITICAL) before the grace is over."""
    facts = replace(DOWN, behind_reference_bytes=100 << 20)
    verdict = judge_receiver(facts, judge_bytes(facts, LEADER), BYTES, 30.0)
    assert verdict.status is Status.WARNING, verdict


def test_a_log_shipping_standby_needs_no_receiver() -> None:
    facts = replace(DOWN, streaming_configured=False, archive_configured=True)
    assert facts.log_shipping
    assert judge_receiver(facts, judge_bytes(facts, None), BYTES, 30.0).status is Status.OK


def test_a_standby_with_no_wal_source_is_critical() -> None:
    facts = replace(DOWN, streaming_configured=False, archive_configured=False)
    verdict = judge_receiver(facts, judge_bytes(facts, None), BYTES, 30.0)
    assert verdict.status is Status.CRITICAL


def test_insufficient_parameters_name_both_values() -> None:
    own = {"max_connections": 100, "max_wal_senders": 10}
    assert insufficient_parameters(own, {"max_connections": 200, "max_wal_senders": 10}) == [
        "max_connections is 100 here but 200 upstream"
    ]


def test_lsn_order_is_numeric() -> None:
    assert lsn_order("1/0") > lsn_order("0/FFFFFFFF") > lsn_order("0/A")


def test_no_thresholds_means_every_bound_counts() -> None:
    facts = replace(STREAMING, received_not_replayed_bytes=1, last_replayed_commit_age=1e6)
    figure = judge_seconds(facts, None, Limits())
    assert figure.value == 1e6
    assert not math.isinf(figure.value)


def test_inverted_ranges_do_not_limit() -> None:
    limits = Limits(nagiosplugin.Range("@10:20"), None)
    facts = replace(STREAMING, received_not_replayed_bytes=1, last_replayed_commit_age=50.0)
    assert judge_seconds(facts, None, limits).value == 50.0


def test_past_the_grace_but_not_behind_the_known_primary_position_is_a_warning() -> None:
    # an idle primary crashed long after its last WAL: when the receiver stopped is not
    # known, but nothing the primary published is missing
    idle = replace(DOWN, last_wal_written_age=3600.0, behind_reference_bytes=0)
    verdict = judge_receiver(idle, judge_bytes(idle, LEADER), BYTES, 30.0)
    assert verdict == Verdict(
        Status.WARNING,
        "no WAL receiver (nothing from upstream for 1h 0min), "
        "not behind the primary's known position",
    )
    written = replace(idle, behind_reference_bytes=8192)
    assert judge_receiver(written, judge_bytes(written, LEADER), BYTES, 30.0).status is (
        Status.CRITICAL
    )
