"""Integration fixtures live in one plugin module per real service."""

pytest_plugins = [
    "tests.integration.fixtures_postgres",
    "tests.integration.fixtures_consul",
]
