"""On-the-fly training samples (DESIGN §1 steps 1–5).

Each sample, fully determined by ``(seed, index)``:

1. a slice by the orientation rule (isotropic source: any of the three axes;
   anisotropic: the acquisition axis), fitted to 256 × 256;
2. for the synthetic source, domain randomisation of the clean slice
   (:mod:`SSIMQualityLib.synthesis`), all of it but the noise;
3. optional contrast augmentation (gamma, log, sigmoid, AHE);
4. motion corruption by one of the two algorithms (a share of samples is
   left clean, so that "no motion" is learnt as 1.0); then the synthetic
   source's Rician noise, the same draw added to both images (acquisition
   noise does not move with the head), inside a field of view (padded real
   slices have noise only there);
5. label = SSIM(clean, corrupted) by the project's convention; input = the
   normalised corrupted slice.

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
from .slices import SliceSampler, fit_to_size, normalize, take_slice
from .synthesis import RandomSynthesis, add_rician_noise, load_tissue_volume, synthesize


_NO_MOTION = RandomKSpaceMotion(severity=0.0)

#: Changes whenever the same ``(seed, index)`` would give a different sample,
#: so that caches of an older recipe are never reused.
#: 2: synthetic noise added after the motion, shared by both images.
#: 3: that noise only inside a field of view (a box around the head, or the whole canvas).
#: 4: the k-space algorithm keeps the centre of k-space at the original position.
DATA_VERSION = 4


class SliceSource:
    """Where clean slices come from.  ``draw(rng)`` → (H, W) float tensor or (C, H, W) tissue stack."""

    synthetic = False

    def draw(self, rng: np.random.Generator) -> torch.Tensor:
        raise NotImplementedError


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

        i = int(rng.integers(len(self.paths)))
        if i not in self._samplers:
            vol = read_volume(self.paths[i])
            self._samplers[i] = SliceSampler(vol.array.astype(np.float32), vol.spacing)
        sampler = self._samplers[i]
        sampler.rng = rng
        pick = sampler.sample()
        img = np.ascontiguousarray(take_slice(sampler.volume, pick.axis, pick.index))
        return fit_to_size(torch.as_tensor(img))


@dataclass
class SampleConfig:
    """How samples are made; every field has a default that trains well."""

    p_contrast: float = 0.8
    p_clean: float = 0.1
    p_kspace: float = 0.5
    severity: Tuple[float, float] = (0.0, 1.0)
    p_full_fov: float = 0.3  # share of synthetic slices whose noise fills the canvas (else a box around the head)


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
        self.source = source or SyntheticSource()
        self.seed = int(seed)
        self.config = config or SampleConfig()
        self.synthesis = RandomSynthesis()
        self.contrast = RandomContrast(p=self.config.p_contrast)
        self.motion = RandomMotion("random", self.config.severity, p_kspace=self.config.p_kspace)

    def __len__(self) -> int:
        return self.length

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, int(index)]))

    def clean_slice(self, index: int, rng: np.random.Generator) -> Tuple[torch.Tensor, float, int]:
        """Steps 1–3: the clean (randomised, contrast-adjusted) slice in [0, 1], 256 × 256.

        Returns the noise-free slice with the noise still to add after the
        motion: its sigma (in the slice's [0, 1] units) and seed.
        """
        raw = self.source.draw(rng)
        sigma, noise_seed = 0.0, 0
        if self.source.synthetic:
            params = self.synthesis.sample(rng)
            img = synthesize(raw, params, noise=False)
            sigma, noise_seed = params.noise, params.noise_seed
        else:
            img = raw.float()
        img = normalize(img)
        adjusted = self.contrast.sample(rng)(img.numpy())
        return torch.as_tensor(adjusted, dtype=torch.float32), sigma, noise_seed

    def batch(self, indices: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Samples for ``indices`` as (B, 1, 256, 256) inputs and (B,) labels."""
        _, corrupted, labels = self.pairs(indices)
        return normalize(corrupted)[:, None], labels

    def pairs(self, indices: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Clean slices, their corrupted twins (B, 256, 256) and the labels (B,) — for checks and teaching."""
        rngs = [self.rng(i) for i in indices]
        made = [self.clean_slice(i, r) for i, r in zip(indices, rngs)]
        clean = torch.stack([m[0] for m in made])
        transforms = []
        for r in rngs:
            if r.random() < self.config.p_clean:
                transforms.append(_NO_MOTION.sample(tuple(clean.shape[-2:]), r))
            else:
                transforms.append(self.motion.sample(tuple(clean.shape[-2:]), r))
        corrupted = apply_motion_batch(clean, transforms).clamp_min(0)
        for k, (_, sigma, noise_seed) in enumerate(made):
            if sigma > 0:
                fov = self.field_of_view(clean[k], rngs[k])
                both = add_rician_noise(torch.stack([clean[k], corrupted[k]]), sigma, noise_seed) * fov
                clean[k], corrupted[k] = both[0], both[1]
        labels = slice_labels(clean, corrupted).float()
        return clean, corrupted, labels

    def field_of_view(self, clean: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """A 0/1 mask of the acquired field of view on the 256² canvas.

        Real slices smaller than the canvas are zero-padded, so their noise
        stops at a sharp rectangle: the network must learn that such an edge
        is not an artefact.  The rectangle holds the head with a random margin
        (0 – 40 pixels a side); in a share of samples it is the whole canvas.
        """
        fov = torch.ones_like(clean)
        if rng.random() < self.config.p_full_fov:
            return fov
        head = 0.05 * float(clean.max())
        rows = torch.nonzero(clean.amax(dim=1) > head).flatten()
        cols = torch.nonzero(clean.amax(dim=0) > head).flatten()
        if len(rows) == 0 or len(cols) == 0:
            return fov
        m = rng.integers(0, 41, size=4)
        h, w = clean.shape
        top, bottom = max(0, int(rows[0]) - int(m[0])), min(h, int(rows[-1]) + 1 + int(m[1]))
        left, right = max(0, int(cols[0]) - int(m[2])), min(w, int(cols[-1]) + 1 + int(m[3]))
        fov.zero_()
        fov[top:bottom, left:right] = 1.0
        return fov

    def __getitem__(self, index: int):
        if not 0 <= index < self.length:
            raise IndexError(index)
        x, y = self.batch([index])
        return x[0], y[0]


def build_cache(dataset: MotionSliceDataset, size: int, chunk: int = 32, workers: int = 1, progress=None,
                dtype=torch.float16, start: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Materialise samples ``start`` … len − 1 at ``size`` × ``size`` (area-averaged) in memory.

    On a CPU the network and the sample maker compete for the same cores;
    making the samples once and reusing them for a few epochs keeps the
    loader's share of a training step near zero.
    """
    n = len(dataset)
    xs = torch.empty(n - start, 1, size, size, dtype=dtype)
    ys = torch.empty(n - start, dtype=torch.float32)
    starts = list(range(start, n, chunk))
    job = _CacheJob(dataset, chunk, size, dtype)
    if workers > 1:
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        with ctx.Pool(workers, initializer=_worker_init) as pool:
            results = pool.imap_unordered(job, starts)
            for first, x, y in results:
                xs[first - start:first - start + len(y)] = x
                ys[first - start:first - start + len(y)] = y
                if progress:
                    progress(len(y))
    else:
        for first in starts:
            _, x, y = job(first)
            xs[first - start:first - start + len(y)] = x
            ys[first - start:first - start + len(y)] = y
            if progress:
                progress(len(y))
    return xs, ys


def _worker_init():
    torch.set_num_threads(1)


class _CacheJob:
    def __init__(self, dataset, chunk, size, dtype):
        self.dataset, self.chunk, self.size, self.dtype = dataset, chunk, size, dtype

    def __call__(self, start):
        n = len(self.dataset)
        idx = list(range(start, min(n, start + self.chunk)))
        x, y = self.dataset.batch(idx)
        if self.size != x.shape[-1]:
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="area")
        return start, x.to(self.dtype), y
