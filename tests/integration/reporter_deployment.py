"""A pg-db deployment for the role reporter tests: PostgreSQL, one Consul agent, reporters.

Shape: one dev agent stands for every database host (several dev agents cannot join one
cluster), so each instance is its own conf.d service `pg-db-N` named `pg-db` with
role-neutral tags and its own port, and each has its own `pg-role-reporter` process, as
each host would. SRV answers therefore tell the instances apart by port.
Every process started here is stopped by its PID.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from harness.consul import ConsulAgent, wait_until
from harness.postgres import PgServer

SERVICE = "pg-db"
NEUTRAL_TAGS = ["postgresql"]


def service_definition(
    service_id: str, server: PgServer, *, guard_check: bool, agent: ConsulAgent
) -> dict[str, Any]:
    service: dict[str, Any] = {
        "id": service_id,
        "name": SERVICE,
        "port": server.port,
        "tags": NEUTRAL_TAGS,
        "meta": {"site": "test"},
    }
    if guard_check:
        # The stale-tag guard as the shipped snippets attach it: CRITICAL drops the
        # instance from DNS whatever the reporter does.
        service["checks"] = [
            {
                "id": f"{service_id}-consul-role",
                "name": "role tag matches PostgreSQL",
                "args": [
                    sys.executable,
                    "-m",
                    "checks.check_postgresql",
                    "consul-role",
                    "--service-id",
                    service_id,
                    "--consul-addr",
                    agent.http_addr,
                    "-t",
                    "5",
                    "-d",
                    server.dsn(),
                ],
                "interval": f"{GUARD_INTERVAL_SECONDS:g}s",
                "timeout": "8s",
            }
        ]
    return {"service": service}


# How often Consul runs the guard above. Its verdict stands until its next run: one taken
# while a just-promoted primary was still fenced by the old lock holder keeps that primary
# out of DNS for up to this long after it is tagged (a script check's stale verdict; the
# resident profile re-runs its checks on every role change instead).
GUARD_INTERVAL_SECONDS = 2.0


class ReporterProcess:
    """One `pg-role-reporter` subprocess; its stderr goes to a file the test can read."""

    def __init__(
        self,
        service_id: str,
        server: PgServer,
        log_path: Path,
        *,
        consul_env: Mapping[str, str],
        extra_args: tuple[str, ...] = (),
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.service_id = service_id
        self.server = server
        self.log_path = log_path
        env = {
            key: value for key, value in os.environ.items() if not key.startswith(("PG", "CONSUL_"))
        }
        env.update(server.env())
        env.update(consul_env)
        env.update(extra_env or {})
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "checks.reporter",
                "--service-id",
                service_id,
                "--interval",
                "0.5",
                *extra_args,
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, *, timeout: float = 15.0) -> str:
        return wait_until(
            lambda: text in self.log() and self.log(),
            timeout=timeout,
            what=f"reporter {self.service_id} to log {text!r}; log so far:\n{self.log()}",
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


def leaders_http(agent: ConsulAgent, *, tag: str = "leader", token: str | None = None) -> set[str]:
    """Service IDs a client gets from `/v1/health/service/pg-db?tag=...&passing`."""
    entries = agent.api(
        "GET",
        f"/v1/health/service/{SERVICE}",
        params={"tag": tag, "passing": "1"},
        token=token,
        timeout=2,
    )
    return {entry["Service"]["ID"] for entry in entries}


def srv_ports(agent: ConsulAgent, name: str) -> set[int]:
    """Ports in the SRV answer for `name` from the agent's DNS (empty on NXDOMAIN)."""
    return set(agent.srv_ports(name))


LEADER = f"leader.{SERVICE}.service.consul"
FOLLOWER = f"follower.{SERVICE}.service.consul"


def wait_for_dns(agent: ConsulAgent, name: str, ports: set[int], *, timeout: float = 15.0) -> float:
    """Wait until DNS answers `name` with exactly `ports`; returns the seconds it took."""
    started = time.monotonic()
    last: list[set[int]] = [set()]

    def matches() -> bool:
        last[0] = srv_ports(agent, name)
        return last[0] == ports

    try:
        wait_until(matches, timeout=timeout, what=f"{name} -> {sorted(ports)}")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; last answer {sorted(last[0])}") from None
    return time.monotonic() - started


def never_during(
    condition: Callable[[], bool], until: Callable[[], bool], *, timeout: float, what: str
) -> None:
    """Assert `condition` stays false on every poll until `until` holds (or the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        assert not condition(), what
        if until() or time.monotonic() >= deadline:
            return
        time.sleep(0.05)


def agent_service(agent: ConsulAgent, service_id: str) -> dict[str, Any]:
    try:
        return agent.api("GET", f"/v1/agent/service/{service_id}", timeout=2)
    except httpx.HTTPError:
        return {}
