"""What pg-role-reporter's command line decided: one frozen value every part reads."""

from __future__ import annotations

from dataclasses import dataclass

from checks.roletag.plan import TagNames

# Explicit release imposes no lock-delay; only an invalidated session does (its node
# failed, a bound check went critical, its TTL ran out). Those causes take the old holder
# out of DNS themselves (node or alive check critical) or long before the TTL ends
# (consul-role: a hung reporter's leader is CRITICAL after a few seconds), so one second
# covers propagation without adding Consul's default 15 s to such a failover.
DEFAULT_LOCK_DELAY_SECONDS = 1.0
# Patroni's default: a 30 s leader TTL, i.e. a 15 s session TTL (Consul invalidates at up
# to twice it). Consul's own floor is 10 s (session_ttl_min).
DEFAULT_SESSION_TTL_SECONDS = 15.0
# pg_wal_lsn: republished at most every --wal-lsn-interval, sooner (but at most once a
# second) after a WAL segment's worth of writes.
DEFAULT_WAL_LSN_INTERVAL_SECONDS = 5.0


@dataclass(frozen=True)
class Options:
    service_id: str
    names: TagNames
    interval: float
    dry_run: bool
    once: bool
    lock_key: str = "service/pg-db/leader"
    lock_datacenter: str | None = None
    lock_delay: float = DEFAULT_LOCK_DELAY_SECONDS
    session_ttl: float = DEFAULT_SESSION_TTL_SECONDS
    # None: serfHealth plus `<service-id>-alive` when the agent has that check
    session_checks: tuple[str, ...] | None = None
    wal_lsn_interval: float = DEFAULT_WAL_LSN_INTERVAL_SECONDS
