"""pg-role-reporter: keeps the local Consul service's role tag equal to PostgreSQL's role.

The only long-running part of pg-ha-checks (docs/design.md §1). Model (§5): conf.d
defines the service with role-neutral tags; this loop adds `leader` on a writable primary
and `follower` on a replica by read-modify-write of the agent's service, and publishes
role, timeline and system identifier in its Meta.

- A watcher thread holds a blocking query (`?hash=`) on the agent service: a `consul
  reload` or agent restart puts the conf.d tags back, the query returns at once and the
  tag is re-added within a fraction of a second.
- The main thread polls PostgreSQL every --interval over one kept connection and writes
  only when the desired registration differs from the current one.
- The fence (checks/reporter/fence.py): the leader tag is carried only while this
  instance's Consul session holds the KV lock --lock-key; a writable primary that cannot
  get it is fenced (no tag, `pg_fenced_reason` in Meta, an ERROR line). A third thread
  holds a blocking query on the key, so a release is seen at once.
- Identity: a service whose Port (or published system identifier) is not the server's is
  never tagged; at start that, an unknown service id or a token that cannot write ends
  the process with one line (exit 2).
- PostgreSQL unreachable, or refusing the login: the role tag goes (fail closed), the
  lock is released, and the log says which of the two it is.
- The leader publishes its WAL position in Meta `pg_wal_lsn` (edge-triggered, rate-limited).
- The agent unreachable: retried about once a second (usually it is restarting); errors
  while it answers (403, 5xx): capped jittered backoff; one log line per new problem.

It is a daemon, not a check: logs go to stderr (the journal), one line per event; exit
status 0 on a clean stop, 1 when --once could not finish, 2 on a usage or setup error.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import click

from checks import runtime
from checks.consul import (
    ConsulClient,
    ConsulError,
    ConsulNotFound,
    ConsulPermissionDenied,
    ConsulSettings,
    ConsulUnreachable,
    token_file_problem,
)
from checks.postgres.connection import ConnectionSettings
from checks.postgres.options import connection_options
from checks.reporter.backoff import UNREACHABLE_RETRY_SECONDS, Backoff
from checks.reporter.fence import (
    LockHolder,
    Step,
    default_lock_key,
    fence_step,
    fenced_reason,
    holder_of,
    identity_problem,
    lock_delay_reason,
    lock_value,
)
from checks.reporter.problems import UNREACHABLE, PostgresProblem, classify
from checks.reporter.reconcile import (
    META_SYSTEM_IDENTIFIER,
    META_WAL_LSN,
    Change,
    Observed,
    TagNames,
    plan,
)
from checks.reporter.systemd import Notifier, journal_line, log_formatter
from checks.status import CheckFailed, Status

if TYPE_CHECKING:
    import psycopg

    from checks.postgres.readers.reporter import ReporterPositionFacts

log = logging.getLogger("pg-role-reporter")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
# The blocking query's wait: long enough to be idle, short enough that a silently dead
# TCP connection is noticed quickly.
WATCH_WAIT_SECONDS = 10.0
# Explicit release imposes no lock-delay; only an invalidated session does (its node
# failed, a bound check went critical, its TTL ran out). Those causes take the old holder
# out of DNS themselves (node or alive check critical) or long before the TTL ends
# (consul-role: a hung reporter's leader is CRITICAL after a few seconds), so one second
# covers propagation without adding Consul's default 15 s to such a failover.
DEFAULT_LOCK_DELAY_SECONDS = 1.0
# Patroni's default: a 30 s leader TTL, i.e. a 15 s session TTL (Consul invalidates at up
# to twice it). Consul's own floor is 10 s (session_ttl_min).
DEFAULT_SESSION_TTL_SECONDS = 15.0
# How soon to retry an acquire refused only by the lock-delay: nothing announces its end.
LOCK_DELAY_RETRY_SECONDS = 0.25
# While the leader lock is free (no leader anywhere), poll PostgreSQL this often, for at
# most this long after it became free: a promotion then reaches DNS in ~0.1 s instead of
# up to --interval. The cost is a 0.1 ms query ten times a second during an outage.
FREE_LOCK_POLL_SECONDS = 0.1
FREE_LOCK_FAST_POLL_WINDOW_SECONDS = 15.0
# pg_wal_lsn: republished at most every --wal-lsn-interval, sooner (but at most once a
# second) after a WAL segment's worth of writes.
DEFAULT_WAL_LSN_INTERVAL_SECONDS = 5.0
WAL_LSN_MIN_SECONDS = 1.0
WAL_SEGMENT_BYTES = 16 * 1024 * 1024
# How long a starting reporter takes "ACL not found" for an ACL system still starting.
ACL_NOT_FOUND_GRACE_SECONDS = 30.0
# A compare-and-set index no key ever has: proves key:write at start without a write.
CAS_NEVER = 1 << 62


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


class ConsulTrouble:
    """One log line when a Consul problem starts or changes, one when it ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: str | None = None

    def failed(self, error: ConsulError, retry_in: float) -> None:
        text = str(error)
        with self._lock:
            if text == self._current:
                return
            self._current = text
        level = logging.WARNING if isinstance(error, ConsulUnreachable) else logging.ERROR
        log.log(level, "Consul: %s; retrying in %.1fs (and on)", text, retry_in)

    def ok(self) -> None:
        with self._lock:
            if self._current is None:
                return
            self._current = None
        log.info("Consul agent answering again")


