"""The loop's Wakeup: threading.Event's behaviour, plus a wait that a socket can end."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

from checks.reporter.wakeup import Wakeup, readable


def test_it_behaves_as_an_event() -> None:
    wakeup = Wakeup()
    assert not wakeup.is_set()
    assert wakeup.wait(0.01) is False
    wakeup.set()
    wakeup.set()  # twice: one wake-up, still set
    assert wakeup.is_set() and wakeup.wait(5) is True
    wakeup.clear()
    assert not wakeup.is_set()
    started = time.monotonic()
    assert wakeup.wait(0.05) is False  # cleared: the bytes of both sets are gone
    assert time.monotonic() - started >= 0.04


def test_a_set_from_another_thread_ends_the_wait_at_once() -> None:
    wakeup = Wakeup()
    threading.Timer(0.05, wakeup.set).start()
    started = time.monotonic()
    assert wakeup.wait(10) is True
    assert time.monotonic() - started < 5


def test_a_readable_socket_ends_the_wait_and_says_so() -> None:
    wakeup = Wakeup()
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert wakeup.wait_or_readable(0.01, ours.fileno()) is False  # the timeout
        threading.Timer(0.05, theirs.close).start()  # the peer ends the session
        started = time.monotonic()
        assert wakeup.wait_or_readable(10, ours.fileno()) is True
        assert time.monotonic() - started < 5
        wakeup.set()
        assert wakeup.wait_or_readable(10, ours.fileno()) is False  # set: not the socket


def test_a_signal_handler_that_sets_it_wakes_the_main_thread() -> None:
    wakeup = Wakeup()
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: wakeup.set())
    try:
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        started = time.monotonic()
        assert wakeup.wait(10) is True
        assert time.monotonic() - started < 5
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_readable_says_whether_a_read_would_not_block() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert not readable(ours.fileno())
        theirs.send(b"x")
        assert readable(ours.fileno())
        ours.recv(1)
        assert not readable(ours.fileno())
        theirs.close()
        assert readable(ours.fileno())  # the end of the stream is read as such
