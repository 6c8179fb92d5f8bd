"""What in a clean real slice's background a model reads as damage: its clean slices scored with the air changed.

For each volume (files or folders, as ``evaluate --real`` takes them), its foreground slices along the acquisition
axis (at most ``--max-slices``, evenly spaced), with no motion, are scored as they are and with the air outside the
head (:func:`air_mask`; exact zeros, a padded field of view, left alone) changed four ways:

``zeroed``       the air set to zero: what the head alone reads as;
``synthetic``    the air replaced by Rician noise of the scan's own σ (``noise.describe_noise``), as training makes it;
``permuted``     the low-level air's own values (below the bright parts, next line) shuffled within each slice:
                 the same levels, no spatial structure left;
``structure``    what is left of the air after ``synthetic`` once its bright parts (above 4 σ after a 1-pixel blur:
                 eyes, scalp, fragments of the skull base) are put back, to tell them from the low-level air.

It also prints how much brighter the air beside the head is than the air in the corners, along each axis
(``band rows`` beside the head's rows, ``band cols`` above and below it): a ghost band along a phase-encoding axis
(physiological pulsation, EPI's N/2 ghost) in a scan that has no head motion.  Where ``synthetic`` and ``permuted``
read near 1 and the scan as it is does not, the model reads the structure of the scan's background as motion.

Example::

    python3 scripts/probe_background.py realscans --model Resources/Models/ssimquality_resnet18.pt
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from SSIMQualityLib.models import open_model  # noqa: E402
from SSIMQualityLib.noise import describe_noise  # noqa: E402
from SSIMQualityLib.realeval import _foreground_slices, _read  # noqa: E402
from SSIMQualityLib.scoring import predict_slices  # noqa: E402
from SSIMQualityLib.slices import acquisition_axis, magnitude, normalize  # noqa: E402
from SSIMQualityLib.synthesis import add_rician_noise  # noqa: E402
from SSIMQualityLib.volumes import list_volume_paths  # noqa: E402

CHANGES = ("as_is", "zeroed", "synthetic", "permuted", "structure")


def air_mask(image: np.ndarray, sigma: float) -> np.ndarray:
    """The air of a normalised slice: outside the head, exact zeros (padding) excluded.  The head is the largest
    connected part above max(0.15, 5 σ), opened, holes filled, grown by 2 pixels.  (The training path's mask,
    ``MotionSliceDataset.head_mask``, thresholds at 5 % of the maximum: right for its noise-free clean slices,
    but on a real slice that catches noise, and zeroing the rest leaves islands of it.)"""
    from scipy import ndimage

    head = ndimage.binary_opening(image > max(0.15, 5 * sigma), iterations=1)
    labels, n = ndimage.label(head)
    if n:
        head = labels == 1 + int(np.argmax(ndimage.sum(head, labels, range(1, n + 1))))
    head = ndimage.binary_dilation(ndimage.binary_fill_holes(head), iterations=2)
    return ~head & (image > 0)


def band_ratios(image: np.ndarray, air: np.ndarray) -> tuple:
    """Median air level beside the head's rows and above / below its columns, each over the corners' median
    (NaN where a region has too few pixels or the corners hold no signal)."""
    head = ~air & (image > 0)
    rows, cols = head.any(axis=1), head.any(axis=0)
    beside = air & rows[:, None] & ~cols[None, :]
    above = air & cols[None, :] & ~rows[:, None]
    corner = air & ~rows[:, None] & ~cols[None, :]
    if min(beside.sum(), above.sum(), corner.sum()) < 20 or np.median(image[corner]) < 1e-3:
        return float("nan"), float("nan")
    c = float(np.median(image[corner]))
    return float(np.median(image[beside])) / c, float(np.median(image[above])) / c


def changed(image: np.ndarray, air: np.ndarray, sigma: float, rng: np.random.Generator) -> dict:
    """The slice with its air changed each way of :data:`CHANGES`."""
    from scipy import ndimage

    noise = add_rician_noise(torch.zeros(image.shape), sigma, int(rng.integers(2 ** 31))).numpy()
    bright = air & (ndimage.gaussian_filter(image, 1.0) > 4 * sigma)
    shuffled = image.copy()
    idx = np.flatnonzero(air & ~bright)  # the low-level air only: scattered bright pixels would read as damage
    shuffled.flat[idx] = rng.permutation(image.flat[idx])
    synthetic = np.where(air, noise, image)
    return {"as_is": image, "zeroed": np.where(air, 0.0, image), "synthetic": synthetic, "permuted": shuffled,
            "structure": np.where(bright, image, synthetic)}


def probe(model, path: Path, *, max_slices: int = 24, seed: int = 0) -> dict:
    """Mean clean prediction of one volume's foreground slices under each change of the air, and its band ratios."""
    vol, _ = _read(path)
    axis = acquisition_axis(vol.spacing)
    fg = _foreground_slices(vol, axis, max_slices)
    stack = magnitude(np.moveaxis(vol.array, axis, 0))
    slices = [normalize(np.ascontiguousarray(stack[i], dtype=np.float32)) for i in fg]
    noise = describe_noise([stack[i] for i in fg])
    out = {"volume": path.name, "slices": len(fg), "sigma_share": noise["sigma_share"]}
    if not fg or not noise["sigma_share"] or noise["sigma_share"] < 1e-3:  # no noisy background to change
        return out
    rng = np.random.default_rng(seed)
    versions = {k: [] for k in CHANGES}
    bands = []
    for s in slices:
        air = air_mask(s, noise["sigma_share"])
        bands.append(band_ratios(s, air))
        for k, v in changed(s, air, noise["sigma_share"], rng).items():
            versions[k].append(v.astype(np.float32))
    for k, v in versions.items():
        out[k] = float(predict_slices(model, torch.as_tensor(np.stack(v))).mean())
    out["band_rows"], out["band_cols"] = (float(np.nanmedian(b)) if np.isfinite(b).any() else float("nan")
                                          for b in np.array(bands).T)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", help="real scans: files or folders")
    ap.add_argument("--model", help="model file (default: the bundled model)")
    ap.add_argument("--max-slices", type=int, default=24)
    ap.add_argument("--json", help="write the rows here as JSON")
    args = ap.parse_args(argv)
    model = open_model(args.model)
    rows = [probe(model, Path(p), max_slices=args.max_slices) for p in list_volume_paths(args.paths, recursive=True)]
    print(f"{'volume':36s} {'σ':>6s} " + " ".join(f"{k:>9s}" for k in CHANGES) + "  band rows / cols")
    for r in rows:
        if "as_is" not in r:
            print(f"{r['volume']:36s}  no background to change")
            continue
        print(f"{r['volume']:36s} {r['sigma_share']:6.3f} " + " ".join(f"{r[k]:9.3f}" for k in CHANGES)
              + f"  {r['band_rows']:.2f} / {r['band_cols']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
