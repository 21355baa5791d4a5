"""scripts/build-deb as README runs it: as root, in a checkout that is often someone
else's (cloned as a DBA, built with sudo)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# a module of the checkout's owner that git ignores (here through the checkout's own
# .git/info/exclude, as a global excludesFile would): importable if it ships
LEFTOVER = "checks/local_override.py"


def test_root_building_another_users_checkout_ships_only_what_git_keeps(
    tmp_path: Path,
) -> None:
    """git (>= 2.35.2) refuses to read a repository owned by another user ("dubious
    ownership"); build-deb must not take that for "no git here" and copy the whole
    directory, leftovers git ignores included, into the package."""
    if os.geteuid() != 0:
        pytest.fail("builds as root in a checkout owned by another user: run as root (CI does)")
    checkout = tmp_path / "pg-ha-checks"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(checkout)], check=True, timeout=120)
    # the clone has the last commit: bring this tree's files (uncommitted edits) over it
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in listed)):
        if (ROOT / name).exists():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, checkout / name)
    (checkout / LEFTOVER).write_text("OVERRIDE = True\n")
    with (checkout / ".git" / "info" / "exclude").open("a") as exclude:
        exclude.write(f"/{LEFTOVER}\n")
    shutil.chown(tmp_path, "nobody")
    for path in [checkout, *checkout.rglob("*")]:
        os.lchown(path, 65534, 65534)
    out = tmp_path / "out"
    done = subprocess.run(
        [str(checkout / "scripts" / "build-deb"), str(out)],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (deb,) = out.glob("pg-ha-checks_*_all.deb")
    listing = subprocess.run(
        ["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True
    ).stdout
    assert "/usr/share/pg-ha-checks/checks/runtime.py\n" in listing
    assert "local_override" not in listing
