"""The demo behind ``make demo``: what motion does to the bundled sample."""
from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np

from .corruption import corrupt_volume
from .figures import corruption_panel
from .resources import sample_volume_path
from .slices import normalize, take_slice
from .volumes import read_volume

SEVERITIES = (0.25, 0.5, 0.75, 1.0)
METHODS = ("kspace", "torchio")


def figure_path(out_dir: Union[str, Path], method: str) -> Path:
    """The demo's figure of ``method`` in ``out_dir`` (what ``demo --force`` may replace)."""
    return Path(out_dir) / f"corruption_{method}.png"


def run_demo(out_dir: Union[str, Path] = "demo-output", seed: int = 0, methods=METHODS) -> dict:
    """Corrupt the sample with each method at several severities; print the SSIM spread; draw PNGs.

    Returns a dict ``{method: {severity: per-slice SSIM array}}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vol = read_volume(sample_volume_path())
    axis = vol.slicing_axis()
    mid = vol.shape[axis] // 2 + 5
    clean = normalize(take_slice(vol.array, axis, mid).astype(np.float32))
    print(f"sample: {vol.path}  shape {vol.shape}  spacing {vol.spacing}  acquisition axis {axis}")
    results = {}
    for method in methods:
        results[method] = {}
        shown, labels = [], []
        for sev in SEVERITIES:
            res = corrupt_volume(vol.array, axis, method=method, severity=sev, seed=seed, out_dtype=vol.array.dtype)
            s = res.ssim
            results[method][sev] = s
            p10, p50, p90 = np.percentile(s, [10, 50, 90])
            print(f"  {method:8s} severity {sev:.2f}: SSIM mean {s.mean():.3f}  p10 {p10:.3f}  median {p50:.3f}  "
                  f"p90 {p90:.3f}  min {s.min():.3f}")
            shown.append(normalize(take_slice(res.array, axis, mid).astype(np.float32)))
            labels.append(f"{method}, severity {sev:.2f}: SSIM {s[mid]:.3f}")
        png = corruption_panel(clean, shown, labels, figure_path(out, method),
                               title=f"{method} motion, slice {mid} of the sample")
        print(f"  wrote {png}")
    score_demo(vol, axis, seed)
    return results


def score_demo(vol, axis: int, seed: int = 0) -> None:
    """Score the sample, clean and corrupted, with the bundled model; print per-volume summaries."""
    from .errors import SSIMQualityError
    from .models import load_bundled_model
    from .scoring import score_array

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
        sc = score_array(model, arr, vol.spacing, axis=axis)
        s = sc.summary()
        if truth is not None:
            name += f" (true mean {truth[sc.foreground].mean():.3f})"
        print(f"  {name:45s} predicted mean {s['mean_predicted_ssim']:.3f}  min {s['min_predicted_ssim']:.3f}  good "
              f"{s['fraction_good']:.0%}  sufficient {s['fraction_sufficient']:.0%}  rescan {s['fraction_rescan']:.0%}"
              f"  -> {s['verdict']}")
