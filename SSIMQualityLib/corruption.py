"""Corrupting a whole volume slice by slice, with the true SSIM of each slice.

This is what ``ssimquality corrupt`` and the Slicer module's "corrupt" step
run: every slice along one axis is corrupted in 2-D, as in training, and
its label is computed by the project's convention (each slice normalised on
its own, SSIM with data_range 1 and a 7 × 7 window) on the values that are
actually written out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .motion import (RandomKSpaceMotion, RandomMotion, RandomTorchioMotion, TorchioMotion, _check_severity,
                     apply_motion_batch)
from .errors import BadParameterError
from .seeds import Seed, check_seed
from .slices import magnitude, normalize, signed_message, signed_share, warn_image
from .ssim import ssim
from .vocabulary import CORRUPTION_METHODS, KSPACE, TORCHIO

Progress = Optional[Callable[[int, int], None]]


@dataclass
class CorruptionResult:
    """Corrupted voxels (same shape and dtype handling as the input) and per-slice labels."""

    array: np.ndarray
    ssim: np.ndarray
    axis: int
    #: Per slice: enough head to be scored (the test ``score`` applies to the clean slice); summaries of the true
    #: SSIM are over these, as the scores' are (an air slice's SSIM says nothing of the motion).
    foreground: Optional[np.ndarray] = None
    #: Per slice, the algorithm that moved it ("kspace", "paper" or "torchio"; "random" picks one a slice).
    methods: Optional[List[str]] = None

    def summary(self) -> dict:
        """:func:`true_ssim_summary` of this corruption."""
        return true_ssim_summary(self.ssim, self.foreground)


def true_ssim_summary(ssim: np.ndarray, foreground: Optional[np.ndarray] = None) -> dict:
    """The true SSIM of a corrupted volume over its slices with enough head: slices, slices_with_head, over
    (the text for "over ..."), mean, min, max and the 10th, 50th and 90th percentiles (p10, p50, p90); over all
    slices where none has head or ``foreground`` is None.

    >>> s = true_ssim_summary(np.array([1.0, 0.5, 0.7]), np.array([False, True, True]))
    >>> s["mean"], s["over"]
    (0.6, 'the 2 slices with enough head to score')
    >>> true_ssim_summary(np.array([1.0, 0.5]), np.array([False, False]))["over"]
    'all slices (none has enough head to score)'
    """
    ssim = np.asarray(ssim, dtype=float)
    fg = np.ones(len(ssim), bool) if foreground is None else np.asarray(foreground, bool)
    with_head = int(fg.sum()) if foreground is not None else None
    if foreground is None or fg.all():
        over = "all slices"
    elif not fg.any():
        over, fg = "all slices (none has enough head to score)", np.ones(len(ssim), bool)
    else:
        over = f"the {with_head} slice{'' if with_head == 1 else 's'} with enough head to score"
    s = ssim[fg]
    p10, p50, p90 = np.percentile(s, [10, 50, 90])
    return {"slices": int(len(ssim)), "slices_with_head": with_head, "over": over, "mean": float(s.mean()),
            "min": float(s.min()), "max": float(s.max()), "p10": float(p10), "p50": float(p50), "p90": float(p90)}


def severity_text(severity: Union[float, Tuple[float, float]]) -> str:
    """A severity as ``ssimquality corrupt --severity`` takes it, and as output names show it.

    Examples
    --------
    >>> severity_text(0.5), severity_text((0.2, 0.6))
    ('0.5', '0.2,0.6')
    """
    lo, hi = _check_severity(severity)
    return f"{lo:g}" if lo == hi and np.isscalar(severity) else f"{lo:g},{hi:g}"


def make_corruptor(method: str = "kspace", severity: Union[float, Tuple[float, float]] = 0.5, paper: bool = False):
    """The random transform for a method name ("kspace", "paper", "torchio" or "random")."""
    if method == "kspace":
        return RandomKSpaceMotion(severity, paper=paper)
    if method == "paper":
        return RandomKSpaceMotion(severity, paper=True, max_degrees=5.0)
    if method == "torchio":
        return RandomTorchioMotion(severity)
    if method == "random":
        return RandomMotion("random", severity)
    raise BadParameterError(f"unknown method {method!r}; choose {', '.join(CORRUPTION_METHODS)}")


#: What corruption does with signed intensities, and what to do instead.
SIGNED_CORRUPTION = "motion is simulated on magnitude images, so they become 0: corrupt the magnitude image instead"


def signed_warning(volume: np.ndarray, name: str) -> Optional[str]:
    """The warning line for a volume of signed intensities (:func:`~SSIMQualityLib.slices.signed_message`),
    which corruption turns into a magnitude image first (negatives become 0); None for a magnitude image.
    Printed by ``ssimquality corrupt`` and logged by the Slicer module.

    >>> signed_warning(np.ones((2, 4, 4)), "t1.nii") is None
    True
    >>> signed_warning(np.linspace(-1, 1, 32).reshape(2, 4, 4), "z.nii")[:16]
    'warning: z.nii: '
    """
    return signed_message(signed_share(volume), name, SIGNED_CORRUPTION)


def slice_labels(clean: torch.Tensor, corrupted: torch.Tensor) -> torch.Tensor:
    """The project's label for each pair of raw slices (B, H, W): SSIM of the normalised slices."""
    return ssim(normalize(clean.double()), normalize(corrupted.double()), data_range=1.0)


