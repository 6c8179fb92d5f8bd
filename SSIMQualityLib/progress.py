"""Progress bars that appear only where a person watches.

A bar redraws itself with carriage returns and cursor codes.  In a terminal
that is what a person wants; in a log file, a pipe or a batch scheduler's
output it buries the one line that matters (an error) under thousands of
fragments.  So bars are drawn only when stderr is a terminal, unless the
user asks otherwise: ``--progress`` / ``--quiet`` on the command line, or
``SSIMQUALITY_PROGRESS=1`` / ``0`` in the environment.
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
    """A tqdm bar on stderr, disabled unless :func:`wants_progress` says to draw it."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not wants_progress(show), file=sys.stderr, **kwargs)


def say(line: str) -> None:
    """One line on stderr that does not tear a bar being drawn."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)
