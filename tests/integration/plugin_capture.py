"""Wrappers that stand in for our executables inside Nagios and Icinga, recording exactly
what each run printed, so a test can compare it with what the daemon stored."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

WRAPPER = """#!/bin/sh
# records argv, stdout and the exit code of the real plugin, then replays them
out="{captures}/$$"
printf '%s\\n' "$@" > "$out.args"
{real} "$@" > "$out.stdout" 2> "$out.stderr"
rc=$?
echo "$rc" > "$out.rc"
cat "$out.stdout"
exit "$rc"
"""


@dataclass(frozen=True)
class Captured:
    args: list[str]
    stdout: str
    stderr: str
    code: int

    @property
    def first_line(self) -> str:
        return self.stdout.split("\n", 1)[0]

    @property
    def output(self) -> str:
        return self.first_line.split(" | ", 1)[0]

    @property
    def perfdata(self) -> str:
        return self.first_line.split(" | ", 1)[1] if " | " in self.first_line else ""

    @property
    def long_output(self) -> list[str]:
        return self.stdout.rstrip("\n").split("\n")[1:]


def install_wrappers(plugin_dir: Path, captures: Path) -> None:
    """check_postgresql and mem_check in `plugin_dir`, recording into `captures`."""
    plugin_dir.mkdir(parents=True, exist_ok=True)
    captures.mkdir(parents=True, exist_ok=True)
    bindir = Path(sys.executable).parent
    for name in ("check_postgresql", "mem_check"):
        wrapper = plugin_dir / name
        wrapper.write_text(
            WRAPPER.format(
                captures=shlex.quote(str(captures)), real=shlex.quote(str(bindir / name))
            )
        )
        wrapper.chmod(0o755)


def read_captures(captures: Path) -> list[Captured]:
    runs = []
    for rc in sorted(captures.glob("*.rc"), key=lambda p: p.stat().st_mtime_ns):
        stem = rc.with_suffix("")
        runs.append(
            Captured(
                args=stem.with_suffix(".args").read_text().splitlines(),
                stdout=stem.with_suffix(".stdout").read_text(),
                stderr=stem.with_suffix(".stderr").read_text(),
                code=int(rc.read_text()),
            )
        )
    return runs


def last_capture(captures: Path, *args: str) -> Captured:
    """The latest run whose argv contains `args` in order (e.g. the subcommand and a flag)."""
    matching = [c for c in read_captures(captures) if _contains(c.args, list(args))]
    assert matching, f"no captured run with {args} in {captures}"
    return matching[-1]


def _contains(argv: list[str], wanted: list[str]) -> bool:
    return all(a in argv for a in wanted)
