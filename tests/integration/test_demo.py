"""`python -m harness.demo` (what ./scripts/demo runs after bootstrap) end to end.

Real PostgreSQL, a real Consul agent and the real reporters: the demo itself asserts the
DNS answers it waits for, so a green run means leader and follower moved across the
failover. Here: exit status, the time budget (the README promises under 2 minutes), and
that it left no temp dir behind.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from harness.snippets import REPO_ROOT

pytestmark = pytest.mark.integration

# "leader.pg-db.service.consul     A ['127.0.0.1']  SRV ports: 45315 = pg-db-1 (primary)"
LEADER_IS = r"leader\.pg-db\.service\.consul +A \['127\.0\.0\.1'\] +SRV ports: \d+ = {} "


def test_demo_fails_over_and_cleans_up() -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "harness.demo"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    took = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
    assert took < 120, f"the demo took {took:.0f}s"
    out = done.stdout
    assert re.search(LEADER_IS.format("pg-db-1"), out), out
    assert "DNS names the new leader" in out
    assert re.search(LEADER_IS.format("pg-db-2"), out), out
    workdir = re.search(r"in (/\S+pg-ha-demo-\w+)\)", out)
    assert workdir and not Path(workdir.group(1)).exists()
    assert Path(tempfile.gettempdir()) in Path(workdir.group(1)).parents
