"""``archiver``: is WAL archiving working.

A failing ``archive_command`` is silent until ``pg_wal`` fills the disk, and then point-in-time
recovery has a hole too. The age of the last archived WAL alone alarms on every idle primary
(nothing to archive, nothing archived), so it is judged only while WAL waits (docs/design.md §3's
idle-primary lesson, applied to archiving).
"""

from __future__ import annotations

from collections.abc import Iterator

import click
import nagiosplugin

from checks import adapters, output
from checks.postgres.check import Connection, FactsResource, needs_pg_monitor, postgres_command, run
from checks.postgres.connection import ConnectionSettings
from checks.postgres.readers.archiver import ArchiverFacts, read_archiver
from checks.status import CheckFailed, Status
from checks.thresholds import Limits, Threshold, threshold_options
from checks.units import Unit, format_duration

NAME = "PG_ARCHIVER"
DEFAULTS = {"archive_delay": Limits(nagiosplugin.Range("300"), nagiosplugin.Range("900"))}
# the thresholded metrics' labels and units
WORDS = {
    "archive_delay": ("archive delay", Unit.SECONDS),
    "ready_wal_files": ("WAL files waiting", Unit.NUMBER),
}


class ArchiverResource(FactsResource[ArchiverFacts]):
    def __init__(self, settings: ConnectionSettings, expect_archiving: bool) -> None:
        super().__init__(settings)
        self.expect_archiving = expect_archiving

    def read(self, conn: Connection) -> ArchiverFacts:
        return read_archiver(conn)

    def measure(self, facts: ArchiverFacts) -> Iterator[nagiosplugin.Metric]:
        if facts.archive_mode == "off":
            status = Status.CRITICAL if self.expect_archiving else Status.OK
            raise CheckFailed(status, "archive_mode is off: WAL is not archived")
        if not facts.archives_here:
            # the same configuration on both nodes of a pair: this one archives once promoted
            raise CheckFailed(
                Status.OK,
                "replica with archive_mode=on: the primary archives "
                "(archive_mode=always archives here too)",
            )
        if not facts.can_list_status:
            raise needs_pg_monitor(
                self.login,
                "list pg_wal/archive_status",
                alternative="EXECUTE on pg_ls_archive_statusdir()",
            )
        self.details.append(
            f"archive_mode {facts.archive_mode}, archived {facts.archived_count}, "
            f"failed {facts.failed_count} since the statistics were reset"
        )
        if facts.last_archived_wal:
            self.details.append(
                f"last archived: {facts.last_archived_wal}, "
                f"{format_duration(facts.last_archived_age or 0)} ago"
            )
        if facts.last_failed_wal:
            self.details.append(
                f"last failed: {facts.last_failed_wal}, "
                f"{format_duration(facts.last_failed_age or 0)} ago"
            )
        self.details.append(f"WAL files waiting: {facts.ready_wal_files}")
        yield nagiosplugin.Metric("archive_failing", int(facts.failing), min=0, max=1)
        yield nagiosplugin.Metric("archive_delay", round(facts.delay_seconds, 3), "s", min=0)
        yield nagiosplugin.Metric("ready_wal_files", facts.ready_wal_files, min=0)
        yield nagiosplugin.Metric(
            "archived_count", facts.archived_count, "c", min=0, context="archiver_fact"
        )
        yield nagiosplugin.Metric(
            "failed_count", facts.failed_count, "c", min=0, context="archiver_fact"
        )
        if facts.last_archived_age is not None:
            yield nagiosplugin.Metric(
                "last_archived_age",
                round(max(0.0, facts.last_archived_age)),
                "s",
                min=0,
                context="archiver_fact",
            )


class FailingContext(adapters.FlagContext):
    """A failure newer than the last success: the archiver is stuck on that segment."""

    def verdict(
        self, metric: nagiosplugin.Metric, resource: ArchiverResource
    ) -> tuple[Status, str]:
        facts = resource.facts
        if facts is None:
            return Status.OK, ""
        since = (
            f"last success {format_duration(facts.last_archived_age)} ago"
            if facts.last_archived_age is not None
            else "no success since the statistics were reset"
        )
        return (
            Status.CRITICAL,
            f"archiving {facts.last_failed_wal} failed "
            f"{format_duration(facts.last_failed_age or 0)} ago, {since}",
        )


class ArchiverSummary(adapters.Summary):
    resource: ArchiverResource

    def ok(self, results: nagiosplugin.Results) -> str:
        facts = self.resource.facts
        assert facts is not None
        if facts.last_archived_wal is None:
            text = "archiving on, nothing archived yet"
        else:
            text = (
                f"last archived {facts.last_archived_wal} "
                f"{format_duration(facts.last_archived_age or 0)} ago"
            )
        return f"{text}, {facts.ready_wal_files} WAL files waiting"


@postgres_command("archiver")
@threshold_options(
    plain_unit=None,
    help_suffix="In time for the archive delay (5min), a plain number for the WAL files "
    "waiting (20).",
)
@click.option(
    "--expect-archiving",
    is_flag=True,
    help="archive_mode off is CRITICAL (default: OK with a note).",
)
def command(
    settings: ConnectionSettings,
    verbose: int,
    warning: tuple[Threshold, ...],
    critical: tuple[Threshold, ...],
    expect_archiving: bool,
) -> output.Report:
    """WAL archiving (pg_stat_archiver): failing now, how long WAL has waited, how much.

    A failure newer than the last success is CRITICAL. The archive delay is 0 when no WAL
    waits, else the shorter of the time since the last success and the time the oldest
    waiting segment has waited (default: warning above 5min, critical above 15min).
    archive_mode off is OK with a note, CRITICAL with --expect-archiving; a replica
    archives only with archive_mode=always.
    """
    resource = ArchiverResource(settings, expect_archiving)
    return run(
        NAME,
        resource,
        FailingContext("archive_failing"),
        *adapters.threshold_contexts(warning, critical, WORDS, defaults=DEFAULTS),
        adapters.FactContext("archiver_fact"),
        summary=ArchiverSummary(resource),
        verbose=verbose,
    )
