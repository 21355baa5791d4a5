"""Per-invocation cost of check_postgresql beside its floor and the plugins it replaces.

    .venv/bin/python benchmarks/check_postgresql.py [--runs 30]

Starts a throwaway primary and replica (harness/), then runs each command --runs times and
reports the median wall time and mean CPU time (user+system), measured by hyperfine, and
the peak RSS, measured by GNU time (Debian: hyperfine, time). The floor is what any Python
check must pay: start Python, import psycopg, connect, run one query. check_pgsql,
check_postgres and check_pgactivity are measured when installed (Debian:
monitoring-plugins-standard, check-postgres, check-pgactivity).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.pgbin import discover_installations  # noqa: E402
from harness.postgres import PgCluster  # noqa: E402

# connect_timeout as every bounded check sets it (psycopg waits differently without it)
FLOOR = "import psycopg; psycopg.connect('connect_timeout=8').execute('SELECT 1').fetchone()"
TIME = "/usr/bin/time"


def measure(argv: list[str], env: dict[str, str], runs: int) -> tuple[float, float, float, int]:
    """Median wall ms, mean CPU ms, median peak RSS MiB, and the worst exit code.

    Wall and CPU come from hyperfine (1 ms resolution) when it is installed, else from
    GNU time (10 ms). Peak RSS always comes from GNU time: both are small native parents,
    so the RSS is the command's own, not the pages of a Python parent that forked it.
    """
    walls, cpus, rss, codes = [], [], [], []
    with tempfile.NamedTemporaryFile("r") as report:
        for _ in range(runs if not shutil.which("hyperfine") else min(runs, 7)):
            proc = subprocess.run(
                [TIME, "-q", "-f", "%e %U %S %M %x", "-o", report.name, *argv],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )
            report.seek(0)
            wall, user, system, max_kib, code = report.read().split()[-5:]
            walls.append(float(wall) * 1000)
            cpus.append((float(user) + float(system)) * 1000)
            rss.append(int(max_kib) / 1024)
            codes.append(int(code) if proc.returncode == 0 else proc.returncode)
    wall_ms, cpu_ms = statistics.median(walls), statistics.mean(cpus)
    if shutil.which("hyperfine"):
        with tempfile.NamedTemporaryFile("r", suffix=".json") as exported:
            subprocess.run(
                [
                    "hyperfine",
                    "-N",
                    "-i",
                    "-w",
                    "3",
                    "-r",
                    str(runs),
                    "--export-json",
                    exported.name,
                    shlex.join(argv),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=True,
            )
            result = json.load(exported)["results"][0]
        wall_ms = result["median"] * 1000
        cpu_ms = (result["user"] + result["system"]) * 1000
    return wall_ms, cpu_ms, statistics.median(rss), max(codes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    bindir = Path(sys.executable).parent
    # A real install compiles the package to bytecode once; an editable checkout under
    # PYTHONDONTWRITEBYTECODE would recompile it on every run and measure that instead.
    compileall.compile_dir(ROOT / "checks", quiet=1)
    install = discover_installations()[0]
    with PgCluster(install, replicas=1) as cluster:
        cluster.wait_streaming()
        primary, replica = cluster.primary, cluster.replicas[0]
        base = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        on_primary = {**base, **primary.env()}
        on_replica = {**base, **replica.env()}
        host, port = "127.0.0.1", str(primary.port)
        rows: list[tuple[str, list[str], dict[str, str]]] = [
            (
                "floor: python + import psycopg + connect + SELECT 1",
                [sys.executable, "-c", FLOOR],
                on_primary,
            ),
            ("check_postgresql alive", [str(bindir / "check_postgresql"), "alive"], on_primary),
            ("check_postgresql role", [str(bindir / "check_postgresql"), "role"], on_primary),
            (
                "check_postgresql lag (replica)",
                [str(bindir / "check_postgresql"), "lag"],
                on_replica,
            ),
            (
                "check_postgresql standbys",
                [str(bindir / "check_postgresql"), "standbys"],
                on_primary,
            ),
            *(
                (f"check_postgresql {name}", [str(bindir / "check_postgresql"), name], on_primary)
                for name in (
                    "slots",
                    "connections",
                    "archiver",
                    "wraparound",
                    "transactions",
                    "checkpoints",
                )
            ),
        ]
        others = [
            (
                "check_pgsql (monitoring-plugins)",
                "/usr/lib/nagios/plugins/check_pgsql",
                ["-H", host, "-P", port, "-l", "monitor", "-d", "postgres"],
            ),
            (
                "check_postgres --action=connection",
                "check_postgres",
                [
                    "--action=connection",
                    f"--host={host}",
                    f"--port={port}",
                    "--dbuser=monitor",
                    "--dbname=postgres",
                ],
            ),
            (
                "check_pgactivity -s connection",
                "/usr/lib/nagios/plugins/check_pgactivity",
                ["-s", "connection", "-h", host, "-p", port, "-U", "monitor", "-F", "human"],
            ),
        ]
        for label, program, extra in others:
            found = shutil.which(program)
            if found:
                rows.append((label, [found, *extra], on_primary))
        results = [(label, measure(argv, env, args.runs)) for label, argv, env in rows]
    floor_wall, floor_cpu, floor_rss, _ = results[0][1]
    print(f"PostgreSQL {install.major}, {args.runs} runs each, medians\n")
    print("| command | wall ms | CPU ms | peak RSS MiB | wall | CPU | RSS | exit |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, (wall, cpu, rss, code) in results:
        ratios = f"{wall / floor_wall:.2f}x | {cpu / floor_cpu:.2f}x | {rss / floor_rss:.2f}x"
        print(f"| {label} | {wall:.0f} | {cpu:.0f} | {rss:.1f} | {ratios} | {code} |")
    print("\nwall, CPU, RSS: each as a multiple of the floor (first row)")


if __name__ == "__main__":
    main()
