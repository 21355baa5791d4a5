"""contrib/consul-conf.d/README.md: every shell command, as written, on a real agent.

tests/integration/readme_sandbox.py runs the README's ```sh blocks in order, as root, in
mount and network namespaces of their own (the host's /etc, /opt and ports untouched),
against a real Consul server agent with ACLs in default deny, the way an operator with a
management token would. Here: every block exits 0, and the agent ends up as the README
says (policies, tokens and their files, services in the catalog, DNS for anonymous
clients, the prepared queries).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness import snippets
from harness.consul import consul_binary

pytestmark = pytest.mark.integration

README = snippets.SNIPPETS_DIR / "README.md"
ACL_DIR = snippets.SNIPPETS_DIR / "acl"
# Added only when a host switches to resident checks (the README's own section says so);
# test_consul_snippets.py applies it with a real ACL agent.
RESIDENT_ONLY_POLICIES = {"pg-role-reporter-resident"}
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def sandbox_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if os.geteuid() != 0:
        pytest.fail("the README's commands run as root (install, chgrp, namespaces)")
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) missing"
    consul_binary()  # fetched before entering the namespace, whose loopback is private
    work = tmp_path_factory.mktemp("readme-host")
    done = subprocess.run(
        [unshare, "--mount", "--net", "--fork", sys.executable, "-m",
         "tests.integration.readme_sandbox", str(README), str(work)],
        cwd=snippets.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_every_shell_block_runs_as_written(sandbox_report: dict[str, Any]) -> None:
    blocks = sandbox_report["blocks"]
    written = re.findall(r"^```sh\n(.*?)^```", README.read_text(), re.MULTILINE | re.DOTALL)
    for result in blocks:
        assert result["rc"] == 0, (
            f"README block failed ({result['rc']}):\n{result['block']}\n"
            f"stdout:\n{result['out']}\nstderr:\n{result['err']}"
        )
    assert [b["block"] for b in blocks] == written
    # no command line carries a secret: tokens go through pipes into files
    for block in written:
        assert "SecretID" not in block.replace(".SecretID", "").replace("$t[0].SecretID", "")
        assert not UUID.search(block)


def test_policies_are_the_shipped_files_and_the_anonymous_token_reads_for_dns(
    sandbox_report: dict[str, Any],
) -> None:
    facts = sandbox_report["facts"]
    for path in ACL_DIR.glob("*.hcl"):
        if path.stem in RESIDENT_ONLY_POLICIES:
            continue
        assert facts["policies"][path.stem] == path.read_text(), path.name
    assert facts["anonymous_policies"] == ["dns-read"]
    dns_block = next(b for b in sandbox_report["blocks"] if "consul.service.consul" in b["block"])
    assert dns_block["out"].split() == ["127.0.0.1"]


def test_reporter_policy_states_what_the_reporter_and_its_fence_need() -> None:
    rules = (ACL_DIR / "pg-role-reporter.hcl").read_text()
    compact = " ".join(rules.split())
    for rule in (
        'service "pg-db" { policy = "write" }',
        'key_prefix "service/pg-db/" { policy = "write" }',
        'session_prefix "" { policy = "write" }',
        'node_prefix "" { policy = "read" }',
    ):
        assert rule in compact


def test_tokens_land_in_their_files_with_the_modes_the_readme_says(
    sandbox_report: dict[str, Any],
) -> None:
    files = sandbox_report["facts"]["files"]
    consul_gid = 64999  # the sandbox's consul group
    reporter = files["/etc/pg-ha-checks/consul-token"]
    assert reporter["mode"] == "0o600" and reporter["gid"] == 0
    assert UUID.match(reporter["text"].strip())
    checks = files["/etc/pg-ha-checks/checks-token"]
    assert (checks["mode"], checks["gid"]) == ("0o640", consul_gid)
    assert UUID.match(checks["text"].strip())
    for path in ("/etc/consul.d/pg-db.json", "/etc/consul.d/mem-check.json"):
        assert (files[path]["mode"], files[path]["gid"]) == ("0o640", consul_gid), path
        assert UUID.match(json.loads(files[path]["text"])["service"]["token"]), path
    agent = files["/etc/consul.d/agent-token.json"]
    assert (agent["mode"], agent["gid"]) == ("0o640", consul_gid)
    assert UUID.match(json.loads(agent["text"])["acl"]["tokens"]["agent"])
    assert sandbox_report["facts"]["token_policies"] == {
        "reporter": ["pg-role-reporter"],
        "checks": ["pg-db-checks"],
        # write on its own node only (Consul's node identity), not on every node
        "agent": [f"node-identity:{os.uname().nodename}:dc1"],
    }
    assert sandbox_report["facts"]["agent_token_registers_another_node"] == 403


def test_after_the_reload_the_agent_and_the_services_sync_with_their_tokens(
    sandbox_report: dict[str, Any],
) -> None:
    facts = sandbox_report["facts"]
    assert facts["catalog"]["pg-db"] == ["postgresql"]
    assert facts["catalog"]["pg-host"] == ["memory"]
    acl_block = next(b for b in sandbox_report["blocks"] if "agent-token.json" in b["block"])
    log = sandbox_report["consul_log"].encode()
    since = log[acl_block["log_offset"] :].decode(errors="replace")
    synced = since.rfind("Synced service: service=pg-db")
    assert synced >= 0, since[-2000:]
    assert "blocked by ACLs" not in since[synced:], since[synced:][-2000:]
    assert "skipping file" not in since, "a token file in /etc/consul.d"


def test_prepared_queries_apply_twice_writes_once(sandbox_report: dict[str, Any]) -> None:
    facts = sandbox_report["facts"]
    assert facts["queries"] == ["geo-db-", "geo-pg-db-follower", "leader-db-"]
    apply_block = next(b for b in sandbox_report["blocks"] if "queries/apply" in b["block"])
    lines = apply_block["out"].splitlines()
    assert "dry run: 3 to write, 0 unchanged; nothing written" in lines
    assert "nothing to change: 3 queries already match their files" in lines


def test_json_examples_are_valid_agent_config(tmp_path: Path) -> None:
    blocks = re.findall(r"^```json\n(.*?)^```", README.read_text(), re.MULTILINE | re.DOTALL)
    conf = tmp_path / "consul.d"
    conf.mkdir()
    (conf / "00-base.json").write_text(json.dumps({"data_dir": str(tmp_path / "data")}))
    for number, block in enumerate(blocks):
        if block.lstrip().startswith('"'):  # a fragment of a service, not a file
            continue
        json.loads(block)
        (conf / f"example-{number}.json").write_text(block)
    done = subprocess.run(
        [str(consul_binary()), "validate", str(conf)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
