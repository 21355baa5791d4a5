"""``consul-role``: does the Consul role tag tell the truth about this instance?

The stale-tag guard (issue 4, DESIGN.md §5): attached to the database service, it makes a
wrong tag harmless whatever the reporter is doing, because a CRITICAL check drops the
instance from DNS. CRITICAL only when the instance must leave DNS: tagged leader but not
a writable primary, or a primary while another passing instance holds the leader tag on
a newer timeline (a resurrected old primary).

Everything else that is wrong is WARNING, which keeps the instance in DNS: this check
does not write tags (the reporter does), so its own trouble must never evict a healthy
primary. That covers Consul unreachable, refusing the token or not knowing the service;
the split-brain guard blind (ACLs hide our own instance, so they may hide rivals); tagged
follower but a primary (the moment after a promotion, before the reporter retags); and
no role tag where the reporter would set one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import click
import nagiosplugin

from checks import plugin
from checks.postgres.connection import ConnectionSettings, connect
from checks.postgres.options import connection_options

if TYPE_CHECKING:
    from checks.consul import ConsulSettings

NAME = "PG_CONSUL_ROLE"
# Share of --timeout one Consul request may take (there are two before PostgreSQL is
# asked), so a hung agent is reported as such before the watchdog fires.
CONSUL_BUDGET_SHARE = 0.25


class ConsulRole(plugin.Probe):
    def __init__(
        self,
        settings: ConnectionSettings,
        *,
        service_id: str,
        consul_settings: ConsulSettings | plugin.CheckFailed,
        leader_tag: str,
        follower_tag: str,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.service_id = service_id
        self.consul_settings = consul_settings
        self.leader_tag = leader_tag
        self.follower_tag = follower_tag
        self.verdict = None

    def _consul(self) -> tuple[dict, list[dict]]:
        from checks.consul import ConsulClient, ConsulError, ConsulNotFound

        if isinstance(self.consul_settings, plugin.CheckFailed):
            raise self.consul_settings
        try:
            with ConsulClient(self.consul_settings) as client:
                service, _ = client.agent_service(self.service_id)
                # Every instance, not only passing ones: our own entry must be there
                # whatever our state, or ACLs are hiding instances (checks/reporter/guard.py).
                entries = client.health_service(service.get("Service") or self.service_id)
        except ConsulNotFound:
            raise plugin.CheckFailed(
                plugin.Status.WARNING,
                f"service {self.service_id} is not registered on the local Consul agent",
            ) from None
        except ConsulError as exc:
            raise plugin.CheckFailed(plugin.Status.WARNING, f"Consul: {exc}") from None
        return service, entries

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        from checks.postgres.probes.role import read_role
        from checks.reporter.guard import (
            blind_reason,
            blind_summary,
            judge_tags,
            newer_rival,
            rival_leaders,
            sees_itself,
        )
        from checks.reporter.reconcile import TagNames, role_tags_of

        service, entries = self._consul()
        with connect(self.settings) as conn:
            facts = read_role(conn)
        tags = list(service.get("Tags") or [])
        name = service.get("Service") or self.service_id
        role_tags = role_tags_of(tags, TagNames(self.leader_tag, self.follower_tag))
        rivals = rival_leaders(
            entries, service_id=self.service_id, node=None, leader_tag=self.leader_tag
        )
        newer = newer_rival(rivals, facts.timeline)
        blind = not sees_itself(entries, service_id=self.service_id)
        self.verdict = judge_tags(
            role_tags=role_tags,
            leader_tag=self.leader_tag,
            follower_tag=self.follower_tag,
            is_primary=facts.is_primary,
            writable=facts.writable,
            timeline=facts.timeline,
            newer=newer,
            blind=blind_summary(name) if blind else None,
        )
        self.details += [
            f"service {self.service_id} tags: {', '.join(tags) or '(none)'}",
            f"PostgreSQL: {facts.role}, {'writable' if facts.writable else 'read-only'}, "
            f"timeline {facts.timeline}",
        ]
        if blind:
            self.details.append(blind_reason(name, self.service_id))
        self.details += [
            f"passing {self.leader_tag}: {rival} on timeline {rival.timeline}" for rival in rivals
        ]
        yield nagiosplugin.Metric("tag_matches_role", int(self.verdict.problem is None))
        yield nagiosplugin.Metric("is_primary", int(facts.is_primary), min=0, max=1)
        yield nagiosplugin.Metric("timeline", facts.timeline, min=1, context="timeline")


class VerdictContext(nagiosplugin.Context):
    def evaluate(self, metric: nagiosplugin.Metric, resource: ConsulRole) -> nagiosplugin.Result:
        verdict = resource.verdict
        if verdict is None or verdict.problem is None:
            return nagiosplugin.Result(nagiosplugin.Ok, None, metric)
        state = nagiosplugin.Critical if verdict.critical else nagiosplugin.Warn
        return nagiosplugin.Result(state, verdict.problem, metric)


class VerdictSummary(plugin.Summary):
    probe: ConsulRole

    def ok(self, results: nagiosplugin.Results) -> str:
        verdict = self.probe.verdict
        return verdict.summary if verdict is not None else "no verdict"


@click.command("consul-role", context_settings=plugin.CONTEXT_SETTINGS)
@connection_options
@click.option(
    "--service-id",
    default="pg-db",
    show_default=True,
    help="ID of this instance's service on the local Consul agent.",
)
@click.option(
    "--consul-addr",
    metavar="ADDR",
    help="Agent HTTP address: host:port, http(s)://host:port or unix:///path "
    "(default: CONSUL_HTTP_ADDR, then 127.0.0.1:8500). Token: CONSUL_HTTP_TOKEN(_FILE).",
)
@click.option("--leader-tag", default="leader", show_default=True, help="The primary's tag.")
@click.option("--follower-tag", default="follower", show_default=True, help="A replica's tag.")
def command(
    settings: ConnectionSettings,
    verbose: int,
    service_id: str,
    consul_addr: str | None,
    leader_tag: str,
    follower_tag: str,
) -> plugin.Report:
    """CRITICAL when the Consul role tag does not match the real role (stale-tag guard).

    CRITICAL, so Consul drops this instance from DNS: tagged leader but not a writable
    primary, or a primary while another passing instance holds the leader tag on a newer
    timeline (fenced). WARNING, which keeps it in DNS: tagged follower but a primary (just
    promoted), no role tag (is pg-role-reporter running?), the split-brain guard blind
    (the token needs service:read and node:read), and Consul unreachable, refusing the
    token or not knowing the service. Perfdata: is_primary (0/1), timeline.
    """

    consul_settings = _consul_settings(consul_addr, settings.timeout)
    consul_where = (
        f"the Consul agent at {consul_settings.address}"
        if not isinstance(consul_settings, plugin.CheckFailed)
        else "the Consul agent"
    )

    def build() -> nagiosplugin.Check:
        probe = ConsulRole(
            settings,
            service_id=service_id,
            consul_settings=consul_settings,
            leader_tag=leader_tag,
            follower_tag=follower_tag,
        )
        return nagiosplugin.Check(
            probe,
            VerdictContext("tag_matches_role"),
            plugin.FactContext("is_primary"),
            plugin.FactContext("timeline"),
            VerdictSummary(probe),
        )

    return plugin.run_check(
        NAME,
        build,
        timeout=settings.timeout,
        target=f"PostgreSQL {settings.target()} or {consul_where}",
        verbose=verbose,
    )


def _consul_settings(address: str | None, timeout: float) -> ConsulSettings | plugin.CheckFailed:
    """The agent's settings with request timeouts that fit inside --timeout, or why not."""
    from dataclasses import replace

    from checks.consul import ConsulError, ConsulSettings

    try:
        consul = ConsulSettings.from_env(address=address)
    except ConsulError as exc:
        # a configuration error, not the agent's state: UNKNOWN (DESIGN.md §2)
        return plugin.unknown(f"Consul: {exc}")
    if timeout <= 0:
        return consul
    share = timeout * CONSUL_BUDGET_SHARE
    return replace(
        consul,
        connect_timeout=min(consul.connect_timeout, share),
        read_timeout=min(consul.read_timeout, share),
    )
