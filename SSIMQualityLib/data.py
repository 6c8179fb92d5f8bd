"""On-the-fly training samples (DESIGN §1 steps 1–5).

Each sample, fully determined by ``(seed, index)``:

1. a slice by the orientation rule (isotropic source: any of the three axes;
   anisotropic: the acquisition axis), fitted to 256 × 256;
2. for the synthetic source, domain randomisation of the clean slice
   (:mod:`SSIMQualityLib.synthesis`), all of it but the noise;
3. optional contrast augmentation (gamma, log, sigmoid, AHE);
4. the acquisition: a field of view around the head (tight to wide) sampled
   on a matrix of 40 – 384 pixels a side (real scans come in every size);
5. motion corruption at that matrix by one of the two algorithms (a share
   of samples is left clean, so that "no motion" is learnt as 1.0); then
   Rician noise, the same draw added to both images (acquisition noise does
   not move with the head), with a background that is noisy, zero (masked,
   thresholded, suppressed by the scanner: ghosts then lift a black
   background) or partly suppressed, or noise only inside a box; before
   the noise, in a share of the samples, EPI's N/2 ghost, also the same
   operator for both images;
6. label = SSIM(clean, corrupted) at the acquired matrix by the project's
   convention; input = the normalised corrupted slice resized to 256².

``MotionSliceDataset`` is a map-style torch ``Dataset`` (worker-safe: the
sources load lazily in each process) with a batched ``batch(indices)`` that
runs the motion and SSIM steps on the whole batch at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .contrast import RandomContrast
from .corruption import slice_labels
from .motion import RandomKSpaceMotion, RandomMotion, apply_motion_batch
from .slices import (SliceSampler, crop, fit_to_size, fourier_resample, head_boxes, magnitude, normalize, resample,
                     take_slice)
from .synthesis import (RandomSynthesis, add_rician_noise, ghost_band, load_tissue_volume, nyquist_ghost,
                        scanner_blur, synthesize)


_NO_MOTION = RandomKSpaceMotion(severity=0.0)

#: Changes whenever the same ``(seed, index)`` would give a different sample,
#: so that caches of an older recipe are never reused.
#: 2: synthetic noise added after the motion, shared by both images.
#: 3: that noise only inside a field of view (a box around the head, or the whole canvas).
#: 4: the k-space algorithm keeps the centre of k-space at the original position.
#: 5: acquired field of view and matrix (64 - 384), labels at that matrix; zero / partly suppressed
#:    backgrounds; Colin27 anatomy; TorchIO's model moves about the centre, severity sets its moved share.
#: 6: the clean slice's floor is zero after contrast augmentation (a sigmoid had lifted the air to flat grey).
#: 7: EPI's N/2 (Nyquist) ghost in a share of the synthetic acquisitions, the same for both images.
#: 8: the ghost is drawn before the motion, with its own phase-encoding axis (the clean acquisition no longer
#:    depends on the motion's draws).
#: 9: fields of view may cut into the head (margins from -0.2 of the head's size).
#: 10: the scanner's point-spread function at the acquired matrix (a blur of both images) in a share of the
#:     synthetic acquisitions.
#: 11: half the acquisitions sample their matrix in k-space (``slices.fourier_resample``: Gibbs ringing, as real
#:     scans have), the other half by image-space averaging as before.
#: 12: tighter and smaller acquisitions: margins from -0.35 of the head's size (views well inside the head),
#:     matrices from 40 (a cropped 41 x 25 research volume was below every matrix in training).
#: 13: the reconstruction's k-space filter in a share of synthetic acquisitions: it smooths the signal and the
#:     noise together (correlated noise), where recipe 10's point-spread function blurs the signal alone.
#: 14: a trial (tight and small views together), reverted; never reuse its caches.
#: 15: recipe 13's distributions, new draws: the synthesis parameters are drawn a field at a time for a batch
#:     (``RandomSynthesis.sample_batch``), the texture's control points with them (was a generator per sample).
#: 16: recipe 13's distributions, new draws: the motion's parameters are drawn a field at a time
#:     (``RandomMotion.draw``; one slice's ``sample`` is a draw of one), the same number of draws whatever the
#:     severity.
#: 17: a standing ghost band in a share of the acquisitions: the noise over the head's rows or columns louder,
#:     in both images (``SampleConfig.p_band``, ``synthesis.ghost_band``).
#: 18: the band's noise at most 8 % of the slice's maximum (``SampleConfig.band_max_sigma``; was 20 %).
DATA_VERSION = 18
#: Samples made from real volumes (``--source``, Colin27): 2 since their slices are turned into the orientation
#: scoring gives the network (``orientation.network_slice``, 2026-11-29); part of a ``--source`` cache's name.
SOURCE_VERSION = 2

#: Background kinds of a real scan, and their shares in training (DESIGN §1).
BACKGROUNDS = {"noisy": 0.3, "box": 0.15, "zero": 0.35, "partial": 0.2}


class SliceSource:
    """Where clean slices come from.  ``draw(rng)`` → (H, W) float tensor or (C, H, W) tissue stack."""

    synthetic = False
    adds_noise = False  # a nearly noise-free real source: synthetic noise is added after the motion

    def draw(self, rng: np.random.Generator) -> torch.Tensor:
        raise NotImplementedError

    def pick(self, rng: np.random.Generator) -> "SliceSource":
        """The source that makes the next sample (a mixture picks one of its parts)."""
        return self


class SyntheticSource(SliceSource):
    """Tissue stacks cut from nilearn's MNI152 maps (isotropic: every orientation)."""

    synthetic = True
    _cache: Optional[np.ndarray] = None  # per process

    def __init__(self):
        self._sampler: Optional[SliceSampler] = None

    def _volume(self) -> np.ndarray:
        if SyntheticSource._cache is None:
            SyntheticSource._cache = load_tissue_volume()
        return SyntheticSource._cache

    def draw(self, rng: np.random.Generator) -> torch.Tensor:
        vol = self._volume()
        if self._sampler is None:
            brain = vol[1].astype(np.float32) + vol[2].astype(np.float32)  # GM + WM decides "foreground"
            self._sampler = SliceSampler(brain, (1.0, 1.0, 1.0), min_foreground=0.05)
        self._sampler.rng = rng
        pick = self._sampler.sample()
        stack = np.take(vol, pick.index, axis=pick.axis + 1)
        return fit_to_size(torch.as_tensor(stack.astype(np.float32)))


