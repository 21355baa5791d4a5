"""pg-role-reporter under systemd's notify protocol, with real PostgreSQL and Consul.

The test plays systemd's part: it binds a unix datagram socket, hands its path to the
real reporter as NOTIFY_SOCKET with a watchdog (WATCHDOG_USEC) as `Type=notify` and
`WatchdogSec=` do, and reads what arrives. systemd restarts a service whose pings stop
for WATCHDOG_USEC; so what matters is that the pings come from the reporter's main loop:
a stopped process, or a loop stuck on a PostgreSQL that never answers, must stop them.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.postgres import PgCluster
from tests.integration.fixtures_consul import ConsulAgentFactory
from tests.integration.reporter_deployment import (
    LEADER,
    ReporterProcess,
    service_definition,
    wait_for_dns,
)

pytestmark = pytest.mark.integration

WATCHDOG_SECONDS = 3.0
SERVICE_ID = "pg-db-notify"


class SystemdSide:
    """The receiving end of sd_notify: every datagram, as a list of KEY=value fields."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))

    def next(self, timeout: float) -> list[str] | None:
        """The next datagram, or None when none came within `timeout` seconds."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096).decode().split("\n")
        except TimeoutError:
            return None

    def wait_for(self, field: str, *, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.next(left)
            if message is not None and field in message:
                return message
        raise AssertionError(f"no {field} from the reporter within {timeout:g}s")

    def silence(self, *, longer_than: float, within: float) -> None:
        """Wait until no datagram came for `longer_than` seconds (by `within` at most)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.next(longer_than) is None:
                return
        raise AssertionError(f"the reporter kept notifying for {within:g}s")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def systemd_side(tmp_path: Path) -> Iterator[SystemdSide]:
    side = SystemdSide(tmp_path / "notify")
    try:
        yield side
    finally:
        side.close()


def test_reporter_is_ready_pings_from_its_loop_and_a_stuck_loop_stops_pinging(
    make_pg_cluster: Callable[..., PgCluster],
    consul_agent_factory: ConsulAgentFactory,
    systemd_side: SystemdSide,
    tmp_path: Path,
) -> None:
    with make_pg_cluster(replicas=0) as cluster:
        primary = cluster.primary
        agent = consul_agent_factory(start=False)
        agent.write_config(
            SERVICE_ID, service_definition(SERVICE_ID, primary, guard_check=False, agent=agent)
        )
        agent.start()
        env = {
            **agent.env(),
            "NOTIFY_SOCKET": str(systemd_side.path),
            "WATCHDOG_USEC": str(int(WATCHDOG_SECONDS * 1_000_000)),
        }
        # -t 60: a frozen server holds the loop in its query far longer than the watchdog
        reporter = ReporterProcess(
            SERVICE_ID, primary, tmp_path / "reporter.log", consul_env=env, extra_args=("-t", "60")
        )
        try:
            ready = systemd_side.wait_for("READY=1", timeout=30)
            assert any(f.startswith("STATUS=") and SERVICE_ID in f for f in ready), ready
            wait_for_dns(agent, LEADER, {primary.port})

            # Alive: a ping never later than the watchdog timeout, several in a row.
            for _ in range(4):
                ping = systemd_side.next(WATCHDOG_SECONDS)
                assert ping == ["WATCHDOG=1"], f"{ping}; log:\n{reporter.log()}"

            # The whole process stopped (SIGSTOP): no ping, as systemd would notice.
            os.kill(reporter.pid, signal.SIGSTOP)
            try:
                systemd_side.silence(longer_than=WATCHDOG_SECONDS, within=WATCHDOG_SECONDS * 3)
            finally:
                os.kill(reporter.pid, signal.SIGCONT)
            systemd_side.wait_for("WATCHDOG=1", timeout=WATCHDOG_SECONDS * 2)

            # The process runs (its Consul watcher thread too) but the loop is stuck in a
            # query to a SIGSTOPped server: the pings stop all the same.
            primary.freeze(children=True)
            try:
                systemd_side.silence(longer_than=WATCHDOG_SECONDS, within=WATCHDOG_SECONDS * 4)
                assert reporter.alive()
            finally:
                primary.thaw()
            systemd_side.wait_for("WATCHDOG=1", timeout=30)

            reporter.stop()
            assert systemd_side.wait_for("STOPPING=1", timeout=5)
        finally:
            reporter.stop()
