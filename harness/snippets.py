"""The shipped Consul conf.d snippets, rewritten for one PostgreSQL instance of a test or demo.

The files in contrib/consul-conf.d/ are written for production: one PostgreSQL per host,
executables under /usr/local/bin, `-H/-p/-U/-d` pinned to the local server, service id
`pg-db`. Here several instances share one Consul agent on 127.0.0.1, so each copy gets:

- the executables of this venv (same basename, `sys.executable`'s directory);
- the instance's `-H/-p/-U/-d` and service id (`--service-id`) in place of the file's (the
  option *values* change, never the options, so what runs is what ships);
- a service id and check ids of its own (`pg-db` -> `pg-db-2`, `pg-db-alive` ->
  `pg-db-2-alive`) and the instance's port;
- optionally shorter intervals, so a test sees a state change in a second, not in ten.

Why args and not the agent's environment for connection settings: Consul 1.8.7 script
checks inherit the agent's environment, and one environment cannot name three servers.
The password is the only secret and stays out of argv: it comes from the passfile that
`PGPASSFILE` in the agent's environment names (production: the consul user's ~/.pgpass).
"""

from __future__ import annotations

import copy
import functools
import json
import shlex
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
SNIPPETS_DIR = REPO_ROOT / "contrib" / "consul-conf.d"
VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Instance:
    """Where one PostgreSQL instance listens, and the role the checks log in as."""

    host: str
    port: int
    user: str
    dbname: str = "postgres"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Instance:
        """From a libpq environment such as `harness.postgres.PgServer.env()`."""
        return cls(
            host=env["PGHOST"],
            port=int(env["PGPORT"]),
            user=env["PGUSER"],
            dbname=env.get("PGDATABASE", "postgres"),
        )


def load(name: str) -> dict[str, Any]:
    """A shipped snippet as JSON (`name` relative to contrib/consul-conf.d)."""
    snippet: dict[str, Any] = json.loads((SNIPPETS_DIR / name).read_text())
    return snippet


@functools.cache
def subcommand_help(executable: str, subcommand: str) -> str | None:
    """`--help` of a check_postgresql subcommand, or None when it does not exist (yet).

    An unknown word after check_postgresql is not an error for `--help`: the bare command
    runs `alive` and shows alive's help, so the usage line must name the subcommand.
    """
    done = subprocess.run(
        [executable, subcommand, "--help"], capture_output=True, text=True, timeout=30
    )
    named = done.stdout.startswith(f"Usage: {Path(executable).name} {subcommand} ")
    return done.stdout if done.returncode == 0 and named else None


def _rewrite_args(args: list[str], instance: Instance, service_id: str) -> list[str]:
    executable = str(VENV_BIN / Path(args[0]).name)
    values = {
        "-H": instance.host,
        "-p": str(instance.port),
        "-U": instance.user,
        "-d": instance.dbname,
        "--service-id": service_id,
    }
    rewritten = [executable]
    rest = iter(args[1:])
    for arg in rest:
        rewritten.append(arg)
        if arg in values:
            next(rest)
            rewritten.append(values[arg])
    return rewritten


def _renamed(identifier: str, old_prefix: str, new_prefix: str) -> str:
    if identifier == old_prefix or identifier.startswith(old_prefix + "-"):
        return new_prefix + identifier[len(old_prefix) :]
    return f"{new_prefix}-{identifier}"


def services_of(snippet: Mapping[str, Any]) -> list[dict[str, Any]]:
    if "service" in snippet:
        return [snippet["service"]]
    return list(snippet.get("services", []))


