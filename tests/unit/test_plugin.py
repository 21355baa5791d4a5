import re

import click
import nagiosplugin
import pytest

from checks import adapters, output, runtime
from checks.output import Report
from checks.status import Status, critical, worst
from checks.thresholds import Limits
from checks.units import Unit


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([], Status.OK),
        ([Status.OK, Status.UNKNOWN], Status.UNKNOWN),
        ([Status.UNKNOWN, Status.WARNING], Status.WARNING),
        ([Status.UNKNOWN, Status.CRITICAL, Status.WARNING], Status.CRITICAL),
    ],
)
def test_precedence_puts_critical_above_unknown(states, expected) -> None:
    assert worst(states) is expected


def test_first_line_and_long_output() -> None:
    text = Report(
        "PG_LAG", Status.WARNING, "replay lag 20.0 MiB", ["a=1B", "b=2s"], ["line one", "line two"]
    ).render()
    assert text == "PG_LAG WARNING - replay lag 20.0 MiB | a=1B b=2s\nline one\nline two\n"


def test_output_stays_under_consul_window() -> None:
    report = Report(
        "X",
        Status.OK,
        "fine",
        [f"m{i}=1" for i in range(500)],
        [f"detail {i} " + "x" * 80 for i in range(200)],
    )
    text = report.render()
    assert len(text.encode()) <= output.OUTPUT_LIMIT
    first, *rest = text.splitlines()
    assert first.startswith("X OK - fine | m0=1")
    assert rest[-1].startswith("… ") and rest[-1].endswith(" more")
    assert "(perfdata truncated to fit the 4 KB output limit)" in rest


def test_summary_is_one_line_and_bounded() -> None:
    first = Report("X", Status.OK, "a\nb " + "y" * 500).render().splitlines()[0]
    assert first.startswith("X OK - a b ")
    assert len(first) < 220


class FakeProbe(adapters.Resource):
    def __init__(self, values: dict[str, float], error: Exception | None = None) -> None:
        super().__init__()
        self.values, self.error = values, error

    def probe(self):
        if self.error:
            raise self.error
        self.details.append("a fact")
        for name, value in self.values.items():
            yield nagiosplugin.Metric(name, value, "B")


def contexts():
    return [
        adapters.MetricContext(
            "size",
            Limits(nagiosplugin.Range("10"), nagiosplugin.Range("20")),
            label="size",
            unit=Unit.BYTES,
        ),
        adapters.FlagContext("broken", bad_value=True, state=Status.UNKNOWN, hint="cannot tell"),
    ]


def test_evaluate_words_the_worst_result_with_its_range() -> None:
    check = nagiosplugin.Check(
        FakeProbe({"size": 30, "broken": 1}), *contexts(), adapters.Summary()
    )
    report = adapters.evaluate("T", check)
    assert report.status is Status.CRITICAL
    assert report.summary == "size 30 B (above 20 B)"
    assert report.perfdata == ["broken=1;;;0;1", "size=30B;10;20"]
    assert report.details == ["a fact"]


def test_probe_failure_ends_the_check_with_its_state() -> None:
    check = nagiosplugin.Check(FakeProbe({}, critical("cannot connect")), *contexts())
    report = adapters.evaluate("T", check)
    assert (report.status, report.summary) == (Status.CRITICAL, "cannot connect")


def test_internal_error_is_unknown_without_traceback() -> None:
    check = nagiosplugin.Check(FakeProbe({}, ZeroDivisionError("boom")), *contexts())
    report = adapters.evaluate("T", check)
    assert report.status is Status.UNKNOWN
    assert report.summary == "internal error: ZeroDivisionError: boom"
    assert report.details == []
    verbose = adapters.evaluate(
        "T", nagiosplugin.Check(FakeProbe({}, ZeroDivisionError("boom")), *contexts()), verbose=3
    )
    assert any("Traceback" in line for line in verbose.details)


@click.command()
@click.option("--n", type=int, required=True)
def tiny(n: int) -> Report:
    return Report("TINY", Status(n), f"n is {n}")


@pytest.mark.parametrize(
    ("argv", "code", "first"),
    [
        (["--n", "1"], 1, "TINY WARNING - n is 1"),
        (["--n", "x"], 3, "TINY UNKNOWN - Invalid value for '--n'"),
        (["--bogus"], 3, "TINY UNKNOWN - No such option"),
        ([], 3, "TINY UNKNOWN - Missing option '--n'"),
    ],
)
def test_run_cli_owns_exit_code_and_output(capsys, argv, code, first) -> None:
    with pytest.raises(SystemExit) as exit_info:
        runtime.run_cli(tiny, "TINY", argv)
    out, err = capsys.readouterr()
    assert exit_info.value.code == code
    assert out.startswith(first)
    assert err == ""


