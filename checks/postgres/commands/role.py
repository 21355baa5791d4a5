"""``role``: primary or replica, and is it the role this instance is expected to have.

A wrong role is CRITICAL so that Consul drops the instance from DNS: a replica must never
answer as ``leader``, a primary that should be a replica must not take reads as one.
"""

from __future__ import annotations

from collections.abc import Iterator

import click
import nagiosplugin

from checks import adapters, output, runtime
from checks.postgres.connection import ConnectionSettings, connect
from checks.postgres.options import connection_options
from checks.postgres.probes.role import RoleFacts, read_role
from checks.status import Status

NAME = "PG_ROLE"


class Role(adapters.Probe):
    def __init__(self, settings: ConnectionSettings) -> None:
        super().__init__()
        self.settings = settings
        self.facts: RoleFacts | None = None

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        with connect(self.settings) as conn:
            facts = self.facts = read_role(conn)
        self.details += [
            f"role: {facts.role} ({'in recovery' if facts.in_recovery else 'not in recovery'})",
            f"writable: {'yes' if facts.writable else 'no'}"
            + (f" ({note})" if (note := facts.read_only_note()) else ""),
            f"timeline: {facts.timeline}",
            f"system identifier: {facts.system_identifier}",
        ]
        yield nagiosplugin.Metric("is_primary", int(facts.is_primary), min=0, max=1)
        yield nagiosplugin.Metric(
            "is_writable", int(facts.writable), min=0, max=1, context="writable"
        )
        yield nagiosplugin.Metric("timeline", facts.timeline, min=1, context="timeline")


class RoleSummary(adapters.Summary):
    probe: Role

    def ok(self, results: nagiosplugin.Results) -> str:
        facts = self.probe.facts
        assert facts is not None
        writable = "writable" if facts.writable else "read-only"
        return f"{facts.role}, {writable}, timeline {facts.timeline}"


class WritableContext(nagiosplugin.Context):
    """A primary expected to take writes must; a replica is read-only by nature."""

    def evaluate(self, metric: nagiosplugin.Metric, resource: Role) -> nagiosplugin.Result:
        facts = resource.facts
        if metric.value or facts is None or not facts.is_primary:
            return nagiosplugin.Result(nagiosplugin.Ok, None, metric)
        return nagiosplugin.Result(
            nagiosplugin.Critical,
            "primary is read-only (default_transaction_read_only is on in its configuration)",
            metric,
        )

    def performance(self, metric: nagiosplugin.Metric, resource: object):
        return nagiosplugin.Performance(metric.name, metric.value, min=0, max=1)


def expectation_contexts(expect: str) -> list[nagiosplugin.Context]:
    """The role expectation as thresholds on the 0/1 metrics."""
    if expect == "primary":
        return [
            adapters.FlagContext(
                "is_primary",
                bad_value=False,
                state=Status.CRITICAL,
                hint="replica (in recovery), expected primary",
            ),
            WritableContext("writable"),
        ]
    if expect == "replica":
        return [
            adapters.FlagContext(
                "is_primary",
                bad_value=True,
                state=Status.CRITICAL,
                hint="primary (not in recovery), expected replica",
            ),
            adapters.FactContext("writable"),
        ]
    return [adapters.FactContext("is_primary"), adapters.FactContext("writable")]


@runtime.command("role")
@connection_options
@click.option(
    "--expect",
    type=click.Choice(["primary", "replica", "any"]),
    default="any",
    show_default=True,
    help="The role this instance must have; any other is CRITICAL. "
    "'primary' also requires it to be writable.",
)
def command(settings: ConnectionSettings, verbose: int, expect: str) -> output.Report:
    """Report primary or replica, timeline and system identifier; CRITICAL on the wrong role.

    Perfdata: is_primary and is_writable (0/1), timeline. The timeline of a primary is read
    from its current WAL file, so it is the new one right after a promotion.
    """

    def build() -> nagiosplugin.Check:
        probe = Role(settings)
        return nagiosplugin.Check(
            probe,
            *expectation_contexts(expect),
            adapters.FactContext("timeline"),
            RoleSummary(probe),
        )

    return runtime.run_check(
        NAME, build, timeout=settings.timeout, target=settings.target, verbose=verbose
    )
