"""The project's own error types.

Every problem a user can cause (a bad file, an odd geometry, a broken model
file, an output that already exists) is raised as an :class:`SSIMQualityError`
at the boundary where it is detected, with a message that names the file, the
problem and what to do.  Entry points (CLI, Slicer Logic) turn it into one
readable line instead of a traceback.
"""
from __future__ import annotations

from typing import Optional


class SSIMQualityError(Exception):
    """Base class: a problem the user can fix.

    Parameters
    ----------
    problem : str
        What is wrong, in plain words.
    path : str, optional
        The file or folder concerned.
    hint : str, optional
        What to do about it.
    """

    def __init__(self, problem: str, path: Optional[str] = None, hint: Optional[str] = None):
        self.problem = problem
        self.path = None if path is None else str(path)
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """The message as a single line: ``FILE: problem. hint``."""
        text = self.problem.rstrip(".")
        if self.path is not None:
            text = f"{self.path}: {text}"
        if self.hint:
            hint = self.hint.rstrip(".")
            text = f"{text}. {hint[:1].upper()}{hint[1:]}."
        else:
            text += "."
        return " ".join(text.split())


class BadParameterError(SSIMQualityError, ValueError):
    """A parameter outside its range or not one of its choices (a method, a severity, a seed, a slice's shape):
    an :class:`SSIMQualityError`, one line at the entry points, and a ``ValueError``, as numpy and scikit-image
    raise for a bad parameter, so that either ``except`` catches it."""


class UnreadableFileError(SSIMQualityError):
    """A file or folder that cannot be read as an image volume."""


class UnsupportedImageError(SSIMQualityError):
    """An image that was read but cannot be scored or corrupted (4D, 2D, NaN, RGB ...)."""


class BadModelFileError(SSIMQualityError):
    """A model checkpoint that is missing, truncated, tampered with or of another architecture."""


class OutputExistsError(SSIMQualityError):
    """An output file exists already and ``force`` was not given."""


class MissingDependencyError(SSIMQualityError):
    """A Python package the requested work needs is not installed."""


def whole_number(value, what: str, *, low: int = 0, path: Optional[str] = None) -> int:
    """``value`` as an int when it is a whole number of ``low`` or more (not a bool, not 2.5, not "1"), else a
    :class:`BadParameterError` naming ``what`` (a size, a count, an index given to a library function).

    >>> whole_number(3, "batch_size", low=1)
    3
    >>> whole_number(2.5, "batch_size", low=1)
    Traceback (most recent call last):
    ...
    SSIMQualityLib.errors.BadParameterError: batch_size must be a whole number of 1 or more, got 2.5.
    """
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise BadParameterError(f"{what} must be a whole number of {low} or more, got {value!r}", path)
    return int(value)
