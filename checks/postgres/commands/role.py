"""``role``: primary or replica, and is it the role this instance is expected to have.

A wrong role is CRITICAL so that Consul drops the instance from DNS: a replica must never
answer as ``leader``, a primary that should be a replica must not take reads as one.
"""

from __future__ import annotations

from collections.abc import Iterator

import click
import nagiosplugin

from checks import adapters, output
from checks.postgres.check import Connection, FactsResource, postgres_command, run
from checks.postgres.connection import ConnectionSettings
from checks.postgres.readers.role import RoleFacts, read_role
from checks.status import Status

NAME = "PG_ROLE"


class RoleResource(FactsResource[RoleFacts]):
    def read(self, conn: Connection) -> RoleFacts:
        return read_role(conn)

    def measure(self, facts: RoleFacts) -> Iterator[nagiosplugin.Metric]:
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
    resource: RoleResource

    def ok(self, results: nagiosplugin.Results) -> str:
        facts = self.resource.facts
        assert facts is not None
        writable = "writable" if facts.writable else "read-only"
        return f"{facts.role}, {writable}, timeline {facts.timeline}"


class WritableContext(adapters.FlagContext):
    """A primary expected to take writes must; a replica is read-only by nature."""

    def __init__(self, name: str) -> None:
        super().__init__(
            name,
            bad_value=False,
            hint="primary is read-only (default_transaction_read_only is on in its configuration)",
        )

    def verdict(self, metric: nagiosplugin.Metric, resource: RoleResource) -> tuple[Status, str]:
        facts = resource.facts
        if facts is None or not facts.is_primary:
            return Status.OK, ""
        return super().verdict(metric, resource)


# the expected role -> what the other one is called (CRITICAL)
WRONG_ROLE = {
    "primary": "replica (in recovery), expected primary",
    "replica": "primary (not in recovery), expected replica",
}


def expectation_contexts(expect: str) -> list[nagiosplugin.Context]:
    """The role expectation as thresholds on the 0/1 metrics."""
    if expect not in WRONG_ROLE:
        return [adapters.FactContext("is_primary"), adapters.FactContext("writable")]
    primary = expect == "primary"
    return [
        adapters.FlagContext("is_primary", bad_value=not primary, hint=WRONG_ROLE[expect]),
        # a primary must take writes; a replica is read-only by nature
        WritableContext("writable") if primary else adapters.FactContext("writable"),
    ]


@postgres_command("role")
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

    resource = RoleResource(settings)
    return run(
        NAME,
        resource,
        *expectation_contexts(expect),
        adapters.FactContext("timeline"),
        summary=RoleSummary(resource),
        verbose=verbose,
    )
