"""The packaging files agree with each other: one version, one license text, the Debian
package depends on Debian's build of every library the project declares."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import checks

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DEBIAN = ROOT / "debian"


def test_debian_changelog_has_the_package_version() -> None:
    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    assert first.startswith(f"pg-ha-checks ({checks.__version__}) "), first


def test_debian_copyright_carries_the_license_text() -> None:
    license_body = (ROOT / "LICENSE").read_text().split("\n", 4)[4]
    copyright_text = (DEBIAN / "copyright").read_text()
    stanza = copyright_text.split("\nLicense: PostgreSQL\n")[-1]
    text = "\n".join("" if line == " ." else line.removeprefix(" ") for line in stanza.splitlines())
    assert text.strip() == license_body.strip()
    assert "Copyright (c) 2026, The pg-ha-checks developers" in (ROOT / "LICENSE").read_text()
    assert "Copyright: 2026 The pg-ha-checks developers" in copyright_text


def test_license_metadata_is_an_spdx_expression_with_the_file() -> None:
    assert PYPROJECT["project"]["license"] == "PostgreSQL"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]


def test_build_backend_is_bounded() -> None:
    (requirement,) = PYPROJECT["build-system"]["requires"]
    assert re.fullmatch(r"hatchling>=[\d.]+,<[\d.]+", requirement), requirement


def test_deb_depends_on_debians_build_of_every_dependency() -> None:
    control = (DEBIAN / "control").read_text()
    depends = control.split("\nDepends:", 1)[1].split("\nDescription:", 1)[0]
    debian = set(re.findall(r"(python3-[a-z0-9.-]+)", depends))
    declared = {
        "python3-" + re.match(r"[A-Za-z0-9_.-]+", dep)[0].lower()  # type: ignore[index]
        for dep in PYPROJECT["project"]["dependencies"]
    }
    assert debian == declared
