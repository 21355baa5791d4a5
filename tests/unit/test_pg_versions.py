"""The version gate behind @pytest.mark.pg, and how a server version is named."""

from __future__ import annotations

import pytest

from checks.postgres.connection import major_of
from harness.pgbin import SERVER_PROGRAMS, discover_installations, major_matches, parse_majors


@pytest.mark.parametrize(
    ("spec", "major", "matches"),
    [
        (">= 14", 14, True),
        (">= 14", 13, False),
        ("< 13", 12, True),
        ("< 13", 13, False),
        ("16", 16, True),
        ("== 16", 17, False),
        ("!= 15", 15, False),
        (">= 14, < 17", 16, True),
        (">= 14, < 17", 17, False),
        (">13", 14, True),
        ("<= 13", 13, True),
    ],
)
def test_major_matches(spec: str, major: int, matches: bool) -> None:
    assert major_matches(spec, major) is matches


@pytest.mark.parametrize("spec", ["", ">= fourteen", "=> 14", ">= 14.2", ">= 14; < 17"])
def test_a_malformed_spec_raises_rather_than_skipping(spec: str) -> None:
    with pytest.raises(ValueError, match="bad PostgreSQL version spec"):
        major_matches(spec, 15)


def test_parse_majors() -> None:
    assert parse_majors("15,18") == {15, 18}
    assert parse_majors(" 13 14,16 ") == {13, 14, 16}


@pytest.mark.parametrize(
    ("server_version", "name"), [(120022, "12"), (180004, "18"), (90624, "9.6"), (100023, "10")]
)
def test_major_of(server_version: int, name: str) -> None:
    assert major_of(server_version) == name


def test_a_relative_pg_bindir_is_found(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "pg" / "bin"
    bindir.mkdir(parents=True)
    for program in SERVER_PROGRAMS:
        script = bindir / program
        script.write_text("#!/bin/sh\necho 'postgres (PostgreSQL) 13.23'\n")
        script.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    found = discover_installations({"PG_BINDIR": "pg/bin"})
    assert [(i.major, i.bindir) for i in found] == [(13, bindir)]