#: Share of training slices taken from the real anatomy (Colin27) where it is installed; the rest are synthetic.
P_ANATOMY = 0.3


def colin27_files() -> list:
    """Colin27 (one real subject, 1 mm, with skull) from Debian's ``mricron-data``, where installed."""
    base = Path("/usr/share/mricron/templates")
    return [p for p in (base / "ch2.nii.gz", base / "ch2better.nii.gz") if p.is_file()]


class MixedSource(SliceSource):
    """The default training source: synthetic MNI152 slices and, where installed, Colin27 anatomy;
    optionally the user's own real volumes (``user``, a share ``p_user`` of the samples)."""

    def __init__(self, p_anatomy: float = P_ANATOMY, user: Optional[SliceSource] = None, p_user: float = 0.5):
        self.synthetic_source = SyntheticSource()
        files = colin27_files()
        self.anatomy = AnatomySource(files) if files else None
        self.p_anatomy = p_anatomy if files else 0.0
        self.user = user
        self.p_user = p_user if user is not None else 0.0

    def pick(self, rng: np.random.Generator) -> SliceSource:
        u = rng.random()
        if u < self.p_user:
            return self.user
        return self.anatomy if rng.random() < self.p_anatomy else self.synthetic_source


class VolumeFolderSource(SliceSource):
    """Real volumes (a folder or a list of files: IXI, clinical …), sliced by the orientation rule."""

    def __init__(self, paths: Sequence[Union[str, Path]], recursive: bool = True):
        from .volumes import list_volume_paths

        self.paths = [Path(p) for p in list_volume_paths(list(paths), recursive)]
        if not self.paths:
            from .errors import UnreadableFileError

            raise UnreadableFileError("no volumes found", ", ".join(map(str, paths)), "give files or folders of NIfTI / NRRD")
        self._samplers = {}

    def draw(self, rng: np.random.Generator) -> torch.Tensor:
        from .volumes import read_volume

        from .orientation import network_slice

        i = int(rng.integers(len(self.paths)))
        if i not in self._samplers:
            vol = read_volume(self.paths[i])
            self._samplers[i] = SliceSampler(vol.array.astype(np.float32), vol.spacing), vol.direction
        sampler, direction = self._samplers[i]
        sampler.rng = rng
        pick = sampler.sample()
        # Turned as scoring turns it (SOURCE_VERSION 2): a site's DICOM-ordered scans were trained on in their
        # stored order and scored in another.
        img = network_slice(take_slice(sampler.volume, pick.axis, pick.index), direction=direction, axis=pick.axis)
        return fit_to_size(torch.as_tensor(np.ascontiguousarray(magnitude(img))))


