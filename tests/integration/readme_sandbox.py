"""Run a README's shell blocks as written, as root, on a host of their own.

    unshare --mount --net --fork python -m tests.integration.readme_sandbox README WORKDIR

Run by tests/integration/test_consul_readme.py inside new mount and network namespaces,
so the commands can use the paths and ports a real host has (/etc/consul.d,
/etc/pg-ha-checks, /opt/pg-ha-checks, 127.0.0.1:8500 and :8600) without touching this
machine or colliding with anyone's agent:

- loopback of its own (the standard ports are free in it);
- /etc is an overlay whose writes land in WORKDIR (the host's /etc is untouched), with a
  `consul` group as Debian's package makes;
- /opt is a fresh directory with /opt/pg-ha-checks bound to this venv (the README's
  `/opt/pg-ha-checks/bin/python`);
- a Consul server agent as an operator runs it: `-config-dir=/etc/consul.d` holding a
  base file (data dir, ACLs with default deny, a management token and no agent token),
  the `consul` CLI on PATH, the management token in `CONSUL_HTTP_TOKEN_FILE` as the
  README asks;
- `systemctl restart consul` does what systemd would: stops the agent (SIGTERM by its
  PID) and starts it again with the same command. That stand-in is the only one; any
  other systemctl use fails the block.

Each ```sh block runs with `bash -e -o pipefail` in a copy of the README's directory, in
order; the run stops at the first failing block. Stdout gets one JSON report: every
block's result and what the agent holds afterwards. The agent is stopped by its PID.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from harness.consul import consul_binary

HTTP = "http://127.0.0.1:8500"
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)


def shell_blocks(readme: Path) -> list[str]:
    return BLOCK.findall(readme.read_text())


def run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=60)


def make_host(work: Path) -> None:
    run("ip", "link", "set", "lo", "up")
    upper, overlay_work, opt = work / "etc-upper", work / "etc-work", work / "opt"
    for path in (upper, overlay_work, opt):
        path.mkdir(parents=True)
    run(
        "mount", "-t", "overlay", "overlay",
        "-o", f"lowerdir=/etc,upperdir={upper},workdir={overlay_work}", "/etc",
    )  # fmt: skip
    with open("/etc/group", "a") as group:
        group.write("consul:x:64999:\n")
    run("mount", "--bind", str(opt), "/opt")
    Path("/opt/pg-ha-checks").mkdir()
    run("mount", "--bind", sys.prefix, "/opt/pg-ha-checks")


def base_config(work: Path, management_token: str) -> dict[str, Any]:
    """What an operator's /etc/consul.d/consul.hcl says on a one-server cluster."""
    return {
        "datacenter": "dc1",
        "data_dir": str(work / "consul-data"),
        "server": True,
        "bootstrap_expect": 1,
        "bind_addr": "127.0.0.1",
        "client_addr": "127.0.0.1",
        "primary_datacenter": "dc1",
        "acl": {
            "enabled": True,
            "default_policy": "deny",
            "down_policy": "extend-cache",
            "tokens": {"master": management_token},
        },
        "performance": {"raft_multiplier": 1},
        "disable_update_check": True,
        "log_level": "info",
    }


SYSTEMCTL = """#!/bin/bash
# the sandbox's stand-in for systemd: only `systemctl restart consul`
set -eu
[[ "$*" == "restart consul" ]] || { echo "sandbox systemctl: only 'restart consul'" >&2; exit 1; }
exec "@PYTHON@" -m tests.integration.readme_sandbox --restart-agent "@WORK@"
"""


