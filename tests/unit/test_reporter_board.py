"""checks.reporter.board: the loop's latest verdict, whole, for readers in other threads."""

from __future__ import annotations

import dataclasses

import pytest

from checks.reporter.board import RoleBoard, RoleSnapshot


def snapshot(n: int) -> RoleSnapshot:
    return RoleSnapshot(
        role="primary", tag="leader", holds_lock=True, fenced_reason=None, observed_at=float(n)
    )


def test_empty_until_the_first_turn_then_the_latest() -> None:
    board = RoleBoard()
    assert board.latest() is None
    board.publish(snapshot(1))
    board.publish(snapshot(2))
    assert board.latest() == snapshot(2)


def test_a_snapshot_cannot_be_changed_by_a_reader() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot(1).role = "replica"  # type: ignore[misc]


def test_a_turn_request_wakes_the_loop_once_it_said_how() -> None:
    board = RoleBoard()
    board.request_turn()  # no loop yet: nothing to wake, no error
    woken: list[bool] = []
    board.turn_on_request(lambda: woken.append(True))
    board.request_turn()
    assert woken == [True]