class AnatomySource(VolumeFolderSource):
    """Real anatomy that is nearly noise-free (Colin27 is an average of 27 scans).

    Its slices are treated like synthetic ones: contrast augmentation, then
    Rician noise after the motion.  Sliced by the orientation rule.
    """

    adds_noise = True


def _draw_blur(rng: np.random.Generator, n: int, p: float, sigma: Tuple[float, float],
               least_ratio: float) -> Tuple[np.ndarray, np.ndarray]:
    """Gaussian sigmas (down the rows, along them) of ``n`` acquisitions: a share ``p`` blurred, the major sigma
    uniform in ``sigma``, the minor ``least_ratio`` – 1 times it, either axis the major one; zeros elsewhere."""
    draws = rng.random((n, 4))
    major = sigma[0] + draws[:, 1] * (sigma[1] - sigma[0])
    major = np.where(draws[:, 0] < p, major, 0.0)
    minor = major * (least_ratio + (1 - least_ratio) * draws[:, 2])
    along_rows = draws[:, 3] < 0.5
    return np.where(along_rows, major, minor), np.where(along_rows, minor, major)


@dataclass
class SampleConfig:
    """How samples are made; every field has a default that trains well."""

    p_contrast: float = 0.8
    p_clean: float = 0.1
    p_kspace: float = 0.5
    severity: Tuple[float, float] = (0.0, 1.0)
    p_full_fov: float = 0.3  # box background only: share whose box is the whole canvas
    # Acquired matrix, longest side, drawn log-uniformly.  From 40, not 64: cropped research volumes go below
    # 64 (nibabel's 33 x 41 x 25 example: slices of 41 x 25), and v7 scored them 0.1 - 0.3 low when clean.
    matrix: Tuple[int, int] = (40, 384)
    p_native: float = 0.25  # share acquired on the 256² canvas as it is (no field-of-view / matrix change)
    max_margin: float = 0.6  # field of view: up to this share of the head's size added on each side
    # ... and down to this one: a negative margin cuts into the head (tight EPI, ASL and cropped fields of view,
    # which the bundled model scored 0.1 - 0.2 low until they were padded with air).  Recipe 12 goes from -0.2
    # to -0.35: cutting 15 % more off each side of clean real slices still lowered v7's scores by 0.04 - 0.25 on
    # 6 of 12 real scans, and nibabel's crop (about -0.3) holds no air at all.
    min_margin: float = -0.35
    # ... times a stretch of 0.5 - 1.5 per side, but never more than this share of the head cut off one side
    # (two sides of -0.525 would leave an empty field of view).
    max_cut: float = 0.4
    backgrounds: Optional[dict] = None  # kind -> share; default BACKGROUNDS
    p_nyquist: float = 0.15  # share of synthetic acquisitions with EPI's N/2 ghost (real EPI nearly always has one)
    nyquist_phase: Tuple[float, float] = (0.05, 0.6)  # its phase error, radians: ghost 2.5 - 30 % as bright
    # The scanner's point-spread function at the acquired matrix, on both images (``synthesis.scanner_blur``):
    # real EPI is soft at its own matrix, and the bundled model read a 0.7-pixel blur there as motion (scores
    # 0.05 - 0.10 lower).  Sigma along one axis (either) drawn from psf_sigma, along the other 0.3 - 1 times it.
    p_psf: float = 0.35
    psf_sigma: Tuple[float, float] = (0.3, 1.0)
    # Share of acquisitions (field of view and matrix drawn) whose matrix is sampled in k-space: edges ring as
    # on real low-resolution scans.  Truncating a clean real slice's k-space to 60 % lowered the bundled model's
    # score by 0.03 - 0.13 (ringing read as motion); image-space averaging, the only resampling before, rings never.
    p_fourier: float = 0.5

    # The reconstruction's k-space filter (Hamming, Hann or Fermi apodisation, on by default on many scanners)
    # acts on the acquired data, signal and thermal noise alike, so the noise of a filtered scan is smooth and
    # correlated over pixels.  The point-spread function above blurs the signal alone (the noise stays white).
    # v8 read clean slices with noise filtered at sigma 1 px as 0.91 (white noise of the same draw: 0.99): a
    # filtered scan's noise looked like motion to it.  Gaussian sigma from filter_sigma along one axis, 0.6 - 1
    # times it along the other.
    p_filter: float = 0.35
    filter_sigma: Tuple[float, float] = (0.3, 1.2)
    # A standing ghost band (``synthesis.ghost_band``): the noise over the head's rows or columns, across the
    # whole field of view, 1 + gain times as strong as elsewhere, in both images.  The air beside real FSE heads
    # is 1.3 - 1.6 times the corners' level, above and below an EPI head 3 - 8 times (probe_background); v10
    # read that as motion.  Gain log-uniform in band_gain, the band's noise at most band_max_sigma of the
    # slice's maximum (a ghost is fainter than the head).  The band's noise is one draw in both images, so it
    # raises a moved slice's label, most where motion is severe (truth 0.4 - 0.5: +0.06 under a cap of 0.2,
    # +0.04 under 0.08), and a model taught loud bands read real motion's ghosts as band: fine-tuned from v10
    # the same way, a cap of 0.08 instead of 0.2 took the real scans' mean residual at truth 0.3 - 0.4 from
    # +0.131 to +0.100 (sigma 0.079 -> 0.075) with the clean slices' reading unchanged; 0.05 gave no more.
    p_band: float = 0.4
    band_gain: Tuple[float, float] = (0.2, 7.0)
    band_max_sigma: float = 0.08

    def draw_psf(self, rng: np.random.Generator, n: int) -> Tuple[np.ndarray, np.ndarray]:
        """Sigmas (down the rows, along them) of the point-spread function for ``n`` acquisitions; zeros for
        those without one.  One rule for both paths (the reference draws ``n = 1``)."""
        return _draw_blur(rng, n, self.p_psf, self.psf_sigma, 0.3)

    def draw_filter(self, rng: np.random.Generator, n: int) -> Tuple[np.ndarray, np.ndarray]:
        """Sigmas (down the rows, along them) of the reconstruction filter, which smooths signal and noise
        together, for ``n`` acquisitions; zeros for those without one.  One rule for both paths."""
        return _draw_blur(rng, n, self.p_filter, self.filter_sigma, 0.6)

    def draw_band(self, rng: np.random.Generator, sigmas) -> Tuple[np.ndarray, np.ndarray]:
        """Gains (0: no band) and axes (0: the head's rows, 1: its columns) of the standing ghost band for
        acquisitions whose noise is ``sigmas`` of their maximum.  One rule for both paths.

        >>> gains, axes = SampleConfig(p_band=1.0).draw_band(np.random.default_rng(0), np.full(1000, 0.02))
        >>> bool(gains.min() >= 0.2 and gains.max() <= 7.0), 0.4 < float(axes.mean()) < 0.6
        (True, True)
        """
        sigmas = np.asarray(sigmas, dtype=float)
        draws = rng.random((sigmas.size, 3))
        lo, hi = np.log(self.band_gain)
        gains = np.exp(lo + (hi - lo) * draws[:, 1])
        cap = np.maximum(0.0, self.band_max_sigma / np.maximum(sigmas, 1e-12) - 1)
        gains = np.where(draws[:, 0] < self.p_band, np.minimum(gains, cap), 0.0)
        return gains, (draws[:, 2] < 0.5).astype(int)

    def side_shift(self, extent, margin, stretch):
        """How far one side of the acquired field of view lies outside the head's box of ``extent`` pixels
        (negative: inside it): ``margin`` of the extent times the side's ``stretch``, but never more than
        ``max_cut`` of it into the head.  One rule for both paths: numbers (the reference, one sample) or
        arrays (the factory, a group at once).

        >>> SampleConfig().side_shift(100, 0.2, 1.5), SampleConfig().side_shift(100, -0.35, 1.5)
        (30.0, -40.0)
        >>> SampleConfig().side_shift(np.array([100, 100]), np.array([0.2, -0.35]), 1.5).tolist()
        [30.0, -40.0]
        """
        out = np.maximum(-self.max_cut * extent, extent * margin * stretch)
        return float(out) if np.ndim(out) == 0 else out

    def background_table(self) -> Tuple[list, np.ndarray]:
        table = self.backgrounds or BACKGROUNDS
        w = np.array([float(table[k]) for k in table])
        return list(table), w / w.sum()


