"""Scoring a volume: predicted SSIM per slice and a per-volume summary."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Union

import numpy as np
import torch

from .labels import CLINICAL_NAMES, all_classes
from .slices import foreground_fraction, prepare_input, slicing_axis, volume_range

#: Slices with less head than this share of pixels are flagged, not scored.
MIN_FOREGROUND = 0.05


@dataclass
class VolumeScore:
    """Per-slice predictions and the volume summary."""

    axis: int
    predicted: np.ndarray  # (n,) predicted SSIM, NaN where not scored
    foreground: np.ndarray  # (n,) bool: enough head to score
    classes: Dict[str, np.ndarray] = field(default_factory=dict)

    def rows(self) -> List[dict]:
        out = []
        for i, (p, fg) in enumerate(zip(self.predicted, self.foreground)):
            row = {"axis": self.axis, "slice": i, "predicted_ssim": float(p), "foreground": bool(fg)}
            for k, v in self.classes.items():
                row[k] = int(v[i]) if fg else -1
            out.append(row)
        return out

    def summary(self) -> dict:
        p = self.predicted[self.foreground]
        if p.size == 0:
            return {"slices": int(len(self.predicted)), "slices_scored": 0, "mean_predicted_ssim": float("nan"),
                    "min_predicted_ssim": float("nan"), "fraction_good": float("nan"),
                    "fraction_sufficient": float("nan"), "fraction_rescan": float("nan"), "verdict": "no foreground"}
        cc = self.classes["clinical_class"][self.foreground]
        frac = {name: float(np.mean(cc == k)) for k, name in CLINICAL_NAMES.items()}
        verdict = verdict_for(frac)
        return {"slices": int(len(self.predicted)), "slices_scored": int(p.size),
                "mean_predicted_ssim": float(p.mean()), "min_predicted_ssim": float(p.min()),
                "fraction_good": frac["good"], "fraction_sufficient": frac["sufficient"],
                "fraction_rescan": frac["rescan"], "verdict": verdict}


def verdict_for(fractions: Dict[str, float], rescan_share: float = 0.2, good_share: float = 0.8) -> str:
    """Volume verdict from the clinical class shares: rescan if ≥ 20 % of slices say so, good if ≥ 80 % good."""
    if fractions["rescan"] >= rescan_share:
        return "rescan"
    if fractions["good"] >= good_share:
        return "good"
    return "sufficient"


def foreground_slices(moved: np.ndarray) -> np.ndarray:
    """Which slices of a (n, H, W) stack hold enough head to score: at least ``MIN_FOREGROUND`` of their
    pixels above 10 % of the volume's range (min → p99.5), and of their own range too.

    The volume's range keeps out empty slices of tiny values (air above the head), which the slice's own
    range would call all foreground and whose normalised label is meaningless.
    """
    ref = volume_range(moved)
    out = np.zeros(moved.shape[0], dtype=bool)
    for i in range(moved.shape[0]):
        s = moved[i].astype(np.float32)
        out[i] = (foreground_fraction(s, reference=ref) >= MIN_FOREGROUND
                  and foreground_fraction(s) >= MIN_FOREGROUND)
    return out


@torch.no_grad()
def predict_slices(model, slices: torch.Tensor, device: Union[str, torch.device] = "cpu", batch_size: int = 32,
                   bf16: bool = False, progress: Optional[Callable[[int], None]] = None) -> np.ndarray:
    """Predicted SSIM of raw slices (N, H, W): normalised, fitted to 256², batched through the model.

    ``bf16`` asks for bfloat16 autocast on the CPU; it is honoured only where
    the CPU computes bfloat16 natively (emulated, it is 40–50× slower).
    """
    model.eval()
    dev = torch.device(device)
    if bf16 and dev.type == "cpu":
        from .precision import cpu_has_native_bf16

        bf16 = cpu_has_native_bf16()
    out = []
    for i in range(0, len(slices), batch_size):
        x = prepare_input(slices[i:i + batch_size].float())[:, None].to(dev)
        x = x.contiguous(memory_format=torch.channels_last)
        if bf16 and dev.type == "cpu":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                p = model(x)
        else:
            p = model(x)
        out.append(p.float().cpu().numpy())
        if progress:
            progress(min(batch_size, len(slices) - i))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def score_array(model, volume: np.ndarray, spacing=(1.0, 1.0, 1.0), axis: Optional[int] = None,
                device: Union[str, torch.device] = "cpu", batch_size: int = 32, bf16: bool = False,
                progress: Optional[Callable[[int], None]] = None) -> VolumeScore:
    """Score every slice of a (k, j, i) volume along ``axis`` (default: the acquisition axis).

    Slices are cast to float one batch at a time, so a large integer volume
    is never copied whole (memory stays near the size of the file's voxels).
    """
    ax = slicing_axis(spacing, axis)
    moved = np.moveaxis(np.asarray(volume), ax, 0)  # a view
    n = moved.shape[0]
    fg = foreground_slices(moved)
    pred = np.full(n, np.nan, dtype=np.float64)
    idx = np.flatnonzero(fg)
    for start in range(0, len(idx), batch_size):
        chunk = idx[start:start + batch_size]
        slices = torch.as_tensor(np.stack([moved[i].astype(np.float32) for i in chunk]))
        pred[chunk] = predict_slices(model, slices, device, batch_size, bf16, progress)
    classes = all_classes(np.nan_to_num(pred, nan=0.0))
    return VolumeScore(axis=ax, predicted=pred, foreground=fg, classes=classes)
