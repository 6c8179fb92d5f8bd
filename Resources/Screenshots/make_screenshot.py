"""Rebuild scored_volume.png: the bundled sample, corrupted (k-space, severity 0.6, seed 4), scored by the
bundled model.  Run from the repository root:  .venv/bin/python Resources/Screenshots/make_screenshot.py
"""
from pathlib import Path

from SSIMQualityLib.corruption import corrupt_volume
from SSIMQualityLib.figures import scored_volume_screenshot
from SSIMQualityLib.models import load_bundled_model
from SSIMQualityLib.resources import sample_volume_path
from SSIMQualityLib.scoring import score_array
from SSIMQualityLib.slices import acquisition_axis
from SSIMQualityLib.volumes import read_volume

HERE = Path(__file__).resolve().parent


def main() -> Path:
    vol = read_volume(sample_volume_path())
    axis = acquisition_axis(vol.spacing)
    moved = corrupt_volume(vol.array, axis, "kspace", (0.0, 0.9), seed=4, out_dtype=vol.array.dtype)
    score = score_array(load_bundled_model(), moved.array, vol.spacing, axis=axis)
    return scored_volume_screenshot(moved.array, score.predicted, axis, HERE / "scored_volume.png",
                                    title="SSIM Quality: sample with simulated motion",
                                    slice_index=moved.array.shape[axis] // 2 + 5, direction=vol.direction)


if __name__ == "__main__":
    print(main())
