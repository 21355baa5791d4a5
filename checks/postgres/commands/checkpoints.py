"""``checkpoints``: do checkpoints keep up with the writes (restartpoints with replay)."""

from __future__ import annotations

from collections.abc import Iterator

import click
import nagiosplugin

from checks import adapters, output, runtime
from checks.postgres.connection import ConnectionSettings, connect
from checks.postgres.options import connection_options
from checks.postgres.readers.checkpoints import CheckpointsFacts, read_checkpoints
from checks.status import unknown
from checks.thresholds import Limits, Threshold, assign, threshold_options
from checks.units import Unit, format_bytes, format_duration

NAME = "PG_CHECKPOINTS"
# A checkpoint on schedule ends as the distance nears max_wal_size (docs/design.md §3):
# half of max_wal_size beyond that, it has fallen behind the writes.
DEFAULTS = {
    "wal_since_checkpoint_pct": Limits(nagiosplugin.Range("150"), nagiosplugin.Range("200"))
}


class CheckpointsResource(adapters.Probe):
    def __init__(self, settings: ConnectionSettings) -> None:
        super().__init__()
        self.settings = settings
        self.facts: CheckpointsFacts | None = None

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        with connect(self.settings) as conn:
            facts = self.facts = read_checkpoints(conn)
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
    probe: CheckpointsResource

    def _distance(self) -> str:
        facts = self.probe.facts
        assert facts is not None and facts.wal_since_redo_bytes is not None
        return (
            f"{format_bytes(facts.wal_since_redo_bytes)} of WAL since the last {facts.kind} "
            f"began ({facts.wal_since_redo_percent:.0f}% of max_wal_size "
            f"{format_bytes(facts.max_wal_size_bytes)})"
        )

    def ok(self, results: nagiosplugin.Results) -> str:
        return self._distance()

    def problem(self, results: nagiosplugin.Results) -> str:
        facts = self.probe.facts
        if facts is None:
            return super().problem(results)
        return f"{self._distance()}: {facts.kind}s fall behind ({super().problem(results)})"


@click.command("checkpoints", context_settings=runtime.CONTEXT_SETTINGS)
@connection_options
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
    limits = assign(
        warning,
        critical,
        targets={Unit.PERCENT: "wal_since_checkpoint_pct", Unit.BYTES: "wal_since_checkpoint"},
        defaults=DEFAULTS,
    )

    def build() -> nagiosplugin.Check:
        resource = CheckpointsResource(settings)
        return adapters.Check(
            resource,
            adapters.MetricContext(
                "wal_since_checkpoint",
                limits["wal_since_checkpoint"],
                label="WAL since the last checkpoint",
                unit=Unit.BYTES,
            ),
            adapters.MetricContext(
                "wal_since_checkpoint_pct",
                limits["wal_since_checkpoint_pct"],
                label="WAL since the last checkpoint",
                unit=Unit.PERCENT,
            ),
            adapters.FactContext("checkpoints_fact"),
            CheckpointsSummary(resource),
        )

    return runtime.run_check(
        NAME, build, timeout=settings.timeout, target=settings.target, verbose=verbose
    )