class MotionSliceDataset(Dataset):
    """Training / validation samples made on the fly, reproducible from ``(seed, index)``.

    Parameters
    ----------
    length : int
        Number of samples (indices 0 … length − 1).
    source : SliceSource, optional
        Default: the synthetic MNI152 source.
    seed : int
        Base seed: training and validation use different seeds.
    config : SampleConfig, optional

    Returns (per item)
    ------------------
    x : Tensor (1, 256, 256) float32 in [0, 1]
        The normalised corrupted slice.
    y : Tensor () float32
        Its SSIM against the clean slice.
    """

    def __init__(self, length: int, source: Optional[SliceSource] = None, seed: int = 0,
                 config: Optional[SampleConfig] = None):
        self.length = int(length)
        self.source = source or MixedSource()
        self.seed = int(seed)
        self.config = config or SampleConfig()
        self.synthesis = RandomSynthesis()
        self.contrast = RandomContrast(p=self.config.p_contrast)
        self.motion = RandomMotion("random", self.config.severity, p_kspace=self.config.p_kspace)

    def __len__(self) -> int:
        return self.length

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, int(index)]))

    def clean_slice(self, index: int, rng: np.random.Generator) -> Tuple[torch.Tensor, float, int, bool]:
        """Steps 1–3: the clean (randomised, contrast-adjusted) slice in [0, 1], 256 × 256.

        Returns the noise-free slice with the noise still to add after the
        motion: its sigma (in the slice's [0, 1] units) and seed, and whether
        the slice is a user's real scan (moved by the noise-fixed split).
        """
        source = self.source.pick(rng)
        raw = source.draw(rng)
        sigma, noise_seed, real = 0.0, 0, False
        if source.synthetic:
            params = self.synthesis.sample(rng)
            img = synthesize(raw, params, noise=False)
            sigma, noise_seed = params.noise, params.noise_seed
        elif source.adds_noise:
            lo, hi = np.log(self.synthesis.noise_range)
            sigma, noise_seed = float(np.exp(rng.uniform(lo, hi))), int(rng.integers(2 ** 31))
            img = raw.float()
        else:
            img, real = raw.float(), True
        img = normalize(img)
        adjusted = torch.as_tensor(self.contrast.sample(rng)(img.numpy()), dtype=torch.float32)
        # A sigmoid (or AHE) lifts the air to a flat grey floor that no scan has: air starts at zero again.
        return adjusted - adjusted.min(), sigma, noise_seed, real

    def batch(self, indices: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Samples for ``indices`` as (B, 1, 256, 256) inputs and (B,) labels."""
        _, corrupted, labels = self.pairs(indices)
        x = torch.stack([fit_to_size(normalize(c)) for c in corrupted])
        return x[:, None], labels

    def pairs(self, indices: Sequence[int]) -> Tuple[list, list, torch.Tensor]:
        """Clean slices and their corrupted twins at the acquired matrix (lists of (H, W)), and the labels (B,)."""
        clean, corrupted, labels = [], [], []
        for i in indices:
            rng = self.rng(i)
            canvas, sigma, noise_seed, real = self.clean_slice(i, rng)
            acquired = self.acquire(canvas, rng)
            # The scanner's own N/2 ghost is drawn before the motion: the clean acquisition must not depend on
            # how the head moves (its phase-encoding axis is its own, as the draws must not depend on the motion's).
            ghost = (float(rng.uniform(*self.config.nyquist_phase)), int(rng.integers(2))) \
                if rng.random() < self.config.p_nyquist else None
            (psf_rows,), (psf_cols,) = self.config.draw_psf(rng, 1)
            smooth = tuple(float(v[0]) for v in self.config.draw_filter(rng, 1))
            band = self.config.draw_band(rng, [sigma])
            if rng.random() < self.config.p_clean:
                t = _NO_MOTION.sample(tuple(acquired.shape), rng)
            else:
                t = self.motion.sample(tuple(acquired.shape), rng)
            if real:
                from .noise import move_anatomy

                moved = torch.as_tensor(move_anatomy(acquired.numpy(), t, seed=[self.seed, int(i), 1]))
            else:
                moved = apply_motion_batch(acquired[None], [t])[0].clamp_min(0)
                if ghost is not None:  # a scanner's own ghost, the same operator in both acquisitions
                    pair = nyquist_ghost(torch.stack([acquired, moved]), ghost[0], pe_axis=ghost[1])
                    acquired, moved = pair[0], pair[1]
                if psf_rows > 0:  # the scanner's blur, after the ghost (both are the scanner's), on both alike
                    acquired, moved = scanner_blur(torch.stack([acquired, moved]), psf_rows, psf_cols).unbind(0)
            kind = self.background(rng)
            if sigma > 0:
                acquired, moved = self.add_noise(acquired, moved, sigma, noise_seed, kind, rng, smooth=smooth,
                                                 band=band)
            clean.append(acquired)
            corrupted.append(moved)
            labels.append(float(slice_labels(acquired[None], moved[None])[0]))
        return clean, corrupted, torch.tensor(labels, dtype=torch.float32)

    def acquire(self, canvas: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """The field of view and matrix a scanner would acquire of this slice (DESIGN §1, real scans).

        A box around the head with a random margin on each side (from cutting
        into the head to wide), sampled on a matrix whose longest side is drawn log-uniformly
        from ``config.matrix``; a share keeps the 256² canvas as it is.
        """
        cfg = self.config
        draws = rng.random(5)
        if draws[0] < cfg.p_native:
            return canvas
        rows, cols = head_boxes(canvas[None])
        (r0, r1, nr), (c0, c1, nc) = rows[0].tolist(), cols[0].tolist()
        if nr < 4 or nc < 4:
            return canvas
        span = cfg.max_margin - cfg.min_margin
        mr, mc = cfg.min_margin + span * draws[1], cfg.min_margin + span * draws[2]
        h, w = r1 - r0, c1 - c0
        r0, r1 = (int(round(r0 - cfg.side_shift(h, mr, rng.uniform(0.5, 1.5)))),
                  int(round(r1 + cfg.side_shift(h, mr, rng.uniform(0.5, 1.5)))))
        c0, c1 = (int(round(c0 - cfg.side_shift(w, mc, rng.uniform(0.5, 1.5)))),
                  int(round(c1 + cfg.side_shift(w, mc, rng.uniform(0.5, 1.5)))))
        view = crop(canvas, (r0, r1, c0, c1))
        lo, hi = np.log(cfg.matrix[0]), np.log(cfg.matrix[1])
        longest = int(round(np.exp(lo + (hi - lo) * draws[3])))
        ch, cw = view.shape
        scale = longest / max(ch, cw)
        size = (max(8, int(round(ch * scale))), max(8, int(round(cw * scale))))
        if draws[4] < cfg.p_fourier:
            return fourier_resample(view, size).clamp_min(0)
        return resample(view[None, None], size)[0, 0].clamp_min(0)

    def background(self, rng: np.random.Generator) -> str:
        names, weights = self.config.background_table()
        return names[int(rng.choice(len(names), p=weights))]

    def add_noise(self, clean: torch.Tensor, corrupted: torch.Tensor, sigma: float, seed: int, kind: str,
                  rng: np.random.Generator, *, smooth: Tuple[float, float] = (0.0, 0.0),
                  band: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Rician noise after the motion, one draw for both images, with the background of ``kind``.

        ``noisy``: everywhere.  ``box``: inside a field-of-view box (padded
        real slices).  ``zero``: inside the head only, so the air is black
        and the motion's ghosts lift it (masked, thresholded or suppressed
        scans).  ``partial``: the air keeps 5 – 50 % of the noise.
        ``smooth``: sigmas (down the rows, along them) of the reconstruction
        filter, which smooths both images and the noise before the magnitude.
        ``band``: (gains, axes) of one standing ghost band (``SampleConfig.draw_band``), placed by the head's
        box in the clean slice.
        """
        both = torch.stack([clean, corrupted])
        scale = sigma * float(clean.max())
        gain = None
        if band is not None and band[0][0] > 0:
            rows, cols = head_boxes(clean[None])
            gain = ghost_band(rows, cols, band[0], band[1], tuple(clean.shape))[0]
        if max(smooth) > 0:
            both = scanner_blur(both, *smooth)
            clean = both[0]
        noisy = add_rician_noise(both, scale, seed, smooth=smooth, gain=gain)
        if kind == "noisy":
            return noisy[0], noisy[1]
        if kind == "box":  # a padded slice: nothing at all outside its field of view
            out = noisy * self.field_of_view(clean, rng)
            return out[0], out[1]
        weight = self.head_mask(clean)
        if kind == "partial":
            weight = weight + (1 - weight) * float(rng.uniform(0.05, 0.5))
        out = both + weight * (noisy - both)
        return out[0], out[1]

    @staticmethod
    def head_mask(clean: torch.Tensor) -> torch.Tensor:
        """0/1 mask of the head (clean slice above 5 % of its maximum, holes filled, grown by 2 pixels)."""
        from scipy import ndimage

        m = (clean > 0.05 * float(clean.max())).numpy()
        m = ndimage.binary_fill_holes(ndimage.binary_dilation(m, iterations=2))
        return torch.as_tensor(m, dtype=clean.dtype)

    def field_of_view(self, clean: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """A 0/1 mask of the acquired field of view on the canvas.

        Real slices smaller than the canvas are zero-padded, so their noise
        stops at a sharp rectangle: the network must learn that such an edge
        is not an artefact.  The rectangle holds the head with a random margin
        (0 – 40 pixels a side); in a share of samples it is the whole canvas.
        """
        fov = torch.ones_like(clean)
        if rng.random() < self.config.p_full_fov:
            return fov
        rows, cols = head_boxes(clean[None])
        if rows[0, 2] == 0 or cols[0, 2] == 0:
            return fov
        m = rng.integers(0, 41, size=4)
        h, w = clean.shape
        top, bottom = max(0, int(rows[0, 0]) - int(m[0])), min(h, int(rows[0, 1]) + int(m[1]))
        left, right = max(0, int(cols[0, 0]) - int(m[2])), min(w, int(cols[0, 1]) + int(m[3]))
        fov.zero_()
        fov[top:bottom, left:right] = 1.0
        return fov

    def __getitem__(self, index: int):
        if not 0 <= index < self.length:
            raise IndexError(index)
        x, y = self.batch([index])
        return x[0], y[0]


def build_cache(dataset, size: int, chunk: int = 32, workers: int = 1, progress=None,
                dtype=torch.float16, start: int = 0, n: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Materialise samples ``start`` … n − 1 at ``size`` × ``size`` (area-averaged) in memory.

    ``dataset`` is a :class:`MotionSliceDataset` (samples by index; ``n``
    defaults to its length) or a :class:`~SSIMQualityLib.factory.SampleFactory`
    (samples by batch: sample ``i`` is item ``i % chunk`` of batch ``i // chunk``,
    so ``chunk`` is part of what the samples are; ``n`` is required).

    On a CPU the network and the sample maker compete for the same cores;
    making the samples once and reusing them for a few epochs keeps the
    loader's share of a training step near zero.
    """
    n = len(dataset) if n is None else int(n)
    xs = torch.empty(n - start, 1, size, size, dtype=dtype)
    ys = torch.empty(n - start, dtype=torch.float32)
    # Chunks start at multiples of `chunk` (a factory batch is made whole); samples before `start` are dropped.
    starts = list(range((start // chunk) * chunk, n, chunk))
    job = _CacheJob(dataset, chunk, size, dtype, n)

    def store(first, x, y):
        skip = max(0, start - first)
        x, y = x[skip:], y[skip:]
        xs[first + skip - start:first + skip - start + len(y)] = x
        ys[first + skip - start:first + skip - start + len(y)] = y
        if progress:
            progress(len(y))

    if workers > 1:
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        with ctx.Pool(workers, initializer=worker_init) as pool:
            for first, x, y in pool.imap_unordered(job, starts):
                store(first, x, y)
    else:
        for first in starts:
            store(*job(first))
    return xs, ys


def worker_init(*_worker_id) -> None:
    """Each sample-making process on one core (a Pool initializer or a DataLoader worker_init_fn)."""
    torch.set_num_threads(1)


class _CacheJob:
    def __init__(self, dataset, chunk, size, dtype, n):
        self.dataset, self.chunk, self.size, self.dtype, self.n = dataset, chunk, size, dtype, n

    def __call__(self, start):
        count = min(self.n, start + self.chunk) - start
        if isinstance(self.dataset, MotionSliceDataset):
            x, y = self.dataset.batch(list(range(start, start + count)))
        else:  # the batched factory: whole batches, by batch index
            x, y = self.dataset.batch(start // self.chunk, self.chunk)
            x, y = x[:count].cpu(), y[:count].cpu()
        if self.size != x.shape[-1]:
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="area")
        return start, x.to(self.dtype), y
