"""Where the primary's WAL is, for a replica to be judged against: the leader's position
published in Consul, or a primary reached by conninfo. And, when replay is paused, the
upstream's parameter values.

A replica alone only knows its upstream: a cascaded standby whose upstream standby lost
the primary is "0 B behind" while the primary is megabytes ahead (docs/design.md §9). The
leader's pg-role-reporter publishes ``pg_current_wal_lsn()`` in its ``pg-db`` service Meta
(``pg_wal_lsn``, at most once a second and only when it changed), so that position is at
most about a second old: a figure against it is a lower bound of how far behind we are.

Every lookup here is optional and bounded to a share of ``--timeout``: a missing agent or
primary makes the check say what it could not compare with, never fail or hang.
"""

from __future__ import annotations

import contextvars
import re
import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from checks.postgres.connection import ConnectionSettings, connect
from checks.postgres.readers.lag import ServerPositionFacts, read_position
from checks.status import CheckFailed

if TYPE_CHECKING:
    from checks.consul import ConsulSettings

META_WAL_LSN = "pg_wal_lsn"
META_SYSTEM_IDENTIFIER = "pg_system_identifier"
META_TIMELINE = "pg_timeline"
_LSN = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")


@dataclass(frozen=True)
class Reference:
    """A WAL position to compare with, or why there is none (``lsn`` None)."""

    lsn: str | None
    # "the leader pg1 (Consul)", "the primary db1:5432"
    source: str
    problem: str | None = None
    system_identifier: str | None = None
    parameters: dict[str, int] | None = None


def lsn_order(text: str) -> int:
    """Sort key for a text LSN. Only for ordering; distances are the server's job."""
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def leader_from_consul(
    service: str,
    tag: str,
    consul_settings: ConsulSettings,
    budget: float,
    system_identifier: str | None = None,
) -> Reference:
    """The leader's published position from the local agent's health endpoint.

    ``system_identifier``: this replica's, so that a tagged instance of another cluster
    is never preferred to one of ours (see :func:`_newest`).
    """
    # here, not at the top: httpx costs ~90 ms to import, and only Consul users pay it
    from checks.consul import ConsulClient, ConsulError

    source = f"the {tag} of {service} in Consul"
    settings = replace(consul_settings, connect_timeout=budget, read_timeout=budget)
    try:
        with ConsulClient(settings) as client:
            entries = client.health_service(service, tag=tag)
            published = _published(entries)
            if not published:
                # Failing over: the old leader lost its tag, the new one has none yet.
                # Its last published position, if its reporter left it in the Meta, is
                # still the last known position of the primary (only a leader publishes).
                last_known = _published(client.health_service(service))
                if last_known:
                    lsn, node, published_id, _ = _newest(last_known, system_identifier)
                    return Reference(
                        lsn,
                        f"the last known {tag} {node} (Consul, none tagged now)",
                        system_identifier=published_id,
                    )
    except ConsulError as exc:
        # the first clause names the agent and the failure; the rest is advice that
        # would push the verdict out of the 200-character summary
        return Reference(None, source, problem=f"Consul: {str(exc).split('; ')[0]}")
    if not published:
        why = (
            # ACLs filter this list rather than refuse it: a token that may not read the
            # service or its nodes sees none, which is not "none is tagged".
            f"no instance of {service} tagged {tag} is visible (none, or the token lacks "
            "service:read or node:read)"
            if not entries
            else f"the {tag} publishes no {META_WAL_LSN} in its service Meta"
        )
        return Reference(None, source, problem=f"Consul: {why}")
    lsn, node, published_id, _ = _newest(published, system_identifier)
    return Reference(lsn, f"the {tag} {node} (Consul)", system_identifier=published_id)


# (position, node, system identifier, timeline)
_Published = tuple[str, str, "str | None", int]


