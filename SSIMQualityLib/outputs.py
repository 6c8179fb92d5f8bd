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


def ensure_writable(path: PathLike, force: bool = False, suffixes: Optional[Sequence[str]] = None, *,
                    probe: bool = True) -> Path:
    """Check an output path before any work is done.

    ``probe=False`` leaves out the test of writing into the folder, for a caller that makes its own file there at
    once (:func:`atomic_write`: its temporary file is that test).

    Raises
    ------
    UnsupportedImageError
        The name does not end with one of ``suffixes``.
    OutputExistsError
        The file exists and ``force`` is false, or the path is a folder.
    UnreadableFileError
        The destination folder does not exist, is a file, or cannot be written to.
    """
    p = Path(path)
    if suffixes and matching_suffix(p, suffixes) is None:
        raise UnsupportedImageError("unknown output format", str(path), f"end the name with one of {', '.join(suffixes)}")
    if p.is_dir():
        raise OutputExistsError("output is an existing folder", str(path), "give a file name")
    if p.exists() and not force:
        raise OutputExistsError("output file exists already", str(path), "choose another name or pass --force to overwrite")
    parent = p.parent if str(p.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise UnreadableFileError("is a file, not a folder to write into", str(parent), "give a path inside a folder")
    if not parent.is_dir():
        raise UnreadableFileError("output folder does not exist", str(parent), "create it first")
    if probe:
        ensure_folder_writable(parent)
    return p


def ensure_folder_writable(folder: PathLike) -> None:
    """Refuse, before any work, a folder the output cannot be written into: by creating and removing a file
    there, the one test that holds for read-only mounts, immutable folders and the superuser alike.

    Examples
    --------
    >>> import tempfile
    >>> ensure_folder_writable(tempfile.mkdtemp())
    >>> ensure_folder_writable("/proc")
    Traceback (most recent call last):
    ...
    SSIMQualityLib.errors.UnreadableFileError: /proc: output folder cannot be written to (...). Choose another folder or fix its permissions.
    """
    os.remove(_temp_file(folder, ".ssimquality-write-test.", ""))


def _temp_file(folder: PathLike, prefix: str, suffix: str, *, directory: bool = False) -> str:
    """A new empty file (or, with ``directory``, folder) in ``folder`` (its path); a folder that cannot be
    written into is one clear error."""
    try:
        if directory:
            return tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=str(folder))
        fd, path = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=str(folder))
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UnreadableFileError(f"output folder cannot be written to ({reason})", str(folder),
                                  "choose another folder or fix its permissions") from None
    os.close(fd)
    return path


def ensure_folder(folder: PathLike) -> Path:
    """An output folder, made if needed (with its parents), and writable; one clear error when the path is a
    file or cannot be made or written into."""
    p = Path(folder)
    if p.exists() and not p.is_dir():
        raise OutputExistsError("is a file, not a folder", str(folder), "give a folder name for this output")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UnreadableFileError(f"output folder cannot be made ({reason})", str(folder),
                                  "choose another place or fix its permissions") from None
    ensure_folder_writable(p)
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
    p = ensure_writable(path, force, suffixes, probe=False)
    suffix = matching_suffix(p, suffixes) if suffixes else "".join(p.suffixes[-2:])
    tmp = _temp_file(p.parent.resolve(), f".{p.name}.", ".tmp" + (suffix or ""))
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


@contextmanager
def atomic_write_with_companions(path: PathLike, force: bool = False,
                                 suffixes: Optional[Sequence[str]] = None) -> Iterator[str]:
    """:func:`atomic_write` for writers that may put more than one file beside ``path``: a header and its data
    file (``.nhdr`` + ``.raw.gz``, ``.mhd`` + ``.zraw``), which the header names by its own name.

    The name given is ``path``'s own, inside a new hidden folder beside it; on success every file written
    there is moved beside ``path`` (the companions first, the named file last), and the folder goes.  With
    :func:`atomic_write` the data file kept the temporary name, hidden, and was left behind on every rewrite.
    A companion that would replace an existing file is refused without ``force``.

    Examples
    --------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> with atomic_write_with_companions(os.path.join(d, "v.nhdr")) as tmp:
    ...     _ = open(tmp, "w").write("data file: v.raw")
    ...     _ = open(os.path.join(os.path.dirname(tmp), "v.raw"), "w").write("voxels")
    >>> sorted(os.listdir(d))
    ['v.nhdr', 'v.raw']
    """
    import shutil

    p = ensure_writable(path, force, suffixes, probe=False)
    folder = _temp_file(p.parent.resolve(), f".{p.name}.", ".tmp", directory=True)
    try:
        yield os.path.join(folder, p.name)
        made = sorted(os.listdir(folder), key=lambda name: name == p.name)  # the named file last
        for name in made:
            if name != p.name and (p.parent / name).exists() and not force:
                raise OutputExistsError("output file exists already (written with the volume's header)",
                                        str(p.parent / name), "choose another name or pass --force to overwrite")
        for name in made:
            os.replace(os.path.join(folder, name), p.parent / name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_text(path: PathLike, text: str, force: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, force) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
    return Path(path)


@contextmanager
def output_folder(folder: PathLike) -> Iterator[Path]:
    """:func:`ensure_folder` for a command's output folder; a folder it made is removed again when the command
    fails before writing anything there (a bad input must not leave empty folders behind)."""
    existed = Path(folder).exists()
    p = ensure_folder(folder)
    try:
        yield p
    except BaseException:
        if not existed and p.is_dir() and not any(p.iterdir()):
            p.rmdir()
        raise


def json_text(doc, *, indent: int = 1) -> str:
    """``doc`` as strict JSON text (with a final newline): NaN and infinities become null, numpy numbers plain
    ones.  Python writes ``NaN`` by default, which ``JSON.parse``, jq and strict parsers refuse.

    Examples
    --------
    >>> import numpy as np
    >>> json_text({"mean": float("nan"), "n": np.int64(3), "x": [np.float32(0.5)]}, indent=None).strip()
    '{"mean": null, "n": 3, "x": [0.5]}'
    """
    import json
    import math

    import numpy as np

    def plain(o):
        if isinstance(o, dict):
            return {k: plain(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [plain(v) for v in o]
        if isinstance(o, (bool, np.bool_)):
            return bool(o)
        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, (float, np.floating)):
            return float(o) if math.isfinite(o) else None
        if isinstance(o, np.ndarray):
            return plain(o.tolist())
        return o

    return json.dumps(plain(doc), indent=indent, allow_nan=False) + "\n"
