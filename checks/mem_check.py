"""mem_check: is this host (or its container) short of memory?

The resource is :class:`checks.memory.resource.MemoryResource`; this module holds the CLI, the
contexts that put thresholds on its metrics, and the summary that words the first line.
docs/design.md §4 says why each number is the one it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NoReturn, TypeVar

import click
import nagiosplugin

from checks.adapters import Check, FactContext, MetricContext, Summary, status_of
from checks.budget import Budget
from checks.memory.resource import MemoryResource
from checks.memory.snapshot import SCOPES, take_snapshot
from checks.output import Report
from checks.runtime import command as check_command
from checks.runtime import common_options, run_check, run_cli, version_option
from checks.status import worst
from checks.thresholds import (
    Limits,
    Threshold,
    ThresholdType,
    assign,
    range_options,
    threshold_options,
)
from checks.units import Unit, plain_number

NAME = "MEM"

Command = TypeVar("Command", bound=Callable[..., object])

DEFAULTS = {
    "used_percent": Limits(nagiosplugin.Range("90"), nagiosplugin.Range("95")),
}
# Only applied under vm.overcommit_memory=2, where reaching CommitLimit fails allocations.
COMMIT_DEFAULTS = {
    "commit_percent": Limits(nagiosplugin.Range("90"), nagiosplugin.Range("95")),
}
FACTS = (
    "total_bytes",
    "hugetlb_bytes",
    "swap_total_bytes",
    "swap_in_bytes",
    "swap_out_bytes",
    "pressure_some_avg10",
    "commit_limit_bytes",
)


class MaybeMetricContext(MetricContext):
    """A thresholded metric the kernel may not provide: asked for but missing is UNKNOWN."""

    def evaluate(self, metric: nagiosplugin.Metric, resource: object) -> nagiosplugin.Result:
        if metric.value is None:
            return nagiosplugin.Result(
                nagiosplugin.Unknown, f"{self.label} not available on this kernel", None
            )
        return super().evaluate(metric, resource)

    def performance(
        self, metric: nagiosplugin.Metric, resource: object
    ) -> nagiosplugin.Performance | None:
        return None if metric.value is None else super().performance(metric, resource)


class MemSummary(Summary):
    resource: MemoryResource

    def ok(self, results: nagiosplugin.Results) -> str:
        return self.resource.headline

    def problem(self, results: nagiosplugin.Results) -> str:
        status = worst(status_of(r.state) for r in results)
        said = {r.metric.name for r in results if status_of(r.state) is status and r.metric}
        return f"{super().problem(results)}, {self.resource.headline_without(said)}"


def _floor(threshold: Threshold | None) -> nagiosplugin.Range | None:
    """``--available-warning 2GiB`` means "at least 2 GiB": a bare number is a floor."""
    if threshold is None:
        return None
    text = threshold.text.strip()
    if ":" in text or text.startswith("@"):
        return threshold.range
    return nagiosplugin.Range(f"{plain_number(threshold.range.end)}:")


def _pair(
    option: str,
    warning: Threshold | None,
    critical: Threshold | None,
    targets: dict[Unit, str],
    defaults: dict[str, Limits] | None = None,
) -> dict[str, Limits]:
    """:func:`assign` for a single ``--X-warning/--X-critical`` pair, naming that option."""
    try:
        return assign(
            [warning] if warning else [],
            [critical] if critical else [],
            targets,
            defaults=defaults,
            plain_unit=Unit.PERCENT if Unit.PERCENT in targets else Unit.NUMBER,
        )
    except click.BadParameter as exc:
        exc.param_hint = str(exc.param_hint).replace("--", f"--{option}-")
        raise


@check_command("mem_check")
@threshold_options(
    plain_unit=Unit.PERCENT,
    help_suffix="Percent of the total used (90%, default warning 90, critical 95) or bytes "
    "used (20GiB).",
)
@click.option(
    "--available-warning",
    type=ThresholdType(unit=Unit.BYTES),
    metavar="RANGE",
    help="Warn when available memory is below this (2GiB); a full range (@0:2GiB) also works.",
)
@click.option(
    "--available-critical",
    type=ThresholdType(unit=Unit.BYTES),
    metavar="RANGE",
    help="Critical when available memory is below this (1GiB).",
)
@click.option(
    "--scope",
    type=click.Choice(SCOPES),
    default="auto",
    show_default=True,
    help="What to measure: the host, a cgroup, or auto (the container's limit if one "
    "applies, else the host).",
)
@click.option(
    "--cgroup",
    "cgroup_path",
    metavar="PATH",
    help="The cgroup to measure (/system.slice/postgresql.service); default: the root of "
    "the cgroup file system, which is the container's own inside a container.",
)
@range_options("swap", ThresholdType(plain_unit=Unit.PERCENT), "swap used (% or bytes)")
@range_options(
    "pressure",
    ThresholdType(unit=Unit.PERCENT, plain_unit=Unit.PERCENT),
    "PSI memory 'some avg60' (%)",
)
@range_options(
    "commit",
    ThresholdType(plain_unit=Unit.PERCENT),
    "commit charge vs CommitLimit (% or bytes; only under vm.overcommit_memory=2, "
    "default 90%/95% there)",
)
@range_options("oom", ThresholdType(plain_unit=Unit.NUMBER), "OOM kills counted so far (a count)")
@click.option(
    "--top",
    type=click.IntRange(min=0, max=50),
    default=0,
    metavar="N",
    help="List the N largest processes (by PSS where readable, else RSS) in the long output.",
)
@click.option(
    "--root", default="/", hidden=True, metavar="DIR", help="Read /proc and /sys under DIR (tests)."
)
@common_options
@version_option
def command(
    warning: tuple[Threshold, ...],
    critical: tuple[Threshold, ...],
    available_warning: Threshold | None,
    available_critical: Threshold | None,
    scope: str,
    cgroup_path: str | None,
    swap_warning: Threshold | None,
    swap_critical: Threshold | None,
    pressure_warning: Threshold | None,
    pressure_critical: Threshold | None,
    commit_warning: Threshold | None,
    commit_critical: Threshold | None,
    oom_warning: Threshold | None,
    oom_critical: Threshold | None,
    top: int,
    root: str,
    timeout: float,
    verbose: int,
) -> Report:
    """Check memory use on a PostgreSQL host: (total - MemAvailable) / total, with the
    HugeTLB pool left out of the total, or a cgroup's working set against its tightest
    limit. Swap, memory pressure (PSI), commit charge and OOM kills are always in the
    perfdata and can be given their own thresholds.
    """
    if cgroup_path is not None and scope == "host":
        raise click.UsageError("--cgroup measures a cgroup, which makes no sense with --scope host")
    used = assign(
        warning,
        critical,
        {Unit.PERCENT: "used_percent", Unit.BYTES: "used_bytes"},
        defaults=DEFAULTS,
        plain_unit=Unit.PERCENT,
    )
    available = Limits(_floor(available_warning), _floor(available_critical))
    swap = _pair(
        "swap",
        swap_warning,
        swap_critical,
        {Unit.PERCENT: "swap_used_percent", Unit.BYTES: "swap_used_bytes"},
    )
    pressure = _pair(
        "pressure", pressure_warning, pressure_critical, {Unit.PERCENT: "pressure_some_avg60"}
    )
    commit = _pair(
        "commit",
        commit_warning,
        commit_critical,
        {Unit.PERCENT: "commit_percent", Unit.BYTES: "committed_bytes"},
        defaults=COMMIT_DEFAULTS,
    )
    oom = _pair("oom", oom_warning, oom_critical, {Unit.NUMBER: "oom_kills"})
    required = {
        name
        for name, limits in {**pressure, **oom}.items()
        if limits.warning is not None or limits.critical is not None
    }

    def build() -> nagiosplugin.Check:
        snapshot = take_snapshot(root, scope, cgroup_path)
        processes = []
        if top:
            from checks.memory.cgroup import member_pids
            from checks.memory.processes import top_processes

            # in cgroup scope the largest processes that matter are the cgroup's own
            cgroup = snapshot.cgroup if snapshot.scope == "cgroup" else None
            only = member_pids(root, cgroup.directory) if cgroup else None
            processes = top_processes(top, procfs=f"{root.rstrip('/')}/proc", only=only)
        resource = MemoryResource(snapshot, top=processes, required=required)
        # CommitLimit only binds under mode 2; elsewhere it is a number, not a limit
        commit_limits = commit if snapshot.overcommit.enforced else {}
        return Check(
            resource,
            MemSummary(resource),
            MetricContext("used_percent", used["used_percent"], label="used", unit=Unit.PERCENT),
            MetricContext("used_bytes", used["used_bytes"], label="used", unit=Unit.BYTES),
            MetricContext("available_bytes", available, label="available", unit=Unit.BYTES),
            MetricContext(
                "swap_used_percent",
                swap["swap_used_percent"],
                label="swap used",
                unit=Unit.PERCENT,
            ),
            MetricContext(
                "swap_used_bytes", swap["swap_used_bytes"], label="swap used", unit=Unit.BYTES
            ),
            MaybeMetricContext(
                "pressure_some_avg60",
                pressure["pressure_some_avg60"],
                label="memory pressure (some avg60)",
                unit=Unit.PERCENT,
            ),
            MetricContext(
                "commit_percent",
                commit_limits.get("commit_percent"),
                label="commit charge",
                unit=Unit.PERCENT,
            ),
            MetricContext(
                "committed_bytes",
                commit_limits.get("committed_bytes"),
                label="commit charge",
                unit=Unit.BYTES,
            ),
            MaybeMetricContext("oom_kills", oom["oom_kills"], label="OOM kills", unit=Unit.NUMBER),
            *(FactContext(name, fmt_metric="{name} {valueunit}") for name in FACTS),
        )

    return run_check(NAME, build, budget=Budget(timeout), target="/proc", verbose=verbose)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    run_cli(command, NAME, argv)


if __name__ == "__main__":
    main()
