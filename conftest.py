"""Integration fixtures live in one plugin module per real service.

pytest accepts ``pytest_plugins`` only in the top-level conftest.
"""

pytest_plugins = [
    "tests.integration.fixtures_postgres",
    "tests.integration.fixtures_consul",
]
