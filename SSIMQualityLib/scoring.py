"""Scoring a volume: predicted SSIM per slice and a per-volume summary."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .labels import CLINICAL_NAMES, NOT_SCORED, all_classes
from .orientation import network_slice
from .vocabulary import VERDICT_GOOD_SHARE, VERDICT_NO_FOREGROUND, VERDICT_RESCAN_SHARE
from .slices import (SIGNED_LIMIT, FewValuesWarning, NoiseLikeWarning, distinct_values, few_values_message,
                     foreground_fractions, neighbour_correlation, noise_like_message, prepare_input, signed_message,
                     signed_share, slicing_axis, volume_range, warn_image)

#: What scoring does with signed intensities, and what to do instead.
SIGNED_SCORING = ("the network was trained on magnitude images, so these scores are not reliable: score the "
                  "magnitude image")
#: Slices with less head than this share of pixels are flagged, not scored.
MIN_FOREGROUND = 0.05


@dataclass
class VolumeScore:
    """Per-slice predictions and the volume summary."""

    axis: int
    predicted: np.ndarray  # (n,) predicted SSIM, NaN where not scored
    foreground: np.ndarray  # (n,) bool: enough head to score
    classes: Dict[str, np.ndarray] = field(default_factory=dict)
    signed_share: float = 0.0  # voxels well below zero (slices.signed_share): above SIGNED_LIMIT, not a magnitude image
    distinct_values: int = 0  # slices.distinct_values: a handful (a label map or a mask), 0 for an image
    #: slices.neighbour_correlation, the median over the scored slices (NaN: none scored): about 0 for noise
    neighbour_correlation: float = float("nan")

    def warning(self, name: str) -> Optional[str]:
        """The warning line for a volume that is not a magnitude image (None for one): noise (a shuffled or
        scrambled volume too: its pixels hardly correlate with their neighbours), signed intensities, or a
        handful of distinct values (a label map or a mask loaded as an image).  Each got a verdict, and the
        network was trained on magnitude images, so its scores of such a volume are not to be trusted.  Noise
        comes first: it says the most (Gaussian noise is signed too)."""
        return (noise_like_message(self.neighbour_correlation, name)
                or signed_message(self.signed_share, name, SIGNED_SCORING)
                or few_values_message(self.distinct_values, name))

    def rows(self) -> List[dict]:
        out = []
        for i, (p, fg) in enumerate(zip(self.predicted, self.foreground)):
            row = {"axis": self.axis, "slice": i, "predicted_ssim": float(p), "foreground": bool(fg)}
            for k, v in self.classes.items():
                row[k] = int(v[i]) if fg else NOT_SCORED
            out.append(row)
        return out

    def summary(self) -> dict:
        p = self.predicted[self.foreground]
        if p.size == 0:
            return {"slices": int(len(self.predicted)), "slices_scored": 0, "mean_predicted_ssim": float("nan"),
                    "min_predicted_ssim": float("nan"), "fraction_good": float("nan"),
                    "fraction_sufficient": float("nan"), "fraction_rescan": float("nan"), "verdict": VERDICT_NO_FOREGROUND}
        cc = self.classes["clinical_class"][self.foreground]
        frac = {name: float(np.mean(cc == k)) for k, name in CLINICAL_NAMES.items()}
        verdict = verdict_for(frac)
        return {"slices": int(len(self.predicted)), "slices_scored": int(p.size),
                "mean_predicted_ssim": float(p.mean()), "min_predicted_ssim": float(p.min()),
                "fraction_good": frac["good"], "fraction_sufficient": frac["sufficient"],
                "fraction_rescan": frac["rescan"], "verdict": verdict}


def verdict_for(fractions: Dict[str, float], rescan_share: float = VERDICT_RESCAN_SHARE,
                good_share: float = VERDICT_GOOD_SHARE) -> str:
    """Volume verdict from the clinical class shares: rescan if ≥ 20 % of slices say so, good if ≥ 80 % good."""
    if fractions[CLINICAL_NAMES[3]] >= rescan_share:
        return CLINICAL_NAMES[3]
    if fractions[CLINICAL_NAMES[1]] >= good_share:
        return CLINICAL_NAMES[1]
    return CLINICAL_NAMES[2]


def summary_line(summary: dict) -> str:
    """A volume's summary (:meth:`VolumeScore.summary`) in one line for a person: slice counts, not rounded
    shares (19.6 % rescan printed as "20 %" beside the verdict "good" read as a contradiction), and the rule.

    >>> summary_line({"slices": 60, "slices_scored": 51, "mean_predicted_ssim": 0.861, "min_predicted_ssim": 0.5,
    ...               "fraction_good": 41 / 51, "fraction_sufficient": 0.0, "fraction_rescan": 10 / 51,
    ...               "verdict": "good"})
    '51 of 60 slices scored: mean predicted SSIM 0.861, min 0.500; 41 good, 0 sufficient, 10 rescan -> good (rescan from 20% rescan slices, good from 80% good)'
    """
    n = int(summary["slices_scored"])
    if not n:
        return f"no slice of {summary['slices']} had enough head to score"
    count = {name: int(round(summary[f"fraction_{name}"] * n)) for name in CLINICAL_NAMES.values()}
    return (f"{n} of {summary['slices']} slices scored: mean predicted SSIM {summary['mean_predicted_ssim']:.3f}, "
            f"min {summary['min_predicted_ssim']:.3f}; " + ", ".join(f"{c} {name}" for name, c in count.items())
            + f" -> {summary['verdict']} (rescan from {VERDICT_RESCAN_SHARE:.0%} rescan slices, good from "
              f"{VERDICT_GOOD_SHARE:.0%} good)")


def stack_foreground(stack: torch.Tensor, reference: Tuple[float, float], threshold: float = 0.1) -> torch.Tensor:
    """Which slices of a float (n, H, W) stack, on any device, hold enough head to score (bool (n,)): at
    least ``MIN_FOREGROUND`` of their pixels above ``threshold`` of the way through the volume's range
    ``reference`` (min → p99.5) *and* through their own (:func:`~SSIMQualityLib.slices.foreground_fractions`).
    """
    return ((foreground_fractions(stack, threshold, reference) >= MIN_FOREGROUND)
            & (foreground_fractions(stack, threshold) >= MIN_FOREGROUND))


def foreground_slices(moved: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Which slices of a (n, H, W) stack hold enough head to score: at least ``MIN_FOREGROUND`` of their
    pixels above 10 % of the volume's range (min → p99.5), and of their own range too.

    The volume's range keeps out empty slices of tiny values (air above the head), which the slice's own
    range would call all foreground and whose normalised label is meaningless.
    """
    ref = volume_range(moved)
    out = np.zeros(moved.shape[0], dtype=bool)
    for i in range(0, moved.shape[0], chunk):
        t = torch.as_tensor(np.ascontiguousarray(moved[i:i + chunk], dtype=np.float32))
        out[i:i + chunk] = stack_foreground(t, ref).numpy()
    return out


