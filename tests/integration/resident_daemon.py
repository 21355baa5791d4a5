"""A pg-role-reporter serving its HTTP endpoints (``--listen``), for the resident tests.

Each instance is a service of its own name (``pg-http``) registered on the session's Consul
agent through the API, so these tests share the agent with others without touching its
config dir; the leader lock is ``service/pg-http/leader``. Every process started here is
stopped by its PID, and every service registered is deregistered.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import httpx

from harness.consul import ConsulAgent
from harness.ports import free_port
from harness.postgres import PgServer
from harness.waiting import wait_until
from tests.integration.reporter_deployment import ReporterProcess

SERVICE = "pg-http"
# the daemon's -t: every request that asks PostgreSQL ends within it
DAEMON_TIMEOUT = 3.0


class ResidentDaemon:
    """One reporter with ``--listen 127.0.0.1:PORT`` for ``server``, as service ``service_id``."""

    def __init__(
        self,
        agent: ConsulAgent,
        service_id: str,
        server: PgServer,
        log_dir: Path,
        *,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.agent = agent
        self.service_id = service_id
        self.server = server
        agent.api(
            "PUT",
            "/v1/agent/service/register",
            json_body={"ID": service_id, "Name": SERVICE, "Port": server.port, "Tags": ["pg"]},
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = ReporterProcess(
            service_id,
            server,
            log_dir / f"{service_id}.log",
            consul_env=agent.env(),
            extra_args=(
                "--listen",
                f"127.0.0.1:{self.port}",
                "-t",
                f"{DAEMON_TIMEOUT:g}",
                *extra_args,
            ),
        )
        self.client = httpx.Client(base_url=self.url, timeout=DAEMON_TIMEOUT + 10)

    def request(self, path: str, method: str = "GET") -> httpx.Response:
        return self.client.request(method, path)

    def status(self, path: str, method: str = "GET") -> int:
        return self.request(path, method).status_code

    def wait_status(self, path: str, status: int, *, timeout: float = 20.0) -> httpx.Response:
        last: list[httpx.Response] = []

        def answered() -> bool:
            last[:] = [self.request(path)]
            return last[0].status_code == status

        wait_until(
            answered,
            timeout=timeout,
            what=f"{self.service_id} {path} -> {status}",
            describe=lambda: (
                (f"last answer: {last[0].status_code} {last[0].text}" if last else "no answer")
                + f"\nlog:\n{self.process.log()[-3000:]}"
            ),
        )
        return last[0]

    def stop(self) -> None:
        self.client.close()
        self.process.stop()
        # the agent may be going too
        with contextlib.suppress(httpx.HTTPError):
            self.agent.api("PUT", f"/v1/agent/service/deregister/{self.service_id}")
