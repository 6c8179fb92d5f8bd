"""Safe outputs: refuse to overwrite without ``force``, write atomically.

Every file the tool writes goes through :func:`atomic_write`: the content is
written under a temporary name in the destination folder and renamed into
place, so an interrupted run never leaves a half-written file, and an
existing file is only replaced when the user asked for it.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

from .errors import OutputExistsError, UnreadableFileError, UnsupportedImageError

PathLike = Union[str, os.PathLike]


def matching_suffix(path: PathLike, suffixes: Sequence[str]) -> Optional[str]:
    """The longest of ``suffixes`` that ``path`` ends with (case-insensitive), or None."""
    name = Path(path).name.lower()
    for s in sorted(suffixes, key=len, reverse=True):
        if name.endswith(s.lower()):
            return s
    return None


def ensure_writable(path: PathLike, force: bool = False, suffixes: Optional[Sequence[str]] = None) -> Path:
    """Check an output path before any work is done.

    Raises
    ------
    UnsupportedImageError
        The name does not end with one of ``suffixes``.
    OutputExistsError
        The file exists and ``force`` is false, or the path is a folder.
    UnreadableFileError
        The destination folder does not exist.
    """
    p = Path(path)
    if suffixes and matching_suffix(p, suffixes) is None:
        raise UnsupportedImageError("unknown output format", str(path), f"end the name with one of {', '.join(suffixes)}")
    if p.is_dir():
        raise OutputExistsError("output is an existing folder", str(path), "give a file name")
    if p.exists() and not force:
        raise OutputExistsError("output file exists already", str(path), "choose another name or pass --force to overwrite")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UnreadableFileError("output folder does not exist", str(parent), "create it first")
    return p


@contextmanager
def atomic_write(path: PathLike, force: bool = False, suffixes: Optional[Sequence[str]] = None) -> Iterator[str]:
    """Context manager giving a temporary file name; on success it is renamed to ``path``.

    The temporary name keeps the destination's suffix so that writers which
    choose the format by extension (SimpleITK) still work.

    Examples
    --------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> with atomic_write(os.path.join(d, "a.txt")) as tmp:
    ...     _ = open(tmp, "w").write("hello")
    >>> open(os.path.join(d, "a.txt")).read()
    'hello'
    """
    p = ensure_writable(path, force, suffixes)
    suffix = matching_suffix(p, suffixes) if suffixes else "".join(p.suffixes[-2:])
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp" + (suffix or ""), dir=str(p.parent.resolve()))
    os.close(fd)
    # mkstemp makes the file private (0600); give it the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: PathLike, text: str, force: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, force) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
    return Path(path)
