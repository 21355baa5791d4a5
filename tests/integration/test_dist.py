"""The sdist and the wheel, built with the standard frontend (`python -m build`: sdist first,
wheel from the unpacked sdist) from a checkout left dirty on purpose: what they hold, and
the unit tests run from the unpacked sdist alone."""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXECUTABLES = {
    "check_postgresql": "checks.check_postgresql:main",
    "mem_check": "checks.mem_check:main",
    "pg-role-reporter": "checks.reporter.cli:main",
}
# leftovers a working checkout collects, none of which may ship
STALE = [
    "build/lib/checks/removed_long_ago.py",
    "checks/__pycache__/plugin.cpython-311.pyc",
    "pg_ha_checks.egg-info/PKG-INFO",
]


def tracked(prefix: str) -> set[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", prefix],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {name for name in listed if (ROOT / name).exists()}


@dataclass(frozen=True)
class Dists:
    sdist: Path
    wheel: Path
    in_tree_wheel: Path
    version: str


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dists]:
    d = tmp_path_factory.mktemp("dist")
    checkout = d / "checkout"
    for name in tracked("."):
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, checkout / name)
    for name in STALE:
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout / name).write_text("stale\n")
    out = d / "out"
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(checkout)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # the way `pip install .` builds: a wheel straight from the (dirty) checkout
    in_tree = d / "in-tree"
    done = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(in_tree), str(checkout)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    (in_tree_wheel,) = in_tree.glob("*.whl")
    version = wheel.name.split("-")[1]
    yield Dists(sdist, wheel, in_tree_wheel, version)


def test_wheel_holds_the_modules_man_pages_and_license(dists: Dists) -> None:
    with zipfile.ZipFile(dists.wheel) as whl:
        names = set(whl.namelist())
        info = f"pg_ha_checks-{dists.version}.dist-info"
        data = f"pg_ha_checks-{dists.version}.data/data"
        modules = {n for n in names if n.startswith("checks/")}
        assert modules == tracked("checks"), modules ^ tracked("checks")
        pages = {n for n in names if n.startswith(f"{data}/")}
        assert pages == {f"{data}/share/man/man1/{p.name}" for p in (ROOT / "man").glob("*.1")}
        for page in pages:
            assert whl.read(page) == (ROOT / "man" / Path(page).name).read_bytes()
        assert whl.read(f"{info}/licenses/LICENSE") == (ROOT / "LICENSE").read_bytes()
        metadata = email.message_from_bytes(whl.read(f"{info}/METADATA"))
        assert metadata["License-Expression"] == "PostgreSQL"
        assert metadata["License-File"] == "LICENSE"
        entry_points = whl.read(f"{info}/entry_points.txt").decode()
        for name, target in EXECUTABLES.items():
            assert f"{name} = {target}" in entry_points
        # nothing else: no tests, no harness, no byte code, no leftovers
        others = names - modules - pages - {n for n in names if n.startswith(f"{info}/")}
        assert not others, others


def test_wheel_built_in_the_dirty_checkout_is_the_same(dists: Dists) -> None:
    with zipfile.ZipFile(dists.wheel) as a, zipfile.ZipFile(dists.in_tree_wheel) as b:
        assert {i.filename: i.CRC for i in a.infolist()} == {
            i.filename: i.CRC for i in b.infolist()
        }


def test_sdist_is_the_source_without_leftovers(dists: Dists) -> None:
    top = f"pg_ha_checks-{dists.version}"
    with tarfile.open(dists.sdist) as sdist:
        names = {m.name.removeprefix(f"{top}/") for m in sdist.getmembers() if m.isfile()}
    for needed in ("LICENSE", "README.md", "pyproject.toml", "conftest.py", "PKG-INFO"):
        assert needed in names, needed
    for prefix in ("checks", "tests", "harness", "man", "contrib", "debian"):
        assert tracked(prefix) <= names, tracked(prefix) - names
    assert not [n for n in names if n in STALE or n.endswith(".pyc")], names


def test_unit_tests_run_from_the_unpacked_sdist(dists: Dists, tmp_path: Path) -> None:
    with tarfile.open(dists.sdist) as sdist:
        sdist.extractall(tmp_path, filter="data")
    source = tmp_path / f"pg_ha_checks-{dists.version}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "PYTHON"))}
    # the unpacked tree's modules, not the checkout the venv has installed
    where = subprocess.run(
        [sys.executable, "-c", "import checks; print(checks.__file__)"],
        cwd=source,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip() == str(source / "checks" / "__init__.py")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit"],
        cwd=source,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout
