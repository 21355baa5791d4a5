"""Real Consul agents for the integration tests (a pytest plugin, see conftest.py).

- `consul_agent`: one session-wide dev agent. Tests sharing it register services under
  their own names and must not reload it or write to its config dir.
- `consul_agent_factory`: agents of a test's own, with any `harness.consul.ConsulAgent`
  option (ACLs, unix socket, another datacenter, persistent state) plus `config_files`
  written into conf.d before the start. Stopped by PID at the end of the test.

No binary means a failed test, never a skipped one: a skipped Consul suite looks green.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from harness.consul import ConsulAgent, ConsulHarnessError, consul_binary

ConsulAgentFactory = Callable[..., ConsulAgent]


@pytest.fixture(scope="session")
def consul_bin() -> Path:
    try:
        return consul_binary()
    except ConsulHarnessError as exc:
        pytest.fail(f"no consul binary for the integration tests: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def consul_agent(
    consul_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConsulAgent]:
    agent = ConsulAgent(
        base_dir=tmp_path_factory.mktemp("consul-session"),
        node_name="pg-ha-session",
        binary=consul_bin,
    )
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()


@pytest.fixture
def consul_agent_factory(
    consul_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConsulAgentFactory]:
    agents: list[ConsulAgent] = []

    def make(
        *,
        config_files: Mapping[str, Mapping[str, Any] | str] | None = None,
        start: bool = True,
        **options: Any,
    ) -> ConsulAgent:
        options.setdefault("node_name", f"pg-ha-{len(agents) + 1}")
        agent = ConsulAgent(
            base_dir=tmp_path_factory.mktemp("consul"), binary=consul_bin, **options
        )
        agents.append(agent)
        for name, content in (config_files or {}).items():
            agent.write_config(name, content)
        if start:
            agent.start()
        return agent

    try:
        yield make
    finally:
        for agent in reversed(agents):
            agent.stop()
