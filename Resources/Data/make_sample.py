"""Rebuild the bundled sample volume from nilearn's MNI ICBM152 2009 T1 template.

Run from the repository root:  .venv/bin/python Resources/Data/make_sample.py

The template is noise-free and isotropic; to look like an acquired clinical
scan the sample is cropped to the head, resampled to 1 × 1 mm in-plane with
2 mm axial slices (so the acquisition axis is unambiguous), given a gentle
bias field and Rician noise, and stored as int16.
"""
from pathlib import Path

import nibabel as nib
import numpy as np

HERE = Path(__file__).resolve().parent
SOURCE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"


def main(out: Path = HERE / "sample_t1_axial.nii.gz", seed: int = 20261124) -> Path:
    import nilearn

    src = Path(nilearn.__file__).parent / "datasets" / "data" / SOURCE
    img = nib.load(str(src))
    data = np.asarray(img.dataobj, dtype=np.float32)  # (x, y, z), RAS, 1 mm
    # Crop to the head with a small margin of air.
    mask = data > 0.05 * data.max()
    lo = np.maximum(np.argwhere(mask).min(0) - 6, 0)
    hi = np.minimum(np.argwhere(mask).max(0) + 7, data.shape)
    data = data[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    # 2 mm axial slices: average pairs along z (a thick slice integrates tissue).
    nz = data.shape[2] // 2 * 2
    data = 0.5 * (data[:, :, 0:nz:2] + data[:, :, 1:nz:2])
    rng = np.random.default_rng(seed)
    # Smooth multiplicative bias field, +-10 %.
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in data.shape], indexing="ij")
    bias = 1.0 + 0.1 * (0.6 * x - 0.4 * y + 0.5 * z * x)
    signal = data / data.max() * 1000.0 * bias
    # Rician noise, sigma 2.5 % of white matter.
    sigma = 25.0
    noisy = np.sqrt((signal + rng.normal(0, sigma, signal.shape)) ** 2 + rng.normal(0, sigma, signal.shape) ** 2)
    affine = img.affine.copy()
    affine[:3, 3] = nib.affines.apply_affine(img.affine, lo)
    affine[:3, 3] += 0.5 * img.affine[:3, 2]  # a 2 mm slice is centred between its two 1 mm sources
    affine[:3, 2] *= 2.0
    out_img = nib.Nifti1Image(np.round(noisy).astype(np.int16), affine)
    out_img.header.set_xyzt_units("mm")
    out_img.header["descrip"] = b"SSIMQuality sample from MNI ICBM152 2009 T1"
    nib.save(out_img, str(out))
    return out


if __name__ == "__main__":
    path = main()
    print(path, path.stat().st_size, "bytes", nib.load(str(path)).shape)
