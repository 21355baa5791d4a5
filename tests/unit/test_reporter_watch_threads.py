"""The reporter's watch threads outlive an answer they cannot read.

A thread that died on an unexpected exception would leave the main loop planning against
the last service it saw: after a `consul reload` reverted the tags, they would never come
back. Each watch must log the error, report "unknown" and try again.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from checks.consul import ConsulClient, ConsulSettings
from checks.reporter import watch as reporter_watch


def test_service_watch_survives_an_unreadable_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    second_answer = threading.Event()

    def agent_service(self: ConsulClient, service_id: str, **_: Any) -> tuple[dict, str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("Expecting value: line 1 column 1 (char 0)")
        second_answer.set()
        return {"ID": service_id, "Tags": []}, "hash-1"

    monkeypatch.setattr(ConsulClient, "agent_service", agent_service)
    monkeypatch.setattr(reporter_watch.Backoff, "refused", lambda self: 0.01)
    watch = reporter_watch.ServiceWatch(ConsulSettings(), "pg-db", reporter_watch.ConsulTrouble())
    watch.start()
    try:
        assert second_answer.wait(5), "the watch thread died on the first answer"
        assert watch.is_alive()
    finally:
        watch.stopping.set()
