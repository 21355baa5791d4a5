"""standbys without a server: synchronous_standby_names, ordering, naming, WAL receivers."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest

from checks import output
from checks.postgres import check as postgres_check
from checks.postgres.capabilities import ServerCapabilities
from checks.postgres.commands import standbys as cmd
from checks.postgres.readers.standbys import (
    StandbyFacts,
    UpstreamFacts,
    looks_mangled,
    required_sync_standbys,
    server_shown_name,
    worst_first,
)
from checks.status import Status


@pytest.mark.parametrize(
    ("setting", "required"),
    [
        ("", 0),
        ("   ", 0),
        (None, 0),
        ("*", 1),
        ("replica1", 1),
        ("replica1, replica2", 1),
        ('"replica 9"', 1),
        ('"FIRST 3 (x)"', 1),
        ("first, second", 1),
        ("FIRST 1 (replica1, replica2)", 1),
        ('FIRST 2 ("replica 9", b, c)', 2),
        ("first 2(a,b)", 2),
        ("ANY 2 (a, b, c)", 2),
        ("any 3 (*)", 3),
        ("2 (a, b)", 2),
        ("  10 ( a , b )", 10),
    ],
)
def test_required_sync_standbys(setting: str | None, required: int) -> None:
    assert required_sync_standbys(setting) == required


def standby(
    name: str,
    *,
    state: str = "streaming",
    sync_state: str = "async",
    lag: int | None = 0,
    seconds: float = 0.0,
    receiver: bool = False,
    logical: bool = False,
) -> StandbyFacts:
    return StandbyFacts(
        pid=abs(hash(name)) % 100000,
        application_name=name,
        client_addr="127.0.0.1",
        state=state,
        sync_state=sync_state,
        wal_receiver=receiver,
        logical=logical,
        replay_lag_bytes=None if receiver else lag,
        flush_lag_bytes=0,
        write_lag_seconds=0.0,
        flush_lag_seconds=0.0,
        replay_lag_seconds=seconds,
    )


def test_worst_first_puts_not_streaming_then_largest_lag_first() -> None:
    ordered = worst_first(
        [
            standby("a", lag=10),
            standby("b", lag=5000),
            standby("c", state="catchup", lag=0),
            standby("d", lag=10, seconds=3.0),
        ]
    )
    assert [s.application_name for s in ordered] == ["c", "b", "d", "a"]


def upstream(
    *senders: StandbyFacts,
    names: str = "",
    in_recovery: bool = False,
    synchronous_commit: str = "on",
    version: int = 150000,
) -> UpstreamFacts:
    return UpstreamFacts(
        in_recovery=in_recovery,
        synchronous_standby_names=names,
        standbys=worst_first([s for s in senders if not s.wal_receiver and not s.logical]),
        wal_receivers=[s for s in senders if s.wal_receiver],
        logical=[s for s in senders if s.logical],
        synchronous_commit=synchronous_commit,
        server_version=version,
    )


def run(monkeypatch: pytest.MonkeyPatch, up: UpstreamFacts, *args: str) -> output.Report:
    conn = SimpleNamespace(info=SimpleNamespace(user="monitor"))
    monkeypatch.setattr(postgres_check, "connect", lambda settings: contextlib.nullcontext(conn))
    monkeypatch.setattr(cmd, "read_standbys", lambda c: up)
    report = cmd.command.main(args=list(args), standalone_mode=False)
    assert isinstance(report, output.Report)
    return report


def test_alert_names_the_standby_that_owns_the_metric(monkeypatch: pytest.MonkeyPatch) -> None:
    up = upstream(standby("replica1", lag=0), standby("replica1_dr", lag=200 * 2**20))
    report = run(monkeypatch, up, "-w", "64MB", "-c", "100MB")
    assert report.status is Status.CRITICAL
    assert report.summary == "replica1_dr replay lag 200.0 MiB (above 100.0 MiB)"
    up = upstream(standby("replica1", lag=200 * 2**20), standby("replica1_dr", lag=0))
    report = run(monkeypatch, up, "-w", "64MB", "-c", "100MB")
    assert report.summary == "replica1 replay lag 200.0 MiB (above 100.0 MiB)"


def test_synchronous_outage_is_critical_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    up = upstream(standby("replica1"), names='FIRST 1 ("replica 9")')
    report = run(monkeypatch, up)
    assert report.status is Status.CRITICAL
    assert report.summary == "commits wait: 1 synchronous standby(s) required, 0 streaming"
    assert "sync_standbys=0;;1:;0" in report.perfdata


def test_synchronous_standbys_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    up = upstream(
        standby("a", sync_state="quorum"),
        standby("b", sync_state="quorum"),
        standby("c", sync_state="async"),
        names="ANY 2 (a, b, c)",
    )
    report = run(monkeypatch, up)
    assert report.status is Status.OK, report.summary


def test_explicit_sync_overrides_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    up = upstream(standby("replica1"), names="replica9")
    report = run(monkeypatch, up, "--sync", "0")
    assert report.status is Status.OK, report.summary
    report = run(monkeypatch, upstream(standby("replica1")), "--sync", "1")
    assert report.summary == "synchronous standbys 0 (below 1)"


def test_cascading_replica_ignores_synchronous_standby_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    up = upstream(standby("replica2"), names="replica9", in_recovery=True)
    assert run(monkeypatch, up).status is Status.OK


def test_wal_receiver_is_listed_not_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    up = upstream(standby("barman", receiver=True))
    report = run(monkeypatch, up)
    assert report.status is Status.CRITICAL
    assert report.summary == "streaming standbys 0 (below 1)"
    assert any(
        line.startswith("WAL receiver (not a standby): barman (127.0.0.1): streaming")
        for line in report.details
    )
    assert not any(p.startswith("barman_") for p in report.perfdata)
    assert not any(p.startswith("max_replay_lag_bytes") for p in report.perfdata)


def test_synchronous_wal_receiver_lets_commits_proceed(monkeypatch: pytest.MonkeyPatch) -> None:
    up = upstream(
        standby("replica1"),
        standby("barman", receiver=True, sync_state="sync"),
        names="barman",
    )
    report = run(monkeypatch, up)
    assert report.status is Status.OK, report.summary
    assert report.summary.endswith(", 1 WAL receiver(s)")


def test_aggregates_first_then_standbys_worst_first(monkeypatch: pytest.MonkeyPatch) -> None:
    up = upstream(
        standby("alpha", lag=100),
        standby("zulu", lag=5000),
        standby("mike", state="catchup", lag=0),
    )
    report = run(monkeypatch, up, "--min-standbys", "0")
    labels = [p.split("=")[0] for p in report.perfdata]
    assert labels[:3] == ["standbys", "sync_standbys", "max_replay_lag_bytes"]
    assert "max_replay_lag_bytes=5000B;;;0" in report.perfdata
    owners = [label.split("_")[0] for label in labels[3:]]
    assert owners == ["mike"] * 4 + ["zulu"] * 4 + ["alpha"] * 4
    assert [line.split(" ")[0] for line in report.details] == ["mike", "zulu", "alpha"]


def test_summary_stays_short_with_many_standbys(monkeypatch: pytest.MonkeyPatch) -> None:
    up = upstream(*(standby(f"replica{n}", lag=n * 1024) for n in range(1, 13)))
    report = run(monkeypatch, up)
    assert report.summary == "12 streaming, replay lag at most 12.0 KiB, 0ms (worst: replica12)"
    few = run(monkeypatch, upstream(standby("b"), standby("a")))
    assert few.summary.startswith("2 streaming (a, b), replay lag at most")


@pytest.mark.parametrize("setting", ["local", "off"])
def test_missing_synchronous_standby_without_waiting_commits_is_a_warning(
    monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    up = upstream(standby("replica1"), names="replica9", synchronous_commit=setting)
    report = run(monkeypatch, up)
    assert report.status is Status.WARNING
    assert report.summary == (
        f"1 synchronous standby(s) named, 0 streaming: commits do not wait "
        f"(synchronous_commit {setting})"
    )
    assert "sync_standbys=0;;;0" in report.perfdata
    # the user's own --sync is still the user's word
    assert run(monkeypatch, up, "--sync", "1").status is Status.CRITICAL


@pytest.mark.parametrize("setting", ["on", "remote_write", "remote_apply"])
def test_waiting_commits_stay_critical(monkeypatch: pytest.MonkeyPatch, setting: str) -> None:
    up = upstream(standby("replica1"), names="replica9", synchronous_commit=setting)
    assert run(monkeypatch, up).status is Status.CRITICAL


def test_logical_sender_is_listed_not_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    up = upstream(standby("replica1"), standby("sub", logical=True))
    report = run(monkeypatch, up, "--min-standbys", "2")
    assert report.summary == "streaming standbys 1 (below 2)"
    ok = run(monkeypatch, up)
    assert ok.summary.endswith(", 1 logical (not counted)")
    assert not any(p.startswith("sub_") for p in ok.perfdata)


def test_synchronous_logical_sender_releases_commits(monkeypatch: pytest.MonkeyPatch) -> None:
    up = upstream(standby("replica1"), standby("sub", logical=True, sync_state="sync"), names="sub")
    assert run(monkeypatch, up).status is Status.OK


def test_excluded_standby_is_neither_counted_nor_judged(monkeypatch: pytest.MonkeyPatch) -> None:
    up = upstream(standby("replica1"), standby("dr", lag=5 * 2**30, seconds=900))
    report = run(monkeypatch, up, "--exclude", "dr")
    assert report.status is Status.OK, report.summary
    assert report.summary.endswith(", 1 excluded")
    assert "standbys=1;;1:;0" in report.perfdata
    assert not any(p.startswith("dr_") for p in report.perfdata)


def test_delayed_standby_is_judged_beyond_its_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    up = upstream(standby("replica1"), standby("dr", lag=5 * 2**30, seconds=130))
    assert run(monkeypatch, up).status is Status.CRITICAL
    report = run(monkeypatch, up, "--delayed", "dr=2min")
    assert report.status is Status.OK, report.summary
    assert "dr_replay_lag_beyond_delay=10.0s;60;300;0" in report.perfdata
    assert "dr_flush_lag_bytes=0B;67108864;1073741824;0" in report.perfdata
    assert "dr_replay_lag_bytes=5368709120B;;;0" in report.perfdata
    assert ", 1 delayed on purpose" in report.summary
    late = run(monkeypatch, upstream(standby("dr", seconds=500)), "--delayed", "dr=2min")
    assert late.status is Status.CRITICAL
    assert late.summary == "dr replay lag beyond its delay 6min 20s (above 5min 0s)"


@pytest.mark.parametrize("value", ["dr", "=2min", "dr=16MB", "dr=soon"])
def test_delayed_needs_name_and_duration(value: str) -> None:
    import click

    with pytest.raises(click.BadParameter):
        cmd.parse_delays(None, None, (value,))  # type: ignore[arg-type]


def test_server_shown_names() -> None:
    assert server_shown_name("replica1", ServerCapabilities(150000)) == "replica1"
    assert server_shown_name("r\u00e9plica", ServerCapabilities(150000)) == "r??plica"
    assert server_shown_name("r\u00e9plica", ServerCapabilities(160000)) == "r\\xc3\\xa9plica"
    assert looks_mangled("r??plica", ServerCapabilities(150000))
    assert not looks_mangled("r??plica", ServerCapabilities(160000))
    assert looks_mangled("r\\xc3\\xa9plica", ServerCapabilities(180000))


def test_expected_non_ascii_name_matches_as_the_server_shows_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    up = upstream(standby("r??plica"))
    report = run(monkeypatch, up, "--standby", "r\u00e9plica")
    assert report.status is Status.OK, report.summary
    assert any("is shown by the server as 'r??plica'" in line for line in report.details)
