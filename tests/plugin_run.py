"""Run a check executable the way Consul or Nagios does, and read its output as they do."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_STATUS_LINE = re.compile(r"^(?P<name>[A-Z0-9_]+) (?P<status>OK|WARNING|CRITICAL|UNKNOWN) - ")
_PERFDATA_ITEM = re.compile(r"^(?P<label>[A-Za-z0-9_]+)=(?P<value>-?[\d.]+)(?P<uom>[a-zA-Z%]*)")


@dataclass(frozen=True)
class PerfItem:
    value: float
    uom: str
    warn: str
    crit: str
    min: str
    max: str


@dataclass(frozen=True)
class PluginRun:
    code: int
    stdout: str
    stderr: str
    elapsed: float

    @property
    def first_line(self) -> str:
        return self.stdout.split("\n", 1)[0]

    @property
    def status(self) -> str:
        match = _STATUS_LINE.match(self.first_line)
        assert match, f"not a plugin status line: {self.stdout!r} (stderr {self.stderr!r})"
        return match["status"]

    @property
    def summary(self) -> str:
        return self.first_line.split(" - ", 1)[1].split(" | ", 1)[0]

    @property
    def long_output(self) -> list[str]:
        return self.stdout.rstrip("\n").split("\n")[1:]

    @property
    def perfdata(self) -> dict[str, PerfItem]:
        if " | " not in self.first_line:
            return {}
        items = {}
        for item in self.first_line.split(" | ", 1)[1].split():
            head, *rest = item.split(";")
            match = _PERFDATA_ITEM.match(head)
            assert match, f"bad perfdata item {item!r}"
            rest += [""] * (4 - len(rest))
            items[match["label"]] = PerfItem(float(match["value"]), match["uom"], *rest[:4])
        return items

    def assert_contract(self) -> None:
        """What every run must honour, whatever its state."""
        assert self.code == {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}[self.status]
        assert self.stderr == "", self.stderr
        assert "Traceback" not in self.stdout
        assert len(self.stdout.encode()) < 4096
        # Nagios rewrites ';' in the first line of output (nagioscore#652)
        assert ";" not in self.summary, self.first_line


def executable(name: str, module: str) -> list[str]:
    """The installed console script next to this Python, else ``python -m``."""
    script = Path(sys.executable).parent / name
    return [str(script)] if script.exists() else [sys.executable, "-m", module]


def run_plugin(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> PluginRun:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    full_env.update(env or {})
    started = time.monotonic()
    proc = subprocess.run(
        list(command),
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return PluginRun(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def check_postgresql(*args: str, env: Mapping[str, str] | None = None, timeout: float = 60):
    run = run_plugin(
        [*executable("check_postgresql", "checks.check_postgresql"), *args],
        env=env,
        timeout=timeout,
    )
    run.assert_contract()
    return run