def for_instance(
    snippet: Mapping[str, Any],
    instance: Instance,
    *,
    suffix: str,
    interval: str | None = None,
    skipped: list[str] | None = None,
    listen_port: int | None = None,
) -> dict[str, Any]:
    """A copy of `snippet` (one `service` or several `services`) for `instance`.

    Every service id `X` becomes `X-<suffix>`, its check ids likewise, its port the
    instance's. A check whose check_postgresql subcommand this venv lacks (an install
    older than the snippets) is left out and its id appended to `skipped`: a missing
    subcommand exits 3, which Consul reads as critical, evicting every instance.
    Resident snippets: TTL checks keep their TTL; an `http` check (the daemon's liveness)
    gets `listen_port`, the port of that instance's daemon, and keeps its shipped interval
    and timeout, which the fail-closed tests measure.
    """
    services = copy.deepcopy(services_of(snippet))
    for service in services:
        old_id = service.get("id", service["name"])
        new_id = f"{old_id}-{suffix}"
        service["id"] = new_id
        service["port"] = instance.port
        kept = []
        for check in service.get("checks", []):
            check["id"] = _renamed(check["id"], old_id, new_id)
            if "args" not in check:
                # resident profile: a TTL check the daemon pushes, or its liveness URL
                if "http" in check and listen_port is not None:
                    check["http"] = _with_port(check["http"], listen_port)
                kept.append(check)
                continue
            args = _rewrite_args(check["args"], instance, new_id)
            if Path(args[0]).name == "check_postgresql":
                help_text = subcommand_help(args[0], args[1])
                if help_text is None:
                    if skipped is not None:
                        skipped.append(check["id"])
                    continue
                # Several instances share one agent: tell the guard which service is its
                # (the shipped file names it, rewritten above; older files did not).
                if (
                    args[1] == "consul-role"
                    and "--service-id" in help_text
                    and "--service-id" not in args
                ):
                    args[2:2] = ["--service-id", new_id]
            check["args"] = args
            if interval:
                check["interval"] = interval
            kept.append(check)
        service["checks"] = kept
    return {"services": services}


def host_snippet(name: str = "mem-check.json", *, interval: str | None = None) -> dict[str, Any]:
    """A host-level snippet (mem-check.json) with this venv's executables."""
    snippet = load(name)
    for service in services_of(snippet):
        for check in service.get("checks", []):
            if "args" not in check:
                continue  # resident profile: a TTL check the daemon pushes
            check["args"] = [str(VENV_BIN / Path(check["args"][0]).name), *check["args"][1:]]
            if interval:
                check["interval"] = interval
    return snippet


def _with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.hostname}:{port}"))


RESIDENT_DROP_IN = REPO_ROOT / "contrib" / "systemd" / "pg-role-reporter-resident.conf"


def resident_exec_start(path: Path = RESIDENT_DROP_IN) -> list[str]:
    """The shipped resident drop-in's ExecStart as systemd splits it (continuation lines
    joined, double quotes keep a word whole); the empty `ExecStart=` reset is skipped."""
    text = path.read_text().replace("\\\n", " ")
    starts = [
        line.split("=", 1)[1].strip()
        for line in text.splitlines()
        if line.startswith("ExecStart=") and line.split("=", 1)[1].strip()
    ]
    (command_line,) = starts
    return shlex.split(command_line)


def resident_daemon_args(
    suffix: str,
    *,
    listen: str,
    interval: str | None = None,
    memory: bool = True,
) -> list[str]:
    """The drop-in's pg-role-reporter options for one instance of a test: service id
    `pg-db-<suffix>` and check ids renamed as `for_instance` renames them, its own
    `--listen`, optionally shorter push intervals, and the host's memory check only
    for one instance (`memory`). The checks' own options are left as shipped."""
    old_id = "pg-db"
    new_id = f"{old_id}-{suffix}"
    argv = resident_exec_start()[1:]
    rewritten: list[str] = []
    words = iter(argv)
    for word in words:
        if word in ("--service-id", "--listen", "--session-check", "--push"):
            value = next(words)
            if word == "--service-id":
                value = new_id
            elif word == "--listen":
                value = listen
            elif word == "--session-check":
                value = _renamed(value, old_id, new_id)
            else:
                check_id, _, rest = value.partition("=")
                every, _, command_line = rest.partition(":")
                if not check_id.startswith(old_id + "-"):
                    if not memory:
                        continue
                else:
                    check_id = _renamed(check_id, old_id, new_id)
                check_args = shlex.split(command_line)
                if "--service-id" in check_args:
                    check_args[check_args.index("--service-id") + 1] = new_id
                value = f"{check_id}={interval or every}:{shlex.join(check_args)}"
            rewritten += [word, value]
        else:
            rewritten.append(word)
    return rewritten
