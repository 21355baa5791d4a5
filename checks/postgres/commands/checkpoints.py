"""``checkpoints``: do checkpoints keep up with the writes (restartpoints with replay)."""

from __future__ import annotations

from collections.abc import Iterator

import nagiosplugin

from checks import adapters, output
from checks.postgres.check import Connection, FactsResource, postgres_command, run
from checks.postgres.connection import ConnectionSettings
from checks.postgres.readers.checkpoints import CheckpointsFacts, read_checkpoints
from checks.status import unknown
from checks.thresholds import Limits, Threshold, threshold_options
from checks.units import Unit, format_bytes, format_duration

NAME = "PG_CHECKPOINTS"
# A checkpoint on schedule ends as the distance nears max_wal_size (docs/design.md §3):
# half of max_wal_size beyond that, it has fallen behind the writes.
DEFAULTS = {
    "wal_since_checkpoint_pct": Limits(nagiosplugin.Range("150"), nagiosplugin.Range("200"))
}
# the thresholded metrics' labels and units, in the order a usage error names the units
WORDS = {
    "wal_since_checkpoint_pct": ("WAL since the last checkpoint", Unit.PERCENT),
    "wal_since_checkpoint": ("WAL since the last checkpoint", Unit.BYTES),
}


class CheckpointsResource(FactsResource[CheckpointsFacts]):
    def read(self, conn: Connection) -> CheckpointsFacts:
        return read_checkpoints(conn)

    def measure(self, facts: CheckpointsFacts) -> Iterator[nagiosplugin.Metric]:
        if facts.wal_since_redo_bytes is None or facts.wal_since_redo_percent is None:
            raise unknown(f"the server does not say how much WAL its last {facts.kind} left")
        self.details += [
            f"last {facts.kind} completed {format_duration(facts.last_checkpoint_age)} ago",
            f"checkpoint_timeout {format_duration(facts.checkpoint_timeout)}, "
            f"max_wal_size {format_bytes(facts.max_wal_size_bytes)}",
            f"since the statistics reset: {facts.checkpoints_timed} timed, "
            f"{facts.checkpoints_requested} requested",
        ]
        yield nagiosplugin.Metric("wal_since_checkpoint", facts.wal_since_redo_bytes, "B", min=0)
        yield nagiosplugin.Metric(
            "wal_since_checkpoint_pct", round(facts.wal_since_redo_percent, 1), "%", min=0
        )
        yield nagiosplugin.Metric(
            "last_checkpoint_age",
            round(facts.last_checkpoint_age, 1),
            "s",
            min=0,
            context="checkpoints_fact",
        )
        for name, count in (
            ("checkpoints_timed", facts.checkpoints_timed),
            ("checkpoints_requested", facts.checkpoints_requested),
        ):
            yield nagiosplugin.Metric(name, count, "c", min=0, context="checkpoints_fact")


class CheckpointsSummary(adapters.Summary):
    resource: CheckpointsResource

    def _distance(self, facts: CheckpointsFacts) -> str:
        return (
            f"{format_bytes(facts.wal_since_redo_bytes or 0)} of WAL since the last "
            f"{facts.kind} began ({facts.wal_since_redo_percent or 0:.0f}% of max_wal_size "
            f"{format_bytes(facts.max_wal_size_bytes)})"
        )

    def ok(self, results: nagiosplugin.Results) -> str:
        facts = self.resource.facts
        assert facts is not None
        return self._distance(facts)

    def problem(self, results: nagiosplugin.Results) -> str:
        facts = self.resource.facts
        if facts is None:
            return super().problem(results)
        return f"{self._distance(facts)}: {facts.kind}s fall behind ({super().problem(results)})"


@postgres_command("checkpoints")
@threshold_options(
    plain_unit=None,
    help_suffix="WAL since the last checkpoint began, as a size (2GB) or a percentage "
    "of max_wal_size (150%).",
)
def command(
    settings: ConnectionSettings,
    verbose: int,
    warning: tuple[Threshold, ...],
    critical: tuple[Threshold, ...],
) -> output.Report:
    """WAL written since the last checkpoint began: what a crash would replay.

    PostgreSQL paces a checkpoint to end as this nears max_wal_size; well beyond it,
    checkpoints fall behind the writes (or the checkpointer is stuck): crash recovery
    grows and pg_wal keeps every segment. On a standby, the last restartpoint and the WAL
    replayed since. An idle server skips its checkpoints, so their age is only reported.
    Defaults: warning above 150%, critical above 200% of max_wal_size.
    """
    resource = CheckpointsResource(settings)
    return run(
        NAME,
        resource,
        *adapters.threshold_contexts(warning, critical, WORDS, defaults=DEFAULTS),
        adapters.FactContext("checkpoints_fact"),
        summary=CheckpointsSummary(resource),
        verbose=verbose,
    )