class ServiceWatch(threading.Thread):
    """Holds a blocking query on the agent service; `changed` fires on every new answer."""

    def __init__(self, settings: ConsulSettings, service_id: str, trouble: ConsulTrouble) -> None:
        super().__init__(name="consul-watch", daemon=True)
        self.settings = settings
        self.service_id = service_id
        self.trouble = trouble
        self.changed = threading.Event()
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._service: dict[str, Any] | None = None

    @property
    def service(self) -> dict[str, Any] | None:
        with self._lock:
            return self._service

    def _publish(self, service: dict[str, Any] | None) -> None:
        with self._lock:
            self._service = service
        self.changed.set()

    def run(self) -> None:
        backoff = Backoff()
        content_hash: str | None = None
        with ConsulClient(self.settings) as client:
            while not self.stopping.is_set():
                try:
                    service, new_hash = client.agent_service(
                        self.service_id,
                        index_hash=content_hash,
                        wait=WATCH_WAIT_SECONDS if content_hash else None,
                    )
                except ConsulError as exc:
                    content_hash = None
                    self._publish(None)
                    if isinstance(exc, (ConsulUnreachable, ConsulNotFound)):
                        delay = backoff.unreachable()
                    else:
                        delay = backoff.refused()
                    self.trouble.failed(exc, delay)
                    self.stopping.wait(delay)
                    continue
                except Exception as exc:
                    # A bug or an answer we cannot read must not end the thread quietly:
                    # the loop would then plan against the last service it saw for ever,
                    # and a reverted tag after a reload would never come back.
                    content_hash = None
                    self._publish(None)
                    delay = backoff.refused()
                    log.error(
                        "service watch: %s: %s; retrying in %.1fs", type(exc).__name__, exc, delay
                    )
                    self.stopping.wait(delay)
                    continue
                backoff.reset()
                self.trouble.ok()
                if new_hash != content_hash or self.service is None:
                    self._publish(service)
                content_hash = new_hash or None


