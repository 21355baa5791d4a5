"""Real PostgreSQL servers for the integration tests: a primary and streaming replicas.

Every server listens on 127.0.0.1 on a free port, keeps its data, unix socket and log in a
temp dir of its own, and runs as `pgbin.test_os_user()` (never root, docs/design.md §7). Every
wait polls a condition against a deadline and fails with the server's log tail.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import psutil
import psycopg
from psycopg import sql as pgsql

from harness.pgbin import OsUser, PgInstallation, test_os_user
from harness.ports import free_port
from harness.waiting import wait_until

T = TypeVar("T")
SettingValue = str | int | float | bool
Params = Sequence[Any] | Mapping[str, Any]

SUPERUSER = "postgres"
REPLICATION_USER = "replicator"
MONITOR_USER = "monitor"
NOPRIV_USER = "nopriv"
HOST = "127.0.0.1"
DEFAULT_TIMEOUT = 60.0

# Small and fast: tests need real replication, not durability. full_page_writes and
# wal_log_hints stay on so a test can pg_rewind an old primary.
BASE_SETTINGS: dict[str, SettingValue] = {
    "max_connections": 50,
    "shared_buffers": "16MB",
    "huge_pages": "off",
    "fsync": "off",
    "wal_level": "replica",
    "wal_log_hints": "on",
    "max_wal_senders": 10,
    "max_replication_slots": 10,
    "hot_standby": "on",
    "max_wal_size": "64MB",
    "min_wal_size": "32MB",
    "jit": "off",
    # The default until 13 is md5, which pg_hba's scram-sha-256 lines would refuse.
    "password_encryption": "scram-sha-256",
    "timezone": "UTC",
    "log_timezone": "UTC",
    # English messages whatever the machine's locale, so tests can match on them.
    "lc_messages": "C",
    "log_line_prefix": "%m [%p] %q%a ",
}

PG_HBA = f"""\
# Written by harness/postgres.py. The superuser and replication are trusted (tests only);
# every other role needs its scram password, so wrong passwords are testable.
# TYPE  DATABASE     USER               ADDRESS        METHOD
local   all          {SUPERUSER}                           trust
local   replication  {REPLICATION_USER}                         trust
local   all          all                               scram-sha-256
host    all          {SUPERUSER}           {HOST}/32   trust
host    replication  {REPLICATION_USER}         {HOST}/32   trust
host    all          all                {HOST}/32   scram-sha-256
"""


class PgHarnessError(RuntimeError):
    """A harness operation on a real server failed; the message carries its log tail."""


class PgTimeout(PgHarnessError, TimeoutError):
    """A condition did not become true before its deadline."""


class PgServerExited(PgHarnessError):
    """The postmaster died while we waited for it: no point waiting any longer."""


def _alive(proc: psutil.Process) -> bool:
    # A zombie has released everything PostgreSQL cares about (its shared memory mapping).
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def conf_quote(value: SettingValue) -> str:
    if isinstance(value, bool):
        value = "on" if value else "off"
    return "'" + str(value).replace("'", "''") + "'"


def _conf_lines(settings: Mapping[str, SettingValue]) -> str:
    return "".join(f"{name} = {conf_quote(value)}\n" for name, value in settings.items())


def wait_for(
    condition: Callable[[], T | None],
    *,
    what: str,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.05,
    describe: Callable[[], str] | None = None,
) -> T:
    """:func:`harness.waiting.wait_until` for servers: a postmaster that exited ends it."""
    return wait_until(
        condition,
        what=what,
        timeout=timeout,
        interval=interval,
        max_interval=0.5,
        fatal=(PgServerExited,),
        describe=describe,
        error=PgTimeout,
    )


class PgServer:
    """One PostgreSQL instance on 127.0.0.1, run as the test OS user.

    Create servers through `PgCluster`; it initialises the primary, clones replicas and
    writes the passfile that `env()` and `dsn()` point at.
    """

    def __init__(
        self,
        install: PgInstallation,
        *,
        name: str,
        workdir: Path,
        passfile: Path,
        os_user: OsUser | None = None,
    ) -> None:
        self.install = install
        self.name = name
        self.workdir = workdir
        self.passfile = passfile
        self.os_user = os_user or test_os_user()
        self.host = HOST
        self.port = free_port()
        self.datadir = workdir / "data"
        self.socket_dir = workdir / "sock"
        self.logfile = workdir / "server.log"
        self._popen: subprocess.Popen[bytes] | None = None
        self._frozen: list[psutil.Process] = []

        workdir.mkdir(mode=0o700)
        self.socket_dir.mkdir(mode=0o700)
        for path in (workdir, self.socket_dir):
            self.os_user.chown(path)

    def __repr__(self) -> str:
        return f"<PgServer {self.name} pg{self.install.major} {self.host}:{self.port}>"

    # ----------------------------------------------------------------- commands

    def _run(self, program: str, *args: str, timeout: float = DEFAULT_TIMEOUT) -> str:
        """Run a PostgreSQL program as the OS user; raise with its output on failure."""
        env = self._server_env()
        argv = [str(self.install.program(program)), *args]
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=self.workdir,
                env=env,
                **self.os_user.subprocess_kwargs(),  # type: ignore[arg-type]
            )
        except subprocess.TimeoutExpired as exc:
            raise PgTimeout(
                f"{self.name}: {program} did not finish in {timeout:g}s\n{self.log_tail()}"
            ) from exc
        if done.returncode != 0:
            raise PgHarnessError(
                f"{self.name}: {' '.join(argv)} exited {done.returncode}\n"
                f"{done.stdout}{done.stderr}\n{self.log_tail()}"
            )
        return done.stdout

    def _write(self, path: Path, text: str, *, append: bool = False) -> None:
        """Write a file inside the data dir, owned by the OS user like the rest of it."""
        with path.open("a" if append else "w") as f:
            f.write(text)
        path.chmod(0o600)
        self.os_user.chown(path)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.logfile.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"--- {self.name}: no log at {self.logfile} ---"
        return f"--- last {len(text)} lines of {self.logfile} ---\n" + "\n".join(text)

    def wait_until(
        self, condition: Callable[[], T | None], what: str, timeout: float = DEFAULT_TIMEOUT
    ) -> T:
        return wait_for(
            condition, what=f"{self.name}: {what}", timeout=timeout, describe=self.log_tail
        )

    # ----------------------------------------------------------------- creation

    def _write_local_conf(self) -> None:
        # Per-server settings live in their own file: pg_basebackup copies the primary's
        # postgresql.conf verbatim, and a replica must not inherit its port.
        self._write(
            self.datadir / "harness-local.conf",
            _conf_lines(
                {
                    "listen_addresses": self.host,
                    "port": self.port,
                    "unix_socket_directories": str(self.socket_dir),
                    # Shows in ps titles, so a stray process names its test server.
                    "cluster_name": f"pgha-{self.name}",
                }
            ),
        )

    def initdb(self, settings: Mapping[str, SettingValue]) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.datadir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        self._write(
            self.datadir / "postgresql.conf",
            "\n# harness/postgres.py\n"
            + _conf_lines(settings)
            + "include_if_exists = 'harness-local.conf'\n",
            append=True,
        )
        self._write(self.datadir / "pg_hba.conf", PG_HBA)
        self._write_local_conf()

    def clone_from(self, primary: PgServer, *, slot: str | None = None) -> None:
        """Make this server a streaming replica of `primary` with `pg_basebackup -R`.

        A physical slot named after the replica keeps the WAL it needs; application_name
        is the replica's name, so pg_stat_replication tells replicas apart.
        """
        slot = slot or self.name
        self._run(
            "pg_basebackup",
            "-d",
            primary.replication_conninfo(application_name=self.name),
            "-D",
            str(self.datadir),
            "-R",
            "-C",
            "-S",
            slot,
            "-X",
            "stream",
            "--checkpoint=fast",
            "--no-sync",
        )
        # -R writes every connection option its own libpq knows; a newer pg_basebackup
        # (borrowed for a server package that has none) adds some, e.g. 17's
        # sslnegotiation, that an older server's walreceiver rejects. The last line of
        # postgresql.auto.conf wins, so restate the conninfo in plain terms.
        self._write(
            self.datadir / "postgresql.auto.conf",
            _conf_lines(
                {"primary_conninfo": primary.replication_conninfo(application_name=self.name)}
            ),
            append=True,
        )
        self._write_local_conf()

    def replication_conninfo(self, *, application_name: str) -> str:
        return (
            f"host={self.host} port={self.port} user={REPLICATION_USER} "
            f"application_name={application_name}"
        )

    # ----------------------------------------------------------------- lifecycle

    @property
    def postmaster_pid(self) -> int:
        if self._popen is None or not self.is_running():
            raise PgHarnessError(f"{self.name} is not running")
        return self._popen.pid

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def _server_env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workdir),
            "LC_ALL": "C",
            "TZ": "UTC",
        }

    def start(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Start the postmaster and wait until it accepts connections.

        The postmaster is our own child (not daemonized by pg_ctl) so that we reap it:
        where PID 1 reaps orphans lazily, a zombie postmaster still "exists" for the next
        postmaster's lock-file check and blocks a restart.
        """
        if self.is_running():
            return
        for attempt in range(5):
            log_start = self.logfile.stat().st_size if self.logfile.exists() else 0
            with self.logfile.open("ab") as log:
                self.os_user.chown(self.logfile)
                self._popen = subprocess.Popen(
                    [str(self.install.program("postgres")), "-D", str(self.datadir)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.workdir,
                    env=self._server_env(),
                    # Own session: a Ctrl-C aimed at pytest must not reach the servers
                    # before close() stops them in order.
                    start_new_session=True,
                    **self.os_user.subprocess_kwargs(),  # type: ignore[arg-type]
                )
            try:
                self.wait_until(self._accepts_connections, "accepting connections", timeout)
                return
            except PgHarnessError:
                self.kill()
                new_log = self.logfile.read_text(errors="replace")[log_start:]
                # Another process took our port between free_port() and the bind.
                if "could not bind" in new_log and attempt < 4:
                    self.port = free_port()
                    self._write_local_conf()
                    continue
                raise

    def _accepts_connections(self) -> bool:
        assert self._popen is not None
        if self._popen.poll() is not None:
            raise PgServerExited(
                f"{self.name}: postgres exited with {self._popen.returncode}\n{self.log_tail()}"
            )
        return bool(self.sql("SELECT 1"))

    # SIGTERM = smart, SIGINT = fast, SIGQUIT = immediate: the postmaster's own protocol.
    _STOP_SIGNALS: ClassVar[dict[str, signal.Signals]] = {
        "smart": signal.SIGTERM,
        "fast": signal.SIGINT,
        "immediate": signal.SIGQUIT,
    }

    def stop(self, mode: str = "fast", timeout: float = DEFAULT_TIMEOUT) -> None:
        """Shut down (smart|fast|immediate) and wait until every server process is gone."""
        if not self.is_running():
            return
        self._signal_and_wait(self._STOP_SIGNALS[mode], timeout)

    def restart(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.stop(timeout=timeout)
        self.start(timeout=timeout)

    def kill(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """SIGKILL the postmaster, as a crash would; its children exit on postmaster death.

        Waits until every child is gone too, so start() can reuse the data dir at once.
        """
        if not self.is_running():
            return
        self._signal_and_wait(signal.SIGKILL, timeout)

    def _signal_and_wait(self, signum: signal.Signals, timeout: float) -> None:
        assert self._popen is not None
        self.thaw()
        children = self._children()
        with contextlib.suppress(ProcessLookupError):
            self._popen.send_signal(signum)
        try:
            self.wait_until(
                lambda: (
                    self._popen is not None
                    and self._popen.poll() is not None
                    and not any(_alive(c) for c in children)
                ),
                "every server process to exit",
                timeout,
            )
        except PgTimeout:
            # Leave nothing behind: a leaked backend would hold the shared memory segment.
            for proc in (psutil.Process(self._popen.pid), *children):
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(10)
            raise

    def freeze(self, *, children: bool = False) -> None:
        """SIGSTOP the postmaster (and with children=True every backend and aux process).

        A frozen postmaster still has its listen socket: the kernel completes TCP
        handshakes, but nobody ever answers. That is the hang the -t timeout must bound.
        """
        procs = [psutil.Process(self.postmaster_pid), *(self._children() if children else [])]
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGSTOP)
                self._frozen.append(proc)

    def thaw(self) -> None:
        for proc in reversed(self._frozen):
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGCONT)
        self._frozen.clear()

    def _children(self) -> list[psutil.Process]:
        if not self.is_running():
            return []
        try:
            return psutil.Process(self.postmaster_pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    # ----------------------------------------------------------------- SQL

    def connect(self, *, dbname: str = "postgres", timeout: float = 10) -> psycopg.Connection:
        """A superuser autocommit connection; close it (use `with`)."""
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=SUPERUSER,
            dbname=dbname,
            autocommit=True,
            connect_timeout=max(1, int(timeout)),
        )

    def sql(
        self,
        query: str | pgsql.Composable,
        params: Params | None = None,
        *,
        dbname: str = "postgres",
    ) -> list[tuple[Any, ...]]:
        """Run one statement as superuser; its rows ([] if it returns none)."""
        with self.connect(dbname=dbname) as conn, conn.cursor() as cur:
            cur.execute(query, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def execute(
        self,
        query: str | pgsql.Composable,
        params: Params | None = None,
        *,
        dbname: str = "postgres",
    ) -> None:
        self.sql(query, params, dbname=dbname)

    def scalar(self, query: str, params: Sequence[Any] | None = None) -> Any:
        rows = self.sql(query, params)
        return rows[0][0] if rows else None

    def is_in_recovery(self) -> bool:
        return bool(self.scalar("SELECT pg_is_in_recovery()"))

    # ----------------------------------------------------------------- configuration

    def set_config(self, *, restart: bool | None = None, **settings: SettingValue | None) -> None:
        """ALTER SYSTEM SET each setting (None = RESET), reload, restart if one needs it.

        restart=None restarts only when PostgreSQL reports a pending restart.
        """
        if not self.is_running():
            # Offline: postgresql.auto.conf's last line for a name wins.
            self._write(
                self.datadir / "postgresql.auto.conf",
                _conf_lines({k: v for k, v in settings.items() if v is not None}),
                append=True,
            )
            return
        with self.connect() as conn:
            for name, value in settings.items():
                if value is None:
                    stmt = pgsql.SQL("ALTER SYSTEM RESET {}").format(pgsql.Identifier(name))
                else:
                    if isinstance(value, bool):
                        value = "on" if value else "off"
                    stmt = pgsql.SQL("ALTER SYSTEM SET {} = {}").format(
                        pgsql.Identifier(name), pgsql.Literal(str(value))
                    )
                conn.execute(stmt)
            before = conn.execute("SELECT pg_conf_load_time()").fetchone()[0]  # type: ignore[index]
            conn.execute("SELECT pg_reload_conf()")
        # The reload is asynchronous; a new backend forked after the postmaster re-read
        # the files reports a newer pg_conf_load_time().
        self.wait_until(
            lambda: self.scalar("SELECT pg_conf_load_time() > %s", [before]),
            "the configuration reload",
        )
        pending = self.sql(
            "SELECT name FROM pg_settings WHERE pending_restart AND name = ANY(%s)",
            [list(settings)],
        )
        if restart or (restart is None and pending):
            self.restart()

    def repoint(self, new_primary: PgServer, *, slot: str | None = None) -> None:
        """Make this replica stream from `new_primary` (e.g. after a promotion).

        Creates its physical slot on `new_primary` if missing: slots are not replicated,
        so a promoted replica has none of the old primary's. recovery_target_timeline
        defaults to 'latest' (PG 12+), so the replica follows the new timeline.
        """
        slot = slot or self.name
        if new_primary.is_running():
            new_primary.execute(
                "SELECT pg_create_physical_replication_slot(%s, true) "
                "WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = %s)",
                [slot, slot],
            )
        self.set_config(
            primary_conninfo=new_primary.replication_conninfo(application_name=self.name),
            primary_slot_name=slot,
        )

    # ----------------------------------------------------------------- replication

    def promote(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.execute("SELECT pg_promote(wait => true, wait_seconds => %s)", [int(timeout)])
        self.wait_until(lambda: not self.is_in_recovery(), "the end of recovery", timeout)

    def _replay_paused(self) -> bool:
        if self.major >= 14:
            # 14+: 'pause requested' until the startup process really stops.
            return self.scalar("SELECT pg_get_wal_replay_pause_state()") == "paused"
        return bool(self.scalar("SELECT pg_is_wal_replay_paused()"))

    def pause_replay(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.execute("SELECT pg_wal_replay_pause()")
        self.wait_until(self._replay_paused, "WAL replay to pause", timeout)

    def resume_replay(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.execute("SELECT pg_wal_replay_resume()")
        self.wait_until(lambda: not self._replay_paused(), "WAL replay to resume", timeout)

    def wal_receiver_status(self) -> str | None:
        return self.scalar("SELECT status FROM pg_stat_wal_receiver")

    @property
    def major(self) -> int:
        return self.install.major

    # ----------------------------------------------------------------- client side

    def env(self, role: str = MONITOR_USER) -> dict[str, str]:
        """libpq environment for a check run as `role`; merge it into os.environ.

        The password comes from the harness's 0600 passfile, never from PGPASSWORD.
        """
        return {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": role,
            "PGDATABASE": "postgres",
            "PGPASSFILE": str(self.passfile),
        }

    def dsn(self, role: str = MONITOR_USER) -> str:
        return (
            f"host={self.host} port={self.port} user={role} dbname=postgres "
            f"passfile={self.passfile}"
        )


class PgCluster:
    """A primary and `replicas` streaming replicas of one PostgreSQL installation.

    Roles made on the primary (and so on every replica): `postgres` (superuser, trusted
    from 127.0.0.1), `replicator` (REPLICATION), `monitor` (LOGIN, member of pg_monitor
    only), `nopriv` (LOGIN, no grants). monitor's and nopriv's random passwords are only
    in `passfile`. Use as a context manager, or call close(); atexit calls it too.
    """

    def __init__(
        self,
        install: PgInstallation,
        *,
        replicas: int = 1,
        extra_settings: Mapping[str, SettingValue] | None = None,
        os_user: OsUser | None = None,
        base_dir: Path | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.install = install
        self.os_user = os_user or test_os_user()
        self.settings = {**BASE_SETTINGS, **(extra_settings or {})}
        self.servers: list[PgServer] = []
        self.workdir = Path(
            tempfile.mkdtemp(prefix=f"pg-ha-checks-pg{install.major}-", dir=base_dir)
        )
        self._closed = False
        self.replicas: list[PgServer] = []
        # Traversable by the OS user, who owns each server's subdirectory; the passfile
        # stays 0600 to the test process, as libpq requires.
        self.workdir.chmod(0o755)
        self.passfile = self.workdir / "pgpass"
        self._passwords = {
            MONITOR_USER: secrets.token_urlsafe(18),
            NOPRIV_USER: secrets.token_urlsafe(18),
        }
        fd = os.open(self.passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.writelines(f"{HOST}:*:*:{user}:{pw}\n" for user, pw in self._passwords.items())
        atexit.register(self.close)
        try:
            self.primary = self._new_server("primary")
            self.primary.initdb(self.settings)
            self.primary.start(timeout)
            self._create_roles()
            for number in range(1, replicas + 1):
                self.add_replica(f"replica{number}", timeout=timeout, wait=False)
            self.wait_streaming(timeout)
        except BaseException:
            # Report why creation failed, not a follow-on error from the cleanup.
            with contextlib.suppress(Exception):
                self.close()
            raise

    def __repr__(self) -> str:
        return f"<PgCluster pg{self.install.major} {self.servers}>"

    def __enter__(self) -> PgCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _new_server(self, name: str) -> PgServer:
        server = PgServer(
            self.install,
            name=name,
            workdir=self.workdir / name,
            passfile=self.passfile,
            os_user=self.os_user,
        )
        self.servers.append(server)
        return server

    def _create_roles(self) -> None:
        with self.primary.connect() as conn:
            conn.execute(pgsql.SQL(f"CREATE ROLE {REPLICATION_USER} LOGIN REPLICATION"))
            for user, password in self._passwords.items():
                conn.execute(
                    pgsql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        pgsql.Identifier(user), pgsql.Literal(password)
                    )
                )
            conn.execute(pgsql.SQL(f"GRANT pg_monitor TO {MONITOR_USER}"))

    def add_replica(
        self, name: str | None = None, *, timeout: float = DEFAULT_TIMEOUT, wait: bool = True
    ) -> PgServer:
        """Clone one more streaming replica from the current primary and start it."""
        replica = self._new_server(name or f"replica{len(self.replicas) + 1}")
        replica.clone_from(self.primary)
        replica.start(timeout)
        self.replicas.append(replica)
        if wait:
            self.wait_streaming(timeout)
        return replica

    # ----------------------------------------------------------------- waits

    def wait_streaming(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Every replica's WAL receiver streams, and the primary sees each one streaming."""
        for replica in self.replicas:
            replica.wait_until(
                lambda r=replica: r.wal_receiver_status() == "streaming",
                "its WAL receiver to stream",
                timeout,
            )
        names = [r.name for r in self.replicas]
        self.primary.wait_until(
            lambda: (
                self.primary.scalar(
                    "SELECT count(DISTINCT application_name) FROM pg_stat_replication "
                    "WHERE state = 'streaming' AND application_name = ANY(%s)",
                    [names],
                )
                == len(names)
            ),
            f"pg_stat_replication to show {', '.join(names)} streaming",
            timeout,
        )

    def wait_caught_up(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Every replica has replayed everything the primary had written when called."""
        target = self.primary.scalar("SELECT pg_current_wal_lsn()::text")
        for replica in self.replicas:
            replica.wait_until(
                lambda r=replica: r.scalar(
                    "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), %s::pg_lsn) >= 0",
                    [target],
                ),
                f"replay to reach {target}",
                timeout,
            )

    # ----------------------------------------------------------------- failover

    def promote(self, replica: PgServer, *, repoint_others: bool = True) -> None:
        """Promote `replica`; it becomes `primary`, the other replicas follow it.

        The old primary is left as it is (running, stopped or frozen: the test decides)
        and stays in `servers`, so close() still stops it.
        """
        replica.promote()
        others = [r for r in self.replicas if r is not replica]
        self.primary, self.replicas = replica, others
        if repoint_others:
            for other in others:
                other.repoint(replica)

    # ----------------------------------------------------------------- teardown

    def close(self) -> None:
        """Stop every server this cluster started, by PID, and remove its temp dir."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        atexit.unregister(self.close)
        errors = []
        for server in reversed(self.servers):
            try:
                server.stop(mode="fast", timeout=30)
            except Exception as exc:  # keep stopping the others
                errors.append(f"{server.name}: {exc}")
                with contextlib.suppress(Exception):
                    server.kill(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)
        if errors:
            raise PgHarnessError("closing the cluster:\n" + "\n".join(errors))