def start_agent(work: Path, env: dict[str, str]) -> int:
    with (work / "consul.log").open("ab") as log:
        agent = subprocess.Popen(
            [str(consul_binary()), "agent", "-config-dir=/etc/consul.d"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    (work / "consul.pid").write_text(str(agent.pid))
    return agent.pid


def stop_agent(work: Path) -> None:
    pid = int((work / "consul.pid").read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child (started by a restart): poll it
            done = 0 if _alive(pid) else pid
        if done == pid:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.split(")")[-1].split()[0] != "Z"


def restart_agent(work: Path) -> int:
    env = json.loads((work / "env.json").read_text())
    stop_agent(work)
    start_agent(work, env)
    wait_for_leader(Path(env["CONSUL_HTTP_TOKEN_FILE"]).read_text(), time.monotonic() + 60)
    return 0


def wait_for_leader(token: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            response = httpx.get(
                f"{HTTP}/v1/status/leader", headers={"X-Consul-Token": token}, timeout=1
            )
            if response.status_code == 200 and response.json():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError("the sandbox's consul agent elected no leader")


def api(path: str, token: str) -> Any:
    response = httpx.get(f"{HTTP}{path}", headers={"X-Consul-Token": token}, timeout=5)
    response.raise_for_status()
    return response.json()


def facts(token: str, deadline: float) -> dict[str, Any]:
    """What the agent and the files hold after the README's commands."""
    catalog: dict[str, Any] = {}
    # the services reach the catalog once the agent syncs them with their token
    while time.monotonic() < deadline:
        catalog = api("/v1/catalog/services", token)
        if {"pg-db", "pg-host"} <= set(catalog):
            break
        time.sleep(0.2)
    policies = {p["Name"]: api(f"/v1/acl/policy/{p['ID']}", token)["Rules"]
                for p in api("/v1/acl/policies", token)}  # fmt: skip
    anonymous = api("/v1/acl/token/00000000-0000-0000-0000-000000000002", token)
    files = {}
    for path in (
        "/etc/consul.d/agent-token.json",
        "/etc/consul.d/pg-db.json",
        "/etc/consul.d/mem-check.json",
        "/etc/pg-ha-checks/checks-token",
        "/etc/pg-ha-checks/consul-token",
    ):
        if os.path.exists(path):
            status = os.stat(path)
            files[path] = {
                "mode": oct(status.st_mode & 0o777),
                "gid": status.st_gid,
                "text": Path(path).read_text(),
            }
    token_policies = {}
    for name, path in (
        ("reporter", "/etc/pg-ha-checks/consul-token"),
        ("checks", "/etc/pg-ha-checks/checks-token"),
        ("agent", "/etc/consul.d/agent-token.json"),
    ):
        if os.path.exists(path):
            secret = Path(path).read_text().strip()
            if path.endswith(".json"):
                secret = json.loads(secret)["acl"]["tokens"]["agent"]
            held = api("/v1/acl/token/self", secret)
            token_policies[name] = [p["Name"] for p in held.get("Policies") or []] + [
                f"node-identity:{n['NodeName']}:{n['Datacenter']}"
                for n in held.get("NodeIdentities") or []
            ]
    # what the agent's token may do beyond its own node: register another one
    agent_token = json.loads(Path("/etc/consul.d/agent-token.json").read_text())["acl"]
    other_node = httpx.put(
        f"{HTTP}/v1/catalog/register",
        headers={"X-Consul-Token": agent_token["tokens"]["agent"]},
        json={"Node": "another-db-host", "Address": "192.0.2.1"},
        timeout=5,
    )
    return {
        "catalog": catalog,
        "policies": policies,
        "anonymous_policies": [p["Name"] for p in anonymous.get("Policies") or []],
        "files": files,
        "token_policies": token_policies,
        "agent_token_registers_another_node": other_node.status_code,
        "queries": sorted(q["Name"] for q in api("/v1/query", token)),
        "node_synced": bool(api("/v1/catalog/node/" + os.uname().nodename, token)),
    }


def main() -> int:
    if sys.argv[1] == "--restart-agent":
        return restart_agent(Path(sys.argv[2]))
    readme, work = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    make_host(work)
    management_token = str(uuid.uuid4())
    token_file = work / "management.token"
    token_file.write_text(management_token)
    token_file.chmod(0o600)
    Path("/etc/consul.d").mkdir(exist_ok=True)
    Path("/etc/consul.d/consul.json").write_text(json.dumps(base_config(work, management_token)))
    cwd = work / readme.parent.name
    shutil.copytree(readme.parent, cwd)
    stand_ins = work / "bin"
    stand_ins.mkdir()
    systemctl = stand_ins / "systemctl"
    systemctl.write_text(SYSTEMCTL.replace("@PYTHON@", sys.executable).replace("@WORK@", str(work)))
    systemctl.chmod(0o755)
    env = {
        "PATH": f"{stand_ins}:{consul_binary().parent}:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(work),
        "LANG": "C.UTF-8",
        "CONSUL_HTTP_TOKEN_FILE": str(token_file),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    (work / "env.json").write_text(json.dumps(env))
    report: dict[str, Any] = {"blocks": []}
    start_agent(work, env)
    try:
        wait_for_leader(management_token, time.monotonic() + 60)
        for block in shell_blocks(readme):
            log_offset = (work / "consul.log").stat().st_size
            done = subprocess.run(
                ["bash", "-e", "-o", "pipefail", "-c", block],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            report["blocks"].append(
                {
                    "block": block,
                    "rc": done.returncode,
                    "out": done.stdout,
                    "err": done.stderr,
                    "log_offset": log_offset,
                }
            )
            if done.returncode != 0:
                break
        report["facts"] = facts(management_token, time.monotonic() + 30)
    finally:
        stop_agent(work)
        report["consul_log"] = (work / "consul.log").read_text(errors="replace")
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