def corrupt_volume(volume: np.ndarray, axis: Optional[int], method: str = "kspace",
                   severity: Union[float, Tuple[float, float]] = 0.5, seed: Seed = None,
                   batch_size: int = 32, device: Union[str, torch.device] = "cpu",
                   out_dtype: Optional[np.dtype] = None, progress: Progress = None,
                   noise_fixed: bool = True, *, spacing: Optional[Sequence[float]] = None) -> CorruptionResult:
    """Corrupt every slice of ``volume`` along ``axis``.

    Parameters
    ----------
    volume : ndarray, 3-D
        Raw intensities, any real dtype.
    axis : int or None
        Array axis to slice along; None: the acquisition axis, as ``score`` picks it from ``spacing`` (the
        thickest voxels; with no ``spacing``, axis 0 unless its slices are too thin).
    method : str
        "kspace" (ours), "paper" (the paper's k-space variant), "torchio" or "random".
    severity : float in [0, 1] or (low, high)
        0 leaves every slice untouched; a range draws one severity per slice.
    seed : int, optional
        Same seed, same output.  Each slice gets its own stream spawned from
        it, so the drawn parameters do not depend on ``batch_size``
        (only float32 FFT round-off does).
    out_dtype : dtype, optional
        dtype the result is cast to (rounded and clipped for integers) before
        the labels are computed, so labels describe the written file.
    progress : callable(done, total), optional
    spacing : sequence of 3 floats, optional
        Voxel size per array axis (``Volume.spacing``), for ``axis=None``.
    noise_fixed : bool
        The project's label definition (default): each slice is split into an
        estimate of the noise-free head and its complex noise, only the
        estimate is moved and the same noise is added back before the
        magnitude, so the scan's own noise stays where it was acquired
        (:mod:`SSIMQualityLib.noise`).  False moves the whole slice, noise
        included (the paper's definition).

    Returns
    -------
    CorruptionResult
    """
    from .errors import whole_number
    from .models import resolve_device
    from .scoring import foreground_slices
    from .slices import slicing_axis
    from .volumes import cast_like, checked_array

    # Checked as a file's voxels are (read_volume), and before any work: NaN spread to hundreds of voxels and
    # labels, a list or tensor failed in numpy, axis 3 in np.moveaxis, slices under 16 x 16 in the SSIM.
    spacing = (1.0, 1.0, 1.0) if spacing is None else spacing
    volume = checked_array(volume, spacing)
    axis = slicing_axis(spacing, axis, shape=volume.shape)
    batch_size = whole_number(batch_size, "batch_size", low=1)
    corruptor = make_corruptor(method, severity)
    device = resolve_device(device)
    moved = np.moveaxis(volume, axis, 0)
    warn_image(signed_warning(moved, "the volume"))  # the commands say it in their own line, naming the file
    moved = magnitude(moved)  # the motion models return magnitudes: compare like with like
    n = moved.shape[0]
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(check_seed(seed)).spawn(n)]
    dtype = np.dtype(out_dtype) if out_dtype is not None else np.dtype(np.float32)
    out = np.empty(moved.shape, dtype=dtype)  # not float32: the top of an int32 range is no float32 number
    labels = np.empty(n, dtype=np.float64)
    foreground, methods = foreground_slices(moved), []
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        clean = torch.as_tensor(np.ascontiguousarray(moved[start:stop], dtype=np.float32)).to(device)
        transforms = [corruptor.sample(tuple(clean.shape[-2:]), streams[i]) for i in range(start, stop)]
        methods += [TORCHIO if isinstance(t, TorchioMotion) else method if method == "paper" else KSPACE
                    for t in transforms]
        if noise_fixed:
            from .noise import move_anatomy_batch

            # Each slice's split draws its noise phase from its own stream, after its motion (which stays as it was).
            seeds = [int(streams[i].integers(2 ** 63)) for i in range(start, stop)]
            corrupted = move_anatomy_batch(clean.cpu().numpy(), transforms, device=clean.device, seeds=seeds)
        else:
            corrupted = apply_motion_batch(clean, transforms).cpu().numpy()
        corrupted = cast_like(corrupted, dtype)
        out[start:stop] = corrupted
        labels[start:stop] = slice_labels(clean.cpu(), torch.as_tensor(corrupted.astype(np.float32))).numpy()
        if progress is not None:
            progress(stop, n)
    result = np.moveaxis(out, 0, axis)
    return CorruptionResult(array=result, ssim=labels, axis=axis, foreground=foreground, methods=methods)