def _newest(published: list[_Published], system_identifier: str | None) -> _Published:
    """The leader to compare with when several publish (two leaders is the fence's business).

    Only ours: an instance of another cluster (other system identifier) is chosen only
    when no instance of ours publishes, and the caller then says so. Among ours, the
    newest timeline: a promotion always starts a new one, so a resurrected old primary,
    however far its own WAL went, is on an older timeline than the real leader and its
    position is not one this replica has to reach. Then the furthest position.
    """
    ours = [item for item in published if item[2] in (None, system_identifier)]
    return max(ours or published, key=lambda item: (item[3], lsn_order(item[0])))


def _published(entries: list[dict[str, Any]]) -> list[_Published]:
    """(position, node, system identifier, timeline) of every instance publishing one."""
    found = []
    for entry in entries:
        meta = (entry.get("Service") or {}).get("Meta") or {}
        lsn = meta.get(META_WAL_LSN) or ""
        if _LSN.match(lsn):
            node = (entry.get("Node") or {}).get("Node") or "?"
            timeline = meta.get(META_TIMELINE) or ""
            found.append(
                (
                    lsn,
                    node,
                    meta.get(META_SYSTEM_IDENTIFIER),
                    int(timeline) if timeline.isascii() and timeline.isdigit() else 0,
                )
            )
    return found


def primary_from_conninfo(conninfo: str, timeout: float) -> Reference:
    """``--primary``: ask the primary itself (credentials from libpq: pgpass, service)."""
    settings = ConnectionSettings(dbname=_as_conninfo(conninfo), timeout=timeout)
    asked = _ask(settings)
    if isinstance(asked, str):
        return Reference(None, "the primary", problem=f"--primary: {asked}")
    position, where = asked
    source = f"the primary {where}"
    if position.in_recovery or position.wal_lsn is None:
        return Reference(
            None,
            source,
            problem=f"--primary {where} is itself a standby",
            system_identifier=position.system_identifier,
            parameters=position.parameters,
        )
    return Reference(
        position.wal_lsn,
        source,
        system_identifier=position.system_identifier,
        parameters=position.parameters,
    )


def upstream_parameters(
    settings: ConnectionSettings, host: str, port: int, timeout: float
) -> dict[str, int] | str:
    """The upstream's parameter values, logging in as the check does; or why not."""
    asked = _ask(replace(settings, host=host, port=port, timeout=timeout))
    return asked if isinstance(asked, str) else asked[0].parameters


def _ask(settings: ConnectionSettings) -> tuple[ServerPositionFacts, str] | str:
    """The server's position and ``host:port`` as reached, or why it could not be asked,
    within ``settings.timeout`` of wall-clock time.

    libpq's connect_timeout is whole seconds, at least 2, and counts per host: a frozen
    primary, or a multi-host conninfo (``host=db1,db2 target_session_attrs=read-write``),
    would outlast this lookup's share of --timeout, and the watchdog would then end the
    check CRITICAL, naming the replica. So the lookup runs in a daemon thread that is
    abandoned at its deadline (the process exits right after the answer is printed).
    """
    answers: list[tuple[ServerPositionFacts, str] | str | BaseException] = []

    def ask() -> None:
        try:
            # another server than the check's own: never a resident daemon's kept one
            with connect(settings, own_instance=False) as conn:
                answers.append((read_position(conn), f"{conn.info.host}:{conn.info.port}"))
        except CheckFailed as failure:
            answers.append(failure.message)
        except BaseException as exc:  # re-raised below, in the check's own thread
            answers.append(exc)

    # the check's context goes along (connect() reads the connection source from it)
    context = contextvars.copy_context()
    worker = threading.Thread(target=context.run, args=(ask,), name="lag-reference", daemon=True)
    worker.start()
    worker.join(settings.timeout)
    if not answers:
        return f"no answer within {settings.timeout:.1f}s"
    if isinstance(answers[0], BaseException):
        raise answers[0]
    return answers[0]


def _as_conninfo(text: str) -> str:
    """A conninfo or URI as given; a bare word names a service in pg_service.conf."""
    if "=" in text or text.startswith(("postgresql://", "postgres://")):
        return text
    return f"service={text}"
