"""Progress bars that appear only where a person watches.

A bar redraws itself with carriage returns and cursor codes.  In a terminal
that is what a person wants; in a log file, a pipe or a batch scheduler's
output it buries the one line that matters (an error) under thousands of
fragments.  So bars are drawn only when stderr is a terminal, unless the
user asks otherwise: ``--progress`` / ``--quiet`` on the command line, or
``SSIMQUALITY_PROGRESS=1`` / ``0`` in the environment.

``SSIMQUALITY_PROGRESS=filter`` is for a program that runs a command and
follows it (the Slicer module's jobs, :mod:`SSIMQualityLib.jobs`): each bar
with a known total reports on stdout in the lines of Slicer's Execution
Model, ``<filter-progress-text>what</filter-progress-text>`` when it starts
and ``<filter-progress>0.42</filter-progress>`` as it advances.
"""
from __future__ import annotations

import os
import sys
from typing import Optional

#: Environment variable that forces bars on (``1``) or off (``0``).
PROGRESS_ENV = "SSIMQUALITY_PROGRESS"


def wants_progress(show: Optional[bool] = None) -> bool:
    """Whether to draw bars: ``show`` if given, else the environment, else whether stderr is a terminal."""
    if show is not None:
        return show
    env = os.environ.get(PROGRESS_ENV, "").strip()
    if env in ("0", "1"):
        return env == "1"
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def bar(total: Optional[int] = None, *, desc: str, unit: str, show: Optional[bool] = None, **kwargs):
    """A tqdm bar on stderr, disabled unless :func:`wants_progress` says to draw it; or, in ``filter``
    mode, a reporter of progress lines on stdout."""
    from tqdm import tqdm

    if show is None and os.environ.get(PROGRESS_ENV, "").strip() == "filter":
        return FilterProgress(total=total, desc=desc, iterable=kwargs.get("iterable"), initial=kwargs.get("initial", 0))
    return tqdm(total=total, desc=desc, unit=unit, disable=not wants_progress(show), file=sys.stderr, **kwargs)


class FilterProgress:
    """The part of tqdm's interface the commands use, reporting ``<filter-progress>`` lines on stdout.

    A bar without a total (a count of slices) says nothing: only the bar that
    knows how far the whole job has come reports, at most once per percent.
    """

    def __init__(self, total: Optional[int] = None, desc: str = "", iterable=None, initial: int = 0):
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.iterable, self.n, self._last = iterable, int(initial or 0), -1.0
        if self.total:
            print(f"<filter-progress-text>{desc}</filter-progress-text>", flush=True)
            self._report()

    def _report(self) -> None:
        done = min(1.0, self.n / self.total)
        if done - self._last >= 0.01 or done == 1.0 and self._last < 1.0:
            print(f"<filter-progress>{done:.3f}</filter-progress>", flush=True)
            self._last = done

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.total:
            self._report()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def write(self, line: str, *args, **kwargs) -> None:
        print(line, flush=True)

    def close(self) -> None:
        pass


def say(line: str) -> None:
    """One line on stderr that does not tear a bar being drawn."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)
