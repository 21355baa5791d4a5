"""A real Consul agent for the integration tests and the demo.

`ConsulAgent` runs `consul agent` on 127.0.0.1 with every port chosen free, its own data
dir and config dir, and stops it by PID (never by name: other people's agents share the
machine). Everything that waits, waits on a condition with a deadline.

Facts observed with Consul 1.8.7 (Debian 11's package, see scripts/fetch-consul) on a
2-core machine, which shape this module and the tests:

- `-dev` keeps the raft state (catalog, KV, ACL tokens, prepared queries) in memory: a
  restart loses the KV. With `-data-dir` it still persists `node-id` and the agent's
  local state, so services registered through the HTTP API come back after a restart.
  `persistent=True` runs a single real server instead (`-server -bootstrap-expect=1
  -data-dir`) whose KV and catalog survive `restart(keep_data=True)`.
- Start to "leader elected and node in catalog": dev ~0.15-0.27 s, persistent ~1.7 s (with
  `raft_multiplier=1`); restart: dev ~0.65 s, persistent ~2.2 s. SIGTERM stop: ~0.5 s.
- `consul reload` returns once the agent applied the config: 0.034-0.085 s (median 0.05
  over 10). Services defined in conf.d are re-registered from the files, so tags written
  through the HTTP API on such a service revert to the file's tags, on reload and on
  restart (docs/design.md §5). A blocking query on the service returns during the reload with
  the reverted tags; a watcher that re-adds its tag had it back 0.036-0.082 s after the
  reload started. A blocking query wakes 4-30 ms after a PUT that changes the service.
- `addresses.http` takes a space-separated list, so the agent serves HTTP on the TCP port
  and a unix socket at once; the harness keeps TCP for its own calls.
- ACLs: the master token doubles as the agent token so anti-entropy can write the node.
  Anonymous `GET /v1/agent/service/:id` answers 403 "Permission denied"; a PUT answers
  403 "Permission denied: Missing service:write on pg-db"; a token that does not exist
  answers 403 "ACL not found". List endpoints (`/v1/health/service`, `/v1/agent/checks`)
  never answer 403: they filter, so a weak token sees an empty list.
- WAN join of two dev agents: both see each other's datacenter after ~0.1 s.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from harness import ports, waiting
from harness.processes import stop_process

REPO_ROOT = Path(__file__).resolve().parent.parent
FETCHED_BINARY = REPO_ROOT / ".cache" / "consul" / "usr" / "bin" / "consul"
FETCH_SCRIPT = REPO_ROOT / "scripts" / "fetch-consul"

T = TypeVar("T")


class ConsulHarnessError(RuntimeError):
    """The harness could not get a working Consul agent."""


def consul_binary() -> Path:
    """The consul binary: `CONSUL_BIN`, else the one scripts/fetch-consul extracts.

    Runs scripts/fetch-consul when the binary is missing; raises ConsulHarnessError with
    the script's own message when it cannot be had (tests must fail, never skip).
    """
    override = os.environ.get("CONSUL_BIN")
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ConsulHarnessError(f"CONSUL_BIN={override} is not an executable file")
        return path
    if FETCHED_BINARY.is_file() and os.access(FETCHED_BINARY, os.X_OK):
        return FETCHED_BINARY
    result = subprocess.run(
        [str(FETCH_SCRIPT)], capture_output=True, text=True, check=False, timeout=600
    )
    if result.returncode != 0 or not FETCHED_BINARY.is_file():
        raise ConsulHarnessError(
            f"{FETCH_SCRIPT} failed (exit {result.returncode}); set CONSUL_BIN to a consul "
            f"binary or fix the fetch:\n{result.stderr.strip()}"
        )
    return FETCHED_BINARY


def consul_version(binary: Path | None = None) -> tuple[int, int, int]:
    """(major, minor, patch) of `consul version`."""
    out = subprocess.run(
        [str(binary or consul_binary()), "version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    # First line: "Consul v1.8.7" (possibly with a "-dev" or "+ent" suffix)
    word = out.split()[1].lstrip("v")
    parts = [int("".join(ch for ch in p if ch.isdigit()) or 0) for p in word.split(".")[:3]]
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


def free_port() -> int:
    """A loopback port free for both TCP and UDP (Consul's DNS and serf use both)."""
    return ports.free_port(udp_too=True)


def wait_until(
    predicate: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.02,
) -> T:
    """:func:`harness.waiting.wait_until` for agents: an agent that exited ends it."""
    return waiting.wait_until(
        predicate, what=what, timeout=timeout, interval=interval, fatal=(ConsulHarnessError,)
    )


@dataclass(frozen=True)
class ConsulPorts:
    http: int
    dns: int
    serf_lan: int
    serf_wan: int
    server: int
    grpc: int

    @classmethod
    def allocate(cls) -> ConsulPorts:
        chosen: set[int] = set()
        values = []
        for _ in range(6):
            port = free_port()
            while port in chosen:
                port = free_port()
            chosen.add(port)
            values.append(port)
        return cls(*values)


_running: weakref.WeakSet[ConsulAgent] = weakref.WeakSet()


@atexit.register
def _stop_all_agents() -> None:
    for agent in list(_running):
        with contextlib.suppress(Exception):
            agent.stop()


class ConsulAgent:
    """One `consul agent` process on 127.0.0.1 with free ports, stopped by PID.

    - `persistent=False` (default) runs `-dev`: fastest start, raft state in memory.
      `persistent=True` runs `-server -bootstrap-expect=1 -data-dir=...`, whose catalog,
      KV and ACLs survive `restart(keep_data=True)`.
    - `acl=True` enables ACLs with `default_policy = "deny"`; `master_token` is the
      bootstrap token (also used as the agent token). Use `create_token()` for
      narrower tokens.
    - `unix_socket=True` also serves HTTP on `<base_dir>/http.sock` (`unix_socket_path`).
    - `config_dir` (`<base_dir>/conf.d` unless given) is passed as `-config-dir`: put
      service snippets there with `write_config()` and `reload()`.
    - `extra_config` is merged into the generated agent config (top-level keys win).

    Use as a context manager, or call `start()`/`stop()`; an atexit hook stops agents a
    test forgot.
    """

    def __init__(
        self,
        *,
        base_dir: Path | None = None,
        node_name: str = "pg-ha-test",
        datacenter: str = "dc1",
        persistent: bool = False,
        acl: bool = False,
        master_token: str | None = None,
        unix_socket: bool = False,
        config_dir: Path | None = None,
        extra_config: Mapping[str, Any] | None = None,
        binary: Path | None = None,
        log_level: str = "debug",
    ) -> None:
        self.binary = binary or consul_binary()
        self.version = consul_version(self.binary)
        # Unix socket paths are limited to 108 bytes: keep the default base dir short.
        self._owns_base_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="consul-"))
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.base_dir / "data"
        self.config_dir = Path(config_dir) if config_dir else self.base_dir / "conf.d"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.agent_config_file = self.base_dir / "agent.json"
        self.log_file = self.base_dir / "consul.log"
        self.node_name = node_name
        self.datacenter = datacenter
        self.persistent = persistent
        self.acl = acl
        self.master_token = (master_token or str(uuid.uuid4())) if acl else None
        self.unix_socket_path = self.base_dir / "http.sock" if unix_socket else None
        self.extra_config = dict(extra_config or {})
        self.log_level = log_level
        self.ports = ConsulPorts.allocate()
        self._process: subprocess.Popen[bytes] | None = None
        self._started_before = False
        self._log_handle: Any = None

    # -- addresses -------------------------------------------------------------------

    @property
    def http_addr(self) -> str:
        """`host:port` of the HTTP API, the form CONSUL_HTTP_ADDR takes."""
        return f"127.0.0.1:{self.ports.http}"

    @property
    def http_url(self) -> str:
        return f"http://{self.http_addr}"

    @property
    def dns_port(self) -> int:
        return self.ports.dns

    def dns_records(self, name: str, rdtype: str) -> list[Any]:
        """The records of type ``rdtype`` a client gets for ``name`` from this agent's DNS
        (none for NXDOMAIN). A UDP query lost on a busy machine is asked again."""
        import dns.exception
        import dns.message
        import dns.query
        import dns.rdatatype

        query = dns.message.make_query(name, rdtype)
        for attempt in range(3):
            try:
                answer = dns.query.udp(query, "127.0.0.1", port=self.dns_port, timeout=2)
                break
            except dns.exception.Timeout:
                if attempt == 2:
                    raise
        wanted = dns.rdatatype.from_text(rdtype)
        return [rr for rrset in answer.answer if rrset.rdtype == wanted for rr in rrset]

    def srv_ports(self, name: str) -> list[int]:
        """Ports of the SRV answer for ``name``: how clients tell instances apart here."""
        return sorted(record.port for record in self.dns_records(name, "SRV"))

    def addresses(self, name: str) -> list[str]:
        """Addresses of the A answer for ``name``."""
        return sorted({record.address for record in self.dns_records(name, "A")})

    @property
    def serf_wan_addr(self) -> str:
        return f"127.0.0.1:{self.ports.serf_wan}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def env(self, *, token: str | None = None) -> dict[str, str]:
        """Environment for a `consul` CLI or a checks.consul client aimed at this agent."""
        env = {"CONSUL_HTTP_ADDR": self.http_addr}
        chosen = token if token is not None else self.master_token
        if chosen:
            env["CONSUL_HTTP_TOKEN"] = chosen
        return env

    # -- configuration ---------------------------------------------------------------

    def agent_config(self) -> dict[str, Any]:
        """The generated agent config (written to agent.json, outside the config dir)."""
        http_addresses = "127.0.0.1"
        if self.unix_socket_path:
            http_addresses += f" unix://{self.unix_socket_path}"
        ports: dict[str, int] = {
            "http": self.ports.http,
            "https": -1,
            "dns": self.ports.dns,
            "serf_lan": self.ports.serf_lan,
            "serf_wan": self.ports.serf_wan,
            "server": self.ports.server,
        }
        # gRPC appeared in 1.3 (Envoy xDS); dev mode binds it to 8502 unless moved.
        if self.version >= (1, 3, 0):
            ports["grpc"] = self.ports.grpc
        config: dict[str, Any] = {
            "node_name": self.node_name,
            "datacenter": self.datacenter,
            "data_dir": str(self.data_dir),
            "bind_addr": "127.0.0.1",
            "advertise_addr": "127.0.0.1",
            "client_addr": "127.0.0.1",
            "addresses": {"http": http_addresses},
            "ports": ports,
            # Script checks from conf.d only; never enable_script_checks (docs/design.md §5).
            "enable_local_script_checks": True,
            "disable_update_check": True,
            "log_level": self.log_level,
        }
        if self.persistent:
            config.update(
                server=True,
                bootstrap_expect=1,
                # 1 instead of the production default 5: elects in ~1 s, not ~5 s.
                performance={"raft_multiplier": 1},
            )
        if self.acl:
            config["primary_datacenter"] = self.datacenter
            config["acl"] = {
                "enabled": True,
                "default_policy": "deny",
                "down_policy": "extend-cache",
                "tokens": {"master": self.master_token, "agent": self.master_token},
            }
        config.update(self.extra_config)
        return config

    def write_config(self, name: str, content: Mapping[str, Any] | str) -> Path:
        """Write a snippet into the config dir (`name` gets `.json` unless it has a suffix)."""
        path = self.config_dir / (name if Path(name).suffix else f"{name}.json")
        text = content if isinstance(content, str) else json.dumps(content, indent=2)
        path.write_text(text)
        return path

    def remove_config(self, name: str) -> None:
        path = self.config_dir / (name if Path(name).suffix else f"{name}.json")
        path.unlink(missing_ok=True)

    # -- lifecycle -------------------------------------------------------------------

    def command(self) -> list[str]:
        mode = [] if self.persistent else ["-dev"]
        return [
            str(self.binary),
            "agent",
            *mode,
            f"-config-file={self.agent_config_file}",
            f"-config-dir={self.config_dir}",
        ]

    def start(self, *, timeout: float = 30.0) -> ConsulAgent:
        """Start the agent and wait until it answers HTTP and has a raft leader.

        On the first start only, a port another process grabbed between allocation and
        bind (other test sessions share the machine) means new ports and another try; a
        restart keeps its ports, since clients already point at them.
        """
        if self.running:
            return self
        for attempt in range(3):
            try:
                return self._start_once(timeout=timeout)
            except ConsulHarnessError:
                if self._started_before or attempt == 2:
                    raise
                if "address already in use" not in self.log_tail(60):
                    raise
                self.ports = ConsulPorts.allocate()
        raise AssertionError("unreachable")

    def _start_once(self, *, timeout: float) -> ConsulAgent:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.agent_config_file.write_text(json.dumps(self.agent_config(), indent=2))
        if self.unix_socket_path:
            self.unix_socket_path.unlink(missing_ok=True)
        self._log_handle = self.log_file.open("ab")
        self._process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            # Own session: a Ctrl-C in the terminal must not reach it before we stop it.
            start_new_session=True,
        )
        _running.add(self)
        try:
            self.wait_until_answers(timeout=timeout)
            self.wait_for_leader(timeout=timeout)
        except BaseException:
            self.stop()
            raise
        self._started_before = True
        return self

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, *, timeout: float = 15.0) -> None:
        """SIGTERM by PID, SIGKILL after `timeout`. Keeps base dir and data."""
        process, self._process = self._process, None
        stop_process(process, timeout=timeout)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        _running.discard(self)

    def restart(self, *, keep_data: bool = True, timeout: float = 30.0) -> ConsulAgent:
        """Stop and start again on the same ports.

        With `keep_data=False` the data dir is wiped first (a fresh node). In dev mode
        the raft state is lost either way; only `persistent=True` keeps it.
        """
        self.stop()
        if not keep_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        return self.start(timeout=timeout)

    def cleanup(self) -> None:
        """Stop and remove the base dir if this agent created it."""
        self.stop()
        if self._owns_base_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> ConsulAgent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def reload(self, *, timeout: float = 15.0) -> float:
        """`consul reload` against this agent; returns the seconds it took.

        The CLI returns after the agent applied the config, so no further wait is needed.
        """
        started = time.monotonic()
        self.cli("reload", timeout=timeout)
        return time.monotonic() - started

    def cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a `consul` CLI subcommand aimed at this agent's HTTP API; raise on failure."""
        env = {**os.environ, **self.env()}
        env.pop("CONSUL_HTTP_TOKEN_FILE", None)
        result = subprocess.run(
            [str(self.binary), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise ConsulHarnessError(
                f"consul {' '.join(args)} exited {result.returncode}: "
                f"{(result.stderr or result.stdout).strip()}"
            )
        return result

    def wan_join(self, other: ConsulAgent) -> None:
        """Join `other` over the WAN pool and wait until both see each other's datacenter."""
        self.api("PUT", f"/v1/agent/join/{other.serf_wan_addr}", params={"wan": "1"})
        for agent, dc in ((self, other.datacenter), (other, self.datacenter)):
            wait_until(
                lambda a=agent, d=dc: d in a.api("GET", "/v1/catalog/datacenters"),
                timeout=30,
                what=f"{agent.node_name} to see datacenter {dc}",
            )

    # -- HTTP ------------------------------------------------------------------------

    def api(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        token: str | None = None,
        timeout: float = 10.0,
    ) -> Any:
        """A raw call to this agent's HTTP API (the master token unless `token` is given).

        Deliberately independent of checks.consul, so a client bug cannot hide in the
        harness that tests it. Raises httpx.HTTPStatusError on a non-2xx answer.
        """
        headers = {}
        chosen = token if token is not None else self.master_token
        if chosen:
            headers["X-Consul-Token"] = chosen
        response = httpx.request(
            method,
            self.http_url + path,
            json=json_body,
            params=params,
            headers=headers,
            timeout=timeout,
        )
        response.raise_for_status()
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return response.text

    def create_token(self, rules: str, *, description: str = "pg-ha-checks test") -> str:
        """A token holding a new policy with `rules` (HCL); returns its SecretID."""
        if not self.acl:
            raise ConsulHarnessError("create_token() needs an agent started with acl=True")
        policy = self.api(
            "PUT",
            "/v1/acl/policy",
            json_body={"Name": f"test-{uuid.uuid4().hex[:12]}", "Rules": rules},
        )
        token = self.api(
            "PUT",
            "/v1/acl/token",
            json_body={"Description": description, "Policies": [{"ID": policy["ID"]}]},
        )
        return str(token["SecretID"])

    # -- waits -----------------------------------------------------------------------

    def wait_until_answers(self, *, timeout: float = 30.0) -> None:
        def answers() -> bool:
            if self._process is not None and self._process.poll() is not None:
                raise ConsulHarnessError(
                    f"consul exited {self._process.returncode}; log tail:\n{self.log_tail()}"
                )
            self.api("GET", "/v1/agent/self", timeout=1.0)
            return True

        try:
            wait_until(answers, timeout=timeout, what=f"consul agent {self.http_addr}")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\nlog tail:\n{self.log_tail()}") from None

    def wait_for_leader(self, *, timeout: float = 30.0) -> str:
        """Wait until raft has a leader and the agent has synced its own node."""
        leader = wait_until(
            lambda: self.api("GET", "/v1/status/leader", timeout=1.0),
            timeout=timeout,
            what="a raft leader",
        )
        # The node reaches the catalog a moment after the election; DNS and health
        # queries return nothing for it before that.
        wait_until(
            lambda: self.api("GET", f"/v1/catalog/node/{self.node_name}", timeout=1.0),
            timeout=timeout,
            what=f"node {self.node_name} in the catalog",
        )
        return str(leader)

    def wait_for_check(
        self, check_id: str, status: str, *, timeout: float = 30.0
    ) -> dict[str, Any]:
        """Wait until the agent's local check `check_id` has `status` (passing, warning, ...)."""

        def current() -> dict[str, Any] | None:
            check = self.api("GET", "/v1/agent/checks", timeout=1.0).get(check_id)
            return check if check and check["Status"] == status else None

        return wait_until(current, timeout=timeout, what=f"check {check_id} to be {status}")

    def wait_for_catalog_service(
        self,
        name: str,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        *,
        timeout: float = 10.0,
    ) -> list[dict[str, Any]]:
        """Wait until `/v1/health/service/name` (what DNS answers from) satisfies `predicate`."""

        def current() -> list[dict[str, Any]] | None:
            entries = self.api("GET", f"/v1/health/service/{name}", timeout=1.0)
            return entries if predicate(entries) else None

        return wait_until(current, timeout=timeout, what=f"service {name} in the catalog")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<ConsulAgent {self.node_name}@{self.datacenter} {self.http_addr} {state}>"


def main() -> None:
    """`python -m harness.consul [--acl] [--persistent]`: an agent for the demo, until Ctrl-C."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--acl", action="store_true", help="ACLs with default deny")
    parser.add_argument("--persistent", action="store_true", help="state survives restarts")
    parser.add_argument("--config-dir", type=Path, help="conf.d snippets to load")
    args = parser.parse_args()

    # A shell starts background jobs with SIGINT ignored, and SIGTERM would end Python
    # without unwinding: route both through KeyboardInterrupt so the agent is stopped.
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    agent = ConsulAgent(acl=args.acl, persistent=args.persistent, config_dir=args.config_dir)
    with agent:
        for key, value in agent.env().items():
            print(f"export {key}={value}")
        print(
            f"# DNS on 127.0.0.1:{agent.dns_port}, config dir {agent.config_dir}, pid {agent.pid}"
        )
        print("# Ctrl-C stops it", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
