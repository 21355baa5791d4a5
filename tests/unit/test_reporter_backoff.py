"""checks.reporter.backoff: about once a second when refused, capped jitter otherwise."""

from __future__ import annotations

from checks.reporter.backoff import MAX_BACKOFF_SECONDS, Backoff


def test_unreachable_agent_is_retried_about_once_a_second() -> None:
    backoff = Backoff(rand=lambda: 1.0)
    for _ in range(20):
        assert 0.9 <= backoff.unreachable() <= 1.1


def test_errors_back_off_exponentially_with_jitter_up_to_the_cap() -> None:
    high = Backoff(rand=lambda: 1.0)
    assert [high.refused() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    low = Backoff(rand=lambda: 0.0)
    assert [low.refused() for _ in range(3)] == [0.5, 1, 2]
    assert max(Backoff().refused() for _ in range(100)) <= MAX_BACKOFF_SECONDS


def test_reset_starts_over() -> None:
    backoff = Backoff(rand=lambda: 1.0)
    backoff.refused()
    backoff.refused()
    backoff.reset()
    assert backoff.refused() == 1