class RoundTripDeadline:
    """Bounds the queries of one turn on the kept connection to `seconds`.

    statement_timeout is enforced by the server, so a server that does not run at all
    (SIGSTOPped, swapped out, its host frozen, a dead peer behind a TCP connection that
    never resets) never sends the cancel: the query waits for ever, and with it the loop,
    so the leader tag and the lock would stay on a dead primary. When the deadline passes,
    a timer thread shuts the socket down (shutdown(2) wakes a thread blocked reading it);
    psycopg then raises in the loop's own thread, which closes the connection and
    reconnects next turn (connect_timeout bounds the connect).
    """

    def __init__(self, conn: psycopg.Connection[Any], seconds: float) -> None:
        self.conn = conn
        self.seconds = seconds
        self.expired = False
        self._guard = threading.Lock()
        self._done = False
        self._timer: threading.Timer | None = None

    def _expire(self) -> None:
        import socket

        with self._guard:
            if self._done:
                return
            self.expired = True
            try:
                with socket.socket(fileno=os.dup(self.conn.fileno())) as sock:
                    sock.shutdown(socket.SHUT_RDWR)
            except Exception as exc:  # already closed: nothing is waiting on it
                log.debug("abandoning the PostgreSQL connection: %s", exc)

    def __enter__(self) -> RoundTripDeadline:
        if self.seconds > 0:
            self._timer = threading.Timer(self.seconds, self._expire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._guard:
            self._done = True
        if self._timer is not None:
            self._timer.cancel()


class PostgresRole:
    """One kept connection to the local PostgreSQL; reconnects after any failure."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self._conn: psycopg.Connection[dict[str, Any]] | None = None

    def observe(
        self, *, since_lsn: str | None = None
    ) -> tuple[Observed, ReporterPositionFacts | None, PostgresProblem | None]:
        """The role (and, on a primary, the WAL position), or what is wrong."""
        from checks.postgres.connection import connect
        from checks.postgres.readers.reporter import read_position
        from checks.postgres.readers.role import read_role

        deadline: RoundTripDeadline | None = None
        try:
            if self._conn is None or self._conn.closed:
                # a daemon: libpq may warn on stderr (the journal), where other threads log
                self._conn = connect(self.settings, capture_stderr=False)
            with RoundTripDeadline(self._conn, self.settings.timeout) as deadline:
                facts = read_role(self._conn)
                position = read_position(self._conn, since=since_lsn)
        except CheckFailed as failure:
            self.close()
            message = failure.message
            if deadline is not None and deadline.expired:
                message = (
                    f"no answer from {self.settings.target()} within "
                    f"{self.settings.timeout:g}s (server stopped or hung?)"
                )
            problem = classify(message, unknown_status=failure.status == Status.UNKNOWN)
            return Observed(role="unreachable", error=message), None, problem
        observed = Observed(
            role=facts.role,
            writable=facts.writable,
            timeline=facts.timeline,
            system_identifier=facts.system_identifier,
            server_port=position.port,
        )
        return observed, position, None

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception as exc:  # closing a broken connection must not stop the loop
                log.debug("closing the PostgreSQL connection: %s", exc)
            self._conn = None


class LeaderLock:
    """The reporter's Consul session and the leader lock it acquires with it.

    Session (docs/design.md §5): behavior `release`, bound to the node's serfHealth and the
    instance's own checks that go critical only when the instance is really unusable
    (--session-check; by default `<service-id>-alive` when the agent has it). Never bound
    to consul-role, which the fence itself turns critical, nor to lag, which is CRITICAL
    on a replica whose WAL receiver is down, i.e. right after a promotion. A TTL (renewed
    every third of it, an RPC to the servers that writes nothing to raft) ends the lock of
    a reporter that died without releasing it; Consul invalidates at up to twice the TTL.
    """

    def __init__(self, client: ConsulClient, options: Options) -> None:
        self.client = client
        self.options = options
        self.session: str | None = None
        self.node: str = "?"
        self.renewed_at = 0.0
        self.remote_node_logged = False

    @property
    def key(self) -> str:
        return self.options.lock_key

    @property
    def dc(self) -> str | None:
        return self.options.lock_datacenter

    def _checks(self) -> list[str]:
        if self.options.session_checks is not None:
            return ["serfHealth", *self.options.session_checks]
        checks = ["serfHealth"]
        alive = f"{self.options.service_id}-alive"
        try:
            if alive in self.client.agent_checks():
                checks.append(alive)
        except ConsulError as exc:
            log.debug("listing the agent's checks: %s", exc)
        return checks

    def ensure_session(self) -> str:
        now = time.monotonic()
        if self.session is not None:
            if now - self.renewed_at < self.options.session_ttl / 3:
                return self.session
            if self.client.renew_session(self.session, datacenter=self.dc):
                self.renewed_at = now
                return self.session
            log.warning("Consul session %s is gone (invalidated); creating a new one", self.session)
            self.session = None
        body: dict[str, Any] = {
            "Name": f"pg-role-reporter {self.options.service_id}",
            "Behavior": "release",
            "LockDelay": f"{round(self.options.lock_delay * 1000)}ms",
            "TTL": f"{self.options.session_ttl:g}s",
            "Checks": self._checks(),
        }
        try:
            self.session = self.client.create_session(body, datacenter=self.dc)
        except ConsulError as exc:
            if self.dc is None or "node registration" not in str(exc).lower():
                raise
            # The lock lives in another datacenter, whose catalog does not hold this
            # node: a session there can only be bound to its TTL (and to one of that
            # datacenter's nodes, which Consul requires).
            nodes = self.client.catalog_nodes(datacenter=self.dc)
            if not nodes:
                raise ConsulError(
                    f"no node visible in datacenter {self.dc} to hold the session "
                    "(the token needs node:read there)"
                ) from None
            body.update(Node=nodes[0]["Node"], Checks=[])
            self.session = self.client.create_session(body, datacenter=self.dc)
            if not self.remote_node_logged:
                log.info(
                    "lock in datacenter %s: session bound to its TTL only (%gs)",
                    self.dc,
                    self.options.session_ttl,
                )
                self.remote_node_logged = True
        self.renewed_at = now
        info = self.client.session_info(self.session, datacenter=self.dc) or {}
        self.node = str(info.get("Node") or "?") if body["Checks"] else self._local_node()
        log.debug("Consul session %s created: %s", self.session, body)
        return self.session

    def _local_node(self) -> str:
        """This agent's node name (needs agent:read), for a session held on another's."""
        try:
            return str(self.client.self().get("Config", {}).get("NodeName") or "?")
        except ConsulError:
            return "?"

    def holder(self) -> LockHolder | None:
        entry, _ = self.client.kv_get(self.key, datacenter=self.dc, consistent=True)
        return holder_of(entry)

    def acquire(self, observed: Observed) -> bool:
        assert self.session is not None
        value = lock_value(
            node=self.node,
            service_id=self.options.service_id,
            timeline=observed.timeline,
            system_identifier=observed.system_identifier,
        )
        try:
            return self.client.kv_put(self.key, value, acquire=self.session, datacenter=self.dc)
        except ConsulError as exc:
            if exc.status != 500 or "invalid session" not in str(exc).lower():
                raise
        # Invalidated since the last renew (its TTL ran out, a bound check went critical,
        # the servers lost their state): one new session, one more try.
        log.warning("Consul session %s is gone; creating a new one", self.session)
        self.session = None
        self.ensure_session()
        return self.client.kv_put(self.key, value, acquire=self.session, datacenter=self.dc)

    def release(self) -> None:
        if self.session is not None:
            self.client.kv_put(self.key, "", release=self.session, datacenter=self.dc)

    def destroy(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            self.client.destroy_session(session, datacenter=self.dc)


WAITING_FOR_CHECK = "waiting for a check bound to the session to pass"
TWIN = "another session holds the leader lock for this same service"


def twin_reason(holder: LockHolder) -> str:
    return (
        f"{TWIN} (session {holder.session}): a second pg-role-reporter for it, or this "
        "one's previous run (then until its session's TTL ends); leaving the service as it is"
    )


def waiting_for_check_reason(consul_said: str) -> str:
    return f"{WAITING_FOR_CHECK} before taking the leader lock ({consul_said})"


class LockWatch(threading.Thread):
    """A blocking query on the lock key: a release or an invalidated session wakes the
    loop at once (Consul answers the moment the key's index moves)."""

    def __init__(self, settings: ConsulSettings, options: Options, wake: threading.Event) -> None:
        super().__init__(name="consul-lock-watch", daemon=True)
        self.settings = settings
        self.options = options
        self.wake = wake
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._entry: dict[str, Any] | None = None
        self._known = False
        self._free_since: float | None = None

    def current(self) -> tuple[bool, dict[str, Any] | None]:
        """(whether the last answer is current, the key's entry in it)."""
        with self._lock:
            return self._known, self._entry

    def free_for(self) -> float | None:
        """Seconds the lock has been known free (nobody is leader), else None."""
        with self._lock:
            if not self._known or self._free_since is None:
                return None
            return time.monotonic() - self._free_since

    def _publish(self, known: bool, entry: dict[str, Any] | None) -> None:
        with self._lock:
            self._known, self._entry = known, entry
            free = known and holder_of(entry) is None
            if not free:
                self._free_since = None
            elif self._free_since is None:
                self._free_since = time.monotonic()

    def run(self) -> None:
        index = 0
        with ConsulClient(self.settings) as client:
            while not self.stopping.is_set():
                try:
                    entry, new_index = client.kv_get(
                        self.options.lock_key,
                        datacenter=self.options.lock_datacenter,
                        index=index or None,
                        wait=WATCH_WAIT_SECONDS if index else None,
                    )
                except ConsulError as exc:
                    # the main loop reports Consul trouble; here only wait and retry
                    log.debug("lock watch: %s", exc)
                    self._publish(False, None)
                    index = 0
                    self.stopping.wait(UNREACHABLE_RETRY_SECONDS)
                    continue
                except Exception as exc:
                    # never end quietly: "lock state unknown" keeps the loop fail-closed
                    log.error("lock watch: %s: %s", type(exc).__name__, exc)
                    self._publish(False, None)
                    index = 0
                    self.stopping.wait(UNREACHABLE_RETRY_SECONDS)
                    continue
                self._publish(True, entry)
                if index and new_index != index:
                    self.wake.set()
                # an index that went backwards (a restored or new cluster): start over
                index = new_index if new_index >= index else 0


class Problems:
    """One ERROR line when a reason to withhold a tag starts or changes, one INFO when it
    ends; the current reason is what the reporter publishes in Meta."""

    def __init__(self) -> None:
        self.current: str | None = None

    def report(self, reason: str | None, *, level: int = logging.ERROR, tag: str) -> None:
        if reason == self.current:
            return
        if reason is not None:
            log.log(level, "NOT tagging %s: %s", tag, reason)
        elif self.current is not None:
            log.info("no longer withholding the %s tag (was: %s)", tag, self.current)
        self.current = reason


class Reporter:
    def __init__(
        self,
        options: Options,
        consul_settings: ConsulSettings,
        pg: PostgresRole,
        out: Any = sys.stdout,
    ) -> None:
        self.options = options
        self.consul = ConsulClient(consul_settings)
        self.lock = LeaderLock(self.consul, options)
        self.pg = pg
        self.out = out
        self.trouble = ConsulTrouble()
        self.backoff = Backoff()
        self.next_consul_attempt = 0.0
        self.last_observed: Observed | None = None
        self.last_position: ReporterPositionFacts | None = None
        self.last_problem: PostgresProblem | None = None
        self.problems = Problems()
        self.holding = False
        self.published_lsn: str | None = None
        self.published_lsn_at = float("-inf")
        self.last_dry_run: str | None = None
        self.lock_watch: LockWatch | None = None
        self.next_session_try = 0.0

    # -- PostgreSQL ------------------------------------------------------------------

    def observe(self) -> Observed:
        observed, position, problem = self.pg.observe(since_lsn=self.published_lsn)
        self.last_position = position
        self.last_problem = problem
        last = self.last_observed
        if (
            last is None
            or (observed.role, observed.writable, observed.timeline)
            != (last.role, last.writable, last.timeline)
            or (observed.error and observed.error != last.error)
        ):
            if observed.reachable:
                log.info(
                    "PostgreSQL %s: %s, %s, timeline %s, system %s",
                    self.pg.settings.target(),
                    observed.role,
                    "writable" if observed.writable else "read-only",
                    observed.timeline,
                    observed.system_identifier,
                )
            elif problem is not None:
                level = logging.WARNING if problem.kind == UNREACHABLE else logging.ERROR
                log.log(level, "%s; the role tag goes until that is fixed", problem.log_line)
        self.last_observed = observed
        return observed

    # -- what to publish -------------------------------------------------------------

    def wal_lsn_to_publish(self) -> str | None:
        """The leader's WAL position for Meta, edge-triggered and rate-limited.

        Every Meta change is one catalog write (raft, replicated to every server), so the
        position is republished only when it moved, at most every --wal-lsn-interval
        seconds, sooner (but at most once a second) when it moved by a WAL segment
        (16 MiB) or more: a replica's lag judged against it is then never understated by
        more than a segment or a few seconds of writes.
        """
        position = self.last_position
        if position is None or position.wal_lsn is None:
            return self.published_lsn
        if position.wal_lsn == self.published_lsn:
            return self.published_lsn
        elapsed = time.monotonic() - self.published_lsn_at
        moved = position.advanced_bytes
        if (
            self.published_lsn is None
            or elapsed >= self.options.wal_lsn_interval
            or (elapsed >= WAL_LSN_MIN_SECONDS and moved is not None and moved >= WAL_SEGMENT_BYTES)
        ):
            return position.wal_lsn
        return self.published_lsn

    # -- the fence -------------------------------------------------------------------

    def take_lock(self, observed: Observed) -> str | None:
        """Hold the leader lock for a writable primary; None when held, else why not."""
        key = self.options.lock_key
        if self.options.dry_run:
            # read only: "would acquire" when free, fenced when someone holds it
            holder = self.lock.holder()
            self.holding = holder is None
            return (
                None
                if holder is None
                else fenced_reason(holder, key=key, timeline=observed.timeline)
            )
        try:
            session = self.lock.ensure_session()
        except ConsulPermissionDenied as exc:
            self.holding = False
            return f"cannot create the Consul session for the leader lock: {exc}"
        except ConsulError as exc:
            if isinstance(exc, ConsulUnreachable):
                raise
            self.holding = False
            if "in critical state" in str(exc):
                # a bound check (alive) not passing yet, e.g. just after the agent
                # started: this instance is out of DNS anyway; retried every loop
                return waiting_for_check_reason(str(exc))
            return f"cannot create the Consul session for the leader lock: {exc}"
        holder = None
        if self.lock_watch is not None:
            # Holding already, per the watch: any change to the key wakes the loop at
            # once, so this saves a consistent read (a server round trip) every loop.
            known, entry = self.lock_watch.current()
            holder = holder_of(entry) if known else None
        if holder is None or holder.session != session:
            holder = self.lock.holder()
        step = fence_step(
            wants_leader=True, holder=holder, our_session=session, timeline=observed.timeline
        )
        if step is Step.HOLD:
            self.holding = True
            return None
        if step in (Step.ACQUIRE, Step.REFRESH):
            try:
                acquired = self.lock.acquire(observed)
            except ConsulPermissionDenied as exc:
                self.holding = False
                return f"cannot acquire the leader lock {key}: {exc}"
            if acquired:
                if not self.holding:
                    log.info("acquired the leader lock %s (session %s)", key, session)
                self.holding = True
                return None
            holder = self.lock.holder()
            if holder is None:
                self.holding = False
                # retry soon: the delay ends on its own, no event announces it
                self.next_consul_attempt = time.monotonic() + LOCK_DELAY_RETRY_SECONDS
                return lock_delay_reason(key)
        self.holding = False
        assert holder is not None
        if holder.service_id == self.options.service_id and holder.node == self.lock.node != "?":
            # This very service (the id is unique on the agent) holds the lock, through
            # another session: a second reporter started for it, or this reporter's
            # previous run, killed before it could release (its session lives until the
            # TTL). Fencing would take the tag off the one legitimate leader for that long
            # (and two live reporters would flip it on and off); the lock covers the tag.
            return twin_reason(holder)
        return fenced_reason(holder, key=key, timeline=observed.timeline)

    def keep_session(self) -> None:
        """A replica keeps a session ready (renewed; created again every few seconds when
        it could not be), so a promotion only has to acquire."""
        now = time.monotonic()
        if self.options.dry_run or (self.lock.session is None and now < self.next_session_try):
            return
        try:
            self.lock.ensure_session()
        except ConsulUnreachable:
            raise
        except ConsulError as exc:
            # e.g. a bound check critical: the next promotion tries again and says why
            log.debug("keeping a Consul session ready: %s", exc)
            self.lock.session = None
            self.next_session_try = now + self.options.session_ttl / 3

    def release_lock(self) -> None:
        if self.options.dry_run:
            self.holding = False
            return
        holder = self.lock.holder() if self.lock.session is not None else None
        if holder is not None and holder.session == self.lock.session:
            self.lock.release()
            log.info("released the leader lock %s", self.options.lock_key)
        self.holding = False

    # -- Consul ----------------------------------------------------------------------

    def reconcile(self, service: dict[str, Any] | None, observed: Observed) -> bool:
        """Bring the agent service and the lock in line with `observed`; True if Consul
        answered."""
        if time.monotonic() < self.next_consul_attempt:
            return False
        leader = self.options.names.leader
        try:
            if service is None:
                service, _ = self.consul.agent_service(self.options.service_id)
            identity = self.identity(service, observed)
            wants_leader = observed.role == "primary" and observed.writable and identity is None
            reason = identity
            if wants_leader:
                reason = self.take_lock(observed)
            transient = reason is not None and (
                reason == lock_delay_reason(self.options.lock_key)
                or reason.startswith(WAITING_FOR_CHECK)
            )
            twin = reason is not None and reason.startswith(TWIN)
            level = logging.INFO if transient else logging.WARNING if twin else logging.ERROR
            self.problems.report(reason, level=level, tag=leader)
            if twin:
                # the holder keeps the tag; touching the service would fight it
                self.backoff.reset()
                self.trouble.ok()
                return True
            if reason is None and self.last_problem is not None and not observed.reachable:
                # logged by observe() already, in its own words
                reason = self.last_problem.published

            def planned(current: dict[str, Any]) -> Change | None:
                return plan(
                    current,
                    observed,
                    self.options.names,
                    fenced_reason=reason,
                    leader_allowed=self.holding,
                    any_tag_allowed=identity is None,
                    wal_lsn=self.wal_lsn_to_publish() if self.holding else None,
                    lock_session=self.lock.session if self.holding else None,
                )

            change = planned(service)
            if change is not None:
                # Read-modify-write on a fresh copy: the watcher's may be a moment old.
                service, _ = self.consul.agent_service(self.options.service_id)
                change = planned(service)
            if change is not None:
                self._apply(change)
                if self.holding:
                    new_lsn = change.new_meta.get(META_WAL_LSN)
                    if new_lsn != self.published_lsn:
                        self.published_lsn = new_lsn
                        self.published_lsn_at = time.monotonic()
            if not wants_leader and self.holding:
                # the tag is gone (above); only now may another instance take the lock
                self.release_lock()
            if not wants_leader:
                self.keep_session()
            if not self.holding:
                # a new leadership publishes its position at once
                self.published_lsn = None
        except ConsulError as exc:
            if isinstance(exc, (ConsulUnreachable, ConsulNotFound)):
                delay = self.backoff.unreachable()
            else:
                delay = self.backoff.refused()
            self.next_consul_attempt = time.monotonic() + delay
            self.trouble.failed(exc, delay)
            return False
        self.backoff.reset()
        self.trouble.ok()
        return True

    def identity(self, service: Mapping[str, Any], observed: Observed) -> str | None:
        if not observed.reachable:
            return None
        return identity_problem(
            service_id=self.options.service_id,
            service_port=service.get("Port") or None,
            server_port=observed.server_port,
            published_system_identifier=(service.get("Meta") or {}).get(META_SYSTEM_IDENTIFIER),
            system_identifier=observed.system_identifier,
        )

    def _apply(self, change: Change) -> None:
        text = change.describe(self.options.names)
        if self.options.dry_run:
            if text != self.last_dry_run:
                print(f"would change {text}", file=self.out, flush=True)
                self.last_dry_run = text
            return
        self.consul.register_service(change.registration)
        if set(change.old_tags) != set(change.new_tags) or any(
            change.old_meta.get(k) != change.new_meta.get(k)
            for k in set(change.old_meta) | set(change.new_meta)
            if k != META_WAL_LSN
        ):
            log.info("changed %s", text)
        else:
            log.debug("changed %s", text)

    # -- start and stop --------------------------------------------------------------

    def preflight(self) -> None:
        """Refuse to start on a misconfiguration Consul or PostgreSQL can already prove:
        an unknown service id, a token that cannot write the service, the key or the
        session, a service whose port is another server's. Raises click.ClickException
        (one line, exit 2). An agent or a server that does not answer is no proof: the
        loop retries them."""
        service_id = self.options.service_id
        where = f"the Consul agent at {self.consul.settings.address}"
        try:
            service, _ = self.consul.agent_service(service_id)
        except ConsulNotFound:
            raise click.ClickException(
                f"service {service_id} is not registered on {where}: wrong --service-id?"
            ) from None
        except ConsulUnreachable as exc:
            log.warning("cannot check the setup at start: %s", exc)
            return
        except ConsulError as exc:
            raise click.ClickException(str(exc)) from None
        observed = self.observe()
        if (problem := self.identity(service, observed)) is not None:
            raise click.ClickException(f"refusing to tag: {problem}")
        if self.options.dry_run:
            return
        try:
            # An identical registration: proves service:write, changes nothing (an
            # unchanged ContentHash wakes no watcher and syncs nothing).
            from checks.consul import registration_from_agent_service

            self.consul.register_service(registration_from_agent_service(service))
            # A compare-and-set that cannot match proves key:write without writing.
            self.consul.kv_put(
                self.options.lock_key, "", cas=CAS_NEVER, datacenter=self.options.lock_datacenter
            )
            self.lock.ensure_session()
        except ConsulPermissionDenied as exc:
            raise click.ClickException(str(exc)) from None
        except ConsulError as exc:
            # e.g. a bound check not passing yet: not a setup error, the loop retries
            log.info("at start: %s; retrying", exc)

    def shutdown(self) -> None:
        """On a clean stop: leader tag off, then the lock released, then the session
        destroyed (no lock-delay), so the next primary need not wait for a TTL."""
        if self.options.dry_run:
            return
        try:
            if self.holding:
                service, _ = self.consul.agent_service(self.options.service_id)
                change = plan(
                    service,
                    self.last_observed or Observed(role="unreachable"),
                    self.options.names,
                    leader_allowed=False,
                )
                if change is not None and self.options.names.leader in change.old_tags:
                    self._apply(change)
                self.release_lock()
            self.lock.destroy()
        except ConsulError as exc:
            log.warning("at stop: %s (the session ends with its TTL)", exc)

    # -- the loop --------------------------------------------------------------------

    def run_once(self) -> int:
        observed = self.observe()
        ok = self.reconcile(None, observed)
        if ok and self.options.dry_run and self.last_dry_run is None:
            print(f"service {self.options.service_id}: nothing to change", file=self.out)
        return EXIT_OK if ok else EXIT_FAILED

    def run_forever(
        self, watch: ServiceWatch, stop: threading.Event, notifier: Notifier | None = None
    ) -> int:
        # systemd (Type=notify): ready after the first turn, whatever Consul said (the loop
        # rides outages out); the watchdog ping comes from this loop, so a hung turn stops it.
        notifier = notifier or Notifier.from_env()
        lock_watch = self.lock_watch = LockWatch(self.consul.settings, self.options, watch.changed)
        watch.start()
        lock_watch.start()
        ready = False
        try:
            while not stop.is_set():
                wait = self.poll_interval()
                retry_in = self.next_consul_attempt - time.monotonic()
                if retry_in > 0:
                    # a retry due sooner (the lock-delay): wake for it, not a turn later
                    wait = min(wait, retry_in)
                watch.changed.wait(notifier.wait_bound(wait))
                watch.changed.clear()
                if stop.is_set():
                    break
                observed = self.observe()
                self.reconcile(watch.service, observed)
                if not ready:
                    ready = notifier.ready(f"service {self.options.service_id}: {observed.role}")
                notifier.watchdog()
        finally:
            lock_watch.stopping.set()
            notifier.stopping()
            # leader tag off, lock released, session destroyed: the next primary need not
            # wait for a TTL
            self.shutdown()
            notifier.close()
        return EXIT_OK

    def poll_interval(self) -> float:
        """--interval, or much less while the lock is free: nobody is leader, so a
        promotion is what everyone waits for, and it is seen within FREE_LOCK_POLL_SECONDS
        instead of up to a whole interval. Bounded, so a cluster left without a primary
        does not poll fast for ever."""
        free_for = self.lock_watch.free_for() if self.lock_watch is not None else None
        if free_for is not None and free_for < FREE_LOCK_FAST_POLL_WINDOW_SECONDS:
            return min(self.options.interval, FREE_LOCK_POLL_SECONDS)
        return self.options.interval

    def close(self) -> None:
        self.consul.close()
        self.pg.close()


def _configure_logging(verbose: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    # under journald each line carries its priority (<N> prefix), else plain text
    handler.setFormatter(log_formatter("%(levelname)s %(message)s", stream=sys.stderr))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


def _a_number(value: float, param: click.Parameter, ctx: click.Context) -> float:
    # FloatRange lets nan through (every comparison with it is false): the loop would then
    # not wait at all and poll PostgreSQL with a whole core
    if value != value:
        raise click.BadParameter(f"{value} is not a number of seconds", ctx, param)
    return value


@click.command("pg-role-reporter", context_settings=runtime.CONTEXT_SETTINGS)
@runtime.version_option
@functools.partial(
    connection_options,
    # connection_options words -t and -v for checks; a daemon's differ
    timeout_help="Seconds a PostgreSQL connect or role query may take before PostgreSQL "
    "counts as unreachable.",
    verbose_help="Also log debug lines.",
)
@click.option(
    "--service-id",
    default="pg-db",
    show_default=True,
    help="ID of the local agent's service to tag (defined in conf.d, role-neutral tags).",
)
@click.option(
    "--leader-tag", default="leader", show_default=True, help="Tag of a writable primary."
)
@click.option("--follower-tag", default="follower", show_default=True, help="Tag of a replica.")
@click.option(
    "--consul-addr",
    metavar="ADDR",
    help="Agent HTTP address: host:port, http(s)://host:port or unix:///path "
    "(default: CONSUL_HTTP_ADDR, then 127.0.0.1:8500).",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    help="File holding the Consul ACL token (default: CONSUL_HTTP_TOKEN_FILE, then "
    "CONSUL_HTTP_TOKEN). Never pass a token on the command line.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1, max=86400),
    default=1.0,
    show_default=True,
    callback=lambda ctx, param, value: _a_number(value, param, ctx),
    help="Seconds between two reads of PostgreSQL's role.",
)
@click.option(
    "--lock-key",
    metavar="KEY",
    help="Consul KV key of the leader lock (default: service/<service name>/leader).",
)
@click.option(
    "--lock-datacenter",
    metavar="DC",
    help="Datacenter whose KV holds the lock (default: the agent's). Give every instance "
    "of a cluster that spans datacenters the same one, so the fence is global.",
)
@click.option(
    "--lock-delay",
    type=click.FloatRange(min=0, max=60),
    default=DEFAULT_LOCK_DELAY_SECONDS,
    callback=lambda ctx, param, value: _a_number(value, param, ctx),
    show_default=True,
    help="Seconds Consul keeps the lock from a new holder after a session was invalidated "
    "(an explicit release has no delay).",
)
@click.option(
    "--session-ttl",
    type=click.FloatRange(min=10, max=86400),
    default=DEFAULT_SESSION_TTL_SECONDS,
    callback=lambda ctx, param, value: _a_number(value, param, ctx),
    show_default=True,
    help="TTL of the reporter's Consul session: a reporter that died holding the lock "
    "loses it within twice this.",
)
@click.option(
    "--session-check",
    "session_checks",
    multiple=True,
    metavar="CHECK_ID",
    help="A check of this instance whose CRITICAL ends the session (repeatable; "
    "serfHealth always). Default: <service-id>-alive if the agent has it. Never "
    "consul-role or lag.",
)
@click.option(
    "--wal-lsn-interval",
    type=click.FloatRange(min=1, max=86400),
    default=DEFAULT_WAL_LSN_INTERVAL_SECONDS,
    callback=lambda ctx, param, value: _a_number(value, param, ctx),
    show_default=True,
    help="Longest gap between two pg_wal_lsn publications while the position moves "
    "(sooner after 16 MiB of WAL, never more than once a second).",
)
@click.option("--once", is_flag=True, help="Reconcile once and exit (1 if Consul failed).")
@click.option("--dry-run", is_flag=True, help="Print what would change on stdout; write nothing.")
def cli(
    settings: ConnectionSettings,
    verbose: int,
    service_id: str,
    leader_tag: str,
    follower_tag: str,
    consul_addr: str | None,
    token_file: str | None,
    interval: float,
    lock_key: str | None,
    lock_datacenter: str | None,
    lock_delay: float,
    session_ttl: float,
    session_checks: tuple[str, ...],
    wal_lsn_interval: float,
    once: bool,
    dry_run: bool,
) -> int:
    """Keep the Consul service's role tag equal to the local PostgreSQL's role.

    Tags the local agent's service (--service-id) with --leader-tag on a writable primary
    that holds the Consul lock --lock-key, and --follower-tag on a replica; removes the
    tag when PostgreSQL is unreachable or refuses the login, and fences a writable primary
    whose lock another session holds. Publishes pg_role, pg_timeline,
    pg_system_identifier, pg_fenced_reason and, on the leader, pg_wal_lsn in the
    service's Meta. Logs to stderr.
    """
    _configure_logging(verbose)
    if leader_tag == follower_tag:
        raise click.UsageError("--leader-tag and --follower-tag must differ")
    consul_settings = ConsulSettings.from_env(address=consul_addr, token_file=token_file)
    if problem := token_file_problem(token_file or os.environ.get("CONSUL_HTTP_TOKEN_FILE")):
        raise click.ClickException(problem)
    from dataclasses import replace

    settings = replace(settings, application_name="pg-role-reporter")
    options = Options(
        service_id=service_id,
        names=TagNames(leader=leader_tag, follower=follower_tag),
        interval=interval,
        dry_run=dry_run,
        once=once,
        # the service's name is only known from the agent; conf.d ships id == name
        lock_key=lock_key
        or default_lock_key(_service_name(consul_settings, service_id, wait=not once)),
        lock_datacenter=lock_datacenter,
        lock_delay=lock_delay,
        session_ttl=session_ttl,
        session_checks=session_checks or None,
        wal_lsn_interval=wal_lsn_interval,
    )
    reporter = Reporter(options, consul_settings, PostgresRole(settings))
    try:
        log.info(
            "%sservice %s on the Consul agent at %s (%s), PostgreSQL %s, every %gs, "
            "leader lock %s%s",
            "dry run: " if dry_run else "",
            service_id,
            consul_settings.address,
            consul_settings.token or "anonymous",
            settings.target(),
            interval,
            options.lock_key,
            f" in datacenter {lock_datacenter}" if lock_datacenter else "",
        )
        reporter.preflight()
        if once:
            return reporter.run_once()
        stop = threading.Event()

        def stop_on_signal(signum: int, frame: object) -> None:
            log.info("stopping on %s", signal.Signals(signum).name)
            stop.set()
            watch.changed.set()

        watch = ServiceWatch(consul_settings, service_id, reporter.trouble)
        signal.signal(signal.SIGTERM, stop_on_signal)
        signal.signal(signal.SIGINT, stop_on_signal)
        return reporter.run_forever(watch, stop)
    finally:
        reporter.close()


def _service_name(consul_settings: ConsulSettings, service_id: str, *, wait: bool) -> str:
    """The service's name, for the default lock key.

    Every instance must derive the same key, so nothing stands in for the name: a daemon
    waits for an agent that does not answer yet, and an agent that answers with an error
    ends the start in one line (what preflight() would say). Only --once, which holds no
    lock beyond its run, falls back to the id when the agent is away.
    """
    logged = False
    where = f"the Consul agent at {consul_settings.address}"
    acl_deadline = time.monotonic() + ACL_NOT_FOUND_GRACE_SECONDS
    with ConsulClient(consul_settings) as client:
        while True:
            try:
                service, _ = client.agent_service(service_id)
            except ConsulPermissionDenied as exc:
                # Just after an agent or server (re)start Consul answers "ACL not found"
                # for every token until its ACL system is up (observed, 1.8.7): give it a
                # while before calling the token unknown, or a boot kills the reporter.
                if not (wait and exc.token_unknown and time.monotonic() < acl_deadline):
                    raise click.ClickException(str(exc)) from None
                if not logged:
                    log.warning("waiting for Consul's ACL system: %s", exc)
                    logged = True
                time.sleep(UNREACHABLE_RETRY_SECONDS)
                continue
            except ConsulUnreachable as exc:
                if not wait:
                    return service_id
                if not logged:
                    log.warning("waiting for the Consul agent: %s", exc)
                    logged = True
                time.sleep(UNREACHABLE_RETRY_SECONDS)
                continue
            except ConsulNotFound:
                raise click.ClickException(
                    f"service {service_id} is not registered on {where}: wrong --service-id?"
                ) from None
            except ConsulError as exc:
                raise click.ClickException(str(exc)) from None
            return str(service.get("Service") or service_id)


def _fatal(text: str) -> None:
    # under journald an unprefixed line is stored as info; this one says why we stopped
    print(journal_line(logging.ERROR, text), file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = cli.main(args=args, prog_name="pg-role-reporter", standalone_mode=False)
    except click.UsageError as exc:
        _fatal(f"pg-role-reporter: {exc.format_message()} (see --help)")
        code = EXIT_USAGE
    except click.ClickException as exc:
        _fatal(f"pg-role-reporter: {exc.format_message()}")
        code = EXIT_USAGE
    except click.Abort:
        code = EXIT_OK
    except ConsulError as exc:  # configuration: token file, address, TLS files
        _fatal(f"pg-role-reporter: {exc}")
        code = EXIT_USAGE
    except Exception as exc:
        _fatal(f"pg-role-reporter: internal error: {type(exc).__name__}: {exc}")
        code = EXIT_FAILED
    sys.stdout.flush()
    sys.exit(int(code or 0))


if __name__ == "__main__":
    main()
