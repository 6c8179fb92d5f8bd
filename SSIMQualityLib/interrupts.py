"""Ctrl-C that stops long work at a safe point.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be when
SIGINT arrives.  Inside ``with lock:`` that can fall between the lock's
acquisition and the block's start, and the lock stays held: a thread pool whose
``submit`` was interrupted so can never shut down, and the program hangs on its
way out instead of stopping (seen once in ``ssimquality score``'s test of an
interrupted run).  :func:`deferred_interrupt` only notes the first Ctrl-C; the
work calls :meth:`Interrupt.check` where stopping is safe (between batches and
volumes) and the ``KeyboardInterrupt`` is raised there.  A second Ctrl-C raises
at once, as usual, for work stuck where no check comes.

SIGTERM is treated the same way: it is what a cluster's scheduler sends first when a job reaches its time limit
or is cancelled or pre-empted (SLURM waits ``KillWait``, 30 s by default, before SIGKILL), and Python's default
for it is to die on the spot, with nothing saved and nothing said.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class Terminated(KeyboardInterrupt):
    """The stop a SIGTERM asked for (a ``KeyboardInterrupt``, so that everything that saves on Ctrl-C saves on
    it too; the command exits 143, 128 + SIGTERM, as a terminated process does)."""


class Interrupt:
    """Whether Ctrl-C (or SIGTERM) came; :meth:`check` raises ``KeyboardInterrupt`` (:class:`Terminated`) if so."""

    def __init__(self) -> None:
        self.requested = False
        self.signal = None

    def check(self, *_args) -> None:
        """Raise the deferred ``KeyboardInterrupt``; takes and ignores arguments, so that it can sit in a
        progress callback."""
        if self.requested:
            raise Terminated if self.signal == signal.SIGTERM else KeyboardInterrupt

    def _handle(self, signum, frame) -> None:
        if self.requested:  # the second one: the user does not want to wait for a safe point
            raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        self.requested, self.signal = True, signum


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[Interrupt]:
    """Defer the first SIGINT to the :meth:`Interrupt.check` calls inside the block.

    Outside the main thread (where Python does not allow signal handlers) or where
    SIGINT is ignored (a job started with ``nohup``), SIGINT handling stays as it is
    and ``check`` never raises.

    Examples
    --------
    >>> import os, signal
    >>> with deferred_interrupt() as stop:
    ...     os.kill(os.getpid(), signal.SIGINT)  # noted, not raised here
    ...     try:
    ...         stop.check()
    ...     except KeyboardInterrupt:
    ...         print("stopped at the check")
    stopped at the check
    """
    state = Interrupt()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    # SIGINT where it is not ignored (nohup); SIGTERM where it still has the default (dying at once).
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if handler not in (signal.SIG_IGN, None) and (sig == signal.SIGINT or handler in (signal.SIG_DFL, _terminated)):
            previous[sig] = handler
            signal.signal(sig, state._handle)
    try:
        yield state
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _terminated(signum, frame) -> None:
    raise Terminated


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Inside the block a SIGTERM raises :class:`Terminated` where it lands, as Ctrl-C raises
    ``KeyboardInterrupt``: a command then says that it was stopped and what it kept, and exits 143 (Python's
    default died on the spot, without a word: ``corrupt`` under a scheduler's time limit).  Only in the main
    thread and where SIGTERM has its default; :func:`deferred_interrupt` inside the block defers it as it
    defers Ctrl-C."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
