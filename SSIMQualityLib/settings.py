"""Settings read from the environment: each name once, here, with the one rule that reads a number from it.

A setting is checked before a command does any work (``ssimquality``'s entry point calls each reader once):
a value like ``4G`` used to refuse every volume, one line each, or to surface as an unexpected error after
the model had loaded.
"""
from __future__ import annotations

import math
import os
from typing import Optional

from .errors import SSIMQualityError

#: Gigabytes this process may use (instead of the free memory and the control group's room).
MEMORY_LIMIT_ENV = "SSIMQUALITY_MEMORY_LIMIT_GB"
#: Seconds between two saves of ``score``'s results while it runs.
SAVE_EVERY_ENV = "SSIMQUALITY_SAVE_EVERY_S"


def env_number(name: str, *, unit: str, example: str, unset: str, zero_ok: bool = False) -> Optional[float]:
    """The number in ``$name`` (None when unset or empty); one line for any other value, or for a value below 0
    (or at 0, unless ``zero_ok``).

    >>> os.environ["SSIMQUALITY_EXAMPLE"] = "2.5"
    >>> env_number("SSIMQUALITY_EXAMPLE", unit="gigabytes", example="4", unset="")
    2.5
    >>> os.environ["SSIMQUALITY_EXAMPLE"] = "4G"
    >>> env_number("SSIMQUALITY_EXAMPLE", unit="gigabytes", example="4", unset="to use the free memory")
    Traceback (most recent call last):
    ...
    SSIMQualityLib.errors.SSIMQualityError: SSIMQUALITY_EXAMPLE='4G' is not a positive number of gigabytes. Give e.g. SSIMQUALITY_EXAMPLE=4, or unset it to use the free memory.
    >>> del os.environ["SSIMQUALITY_EXAMPLE"]
    """
    text = os.environ.get(name)
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and (value >= 0 if zero_ok else value > 0)):
        kind = f"number of {unit} of 0 or more" if zero_ok else f"positive number of {unit}"
        raise SSIMQualityError(f"{name}={text!r} is not a {kind}", hint=f"give e.g. {name}={example}, or unset it "
                                                                        f"{unset}")
    return value
