"""``consul-role``: does the Consul role tag tell the truth about this instance?

The stale-tag guard (issue 4, DESIGN.md §5): attached to the database service, it makes a
wrong tag harmless whatever the reporter is doing, because a CRITICAL check drops the
instance from DNS. CRITICAL when tagged leader but not a writable primary, tagged follower
but a primary, or a primary while another passing instance holds the leader tag on a newer
timeline (a resurrected old primary). Consul unreachable is UNKNOWN, not CRITICAL: the
agent is what runs this check, so that answer would rarely be seen and never be about
PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator

import click
import nagiosplugin

from checks import plugin
from checks.postgres.connection import ConnectionSettings, connect
from checks.postgres.options import connection_options

NAME = "PG_CONSUL_ROLE"


class ConsulRole(plugin.Probe):
    def __init__(
        self,
        settings: ConnectionSettings,
        *,
        service_id: str,
        consul_addr: str | None,
        leader_tag: str,
        follower_tag: str,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.service_id = service_id
        self.consul_addr = consul_addr
        self.leader_tag = leader_tag
        self.follower_tag = follower_tag
        self.verdict = None

    def _consul(self) -> tuple[dict, list[dict]]:
        from checks.consul import ConsulClient, ConsulError, ConsulNotFound, ConsulSettings

        try:
            with ConsulClient(ConsulSettings.from_env(address=self.consul_addr)) as client:
                service, _ = client.agent_service(self.service_id)
                leaders = client.health_service(
                    service.get("Service") or self.service_id, tag=self.leader_tag, passing=True
                )
        except ConsulNotFound:
            raise plugin.unknown(
                f"service {self.service_id} is not registered on the local Consul agent"
            ) from None
        except ConsulError as exc:
            raise plugin.unknown(f"Consul: {exc}") from None
        return service, leaders

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        from checks.postgres.probes.role import read_role
        from checks.reporter.guard import judge_tags, newer_rival, rival_leaders
        from checks.reporter.reconcile import TagNames, role_tags_of

        service, leaders = self._consul()
        with connect(self.settings) as conn:
            facts = read_role(conn)
        tags = list(service.get("Tags") or [])
        role_tags = role_tags_of(tags, TagNames(self.leader_tag, self.follower_tag))
        rivals = rival_leaders(
            leaders, service_id=self.service_id, node=None, leader_tag=self.leader_tag
        )
        newer = newer_rival(rivals, facts.timeline)
        self.verdict = judge_tags(
            role_tags=role_tags,
            leader_tag=self.leader_tag,
            follower_tag=self.follower_tag,
            is_primary=facts.is_primary,
            writable=facts.writable,
            timeline=facts.timeline,
            newer=newer,
        )
        self.details += [
            f"service {self.service_id} tags: {', '.join(tags) or '(none)'}",
            f"PostgreSQL: {facts.role}, {'writable' if facts.writable else 'read-only'}, "
            f"timeline {facts.timeline}",
        ]
        self.details += [
            f"other passing {self.leader_tag}: {rival} on timeline {rival.timeline}"
            for rival in rivals
        ]
        yield nagiosplugin.Metric("tag_matches_role", int(self.verdict.problem is None))
        yield nagiosplugin.Metric("is_primary", int(facts.is_primary), min=0, max=1)
        yield nagiosplugin.Metric("timeline", facts.timeline, min=1, context="timeline")


class VerdictContext(nagiosplugin.Context):
    def evaluate(self, metric: nagiosplugin.Metric, resource: ConsulRole) -> nagiosplugin.Result:
        verdict = resource.verdict
        if verdict is None or verdict.problem is None:
            return nagiosplugin.Result(nagiosplugin.Ok, None, metric)
        return nagiosplugin.Result(nagiosplugin.Critical, verdict.problem, metric)


class VerdictSummary(plugin.Summary):
    def __init__(self, probe: ConsulRole) -> None:
        self.probe = probe

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

    Tagged leader but not a writable primary, tagged follower but a primary, or a primary
    while another passing instance holds the leader tag on a newer timeline (fenced): all
    CRITICAL, so Consul drops this instance from DNS. No role tag is OK. Consul unreachable
    is UNKNOWN. Perfdata: is_primary (0/1), timeline.
    """

    def build() -> nagiosplugin.Check:
        probe = ConsulRole(
            settings,
            service_id=service_id,
            consul_addr=consul_addr,
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
        NAME, build, timeout=settings.timeout, target=settings.target(), verbose=verbose
    )
