"""The demo behind ``make demo``: what motion does to the bundled sample."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np

from .corruption import corrupt_volume
from .figures import corruption_panel
from .orientation import display_slice, network_slice
from .resources import sample_volume_path
from .scoring import foreground_slices
from .slices import normalize, take_slice
from .volumes import read_volume

SEVERITIES = (0.25, 0.5, 0.75, 1.0)
METHODS = ("kspace", "torchio")


def figure_path(out_dir: Union[str, Path], method: str) -> Path:
    """The demo's figure of ``method`` in ``out_dir`` (what ``demo --force`` may replace)."""
    return Path(out_dir) / f"corruption_{method}.png"


def run_demo(out_dir: Union[str, Path] = "demo-output", seed: int = 0, methods=METHODS, *,
             volume: Optional[Union[str, Path]] = None, frame: Optional[int] = None) -> dict:
    """Corrupt the sample (or the file ``volume``; ``frame``: the frame of a 4-D one) with each method at several
    severities; print the SSIM spread; draw PNGs (the shown slice with its k-space and its difference from the
    clean slice, its true SSIM and, where the bundled model loads, the model's prediction); score the volume with
    the bundled model.

    Returns a dict ``{method: {severity: per-slice SSIM array}}``.
    """
    from .errors import SSIMQualityError
    from .models import load_bundled_model
    from .scoring import predict_slices

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vol = read_volume(sample_volume_path() if volume is None else volume, frame=frame)
    axis = vol.slicing_axis()
    if volume is None:
        mid = vol.shape[axis] // 2 + 5  # the figures the README shows
    else:  # the middle one of the slices with enough head to score
        head = np.flatnonzero(foreground_slices(np.moveaxis(vol.array, axis, 0)))
        mid = int(head[len(head) // 2]) if head.size else vol.shape[axis] // 2
    print(f"{'sample' if volume is None else 'volume'}: {vol.path}  shape {vol.shape}  spacing {vol.spacing}  "
          f"acquisition axis {axis}")
    try:
        model = load_bundled_model()
    except SSIMQualityError as exc:
        model = None
        print(f"scoring skipped: {exc.one_line()}")

    def shown(array):  # the demo's slice, as a viewer shows it
        return display_slice(take_slice(array, axis, mid), direction=vol.direction, axis=axis)

    def scored(array):  # the same slice as the network is given it (as `score` gives it)
        return network_slice(take_slice(array, axis, mid), direction=vol.direction, axis=axis)

    clean = shown(vol.array)
    results = {}
    for method in methods:
        results[method] = {}
        slices, labels, given = [], [], [scored(vol.array)]
        for sev in SEVERITIES:
            res = corrupt_volume(vol.array, axis, method=method, severity=sev, seed=seed, out_dtype=vol.array.dtype)
            results[method][sev] = res.ssim
            s = res.summary()
            print(f"  {method:8s} severity {sev:.2f}: true SSIM over {s['over']}: mean {s['mean']:.3f}  p10 "
                  f"{s['p10']:.3f}  median {s['p50']:.3f}  p90 {s['p90']:.3f}  min {s['min']:.3f}")
            slices.append(shown(res.array))
            given.append(scored(res.array))
            labels.append(f"{method}, severity {sev:.2f}\ntrue SSIM {res.ssim[mid]:.3f}")
        if model is not None:  # the model's reading of the same slices, beside the truth
            predicted = predict_slices(model, np.stack(given).astype(np.float32))
            labels = [f"{lab}, predicted {p:.3f}" for lab, p in zip(labels, predicted[1:])]
            clean_label = f"clean\npredicted {predicted[0]:.3f}"
        else:
            clean_label = "clean"
        png = corruption_panel(normalize(clean.astype(np.float32)), [normalize(x.astype(np.float32)) for x in slices],
                               labels, figure_path(out, method), clean_label=clean_label,
                               title=f"{method} motion, slice {mid} of "
                                     f"{'the sample' if volume is None else Path(vol.path).name}")
        print(f"  wrote {png}")
    if model is not None:
        score_demo(vol, axis, seed, model=model)
    return results


def score_demo(vol, axis: int, seed: int = 0, *, model=None) -> None:
    """Score the sample, clean and corrupted, with ``model`` (the bundled model when None); print per-volume
    summaries."""
    from .errors import SSIMQualityError
    from .models import load_bundled_model
    from .scoring import score_array, summary_line

    if model is None:
        try:
            model = load_bundled_model()
        except SSIMQualityError as exc:
            print(f"scoring skipped: {exc.one_line()}")
            return
    print("scoring with the bundled model (foreground slices; true SSIM by the project's noise-fixed definition):")
    versions = [("clean", vol.array, None)]
    for sev in (0.3, 0.7):
        res = corrupt_volume(vol.array, axis, method="kspace", severity=sev, seed=seed, out_dtype=vol.array.dtype)
        versions.append((f"k-space severity {sev}", res.array, res.ssim))
    for name, arr, truth in versions:
        sc = score_array(model, arr, vol.spacing, axis=axis, direction=vol.direction)
        s = sc.summary()
        if truth is not None:
            name += f" (true mean {truth[sc.foreground].mean():.3f})"
        print(f"  {name:45s} predicted mean {s['mean_predicted_ssim']:.3f}  min {s['min_predicted_ssim']:.3f}  "
              + summary_line(s).split("; ", 1)[-1])  # the slice counts and verdict, as the Slicer panel says them
