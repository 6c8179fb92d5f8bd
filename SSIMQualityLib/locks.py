"""One writer at a time: a results file or report folder that a running ``ssimquality score`` is writing is
refused to a second run, instead of the two overwriting each other's saves.

Two array-job tasks given the same ``-o`` (a typo in a job script, a task started twice) both passed the
up-front "exists already" check and then saved over each other, each reporting success, and the file held one
task's volumes.  The guard is an advisory POSIX lock (``fcntl.lockf``) on a hidden file beside the output: the
system drops it when its process ends, however it ends (a killed task's results can be resumed at once), and a
shared file system that passes POSIX locks between machines (NFS does) holds it across a cluster's nodes.  Where
``fcntl`` does not exist (Windows), or the file system takes no locks (NFS mounted ``nolock``, Lustre without
``flock``), or the lock file cannot be made (the caller's own checks then say why the output cannot be written),
runs are not guarded.
"""
from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Iterator, Optional, Union

from .errors import SSIMQualityError


def lock_path(target: Union[str, Path]) -> Path:
    """The lock file of an output: ``runs/part-1.csv`` → ``runs/.part-1.csv.lock``.

    >>> lock_path("runs/part-1.csv").as_posix()
    'runs/.part-1.csv.lock'
    """
    p = Path(target)
    return p.with_name(f".{p.name}.lock")


@contextlib.contextmanager
def writer_lock(target: Optional[Union[str, Path]], what: str = "these results") -> Iterator[None]:
    """Hold the lock of ``target`` (a file or folder that may not exist yet) for the block; refuse at once, in one
    line, when another process holds it.  Nothing happens for ``target`` None, or where its folder does not exist
    (the caller's own checks refuse that)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        fcntl = None
    resolved = Path(target).resolve() if target is not None else None  # "-o ." and "--report-dir ." too
    if resolved is None or fcntl is None or not resolved.name or not resolved.parent.is_dir():
        yield
        return
    path = lock_path(resolved)
    for _ in range(3):
        try:
            handle = open(path, "a+")
        except OSError:  # not writable (/proc, a read-only folder): the caller's checks refuse it in one line
            yield
            return
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            if exc.errno not in (errno.EAGAIN, errno.EACCES):  # no locks on this file system: not guarded
                with contextlib.suppress(OSError):
                    path.unlink()
                yield
                return
            raise SSIMQualityError(f"another ssimquality run is writing {what} now", str(target),
                                   "give each run (each --shard) its own -o and --report-dir, or wait for that run "
                                   "to end") from None
        # The holder before us may have removed the file between our open and our lock: then we hold a lock on a
        # file nobody else can see, and must take the one that is there now.
        try:
            same = os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()
    else:  # pragma: no cover - three races in a row
        raise SSIMQualityError(f"could not take the lock of {what}", str(target), "run the command again")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still held: the next run makes a fresh one
        handle.close()