def test_watchdog_claim_is_exclusive() -> None:
    dog = runtime.Watchdog("T", 60, "somewhere")
    assert dog.finish() is True
    assert dog.finish() is False


def test_perfdata_labels_are_ascii_snake_case_and_stable() -> None:
    labels = {
        name: output.perfdata_label(name, set(), fallback="standby")
        for name in ("replica1", "Replica 1", "replica-1", "réplica", "")
    }
    assert labels["replica1"] == "replica1"
    assert all(re.fullmatch(r"[a-z0-9_]+", label) for label in labels.values())
    assert len(set(labels.values())) == len(labels)
    assert labels[""].startswith("standby_")
    # a name keeps its label whoever else is connected
    alone = output.perfdata_label("Replica 1", set(), fallback="standby")
    crowded = output.perfdata_label("Replica 1", {"replica_1", "replica1"}, fallback="standby")
    assert alone == crowded == labels["Replica 1"]


def test_no_pipe_outside_the_perfdata_separator() -> None:
    text = Report("X", Status.OK, "streaming (a|b)", ["a=1"], ["name a|b=c: ok"]).render()
    assert text == "X OK - streaming (a/b) | a=1\nname a/b=c: ok\n"


def test_first_line_never_carries_a_semicolon() -> None:
    # Nagios rewrites ';' there; libpq and Consul messages in summaries use it
    text = Report(
        "X",
        Status.UNKNOWN,
        "cannot reach agent: refused; is it running?",
        ["a=1"],
        ["long; output keeps it"],
    ).render()
    assert (
        text == "X UNKNOWN - cannot reach agent: refused, is it running? | a=1\n"
        "long; output keeps it\n"
    )


def test_check_keeps_perfdata_in_the_order_the_probe_yields_it() -> None:
    check = adapters.Check(FakeProbe({"size": 1, "broken": 0}), *contexts())
    assert adapters.evaluate("T", check).perfdata == ["size=1B;10;20", "broken=0;;;0;1"]


def test_the_watchdog_ends_the_process_even_when_its_answer_cannot_be_written() -> None:
    """Reproduces a check left hanging for ever: Consul (the reader) gone, the watchdog's
    write raised EPIPE in its thread, and the main thread waited for an exit that never
    came."""
    import os
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        read_end, write_end = os.pipe()
        os.close(read_end)  # nobody will read the answer
        started = time.monotonic()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "checks.check_postgresql",
                "alive",
                "-t",
                "1",
                "-H",
                "127.0.0.1",
                "-p",
                str(silent.getsockname()[1]),
            ],
            stdout=write_end,
            stderr=subprocess.DEVNULL,
            env={k: v for k, v in os.environ.items() if not k.startswith("PG")},
        )
        os.close(write_end)
        code = process.wait(timeout=20)
    assert code == 2
    assert time.monotonic() - started < 10


def test_check_uses_no_private_nagiosplugin_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """nagiosplugin>=1.3 is open-ended: adapters.Check must not lean on its private
    _evaluate_resource, whose change would reorder or lose perfdata unnoticed."""

    def private(self: object, resource: object) -> None:
        raise AssertionError("nagiosplugin's private Check._evaluate_resource was called")

    monkeypatch.setattr(nagiosplugin.Check, "_evaluate_resource", private, raising=False)
    check = adapters.Check(FakeProbe({"size": 30, "broken": 0}), *contexts(), adapters.Summary())
    report = adapters.evaluate("T", check)
    assert (report.status, report.summary) == (Status.CRITICAL, "size 30 B (above 20 B)")
    assert report.perfdata == ["size=30B;10;20", "broken=0;;;0;1"]


def test_the_budget_shares_leave_room_for_the_watchdog() -> None:
    budget = runtime.Budget(10)
    assert budget.connection == 8 and budget.connect_timeout == 8
    assert budget.consul_request == 2.5
    assert budget.other_server == 3 and budget.leader_lookup == 2
    # libpq's floor; the lookups' own caps
    assert runtime.Budget(1).connect_timeout == 2
    assert runtime.Budget(60).leader_lookup == 2
