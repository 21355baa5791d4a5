"""What monitoring costs an instance: the shipped script checks against resident mode.

    .venv/bin/python benchmarks/resident.py [--duration 300] [--requests 2000]

(KEEP_LOGS=1 keeps the daemons' and agents' logs and prints where.)

One PostgreSQL primary and two streaming replicas on this host (harness/), and two real
Consul agents watching the same three instances in the same window:

- script profile: contrib/consul-conf.d/agent.json, pg-db.json per instance and
  mem-check.json, at their shipped intervals (harness/snippets.py rewrites only paths,
  -H/-p/-U/-d and ids), and one pg-role-reporter per instance as the shipped unit starts
  it (--service-id only);
- resident profile: contrib/consul-conf.d/resident/pg-db.json per instance and
  mem-check.json, and one pg-role-reporter per instance with the arguments of the shipped
  drop-in contrib/systemd/pg-role-reporter-resident.conf (its --listen port, service and
  check ids rewritten per instance by harness/snippets.py; one host, so only the first
  pushes pg-host-memory, as one mem_check runs per host in the script profile).

Over `--duration` seconds it measures CPU (user + system) as % of one core, per instance:
the script profile's check processes (the agent's reaped children, from its
/proc/PID/stat cutime/cstime) plus its reporters, against the resident daemons plus any
children of their agent (none: Consul's own http check is a GET from the agent). The
agents' own CPU is shown beside it, not counted. Then, with the script profile stopped
(a resident host runs no script checks), on a warm keep-alive connection,
`--requests` GETs each of `/primary` on the primary's daemon and `/check/alive` (p50,
p99), the daemon's CPU per run of each check the drop-in pushes (where the schedule's
cost goes), and the daemons' RSS (largest seen during the window).

Targets (issue 11): resident <= 0.3 % of a core per instance all-in and >= 20x below the
script profile; p50 <= 2 ms, p99 <= 10 ms; daemon RSS <= 50 MiB.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import snippets  # noqa: E402
from harness.consul import ConsulAgent  # noqa: E402
from harness.pgbin import discover_installations, usable_installation  # noqa: E402
from harness.ports import free_port  # noqa: E402
from harness.postgres import PgCluster, PgServer  # noqa: E402
from harness.processes import stop_process  # noqa: E402
from harness.waiting import wait_until  # noqa: E402

RESIDENT_DIR = "resident"
LEADER = "leader.pg-db.service.consul"
FOLLOWER = "follower.pg-db.service.consul"
RSS_SAMPLE_SECONDS = 5.0
# The drop-in's --push checks (contrib/systemd/pg-role-reporter-resident.conf) as the
# primary's daemon serves them: where the push schedule's CPU goes, one check at a time.
PUSHED_CHECKS = (
    "/check/alive?timeout=4",
    "/check/consul-role?service-id=pg-db-1&timeout=4",
    "/check/lag?consul-service=pg-db&role-mismatch=ok&timeout=4",
    "/check/mem?timeout=8",
)
CHECK_RUNS = 100
TARGET_RESIDENT_PERCENT = 0.3
TARGET_RATIO = 20.0


class DaemonExited(RuntimeError):
    """A daemon of a profile stopped before the measurement: its options are wrong."""


@dataclass
class Profile:
    """One agent with its snippets and one daemon per instance."""

    name: str
    agent: ConsulAgent
    daemons: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    listen_ports: dict[str, int] = field(default_factory=dict)

    def start_daemon(
        self, service_id: str, server: PgServer, args: Sequence[str], log_dir: Path
    ) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "CONSUL_"))}
        env.update(server.env())
        env.update(self.agent.env())
        with (log_dir / f"{self.name}-{service_id}.log").open("ab") as log:
            self.daemons[service_id] = subprocess.Popen(
                [str(snippets.VENV_BIN / "pg-role-reporter"), *args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def steady(self, cluster: PgCluster, log_dir: Path) -> None:
        primary = [cluster.primary.port]
        replicas = sorted(r.port for r in cluster.replicas)

        def in_dns() -> bool:
            for service_id, process in self.daemons.items():
                if process.poll() is not None:
                    log = (log_dir / f"{self.name}-{service_id}.log").read_text()
                    raise DaemonExited(f"{self.name} {service_id} exited:\n{log[-2000:]}")
            return (
                self.agent.srv_ports(LEADER) == primary
                and sorted(self.agent.srv_ports(FOLLOWER)) == replicas
            )

        wait_until(
            in_dns,
            timeout=120,
            interval=0.5,
            fatal=(DaemonExited,),
            what=f"{self.name}: one leader and both followers in DNS",
        )

    def stop(self) -> None:
        for process in self.daemons.values():
            stop_process(process, timeout=15)
        self.agent.cleanup()


def cpu_seconds(process: psutil.Process, *, children: bool = False) -> float:
    times = process.cpu_times()
    if children:
        # Reaped children only: a check still running at either end of the window is
        # missed or half-counted, a few hundred ms over minutes.
        return times.children_user + times.children_system
    return times.user + times.system


@dataclass
class CpuWindow:
    """CPU seconds of processes between start() and stop()."""

    processes: Mapping[str, tuple[psutil.Process, bool]]
    before: dict[str, float] = field(default_factory=dict)
    spent: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        self.before = {k: cpu_seconds(p, children=c) for k, (p, c) in self.processes.items()}

    def stop(self) -> None:
        self.spent = {
            k: cpu_seconds(p, children=c) - self.before[k] for k, (p, c) in self.processes.items()
        }


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def latencies(port: int, path: str, count: int) -> tuple[list[float], int]:
    """Seconds per GET on one kept connection, and how many times it had to reconnect."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    times: list[float] = []
    reconnects = 0
    sock = None
    try:
        for _ in range(count):
            started = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            times.append(time.perf_counter() - started)
            if conn.sock is not sock:
                reconnects += sock is not None
                sock = conn.sock
    finally:
        conn.close()
    return times, reconnects


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=300.0, help="CPU window, seconds")
    parser.add_argument("--requests", type=int, default=2000, help="per latency endpoint")
    args = parser.parse_args()

    install = usable_installation(discover_installations()[0])
    log_dir = Path(tempfile.mkdtemp(prefix="resident-bench-"))
    cluster = PgCluster(install, replicas=2)
    servers = {f"pg-db-{n}": s for n, s in enumerate([cluster.primary, *cluster.replicas], 1)}
    # Script checks inherit their agent's environment: the monitor role's passfile, and
    # that agent's own address for the stale-tag guard (consul-role).
    os.environ["PGPASSFILE"] = str(cluster.passfile)
    script = Profile("script", ConsulAgent(log_level="warn", base_dir=log_dir / "consul-script"))
    resident = Profile(
        "resident", ConsulAgent(log_level="warn", base_dir=log_dir / "consul-resident")
    )
    profiles = (script, resident)
    try:
        script.agent.write_config("agent.json", snippets.load("agent.json"))
        script.agent.write_config("mem-check.json", snippets.host_snippet())
        for n, (service_id, server) in enumerate(servers.items(), 1):
            script.agent.write_config(
                service_id,
                snippets.for_instance(
                    snippets.load("pg-db.json"),
                    snippets.Instance.from_env(server.env()),
                    suffix=str(n),
                ),
            )
        os.environ["CONSUL_HTTP_ADDR"] = script.agent.http_addr
        script.agent.start()

        resident.agent.write_config(
            "mem-check.json", snippets.load(f"{RESIDENT_DIR}/mem-check.json")
        )
        for n, (service_id, server) in enumerate(servers.items(), 1):
            resident.listen_ports[service_id] = free_port()
            resident.agent.write_config(
                service_id,
                snippets.for_instance(
                    snippets.load(f"{RESIDENT_DIR}/pg-db.json"),
                    snippets.Instance.from_env(server.env()),
                    suffix=str(n),
                    listen_port=resident.listen_ports[service_id],
                ),
            )
        os.environ["CONSUL_HTTP_ADDR"] = resident.agent.http_addr
        resident.agent.start()

        for n, (service_id, server) in enumerate(servers.items(), 1):
            script.start_daemon(service_id, server, ["--service-id", service_id], log_dir)
            resident.start_daemon(
                service_id,
                server,
                snippets.resident_daemon_args(
                    str(n),
                    listen=f"127.0.0.1:{resident.listen_ports[service_id]}",
                    memory=n == 1,
                ),
                log_dir,
            )
        for profile in profiles:
            profile.steady(cluster, log_dir)
        print(
            f"PostgreSQL {install.major}, Consul {'.'.join(map(str, script.agent.version))}, "
            f"{len(servers)} instances on {psutil.cpu_count()} cores",
            flush=True,
        )

        tracked: dict[str, tuple[psutil.Process, bool]] = {}
        for profile in profiles:
            assert profile.agent.pid is not None
            agent = psutil.Process(profile.agent.pid)
            tracked[f"{profile.name}/checks"] = (agent, True)
            tracked[f"{profile.name}/agent"] = (agent, False)
            for service_id, process in profile.daemons.items():
                tracked[f"{profile.name}/{service_id}"] = (psutil.Process(process.pid), False)
        window = CpuWindow(tracked)
        peak_rss: dict[str, int] = dict.fromkeys(resident.daemons, 0)
        window.start()
        started = time.monotonic()
        while (left := args.duration - (time.monotonic() - started)) > 0:
            time.sleep(min(RSS_SAMPLE_SECONDS, left))  # the measurement window itself
            for service_id, process in resident.daemons.items():
                rss = psutil.Process(process.pid).memory_info().rss
                peak_rss[service_id] = max(peak_rss[service_id], rss)
        window.stop()
        wall = time.monotonic() - started

        def percent(seconds: float) -> float:
            return 100 * seconds / wall / len(servers)

        print(f"CPU over {wall:.0f} s, % of one core per instance:")
        totals = {}
        for profile in profiles:
            checks = window.spent[f"{profile.name}/checks"]
            daemons = sum(window.spent[f"{profile.name}/{s}"] for s in profile.daemons)
            totals[profile.name] = checks + daemons
            print(
                f"  {profile.name:8}: {percent(checks + daemons):7.3f} %  "
                f"(check processes {percent(checks):.3f} %, daemons {percent(daemons):.3f} %; "
                f"the agent itself {percent(window.spent[f'{profile.name}/agent']):.3f} %, "
                "not counted)"
            )
        ratio = totals["script"] / totals["resident"] if totals["resident"] else float("inf")
        print(
            f"  resident target <= {TARGET_RESIDENT_PERCENT} %: "
            f"{'met' if percent(totals['resident']) <= TARGET_RESIDENT_PERCENT else 'MISSED'}; "
            f"script / resident = {ratio:.1f}x (target >= {TARGET_RATIO:g}x: "
            f"{'met' if ratio >= TARGET_RATIO else 'MISSED'})"
        )

        # The host of an operator who picked resident mode runs no script checks: stop
        # them, so the latency is the daemon's and not a share of a busy CPU.
        script.stop()
        primary_port = resident.listen_ports["pg-db-1"]
        print(
            f"latency on a warm connection, {args.requests} GETs each (p50 <= 2 ms, p99 <= 10 ms):"
        )
        primary_daemon = psutil.Process(resident.daemons["pg-db-1"].pid)
        for path in ("/primary", "/check/alive"):
            before = cpu_seconds(primary_daemon)
            times, reconnects = latencies(primary_port, path, args.requests)
            cpu_ms = (cpu_seconds(primary_daemon) - before) / len(times) * 1000
            p50, p99 = percentile(times, 0.5) * 1000, percentile(times, 0.99) * 1000
            print(
                f"  {path:13}: p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
                f"mean {statistics.fmean(times) * 1000:.2f} ms, max {max(times) * 1000:.2f} ms"
                f"{f', {reconnects} reconnects' if reconnects else ''}; "
                f"daemon CPU {cpu_ms:.2f} ms a request"
            )
        print(f"daemon CPU per run of each pushed check, as /check/... ({CHECK_RUNS} runs each):")
        for path in PUSHED_CHECKS:
            before = cpu_seconds(primary_daemon)
            times, _ = latencies(primary_port, path, CHECK_RUNS)
            cpu_ms = (cpu_seconds(primary_daemon) - before) / len(times) * 1000
            print(f"  {path}: {cpu_ms:.2f} ms")
        print("resident daemons' RSS (largest seen in the window; target <= 50 MiB):")
        for service_id, process in resident.daemons.items():
            now = psutil.Process(process.pid).memory_info().rss
            print(
                f"  {service_id}: {peak_rss[service_id] / 2**20:.1f} MiB "
                f"(now {now / 2**20:.1f} MiB)"
            )
    finally:
        for profile in profiles:
            profile.stop()
        cluster.close()
        if os.environ.get("KEEP_LOGS"):
            print(f"daemon and agent logs in {log_dir}")
        else:
            shutil.rmtree(log_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
