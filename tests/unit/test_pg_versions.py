"""The version gate behind @pytest.mark.pg, and how a server version is named."""

from __future__ import annotations

import pytest

from checks.postgres.connection import major_of
from harness.pgbin import major_matches, parse_majors


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
