"""A real HAProxy for the integration tests, run from the shipped contrib/haproxy config.

`HAProxy` renders `contrib/haproxy/haproxy.cfg` with the test's addresses (every `bind`
on a free loopback port, every `server` on a test instance and its daemon's check port,
the stats socket in a temp dir) and changes nothing else, so the tests exercise the
shipped timeouts, checks and options as written. It runs `haproxy -f CFG -db` as our own
foreground process (never the system service Debian's package installs), stops it by
PID, and reads servers' states from the stats socket (`show stat`).

Facts observed with Debian 12's haproxy 2.6 that shape this module:
- `-db` keeps haproxy in the foreground; SIGTERM stops it at once (SIGUSR1 would wait for
  sessions to finish).
- `show stat` answers CSV whose header line starts with `# `; a server's `status` is
  `UP`, `DOWN`, `MAINT`, or a transition such as `UP 1/3` (going down) / `DOWN 1/2`
  (coming up) while `fall`/`rise` consecutive checks accumulate.
"""

from __future__ import annotations

import contextlib
import csv
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.ports import HOST, free_port
from harness.processes import stop_process
from harness.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CONFIG = REPO_ROOT / "contrib" / "haproxy" / "haproxy.cfg"


class HAProxyError(RuntimeError):
    """haproxy refused the config, exited, or did not reach a state in time."""


@dataclass(frozen=True)
class Backend:
    """Where one shipped `server NAME` line points in the test: PostgreSQL and its daemon."""

    address: str
    port: int
    check_port: int


_SECTION = re.compile(r"^(global|defaults|frontend|backend|listen)\b\s*(\S*)")
_BIND = re.compile(r"^(\s*bind\s+)\S+(.*)$")
_SERVER = re.compile(r"^(\s*server\s+(\S+)\s+)\S+(.*)$")
_CHECK_PORT = re.compile(r"\bport\s+\d+")
_STATS_SOCKET = re.compile(r"^(\s*stats\s+socket\s+)\S+(.*)$")


def render(
    template: str,
    *,
    binds: Mapping[str, int],
    servers: Mapping[str, Backend],
    stats_socket: Path,
) -> str:
    """The shipped config with only addresses replaced.

    `binds` maps each `listen` section to its loopback port; `servers` maps a server name
    (the same name in every section) to the test instance it stands for. A `bind`,
    `server` or section the mappings leave out is an error, so the test can never bind
    the example's ports or check a 10.0.0.x address.
    """
    out: list[str] = []
    section = ""
    seen_binds: set[str] = set()
    for line in template.splitlines():
        stripped = line.split("#", 1)[0]
        if match := _SECTION.match(stripped):
            section = match.group(2)
        elif match := _BIND.match(stripped):
            if section not in binds:
                raise HAProxyError(f"no test port for the bind in section {section!r}")
            line = f"{match.group(1)}{HOST}:{binds[section]}{match.group(2)}"
            seen_binds.add(section)
        elif match := _SERVER.match(stripped):
            name = match.group(2)
            if name not in servers:
                raise HAProxyError(f"no test instance for server {name!r} in {section!r}")
            backend = servers[name]
            rest = _CHECK_PORT.sub(f"port {backend.check_port}", match.group(3), count=1)
            if not re.search(rf"\bcheck\b.*\bport {backend.check_port}\b", rest):
                raise HAProxyError(f"server {name!r} in {section!r} has no `check port`")
            line = f"{match.group(1)}{backend.address}:{backend.port}{rest}"
        elif match := _STATS_SOCKET.match(stripped):
            line = f"{match.group(1)}{stats_socket}{match.group(2)}"
        out.append(line)
    if missing := set(binds) - seen_binds:
        raise HAProxyError(f"no bind line in section(s) {sorted(missing)}")
    return "\n".join(out) + "\n"


