"""typings/nagiosplugin, the types mypy checks our use of nagiosplugin against, agree with
the nagiosplugin installed here: every declared name exists with the declared parameters.
Run in each test stage, this holds them to the floor's 1.3.2 and to the newest release."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("mypy.stubtest", reason="the test extra installs mypy")


def test_nagiosplugin_typings_match_the_installed_library() -> None:
    done = subprocess.run(
        # --ignore-disjoint-bases: on Python 3.13 stubtest holds every class of a stub
        # to PEP 800's disjoint-base marking, which says nothing about how we call it
        [
            sys.executable,
            "-m",
            "mypy.stubtest",
            "nagiosplugin",
            "--ignore-missing-stub",
            "--ignore-disjoint-bases",
        ],
        cwd=ROOT,
        env={**os.environ, "MYPYPATH": str(ROOT / "typings")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
