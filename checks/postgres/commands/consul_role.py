"""``consul-role``: does the Consul role tag tell the truth about this instance?

The stale-tag guard (docs/design.md §5): attached to the database service, it makes a
wrong tag harmless whatever the reporter is doing, because a CRITICAL check drops the
instance from DNS. It reads what the reporter's fence decided instead of guessing from the
catalog: the leader lock's KV entry (who holds it), the reporter's published reason
(`pg_fenced_reason`) and, in pg_stat_activity, whether the reporter is connected and
querying. The decision is checks/roletag/verdict.py:judge_role().

CRITICAL: tagged leader but not a writable primary, or without holding the lock, or with
a hung reporter; a writable primary fenced by another holder of the lock, or kept out of
`leader.` by the reporter's published reason (login refused, wrong service, ACL).
Everything else is WARNING, which keeps the instance in DNS: this check writes nothing,
so its own trouble (Consul unreachable, refusing the token, lock unreadable) must never
evict a healthy primary. The check's session is never bound to the reporter's lock
session: the fence turns this check critical, so binding it would be circular.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click
import nagiosplugin

from checks import adapters, output
from checks.budget import Budget
from checks.postgres.check import PostgresResource, postgres_command, run
from checks.postgres.connection import ConnectionSettings
from checks.status import CheckFailed, Status

if TYPE_CHECKING:
    from checks.consul import ConsulSettings

NAME = "PG_CONSUL_ROLE"
# The reporter queries every --interval (1 s) and a Consul call may hold its loop for a
# few seconds; 8 s of silence is a hang, and comes well before its session's TTL ends
# (15 s, invalidated at up to 30 s): the hung leader leaves DNS before its lock is free.
DEFAULT_REPORTER_SILENCE_SECONDS = 8.0


class ConsulRoleResource(PostgresResource):
    def __init__(
        self,
        settings: ConnectionSettings,
        *,
        service_id: str,
        consul_settings: ConsulSettings | CheckFailed,
        leader_tag: str,
        follower_tag: str,
        lock_key: str | None,
        lock_datacenter: str | None,
        reporter_silence: float,
    ) -> None:
        super().__init__(settings)
        self.service_id = service_id
        self.consul_settings = consul_settings
        self.leader_tag = leader_tag
        self.follower_tag = follower_tag
        self.lock_key = lock_key
        self.lock_datacenter = lock_datacenter
        self.reporter_silence = reporter_silence
        # the fence's RoleVerdict, once probe() has judged
        self.verdict: Any = None

    def _consul(self) -> tuple[dict[str, Any], dict[str, Any] | None, str | None, str]:
        """(service, lock entry, why the lock could not be read, lock key)."""
        from checks.consul import ConsulClient, ConsulError, ConsulNotFound
        from checks.roletag.fencing import default_lock_key

        if isinstance(self.consul_settings, CheckFailed):
            raise self.consul_settings
        try:
            with ConsulClient(self.consul_settings) as client:
                service, _ = client.agent_service(self.service_id)
                key = self.lock_key or default_lock_key(service.get("Service") or self.service_id)
                lock_error = None
                entry = None
                try:
                    entry, _ = client.kv_get(key, datacenter=self.lock_datacenter)
                except ConsulError as exc:
                    lock_error = str(exc)
        except ConsulNotFound:
            raise CheckFailed(
                Status.WARNING,
                f"service {self.service_id} is not registered on the local Consul agent",
            ) from None
        except ConsulError as exc:
            raise CheckFailed(Status.WARNING, f"Consul: {exc}") from None
        return service, entry, lock_error, key

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        from checks.postgres.readers.reporter import read_presence
        from checks.postgres.readers.role import read_role
        from checks.roletag.fencing import holder_of
        from checks.roletag.plan import (
            META_FENCED_REASON,
            META_LOCK_SESSION,
            TagNames,
            role_tags_of,
        )
        from checks.roletag.verdict import ReporterPresence, judge_role

        service, entry, lock_error, key = self._consul()
        with self.connection() as conn:
            facts = read_role(conn)
            try:
                connections, silent = read_presence(conn)
                presence: ReporterPresence | None = ReporterPresence(connections, silent)
            except CheckFailed:
                presence = None  # pg_stat_activity hidden: say nothing about the reporter
        tags = list(service.get("Tags") or [])
        meta = service.get("Meta") or {}
        role_tags = role_tags_of(tags, TagNames(self.leader_tag, self.follower_tag))
        holder = holder_of(entry)
        self.verdict = judge_role(
            role_tags=role_tags,
            leader_tag=self.leader_tag,
            follower_tag=self.follower_tag,
            is_primary=facts.is_primary,
            writable=facts.writable,
            timeline=facts.timeline,
            lock_key=key,
            holder=holder,
            lock_error=lock_error,
            our_session=meta.get(META_LOCK_SESSION),
            published_reason=meta.get(META_FENCED_REASON),
            reporter=presence,
            silent_limit=self.reporter_silence,
        )
        self.details += [
            f"service {self.service_id} tags: {', '.join(tags) or '(none)'}",
            f"PostgreSQL: {facts.role}, {'writable' if facts.writable else 'read-only'}, "
            f"timeline {facts.timeline}",
            f"leader lock {key}: "
            + (
                f"unreadable ({lock_error})"
                if lock_error
                else f"held by {holder} (timeline {holder.timeline})"
                if holder
                else "free"
            ),
        ]
        if presence is not None:
            self.details.append(
                f"pg-role-reporter connections: {presence.connections}"
                + (
                    f", last query {presence.silent_seconds:.0f}s ago"
                    if presence.connections and presence.silent_seconds is not None
                    else ""
                )
            )
        if meta.get(META_FENCED_REASON):
            self.details.append(f"reporter says: {meta[META_FENCED_REASON]}")
        yield nagiosplugin.Metric("tag_matches_role", int(self.verdict.problem is None))
        yield nagiosplugin.Metric("is_primary", int(facts.is_primary), min=0, max=1)
        yield nagiosplugin.Metric("timeline", facts.timeline, min=1, context="timeline")


class VerdictContext(nagiosplugin.Context):
    def evaluate(
        self, metric: nagiosplugin.Metric, resource: ConsulRoleResource
    ) -> nagiosplugin.Result:
        verdict = resource.verdict
        if verdict is None or verdict.problem is None:
            return nagiosplugin.Result(nagiosplugin.Ok, None, metric)
        state = nagiosplugin.Critical if verdict.critical else nagiosplugin.Warn
        return nagiosplugin.Result(state, verdict.problem, metric)


class VerdictSummary(adapters.Summary):
    resource: ConsulRoleResource

    def ok(self, results: nagiosplugin.Results) -> str:
        verdict = self.resource.verdict
        return verdict.summary if verdict is not None else "no verdict"


@postgres_command("consul-role", pass_budget=True)
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
@click.option(
    "--lock-key",
    metavar="KEY",
    help="The reporter's leader lock (default: service/<service name>/leader).",
)
@click.option("--lock-datacenter", metavar="DC", help="Datacenter of the lock (as the reporter's).")
@click.option(
    "--reporter-silence",
    type=click.FloatRange(min=1),
    default=DEFAULT_REPORTER_SILENCE_SECONDS,
    show_default=True,
    help="Seconds without a query from pg-role-reporter after which it counts as hung.",
)
def command(
    settings: ConnectionSettings,
    verbose: int,
    budget: Budget,
    service_id: str,
    consul_addr: str | None,
    leader_tag: str,
    follower_tag: str,
    lock_key: str | None,
    lock_datacenter: str | None,
    reporter_silence: float,
) -> output.Report:
    """CRITICAL when the Consul role tag does not match the real role or the fence.

    CRITICAL, so Consul drops this instance from DNS: tagged leader but not a writable
    primary, not holding the leader lock (--lock-key), or with pg-role-reporter hung
    (--reporter-silence); a writable primary whose lock another service holds (fenced,
    naming the holder) or that the reporter refuses to tag (its pg_fenced_reason: login
    refused, wrong service, missing ACL rule). WARNING, which keeps it in DNS: tagged
    follower but a primary (just promoted), no role tag, pg-role-reporter not connected,
    the lock unreadable, Consul unreachable, refusing the token or not knowing the
    service. Token: service:read on the service, key:read on the lock. Perfdata:
    is_primary (0/1), timeline.
    """

    consul_settings = _consul_settings(consul_addr, budget)
    consul_where = (
        f"the Consul agent at {consul_settings.address}"
        if not isinstance(consul_settings, CheckFailed)
        else "the Consul agent"
    )

    resource = ConsulRoleResource(
        settings,
        service_id=service_id,
        consul_settings=consul_settings,
        leader_tag=leader_tag,
        follower_tag=follower_tag,
        lock_key=lock_key,
        lock_datacenter=lock_datacenter,
        reporter_silence=reporter_silence,
    )
    return run(
        NAME,
        resource,
        VerdictContext("tag_matches_role"),
        adapters.FactContext("is_primary"),
        adapters.FactContext("timeline"),
        summary=VerdictSummary(resource),
        verbose=verbose,
        target=f"PostgreSQL {settings.target()} or {consul_where}",
    )


def _consul_settings(address: str | None, budget: Budget) -> ConsulSettings | CheckFailed:
    """The agent's settings with request timeouts that fit inside --timeout, or why not."""
    from dataclasses import replace

    from checks.consul import ConsulError, ConsulSettings

    try:
        consul = ConsulSettings.from_env(address=address)
    except ConsulError as exc:
        # A configuration error (token file empty or unreadable, bad address). Not UNKNOWN:
        # Consul counts exit 3 as critical, and this check's own trouble must never evict a
        # healthy primary (docs/design.md §5); WARNING says it and keeps it in DNS.
        return CheckFailed(Status.WARNING, f"Consul: {exc}")
    share = budget.consul_request
    return replace(
        consul,
        connect_timeout=min(consul.connect_timeout, share),
        read_timeout=min(consul.read_timeout, share),
    )