def _run_model(model, x: torch.Tensor, bf16: bool) -> torch.Tensor:
    """The network on a prepared (B, 1, 256, 256) batch already on its device; bf16 autocast where asked."""
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        return model(x).float()


def _use_bf16(bf16: bool, dev: torch.device) -> bool:
    """bf16 is honoured only where the device computes it natively (emulated, it is 40–50× slower)."""
    if not bf16:
        return False
    from .precision import BFLOAT16, fast_precision

    return fast_precision(dev) == BFLOAT16


def predict_slices(model, slices: torch.Tensor, device: Union[str, torch.device] = "cpu", batch_size: int = 32,
                   bf16: bool = False, progress: Optional[Callable[[int], None]] = None) -> np.ndarray:
    """Predicted SSIM of raw slices (N, H, W), every one of them: :func:`score_volumes` without the
    foreground test (normalised, fitted to 256², batched on ``device``).

    ``bf16`` asks for bfloat16 autocast; it is honoured only where the device
    computes bfloat16 natively (emulated, it is 40–50× slower).
    """
    stack = slices.float().numpy() if isinstance(slices, torch.Tensor) else np.asarray(slices, np.float32)
    if stack.ndim != 3:  # a single 2-D slice failed deep in torch ("required rank 4 tensor")
        from .errors import BadParameterError

        raise BadParameterError(f"slices must be a stack of shape (N, H, W), got shape {stack.shape}",
                                hint="for one slice pass slice[None]")
    if len(stack) == 0:
        return np.zeros(0, np.float32)
    return score_array(model, stack, axis=0, device=device, batch_size=batch_size, bf16=bf16, progress=progress,
                       every_slice=True).predicted.astype(np.float32)


