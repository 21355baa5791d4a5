"""Instructions each check_postgresql command executes, counted by valgrind (callgrind).

    .venv/bin/python benchmarks/check_postgresql_instructions.py [--against DIR] [COMMAND...]

Wall and CPU times (benchmarks/check_postgresql.py) swing by 10-20 % on a shared, loaded
host, more than the 5 % a change may cost; the count of instructions the check process
executes does not depend on the load. --against DIR runs the same commands with another
checkout's ``checks`` package first on PYTHONPATH (e.g. ``git archive main | tar -x -C
DIR``) and prints the ratio. Starts a throwaway primary and replica (harness/). Counts the
client only: the server's side of a query is not in it. Debian: valgrind.
"""

from __future__ import annotations

import argparse
import compileall
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.pgbin import discover_installations, usable_installation  # noqa: E402
from harness.postgres import PgCluster  # noqa: E402

COMMANDS = (
    "alive",
    "role",
    "lag",
    "standbys",
    "slots",
    "connections",
    "archiver",
    "wraparound",
    "transactions",
    "checkpoints",
)


def instructions(command: str, env: dict[str, str]) -> int:
    # a generous -t: valgrind runs the check some 50 times slower
    proc = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            str(Path(sys.executable).parent / "check_postgresql"),
            command,
            "-t",
            "600",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Collected : (\d+)", proc.stderr)
    if not match:
        raise SystemExit(f"valgrind said: {proc.stderr[-500:]}")
    return int(match[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", type=Path, help="another checkout to compare with")
    parser.add_argument("commands", nargs="*", default=COMMANDS)
    args = parser.parse_args()
    # bytecode compiled once, as an install does: PYTHONDONTWRITEBYTECODE would otherwise
    # count the compiler on every run of a changed module
    for tree in (ROOT, args.against):
        if tree:
            compileall.compile_dir(tree / "checks", quiet=1)
    install = usable_installation(discover_installations()[0])
    with PgCluster(install, replicas=1) as cluster:
        cluster.wait_streaming()
        base = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        base["PYTHONHASHSEED"] = "0"  # the same dict and set layouts every run
        base.pop("PYTHONPATH", None)
        print(f"PostgreSQL {install.major}, instructions (callgrind Ir) per run\n")
        print("| command | this checkout | against | ratio |")
        print("|---|---:|---:|---:|")
        for command in args.commands:
            server = cluster.replicas[0] if command == "lag" else cluster.primary
            env = {**base, **server.env()}
            mine = instructions(command, env)
            if args.against:
                theirs = instructions(command, {**env, "PYTHONPATH": str(args.against)})
                print(f"| {command} | {mine:,} | {theirs:,} | {mine / theirs:.3f} |", flush=True)
            else:
                print(f"| {command} | {mine:,} | | |", flush=True)


if __name__ == "__main__":
    main()
