"""pg-role-reporter: keeps the local Consul service's role tag equal to PostgreSQL's role.

The only long-running part of pg-ha-checks (DESIGN.md §1). Model (DESIGN.md §5): conf.d
defines the service with role-neutral tags; this loop adds `leader` on a writable primary
and `follower` on a replica by read-modify-write of the agent's service, and publishes
role, timeline and system identifier in its Meta.

- A watcher thread holds a blocking query (`?hash=`) on the agent service: a `consul
  reload` or agent restart puts the conf.d tags back, the query returns at once and the
  tag is re-added within a fraction of a second.
- The main thread polls PostgreSQL every --interval over one kept connection and writes
  only when the desired registration differs from the current one.
- PostgreSQL unreachable: the role tag goes (fail closed), the loop keeps trying.
- The agent unreachable: retried about once a second (usually it is restarting); errors
  while it answers (403, 5xx): capped jittered backoff; one log line per new problem.

It is a daemon, not a check: logs go to stderr (the journal), one line per event; exit
status 0 on a clean stop, 1 when --once could not finish, 2 on a usage or setup error.
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import click

from checks import plugin
from checks.consul import (
    ConsulClient,
    ConsulError,
    ConsulNotFound,
    ConsulSettings,
    ConsulUnreachable,
)
from checks.postgres.connection import ConnectionSettings
from checks.postgres.options import connection_options
from checks.reporter.backoff import Backoff
from checks.reporter.guard import (
    blind_reason,
    fenced_reason,
    newer_rival,
    rival_leaders,
    sees_itself,
)
from checks.reporter.reconcile import Change, Observed, TagNames, plan
from checks.reporter.systemd import Notifier, log_formatter

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("pg-role-reporter")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
# The blocking query's wait: long enough to be idle, short enough that a silently dead
# TCP connection is noticed quickly.
WATCH_WAIT_SECONDS = 10.0
# How often a leader re-reads who else holds the leader tag (it also does before adding it).
GUARD_INTERVAL_SECONDS = 5.0
# How long our own instance may be missing from the catalog before that is logged as the
# ACL problem it usually is: just after an agent (re)start it may not be synced yet.
BLIND_GRACE_SECONDS = 3.0


@dataclass(frozen=True)
class Options:
    service_id: str
    names: TagNames
    interval: float
    dry_run: bool
    once: bool


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
                backoff.reset()
                self.trouble.ok()
                if new_hash != content_hash or self.service is None:
                    self._publish(service)
                content_hash = new_hash or None


class PostgresRole:
    """One kept connection to the local PostgreSQL; reconnects after any failure."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self._conn: psycopg.Connection[dict[str, Any]] | None = None

    def observe(self) -> Observed:
        from checks.postgres.connection import connect
        from checks.postgres.probes.role import read_role

        try:
            if self._conn is None or self._conn.closed:
                # a daemon: libpq may warn on stderr (the journal), where other threads log
                self._conn = connect(self.settings, capture_stderr=False)
            facts = read_role(self._conn)
        except plugin.CheckFailed as failure:
            self.close()
            return Observed(role="unreachable", error=failure.message)
        return Observed(
            role=facts.role,
            writable=facts.writable,
            timeline=facts.timeline,
            system_identifier=facts.system_identifier,
        )

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception as exc:  # closing a broken connection must not stop the loop
                log.debug("closing the PostgreSQL connection: %s", exc)
            self._conn = None


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
        self.pg = pg
        self.out = out
        self.trouble = ConsulTrouble()
        self.backoff = Backoff()
        self.next_consul_attempt = 0.0
        self.last_observed: Observed | None = None
        self.fence: str | None = None
        self.guard_checked_at = float("-inf")
        self.guard_blind = False
        self.guard_blind_since = 0.0
        self.guard_blind_logged = False
        self.last_dry_run: str | None = None

    # -- PostgreSQL ------------------------------------------------------------------

    def observe(self) -> Observed:
        observed = self.pg.observe()
        last = self.last_observed
        if (
            last is None
            or (observed.role, observed.writable, observed.timeline)
            != (
                last.role,
                last.writable,
                last.timeline,
            )
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
            else:
                log.warning(
                    "PostgreSQL unreachable (%s); the role tag goes until it answers",
                    observed.error,
                )
        self.last_observed = observed
        return observed

    # -- the split-brain guard -------------------------------------------------------

    def fenced_by(self, service: dict[str, Any], observed: Observed, *, force: bool) -> str | None:
        """Why this primary must not be leader, or None; re-read every few seconds.

        Reads every instance of the service, not only passing ones: ACLs filter that
        list instead of refusing it, so our own instance missing from it means the guard
        may not see a rival either. Then it fails closed: no leader tag (a blind guard
        would let a resurrected old primary in), re-checked on every loop until it sees.
        """
        if observed.role != "primary" or not observed.writable or observed.timeline is None:
            self.fence = None
            self.guard_blind = self.guard_blind_logged = False
            return None
        now = time.monotonic()
        fresh = now - self.guard_checked_at < GUARD_INTERVAL_SECONDS
        if not force and fresh and not self.guard_blind:
            return self.fence
        name = service.get("Service") or self.options.service_id
        entries = self.consul.health_service(name)
        self.guard_checked_at = now
        leader = self.options.names.leader
        if not sees_itself(entries, service_id=self.options.service_id):
            reason = blind_reason(name, self.options.service_id)
            if not self.guard_blind:
                self.guard_blind = True
                self.guard_blind_since = now
                log.debug("service %s not in the catalog (yet?)", self.options.service_id)
            waited = now - self.guard_blind_since
            if not self.guard_blind_logged and (self.options.once or waited >= BLIND_GRACE_SECONDS):
                log.error("NOT tagging %s: %s", leader, reason)
                self.guard_blind_logged = True
            self.fence = reason
            return reason
        if self.guard_blind:
            if self.guard_blind_logged:
                log.warning("split-brain guard sees service %s again", self.options.service_id)
            self.guard_blind = self.guard_blind_logged = False
            self.fence = None
        rivals = rival_leaders(
            entries,
            service_id=self.options.service_id,
            node=None,
            leader_tag=leader,
        )
        rival = newer_rival(rivals, observed.timeline)
        reason = fenced_reason(rival, observed.timeline) if rival else None
        if reason and reason != self.fence:
            log.error("NOT tagging %s: %s", leader, reason)
        elif self.fence and not reason:
            log.warning("no longer fenced: no passing leader on a newer timeline")
        self.fence = reason
        return reason

    # -- Consul ----------------------------------------------------------------------

    def reconcile(self, service: dict[str, Any] | None, observed: Observed) -> bool:
        """Bring the agent service in line with `observed`; True if Consul answered."""
        if time.monotonic() < self.next_consul_attempt:
            return False
        try:
            if service is None:
                service, _ = self.consul.agent_service(self.options.service_id)
            change = self._plan(service, observed, force_guard=False)
            if change is not None:
                # Read-modify-write on a fresh copy: the watcher's may be a moment old.
                service, _ = self.consul.agent_service(self.options.service_id)
                change = self._plan(service, observed, force_guard=True)
            if change is not None:
                self._apply(change)
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

    def _plan(
        self, service: dict[str, Any], observed: Observed, *, force_guard: bool
    ) -> Change | None:
        reason = self.fenced_by(service, observed, force=force_guard)
        return plan(service, observed, self.options.names, fenced_reason=reason)

    def _apply(self, change: Change) -> None:
        text = change.describe(self.options.names)
        if self.options.dry_run:
            if text != self.last_dry_run:
                print(f"would change {text}", file=self.out, flush=True)
                self.last_dry_run = text
            return
        self.consul.register_service(change.registration)
        log.info("changed %s", text)

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
        watch.start()
        ready = False
        while not stop.is_set():
            watch.changed.wait(notifier.wait_bound(self.options.interval))
            watch.changed.clear()
            if stop.is_set():
                break
            observed = self.observe()
            self.reconcile(watch.service, observed)
            if not ready:
                ready = notifier.ready(f"service {self.options.service_id}: {observed.role}")
            notifier.watchdog()
        notifier.stopping()
        notifier.close()
        return EXIT_OK

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


@click.command("pg-role-reporter", context_settings=plugin.CONTEXT_SETTINGS)
@plugin.version_option
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
    once: bool,
    dry_run: bool,
) -> int:
    """Keep the Consul service's role tag equal to the local PostgreSQL's role.

    Tags the local agent's service (--service-id) with --leader-tag on a writable primary
    and --follower-tag on a replica, and removes the tag when PostgreSQL is unreachable or
    when another passing instance holds the leader tag on a newer timeline. Publishes
    pg_role, pg_timeline and pg_system_identifier in the service's Meta. Logs to stderr.
    """
    _configure_logging(verbose)
    if leader_tag == follower_tag:
        raise click.UsageError("--leader-tag and --follower-tag must differ")
    consul_settings = ConsulSettings.from_env(address=consul_addr, token_file=token_file)
    from dataclasses import replace

    settings = replace(settings, application_name="pg-role-reporter")
    options = Options(
        service_id=service_id,
        names=TagNames(leader=leader_tag, follower=follower_tag),
        interval=interval,
        dry_run=dry_run,
        once=once,
    )
    reporter = Reporter(options, consul_settings, PostgresRole(settings))
    log.info(
        "%sservice %s on the Consul agent at %s (%s), PostgreSQL %s, every %gs",
        "dry run: " if dry_run else "",
        service_id,
        consul_settings.address,
        consul_settings.token or "anonymous",
        settings.target(),
        interval,
    )
    try:
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


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = cli.main(args=args, prog_name="pg-role-reporter", standalone_mode=False)
    except click.UsageError as exc:
        print(f"pg-role-reporter: {exc.format_message()} (see --help)", file=sys.stderr)
        code = EXIT_USAGE
    except click.ClickException as exc:
        print(f"pg-role-reporter: {exc.format_message()}", file=sys.stderr)
        code = EXIT_USAGE
    except click.Abort:
        code = EXIT_OK
    except ConsulError as exc:  # configuration: token file, address, TLS files
        print(f"pg-role-reporter: {exc}", file=sys.stderr)
        code = EXIT_USAGE
    except Exception as exc:
        print(f"pg-role-reporter: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = EXIT_FAILED
    sys.stdout.flush()
    sys.exit(int(code or 0))


if __name__ == "__main__":
    main()
