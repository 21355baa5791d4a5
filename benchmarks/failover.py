"""Failover time as a DNS client sees it, and the reporter's idle cost.

    .venv/bin/python benchmarks/failover.py [--failovers 5] [--idle-seconds 60]

Starts a primary and two replicas (harness/), one Consul dev agent with services
pg-db-1..N named pg-db (role-neutral tags, conf.d), and one pg-role-reporter per instance
with its default --interval of 1 s. Each round stops the primary, waits until DNS has no
leader, then times `pg_promote()` on a replica until `leader.pg-db.service.consul` SRV
answers with that replica's port; the other replica is repointed and a fresh replica is
cloned from the new primary, so every round starts from one primary and two replicas.
Targets (issue 4): median <= 2 s; idle reporter <= 0.2 % of a core and <= 40 MiB RSS.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.consul import ConsulAgent, wait_until  # noqa: E402
from harness.pgbin import discover_installations, usable_installation  # noqa: E402
from harness.postgres import PgCluster, PgServer  # noqa: E402
from tests.integration.reporter_deployment import (  # noqa: E402
    LEADER,
    ReporterProcess,
    service_definition,
    srv_ports,
)

DNS_POLL_SECONDS = 0.01


class Bench:
    def __init__(self, agent: ConsulAgent, cluster: PgCluster, log_dir: Path) -> None:
        self.agent = agent
        self.cluster = cluster
        self.log_dir = log_dir
        self.reporters: dict[str, ReporterProcess] = {}
        self.ids: dict[str, str] = {}  # server name -> service id
        self.count = 0

    def add(self, server: PgServer) -> None:
        self.count += 1
        service_id = f"pg-db-{self.count}"
        self.ids[server.name] = service_id
        self.agent.write_config(
            service_id,
            service_definition(service_id, server, guard_check=False, agent=self.agent),
        )
        self.agent.reload()
        self.reporters[service_id] = ReporterProcess(
            service_id,
            server,
            self.log_dir / f"{service_id}.log",
            consul_env=self.agent.env(),
            extra_args=("--interval", "1"),
        )

    def remove(self, server: PgServer) -> None:
        service_id = self.ids.pop(server.name)
        self.reporters.pop(service_id).stop()
        self.agent.remove_config(service_id)
        self.agent.reload()

    def steady(self) -> None:
        primary_port = self.cluster.primary.port
        wait_until(
            lambda: (
                srv_ports(self.agent, LEADER) == {primary_port}
                and srv_ports(self.agent, "follower.pg-db.service.consul")
                == {r.port for r in self.cluster.replicas}
            ),
            timeout=30,
            what="leader and followers in DNS",
        )

    def failover(self, round_number: int) -> float:
        old, new = self.cluster.primary, self.cluster.replicas[0]
        old.stop()
        wait_until(lambda: not srv_ports(self.agent, LEADER), timeout=30, what="no leader")
        started = time.monotonic()
        new.execute("SELECT pg_promote(wait => false)")
        while srv_ports(self.agent, LEADER) != {new.port}:
            if time.monotonic() - started > 30:
                raise TimeoutError("leader did not move within 30 s")
            time.sleep(DNS_POLL_SECONDS)
        elapsed = time.monotonic() - started
        new.wait_until(lambda: not new.is_in_recovery(), "the end of recovery", 30)
        self.cluster.primary = new
        self.cluster.replicas = [r for r in self.cluster.replicas if r is not new]
        for other in self.cluster.replicas:
            other.repoint(new)
        self.remove(old)
        self.add(self.cluster.add_replica(f"round{round_number}"))
        self.steady()
        return elapsed

    def stop(self) -> None:
        for reporter in self.reporters.values():
            reporter.stop()


def idle_cost(reporters: dict[str, ReporterProcess], seconds: float) -> list[str]:
    processes = {sid: psutil.Process(r.pid) for sid, r in reporters.items()}
    before = {sid: p.cpu_times() for sid, p in processes.items()}
    started = time.monotonic()
    time.sleep(seconds)  # the measurement window itself
    wall = time.monotonic() - started
    lines = []
    for sid, process in processes.items():
        after = process.cpu_times()
        cpu = (after.user + after.system) - (before[sid].user + before[sid].system)
        rss = process.memory_info().rss / 2**20
        lines.append(f"  {sid}: CPU {100 * cpu / wall:.3f} % of a core, RSS {rss:.1f} MiB")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--failovers", type=int, default=5)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    args = parser.parse_args()

    install = usable_installation(discover_installations()[0])
    print(f"PostgreSQL {install.major}, Consul dev agent, reporters with --interval 1")
    log_dir = Path(tempfile.mkdtemp(prefix="failover-bench-"))
    with PgCluster(install, replicas=2) as cluster, ConsulAgent(log_level="warn") as agent:
        bench = Bench(agent, cluster, log_dir)
        try:
            for server in [cluster.primary, *cluster.replicas]:
                bench.add(server)
            bench.steady()
            timings = []
            for number in range(1, args.failovers + 1):
                elapsed = bench.failover(number)
                timings.append(elapsed)
                print(f"failover {number}: pg_promote() -> leader in DNS {elapsed:.3f} s")
            print(
                f"median {statistics.median(timings):.3f} s, max {max(timings):.3f} s "
                f"over {len(timings)} failovers (target median <= 2 s)"
            )
            print(f"idle cost over {args.idle_seconds:g} s (targets <= 0.2 %, <= 40 MiB):")
            for line in idle_cost(bench.reporters, args.idle_seconds):
                print(line)
        finally:
            bench.stop()
    if os.environ.get("KEEP_LOGS"):
        print(f"reporter logs in {log_dir}")


if __name__ == "__main__":
    main()
