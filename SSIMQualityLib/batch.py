"""The scoring loop for many volumes: files read ahead, one model, batches across volumes.

Used by ``ssimquality score`` and the Slicer CLI module.  Reading and
decompressing the next volumes runs in the background while the model works
on the current ones; a bad file is reported and skipped, never fatal to the
batch.  Writing the results is :mod:`.results`, reading them back for
``--resume`` :mod:`.resume`, the per-volume figures :mod:`.report`.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Union

import numpy as np

from .errors import SSIMQualityError
from .scoring import VolumeScore


@dataclass
class VolumeResult:
    """The outcome for one input: a score, or the error that stopped it."""

    file: str
    score: Optional[VolumeScore] = None
    error: Optional[SSIMQualityError] = None
    extra: dict = field(default_factory=dict)
    array: Optional[np.ndarray] = None  # the voxels, kept only until the caller has drawn them
    direction: Optional[tuple] = None  # the volume's orientation, to draw its slices the way a viewer shows them

    def slice_rows(self) -> List[dict]:
        if self.score is None:
            return []
        return [{"file": self.file, **r} for r in self.score.rows()]

    def summary(self) -> dict:
        """The volume's row of the summary (:data:`~SSIMQualityLib.vocabulary.SUMMARY_COLUMNS`): its scores'
        summary with ``note`` the warning about the volume ("" for none), so that a mask or noise graded "good"
        says so in the table and not only on the screen; a file that could not be scored: verdict "not scored"
        and the reason."""
        from .vocabulary import VERDICT_NOT_SCORED

        if self.score is None:
            s = {"file": self.file}
            if self.error is not None:
                s.update(verdict=VERDICT_NOT_SCORED, note=self.error.one_line())
        else:
            line = self.score.warning(self.file) or ""
            prefix = f"warning: {self.file}: "
            s = {"file": self.file, **self.score.summary(), "note": line[len(prefix):] if line.startswith(prefix) else line}
        s.update(self.extra)
        return s


def read_or_error(path: Path, frame: Optional[int] = None, series_uid: Optional[str] = None):
    """``(volume, None)``, or ``(None, error)`` with an :class:`SSIMQualityError` for one line: in a batch, any
    failure to read a file, expected or not, is that file's problem and the batch goes on."""
    from .volumes import first_line, read_volume

    try:
        return read_volume(path, frame=frame, series_uid=series_uid), None
    except SSIMQualityError as exc:
        return None, exc
    except Exception as exc:  # an unexpected reader failure is still one file's problem
        from .errors import UnreadableFileError

        return None, UnreadableFileError(f"could not be read ({type(exc).__name__}: {first_line(exc)})", str(path),
                                         "check the file")


def _ignore_sigint() -> None:
    """A reader process's start: Ctrl-C is the parent's to handle.

    A terminal sends SIGINT to every process of the job; a reader killed by
    it would break the pool, and the parent, which stops at its next safe
    point (:func:`~SSIMQualityLib.interrupts.deferred_interrupt`), would
    report a broken pool instead of saving what it finished.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _reader_pool(workers: int, processes: bool):
    """Where files are decoded: worker processes (``processes``), else background threads.

    Processes keep decompression and DICOM parsing off the interpreter that
    drives the device.  They are started by "spawn" (safe with CUDA and with
    torch's thread pools), which re-imports the caller's main module: only a
    program with a ``__main__`` guard (the ``ssimquality`` command) may ask
    for them; a script, a notebook or Slicer keeps threads.  They ignore
    Ctrl-C (:func:`_ignore_sigint`).
    """
    if processes and workers >= 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                   initializer=_ignore_sigint)
    return ThreadPoolExecutor(max_workers=max(1, workers))


def score_files(paths: Sequence[Union[str, Path]], model, device="cpu", batch_size: Optional[int] = None,
                axis: Optional[int] = None, workers: int = 2, frame: Optional[int] = None, bf16: bool = False,
                iqm: bool = False, series_uid: Optional[str] = None, progress: Optional[Callable[[int], None]] = None,
                on_volume: Optional[Callable[[VolumeResult], None]] = None,
                processes: bool = False) -> Iterator[VolumeResult]:
    """Score each file; yields one :class:`VolumeResult` per input in order.

    Up to ``workers`` volumes are read ahead and decoded in background threads,
    or worker processes with ``processes`` (:func:`_reader_pool`), while
    :func:`~SSIMQualityLib.scoring.score_volumes`
    fills network batches with slices of consecutive volumes.  With ``iqm`` the MRIQC metrics join each
    volume's summary.  ``frame`` picks the frame of 4-D files, ``series_uid``
    the series of DICOM folders holding several.
    """
    from .scoring import score_volumes

    paths = [Path(p) for p in paths]
    read: dict = {}  # index -> (volume or None, read error or None), until its result is out

    def volumes():
        with _reader_pool(workers, processes) as pool:
            pending = {}
            ahead = max(1, workers)

            def submit(i):
                if i < len(paths) and i not in pending:
                    pending[i] = pool.submit(read_or_error, paths[i], frame, series_uid)

            for i in range(ahead):
                submit(i)
            for i in range(len(paths)):
                submit(i + ahead)
                vol, err = pending.pop(i).result()
                read[i] = (vol, err)
                yield (i, None, None, None) if err is not None else (i, vol.array, vol.spacing, axis, vol.direction)

    for i, outcome in score_volumes(volumes(), model, device=device, batch_size=batch_size, bf16=bf16,
                                    progress=progress, checked=True):  # read_volume checked each file
        vol, err = read.pop(i)
        path = str(paths[i])
        if err is not None:
            result = VolumeResult(path, error=err)
        elif isinstance(outcome, SSIMQualityError):
            if outcome.path is None:  # score_volumes knows volumes by key only: the error names the file here
                outcome.path = path
            result = VolumeResult(path, error=outcome)
        else:
            result = VolumeResult(path, score=outcome, array=vol.array, direction=vol.direction)
            if iqm:
                from .iqm import compute_iqms

                result.extra = compute_iqms(vol.array, direction=vol.direction).as_dict()
        if on_volume:
            on_volume(result)
        yield result


def shard(paths: Sequence, part: int, parts: int) -> list:
    """Part ``part`` (1-based) of ``parts`` of a list of volumes: contiguous blocks, sizes differing by at most one.

    Contiguous, so that the parts joined in order (:func:`merge_results`) list the
    volumes exactly as one process would.

    Examples
    --------
    >>> [shard(list("abcde"), k, 2) for k in (1, 2)]
    [['a', 'b', 'c'], ['d', 'e']]
    """
    if not 1 <= part <= parts:
        raise SSIMQualityError(f"shard {part}/{parts} does not exist", "--shard", "give K/N with 1 <= K <= N")
    n = len(paths)
    start, stop = -((-n * (part - 1)) // parts), -((-n * part) // parts)  # ceilings: larger blocks first
    return list(paths[start:stop])