class HAProxy:
    """One `haproxy -db` process from a rendered config, stopped by PID.

    `frontends` names the config's `listen` sections; each gets a free loopback port
    (`port(name)`). Use as a context manager or call `start()`/`stop()`.
    """

    def __init__(
        self,
        *,
        servers: Mapping[str, Backend],
        frontends: tuple[str, ...] = ("pg-read-write", "pg-read-only"),
        template: Path = SHIPPED_CONFIG,
        base_dir: Path | None = None,
        binary: str | None = None,
    ) -> None:
        found = binary or shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(found).exists():
            raise HAProxyError("no haproxy binary: run ./scripts/bootstrap (Debian's haproxy)")
        self.binary = found
        self._owns_base_dir = base_dir is None
        # Unix socket paths are limited to 108 bytes: keep the default base dir short.
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="haproxy-"))
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.config_file = self.base_dir / "haproxy.cfg"
        self.stats_socket = self.base_dir / "stats.sock"
        self.log_file = self.base_dir / "haproxy.log"
        self.ports = {name: free_port() for name in frontends}
        self.config_file.write_text(
            render(
                template.read_text(),
                binds=self.ports,
                servers=servers,
                stats_socket=self.stats_socket,
            )
        )
        self._process: subprocess.Popen[bytes] | None = None

    def port(self, frontend: str) -> int:
        return self.ports[frontend]

    # -- lifecycle -------------------------------------------------------------------

    def start(self, *, timeout: float = 15.0) -> HAProxy:
        checked = subprocess.run(
            [self.binary, "-c", "-q", "-f", str(self.config_file)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if checked.returncode != 0:
            raise HAProxyError(f"haproxy -c refused the config:\n{checked.stdout}{checked.stderr}")
        self.stats_socket.unlink(missing_ok=True)
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [self.binary, "-f", str(self.config_file), "-db"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_until(
                self._answers,
                what=f"haproxy to answer on {self.stats_socket}",
                timeout=timeout,
                fatal=(HAProxyError,),
                describe=self.log_tail,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _answers(self) -> bool:
        if self._process is None or self._process.poll() is not None:
            raise HAProxyError(f"haproxy exited:\n{self.log_tail()}")
        return bool(self.command("show info"))

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def stop(self, *, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        stop_process(process, timeout=timeout)

    def cleanup(self) -> None:
        self.stop()
        if self._owns_base_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> HAProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return "(no haproxy log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- the stats socket --------------------------------------------------------------

    def command(self, line: str, *, timeout: float = 5.0) -> str:
        """One command on the stats socket (non-interactive: haproxy closes after it)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.stats_socket))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def server_states(self) -> dict[tuple[str, str], str]:
        """`(listen section, server) -> status` from `show stat` (`UP`, `DOWN`, `UP 1/3`...)."""
        text = self.command("show stat")
        lines = [line for line in text.splitlines() if line.strip()]
        if not lines or not lines[0].startswith("# "):
            raise HAProxyError(f"unexpected `show stat` answer: {text[:200]!r}")
        rows = csv.DictReader([lines[0][2:], *lines[1:]])
        return {
            (row["pxname"], row["svname"]): row["status"]
            for row in rows
            if row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def status(self, frontend: str, server: str) -> str:
        return self.server_states()[(frontend, server)]

    def wait_for(
        self, frontend: str, expected: Mapping[str, str], *, timeout: float = 20.0
    ) -> None:
        """Wait until every named server of `frontend` has exactly the status given."""

        def reached() -> bool:
            states = self.server_states()
            return all(states[(frontend, name)] == want for name, want in expected.items())

        def describe() -> str:
            with contextlib.suppress(Exception):
                states = self.server_states()
                now = {s: st for (f, s), st in states.items() if f == frontend}
                return f"{frontend} now: {now}\n{self.log_tail()}"
            return self.log_tail()

        wait_until(
            reached,
            what=f"{frontend} servers {dict(expected)}",
            timeout=timeout,
            interval=0.1,
            describe=describe,
            error=HAProxyError,
        )

    def up_servers(self, frontend: str) -> set[str]:
        return {s for (f, s), st in self.server_states().items() if f == frontend and st == "UP"}
