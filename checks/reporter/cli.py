"""pg-role-reporter's command line: options, logging, the start and the exit status.

It is a daemon, not a check: logs go to stderr (the journal), one line per event; exit
status 0 on a clean stop, 1 when --once could not finish, 2 on a usage or setup error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

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
from checks.postgres.options import POSTGRES_TIMEOUT, server_options
from checks.reporter.backoff import UNREACHABLE_RETRY_SECONDS
from checks.reporter.board import RoleBoard
from checks.reporter.loop import Reporter
from checks.reporter.options import (
    DEFAULT_LOCK_DELAY_SECONDS,
    DEFAULT_SESSION_TTL_SECONDS,
    DEFAULT_WAL_LSN_INTERVAL_SECONDS,
    Options,
)
from checks.reporter.postgres import PostgresRole
from checks.reporter.systemd import journal_line, log_formatter
from checks.reporter.watch import ServiceWatch
from checks.resident.listen import ListenAddress, listen_option
from checks.resident.push import PUSH_HELP, PushSpec, push_option_callback, pushing
from checks.roletag.fencing import default_lock_key
from checks.roletag.plan import TagNames

if TYPE_CHECKING:
    from checks.resident.connections import KeptConnection

log = logging.getLogger("pg-role-reporter")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
# How long a starting reporter takes "ACL not found" for an ACL system still starting.
ACL_NOT_FOUND_GRACE_SECONDS = 30.0


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
@server_options
@click.option(
    # A check's -t bounds its whole run; the daemon runs until stopped, so its -t is
    # another thing, named for what it is (--timeout stays an alias for existing units).
    "-t",
    "--round-trip-timeout",
    "--timeout",
    "round_trip_timeout",
    type=POSTGRES_TIMEOUT,
    default=10.0,
    show_default=True,
    help="Seconds one round trip to PostgreSQL may take: a connect, or one turn's role "
    "query. Past it the reporter drops the connection, counts PostgreSQL as unreachable "
    "(role tag off, lock released) and tries again next turn. Unlike a check's -t it "
    "bounds no run. --timeout is the same option.",
)
@click.option("-v", "--verbose", count=True, help="Also log debug lines.")
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
@click.option(
    "--push",
    "push_specs",
    multiple=True,
    metavar="CHECK_ID=INTERVAL:COMMAND [OPTION...]",
    callback=push_option_callback,
    help=PUSH_HELP,
)
@click.option("--once", is_flag=True, help="Reconcile once and exit (1 if Consul failed).")
@click.option("--dry-run", is_flag=True, help="Print what would change on stdout; write nothing.")
@listen_option
def cli(
    host: str | None,
    port: int | None,
    user: str | None,
    dbname: str | None,
    round_trip_timeout: float,
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
    push_specs: tuple[PushSpec, ...],
    once: bool,
    dry_run: bool,
    listen: ListenAddress | None,
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
    settings = ConnectionSettings(
        host=host,
        port=port,
        user=user,
        dbname=dbname,
        timeout=round_trip_timeout,
        application_name="pg-role-reporter",
    )
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
    board = RoleBoard()
    reporter = Reporter(options, consul_settings, PostgresRole(settings), board=board)
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
            return EXIT_OK if reporter.run_once() else EXIT_FAILED
        stop = threading.Event()

        def stop_on_signal(signum: int, frame: object) -> None:
            log.info("stopping on %s", signal.Signals(signum).name)
            stop.set()
            watch.changed.set()

        watch = ServiceWatch(consul_settings, service_id, reporter.trouble)
        signal.signal(signal.SIGTERM, stop_on_signal)
        signal.signal(signal.SIGINT, stop_on_signal)
        with contextlib.ExitStack() as services:
            start_services(
                services,
                board,
                settings=settings,
                interval=interval,
                session_ttl=session_ttl,
                stopping=stop,
                listen=listen,
                push_specs=push_specs,
                consul_settings=consul_settings,
            )
            reporter.run_forever(watch, stop)
        return EXIT_OK
    finally:
        reporter.close()


def start_services(
    services: contextlib.ExitStack,
    board: RoleBoard,
    *,
    settings: ConnectionSettings,
    interval: float,
    session_ttl: float,
    stopping: threading.Event,
    listen: ListenAddress | None = None,
    consul_settings: ConsulSettings,
    push_specs: Sequence[PushSpec] = (),
) -> None:
    """Start the optional services that read the loop's verdict from `board`.

    Each is a context manager entered on `services`: it starts once the setup is proven
    and stops after the loop has ended (and taken the leader tag off). An option that adds
    one (--listen, --push) passes its value down here.
    """
    from checks.resident.connections import KeptConnection

    # the checks' connections to this instance, shared by everything resident (the HTTP
    # endpoints, the push); none is made before a check asks
    source = KeptConnection(settings)
    services.callback(source.close)
    if listen is not None:
        _serve_http(services, board, source, listen, settings, interval, session_ttl, stopping)
    if push_specs:
        _require_ttl_checks(consul_settings, push_specs)
        # a verdict waits for the loop's next turn: an interval plus a PostgreSQL round trip
        turn_wait = interval + settings.timeout
        services.enter_context(
            pushing(
                push_specs,
                board,
                consul_settings,
                source,
                turn_wait=turn_wait,
                loop_interval=interval,
            )
        )


def _serve_http(
    services: contextlib.ExitStack,
    board: RoleBoard,
    source: KeptConnection,
    listen: ListenAddress,
    settings: ConnectionSettings,
    interval: float,
    session_ttl: float,
    stopping: threading.Event,
) -> None:
    from checks.resident.health import liveness_limit, lock_trust_seconds
    from checks.resident.server import serve

    try:
        services.enter_context(
            serve(
                listen,
                source,
                board,
                timeout=settings.timeout,
                stale_after=liveness_limit(interval=interval, timeout=settings.timeout),
                lock_trust=lock_trust_seconds(session_ttl),
                stopping=stopping,
            )
        )
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {listen}: {exc.strerror or exc}") from None


def _require_ttl_checks(consul_settings: ConsulSettings, push_specs: Sequence[PushSpec]) -> None:
    """Every --push id names a TTL check of the local agent, or the start ends in one line.

    Without this a typo in an id (or conf.d not installed) cost one WARNING line and a push
    retried every second for ever, while the check it was meant for stayed critical. The
    agent answered just before (the service was found on it); should it be gone again (a
    restart at boot) or not know the token yet, the pushes' own retries say so instead.
    """
    with ConsulClient(consul_settings) as client:
        try:
            checks = client.agent_checks()
        except (ConsulUnreachable, ConsulPermissionDenied) as exc:
            if isinstance(exc, ConsulPermissionDenied) and not exc.token_unknown:
                raise click.ClickException(f"--push: reading the agent's checks: {exc}") from None
            log.warning("--push: could not read the agent's checks to verify them: %s", exc)
            return
        except ConsulError as exc:
            raise click.ClickException(f"--push: reading the agent's checks: {exc}") from None
    where = f"the Consul agent at {consul_settings.address}"
    for spec in push_specs:
        check = checks.get(spec.check_id)
        if check is None:
            raise click.ClickException(
                f"--push {spec.check_id}: no check {spec.check_id} on {where} (that this "
                "token may read): wrong check id, or its TTL check is not in conf.d?"
            )
        kind = check.get("Type")
        if kind and kind != "ttl":
            raise click.ClickException(
                f"--push {spec.check_id}: check {spec.check_id} on {where} is a {kind} "
                "check, not a TTL check: a pushed verdict needs a TTL check"
            )


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