@torch.no_grad()
def predict_prepared(model, x: torch.Tensor, device: Union[str, torch.device] = "cpu", batch_size: int = 256,
                     bf16: bool = False) -> torch.Tensor:
    """Predictions for inputs already prepared (N, 1, S, S) — cached training and validation samples.

    The same network call as :func:`score_volumes` (:func:`_run_model`); ``bf16`` is taken as given (the
    caller has chosen the precision).  Returns a CPU float tensor (N,).
    """
    from .models import resolve_device

    model.eval()
    dev = resolve_device(device)
    out = [_run_model(model, x[i:i + batch_size].to(dev, torch.float32), bf16).cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.zeros(0)


def _to_device(t: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """A CPU tensor onto ``dev``; through pinned memory to a GPU, so the copy overlaps the work."""
    if dev.type == "cuda":
        return t.pin_memory().to(dev, non_blocking=True)
    return t.to(dev)


def default_batch_size(device: Union[str, torch.device]) -> int:
    """Slices per network call: 256 on a GPU (it is idle below that), 32 on a CPU (no gain past it)."""
    return 256 if torch.device(device).type == "cuda" else 32


@dataclass
class _Pending:
    key: object
    axis: int
    predicted: Optional[np.ndarray] = None
    foreground: Optional[np.ndarray] = None
    waiting: int = 0  # foreground slices queued but not yet predicted
    queued_all: bool = False
    error: Optional[BaseException] = None
    signed: float = 0.0  # slices.signed_share of the volume
    values: int = 0  # slices.distinct_values of the volume
    correlations: List[torch.Tensor] = field(default_factory=list)  # neighbour_correlation of the scored slices


@torch.no_grad()
def score_volumes(items: Iterable[tuple], model, *,
                  device: Union[str, torch.device] = "cpu", batch_size: Optional[int] = None, bf16: bool = False,
                  progress: Optional[Callable[[int], None]] = None, every_slice: bool = False,
                  checked: bool = False) -> Iterator[Tuple[object, Union[VolumeScore, BaseException, None]]]:
    """Score a stream of volumes, with network batches that span volumes; the one inference loop.

    ``items`` yields ``(key, volume, spacing, axis)`` or ``(key, volume, spacing, axis, direction)``:
    ``volume`` a (k, j, i) array, or None to pass ``key`` through (a file that could not be read);
    ``axis`` None for the acquisition axis; ``direction`` the volume's (SimpleITK's LPS 3 × 3, row-major).
    With a direction each slice is given to the network in one orientation, a RAS+ volume's
    (:func:`~SSIMQualityLib.orientation.network_slice`), so that one image gets one score however its file
    stores it; without one, as stored.  Yields ``(key, result)`` in the
    order of ``items``: a :class:`VolumeScore`, the
    :class:`~SSIMQualityLib.errors.SSIMQualityError` that stopped this volume,
    or None for a passed-through key.

    Every per-slice step runs on ``device`` in batches: the volume goes there
    a chunk of slices at a time (through pinned memory to a GPU), and the
    foreground test, normalisation, fitting to 256² and the network follow
    there.  Slices of small volumes fill a batch together, so an archive of
    24-slice EPI series keeps a GPU as busy as one large volume does.
    ``every_slice`` skips the foreground test (slices chosen by the caller).  Each volume is checked as a
    file's voxels are (:func:`~SSIMQualityLib.volumes.checked_array`) unless ``checked`` says they were (read by
    :func:`~SSIMQualityLib.volumes.read_volume`: a second check is several passes over every volume).

    A magnitude image with a few voxels below zero (interpolation overshoot of a resampled volume) is scored
    as its magnitude (:func:`~SSIMQualityLib.slices.magnitude`), as the network saw images in training and as
    the evaluations score them: the overshoot otherwise lifts the normalised background (an MNI-space T1, a
    quarter of its air slightly negative: clean slices 0.945 against 0.994).  A volume of signed intensities
    is scored as it is, with :meth:`VolumeScore.warning`.
    """
    from collections import deque

    from .errors import SSIMQualityError, whole_number
    from .models import resolve_device
    from .volumes import checked_array

    if not isinstance(model, torch.nn.Module):
        raise SSIMQualityError(f"the model must be a loaded network, got {type(model).__name__}",
                               hint="load one with load_model(path) or load_bundled_model()")
    if batch_size is not None:
        batch_size = whole_number(batch_size, "batch_size", low=1)
    model.eval()
    dev = resolve_device(device)
    batch_size = batch_size or default_batch_size(dev)
    use_bf16 = _use_bf16(bf16, dev)
    pending: deque = deque()
    inputs: List[torch.Tensor] = []  # prepared (m, 256, 256) chunks on the device
    owners: List[Tuple[_Pending, np.ndarray]] = []  # whose slices each chunk holds
    queued = 0

    def run(all_of_it: bool) -> None:
        nonlocal inputs, owners, queued
        while queued >= batch_size or (all_of_it and queued):
            x = torch.cat(inputs) if len(inputs) > 1 else inputs[0]
            take = min(batch_size, queued)
            pred = _run_model(model, x[:take, None], use_bf16).cpu().numpy().astype(np.float64)
            rest, used = [], 0
            new_owners = []
            for (vol, idx), chunk in zip(owners, inputs):
                n = len(idx)
                if used >= take:
                    new_owners.append((vol, idx))
                    rest.append(chunk)
                    continue
                k = min(n, take - used)
                vol.predicted[idx[:k]] = pred[used:used + k]
                vol.waiting -= k
                used += k
                if k < n:
                    new_owners.append((vol, idx[k:]))
                    rest.append(chunk[k:])
            inputs, owners, queued = rest, new_owners, queued - take
            if progress:
                progress(take)

    def finished():
        while pending and pending[0].queued_all and pending[0].waiting == 0:
            vol = pending.popleft()
            if vol.error is not None or vol.predicted is None:
                yield vol.key, vol.error
            else:
                classes = all_classes(vol.predicted)
                corr = torch.cat(vol.correlations) if vol.correlations else torch.zeros(0)
                yield vol.key, VolumeScore(axis=vol.axis, predicted=vol.predicted, foreground=vol.foreground,
                                           classes=classes, signed_share=vol.signed, distinct_values=vol.values,
                                           neighbour_correlation=float(corr.median()) if len(corr) else float("nan"))

    for key, volume, spacing, axis, *more in items:
        direction = more[0] if more else None
        vol = _Pending(key, -1)
        pending.append(vol)
        if volume is not None:
            try:
                # Checked as a file's voxels are (the caller's own arrays too), in this volume's one line.
                volume = checked_array(volume, spacing, check=not (every_slice or checked))
                # The caller names the volume; slices it chose itself (every_slice) are scored at any size.
                vol.axis = slicing_axis(spacing, axis, shape=None if every_slice else np.shape(volume))
                moved = np.moveaxis(np.asarray(volume), vol.axis, 0)  # a view
                if direction is not None:
                    moved = network_slice(moved, direction=direction, axis=vol.axis)  # a view too
                n = moved.shape[0]
                vol.predicted = np.full(n, np.nan, dtype=np.float64)
                vol.foreground = np.zeros(n, dtype=bool)
                negative = n > 0 and moved.min() < 0  # one pass; most volumes have no negative voxel
                vol.signed = signed_share(moved) if negative else 0.0
                vol.values = 0 if every_slice else distinct_values(volume)
                overshoot = negative and vol.signed <= SIGNED_LIMIT  # clipped, chunk by chunk
                ref = None if every_slice else volume_range(moved)
                # Cast and move a chunk at a time: a large integer volume is never copied whole.
                for s in range(0, n, batch_size):
                    raw = _to_device(torch.from_numpy(np.ascontiguousarray(moved[s:s + batch_size], dtype=np.float32)), dev)
                    if overshoot:  # not in place: on a CPU ``raw`` may share memory with the caller's array
                        raw = raw.clamp_min(0)
                    fg = (torch.ones(len(raw), dtype=torch.bool, device=raw.device) if every_slice
                          else stack_foreground(raw, ref))
                    vol.foreground[s:s + len(raw)] = fg.cpu().numpy()
                    idx = np.flatnonzero(vol.foreground[s:s + len(raw)]) + s
                    if len(idx):
                        scored = raw[fg]
                        vol.correlations.append(neighbour_correlation(scored).cpu())
                        inputs.append(prepare_input(scored))
                        owners.append((vol, idx))
                        vol.waiting += len(idx)
                        queued += len(idx)
                        run(all_of_it=False)
            except SSIMQualityError as exc:
                # Drop what this volume queued; the batches of the others go on.
                keep = [(o, c) for o, c in zip(owners, inputs) if o[0] is not vol]
                queued -= sum(len(o[1]) for o, _ in zip(owners, inputs) if o[0] is vol)
                owners, inputs = [o for o, _ in keep], [c for _, c in keep]
                vol.error, vol.waiting = exc, 0
        vol.queued_all = True
        yield from finished()
    run(all_of_it=True)
    yield from finished()


def score_array(model, volume: np.ndarray, spacing=(1.0, 1.0, 1.0), axis: Optional[int] = None,
                device: Union[str, torch.device] = "cpu", batch_size: Optional[int] = None, bf16: bool = False,
                progress: Optional[Callable[[int], None]] = None, every_slice: bool = False, *,
                direction: Optional[Sequence[float]] = None) -> VolumeScore:
    """Score every slice of a (k, j, i) volume along ``axis`` (default: the acquisition axis).

    One volume through :func:`score_volumes`.  Slices are cast to float one
    batch at a time, so a large integer volume is never copied whole (memory
    stays near the size of the file's voxels).  The volume is checked as a file's is
    (:func:`~SSIMQualityLib.volumes.check_volume`: 3-D, intensities, finite, not constant, slices of at least
    16 x 16 voxels); what fails raises :class:`~SSIMQualityLib.errors.UnsupportedImageError`.  With
    ``every_slice`` the caller has chosen the slices (:func:`predict_slices`: crops of real scans into the head,
    some smaller than 16 voxels) and they are scored as given.  ``direction`` (the volume's,
    :attr:`~SSIMQualityLib.volumes.Volume.direction`): slices are scored in one orientation, the same whatever
    order the file stores them in (:func:`score_volumes`).
    """
    (_, result), = score_volumes([(None, volume, spacing, axis, direction)], model, device=device, batch_size=batch_size,
                                 bf16=bf16, progress=progress, every_slice=every_slice)
    if isinstance(result, BaseException):
        raise result
    if not every_slice:  # slices the caller chose (predict_slices) are no volume to warn about
        warn_image(signed_message(result.signed_share, "the volume", SIGNED_SCORING))
        warn_image(few_values_message(result.distinct_values, "the volume"), FewValuesWarning)
        warn_image(noise_like_message(result.neighbour_correlation, "the volume"), NoiseLikeWarning)
    return result
