"""The Reporter: one turn reads PostgreSQL's role, takes or releases the leader lock and
brings the agent service's tags and Meta in line (docs/design.md §5)."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import click

from checks.consul import (
    ConsulClient,
    ConsulError,
    ConsulNotFound,
    ConsulPermissionDenied,
    ConsulSettings,
    ConsulUnreachable,
)
from checks.reporter.backoff import Backoff
from checks.reporter.board import RoleBoard, RoleSnapshot
from checks.reporter.lock import LeaderLock
from checks.reporter.options import Options
from checks.reporter.postgres import PostgresRole
from checks.reporter.problems import UNREACHABLE, PostgresProblem, Problems
from checks.reporter.systemd import Notifier
from checks.reporter.wakeup import readable
from checks.reporter.watch import ConsulTrouble, LockWatch, ServiceWatch
from checks.roletag.fencing import (
    Step,
    fence_step,
    fenced_by,
    fenced_reason,
    holder_of,
    identity_problem,
    is_transient,
    is_twin,
    lock_delay_reason,
    waiting_for_check_reason,
)
from checks.roletag.plan import (
    META_SYSTEM_IDENTIFIER,
    META_WAL_LSN,
    Change,
    Observed,
    plan,
    registration_from_agent_service,
    role_tags_of,
)

if TYPE_CHECKING:
    from checks.postgres.readers.reporter import ReporterPositionFacts

log = logging.getLogger("pg-role-reporter")

# How soon to retry an acquire refused only by the lock-delay: nothing announces its end.
LOCK_DELAY_RETRY_SECONDS = 0.25
# While the leader lock is free (no leader anywhere), poll PostgreSQL this often, for at
# most this long after it became free: a promotion then reaches DNS in ~0.1 s instead of
# up to --interval. The cost is a 0.1 ms query ten times a second during an outage.
FREE_LOCK_POLL_SECONDS = 0.1
FREE_LOCK_FAST_POLL_WINDOW_SECONDS = 15.0
WAL_LSN_MIN_SECONDS = 1.0
WAL_SEGMENT_BYTES = 16 * 1024 * 1024
# A compare-and-set index no key ever has: proves key:write at start without a write.
CAS_NEVER = 1 << 62


class Reporter:
    def __init__(
        self,
        options: Options,
        consul_settings: ConsulSettings,
        pg: PostgresRole,
        out: Any = sys.stdout,
        board: RoleBoard | None = None,
    ) -> None:
        self.options = options
        # every turn's verdict, for whatever serves or pushes it (HTTP endpoints, TTL checks)
        self.board = board if board is not None else RoleBoard()
        self.consul = ConsulClient(consul_settings)
        self.lock = LeaderLock(self.consul, options)
        self.pg = pg
        self.out = out
        self.trouble = ConsulTrouble()
        self.backoff = Backoff()
        self.next_consul_attempt = 0.0
        self.last_observed: Observed | None = None
        self.observed_at = 0.0
        # the service's tags as Consul last answered or took them this turn; None when it
        # did not answer
        self.consul_tags: list[str] | None = None
        # why the leader tag is withheld (published in Meta as pg_fenced_reason)
        self.withheld: str | None = None
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
        self.observed_at = time.monotonic()
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
        return fenced_by(
            holder,
            service_id=self.options.service_id,
            node=self.lock.node,
            key=key,
            timeline=observed.timeline,
        )

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
            self.consul_tags = list(service.get("Tags") or [])
            identity = self.identity(service, observed)
            wants_leader = observed.role == "primary" and observed.writable and identity is None
            reason = identity
            if wants_leader:
                reason = self.take_lock(observed)
            transient = is_transient(reason, key=self.options.lock_key)
            twin = is_twin(reason)
            level = logging.INFO if transient else logging.WARNING if twin else logging.ERROR
            self.problems.report(reason, level=level, tag=leader)
            self.withheld = reason
            if twin:
                # the holder keeps the tag; touching the service would fight it
                self.backoff.reset()
                self.trouble.ok()
                return True
            if reason is None and self.last_problem is not None and not observed.reachable:
                # logged by observe() already, in its own words
                reason = self.last_problem.published
                self.withheld = reason

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
                if not self.options.dry_run:
                    self.consul_tags = change.new_tags
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
            self.consul_tags = None
            delay = self.backoff.after(exc)
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

    def turn(self, service: dict[str, Any] | None) -> tuple[Observed, bool]:
        """Read PostgreSQL, reconcile Consul with it, publish the verdict on the board.
        `service`: the watch's copy, or None to read it. True when Consul answered."""
        observed = self.observe()
        ok = self.reconcile(service, observed)
        self.publish(observed)
        return observed, ok

    def publish(self, observed: Observed) -> None:
        tags = role_tags_of(self.consul_tags or [], self.options.names)
        self.board.publish(
            RoleSnapshot(
                role=observed.role if observed.reachable else "unknown",
                tag=tags[0] if tags else None,
                holds_lock=self.holding,
                fenced_reason=self.withheld,
                observed_at=self.observed_at,
            )
        )

    def run_once(self) -> bool:
        """One turn; False when Consul did not answer."""
        _, ok = self.turn(None)
        if ok and self.options.dry_run and self.last_dry_run is None:
            print(f"service {self.options.service_id}: nothing to change", file=self.out)
        return ok

    def run_forever(
        self, watch: ServiceWatch, stop: threading.Event, notifier: Notifier | None = None
    ) -> None:
        # systemd (Type=notify): ready after the first turn, whatever Consul said (the loop
        # rides outages out); the watchdog ping comes from this loop, so a hung turn stops it.
        notifier = notifier or Notifier.from_env()
        lock_watch = self.lock_watch = LockWatch(self.consul.settings, self.options, watch.changed)
        # a pusher's verdicts wait for a turn: it asks for one instead of waiting a poll
        self.board.turn_on_request(watch.changed.set)
        watch.start()
        lock_watch.start()
        ready = by_sensor = False
        try:
            while not stop.is_set():
                wait = self.poll_interval()
                retry_in = self.next_consul_attempt - time.monotonic()
                if retry_in > 0:
                    # a retry due sooner (the lock-delay): wake for it, not a turn later
                    wait = min(wait, retry_in)
                # The kept connection wakes the loop too when its session ends (a crash, a
                # shutdown; a promotion sends it nothing: docs/design.md §3). A socket
                # still readable after the turn it woke (what woke it was not read) would
                # make the loop spin: that wait is the interval's alone.
                sensor = self.pg.socket()
                if sensor is not None and by_sensor and readable(sensor):
                    sensor = None
                wait = notifier.wait_bound(wait)
                if sensor is None:
                    by_sensor = False
                    watch.changed.wait(wait)
                else:
                    by_sensor = watch.changed.wait_or_readable(wait, sensor)
                watch.changed.clear()
                if stop.is_set():
                    break
                observed, _ = self.turn(watch.service)
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
