"""Seeds: what every random draw of the project accepts, checked in one place."""
from __future__ import annotations

import numbers
from typing import Optional, Union

import numpy as np

from .errors import BadParameterError

#: A seed: None (fresh entropy), a whole number >= 0, or a generator to draw from.
Seed = Union[None, int, np.random.Generator]


def check_seed(seed: Seed) -> Optional[int]:
    """``seed`` as an int >= 0 or None; a generator gives one draw of it.  Anything else raises
    :class:`~SSIMQualityLib.errors.BadParameterError` (numpy's own message names a C function).

    Examples
    --------
    >>> check_seed(3), check_seed(None), check_seed(np.int64(7))
    (3, None, 7)
    >>> check_seed(-1)
    Traceback (most recent call last):
    ...
    SSIMQualityLib.errors.BadParameterError: seed must be a whole number of 0 or more, or None for a fresh draw; got -1.
    """
    if seed is None:
        return None
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(2 ** 63))
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool) and int(seed) >= 0:
        return int(seed)
    raise BadParameterError(f"seed must be a whole number of 0 or more, or None for a fresh draw; got {seed!r}")


def fresh_seed(high: int = 2 ** 32) -> int:
    """A new seed in [0, ``high``) from the system's entropy, to draw with and to say, so that a run one liked
    can be repeated (``corrupt`` without ``--seed``; the Slicer module's seed -1, below what its panel can hold).

    >>> 0 <= fresh_seed() < 2 ** 32, 0 <= fresh_seed(1000) < 1000
    (True, True)
    """
    return int(np.random.SeedSequence().entropy % high)


def as_rng(seed: Seed) -> np.random.Generator:
    """A generator for ``seed``: the generator itself, or a new one seeded by :func:`check_seed`'s value."""
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(check_seed(seed))
