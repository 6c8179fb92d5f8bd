"""Contrast augmentation: gamma, logarithmic, sigmoid, adaptive histogram equalisation.

Each adjustment is a deterministic class holding its parameters (the GUI
slider and the tests use these) and a ``Random…`` twin that only samples
parameters from documented ranges and hands them to the deterministic class
(the trainer uses these), as TorchIO does with ``RandomMotion`` → ``Motion``.
All work on normalised slices: float arrays in [0, 1] in, [0, 1] out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from .errors import BadParameterError
from .vocabulary import CONTRAST_KINDS, CONTRAST_PARAMETERS
from .seeds import Seed, as_rng




def _unit(image: np.ndarray) -> np.ndarray:
    """The slice as float64 in [0, 1]; a slice that is not normalised is refused (clipped, a raw slice came back
    as a mask: every voxel above 1 set to 1)."""
    a = np.asarray(image, dtype=np.float64)
    if a.size:
        _check_unit(float(a.min()), float(a.max()), "a slice", "this one spans")
    return np.clip(a, 0.0, 1.0)


def _check_unit(lo: float, hi: float, what: str, spans: str) -> None:
    """One line unless [lo, hi] lies in [0, 1] (float round-off of a normalised slice passes)."""
    if not (lo >= -1e-3 and hi <= 1 + 1e-3):
        raise BadParameterError(f"contrast changes take {what} normalised to [0, 1] (slices.normalize); {spans} "
                                f"{lo:.4g} to {hi:.4g}")


class ContrastTransform:
    """Base class: a deterministic intensity mapping of a [0, 1] slice."""

    name = "identity"

    def __call__(self, image: np.ndarray) -> np.ndarray:
        out = self.apply(_unit(image))
        return np.clip(out, 0.0, 1.0).astype(np.asarray(image).dtype if np.issubdtype(np.asarray(image).dtype, np.floating) else np.float32)

    def apply(self, image: np.ndarray) -> np.ndarray:
        return image

    def parameters(self) -> dict:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.parameters().items())
        return f"{type(self).__name__}({args})"


class Identity(ContrastTransform):
    """No change (the "no augmentation" draw)."""


class Gamma(ContrastTransform):
    """Power-law adjustment ``O = I ** gamma`` (``skimage.exposure.adjust_gamma``).

    Parameters
    ----------
    gamma : float, > 0
        Below 1 brightens dark tissue, above 1 darkens it.  The random twin
        draws it log-uniformly from [0.4, 2.5].

    Examples
    --------
    >>> Gamma(2.0)(np.array([[0.5]])).item()
    0.25
    """

    name = "gamma"

    def __init__(self, gamma: float):
        if not gamma > 0:
            raise BadParameterError(f"gamma must be > 0, got {gamma}")
        self.gamma = float(gamma)

    def apply(self, image):
        from skimage import exposure

        return exposure.adjust_gamma(image, self.gamma)

    def parameters(self):
        return {"gamma": self.gamma}


class Logarithmic(ContrastTransform):
    """Logarithmic adjustment ``O = gain · log2(1 + I)`` (``skimage.exposure.adjust_log``).

    With ``inverse=True`` the exponential ``O = gain · (2 ** I − 1)`` is used.

    Parameters
    ----------
    gain : float, > 0
        Output scale; results above 1 saturate.  Random range [0.8, 1.2].
    inverse : bool
        Exponential instead of logarithmic curve.  Random: either, 50 / 50.
    """

    name = "log"

    def __init__(self, gain: float = 1.0, inverse: bool = False):
        if not gain > 0:
            raise BadParameterError(f"gain must be > 0, got {gain}")
        self.gain = float(gain)
        self.inverse = bool(inverse)

    def apply(self, image):
        from skimage import exposure

        return exposure.adjust_log(image, self.gain, inv=self.inverse)

    def parameters(self):
        return {"gain": self.gain, "inverse": self.inverse}


class Sigmoid(ContrastTransform):
    """Sigmoid adjustment ``1 / (1 + exp(gain · (cutoff − I)))`` (``skimage.exposure.adjust_sigmoid``).

    The curve is rescaled so that 0 stays 0 and 1 stays 1: air stays air.

    Parameters
    ----------
    cutoff : float in (0, 1)
        Intensity of the steepest point.  Random range [0.3, 0.7].
    gain : float, > 0
        Steepness.  Random range [4, 12].
    """

    name = "sigmoid"

    def __init__(self, cutoff: float = 0.5, gain: float = 8.0):
        if not 0 < cutoff < 1:
            raise BadParameterError(f"cutoff must be in (0, 1), got {cutoff}")
        if not gain > 0:
            raise BadParameterError(f"gain must be > 0, got {gain}")
        self.cutoff = float(cutoff)
        self.gain = float(gain)

    def apply(self, image):
        from skimage import exposure

        out = exposure.adjust_sigmoid(image, self.cutoff, self.gain)
        lo = 1.0 / (1.0 + np.exp(self.gain * self.cutoff))
        hi = 1.0 / (1.0 + np.exp(self.gain * (self.cutoff - 1.0)))
        return (out - lo) / (hi - lo)

    def parameters(self):
        return {"cutoff": self.cutoff, "gain": self.gain}


class AdaptiveHistogramEqualization(ContrastTransform):
    """Contrast-limited adaptive histogram equalisation (``skimage.exposure.equalize_adapthist``).

    Parameters
    ----------
    clip_limit : float in (0, 1]
        Contrast limit; higher equalises harder.  Random range [0.005, 0.03].
    kernel_fraction : float in (0, 1]
        Tile size as a share of the image side (scikit-image's default 1/8).
    """

    name = "ahe"

    def __init__(self, clip_limit: float = 0.01, kernel_fraction: float = 0.125):
        if not 0 < clip_limit <= 1:
            raise BadParameterError(f"clip_limit must be in (0, 1], got {clip_limit}")
        if not 0 < kernel_fraction <= 1:
            raise BadParameterError(f"kernel_fraction must be in (0, 1], got {kernel_fraction}")
        self.clip_limit = float(clip_limit)
        self.kernel_fraction = float(kernel_fraction)

    def apply(self, image):
        from skimage import exposure

        kernel = tuple(max(2, int(round(s * self.kernel_fraction))) for s in image.shape)
        return exposure.equalize_adapthist(image, kernel_size=kernel, clip_limit=self.clip_limit)

    def parameters(self):
        return {"clip_limit": self.clip_limit, "kernel_fraction": self.kernel_fraction}


KINDS = dict(zip(CONTRAST_KINDS, (Gamma, Logarithmic, Sigmoid, AdaptiveHistogramEqualization)))


class RandomContrastTransform:
    """Base class of the random twins: ``sample`` draws a deterministic transform."""

    def sample(self, seed: Seed = None) -> ContrastTransform:
        raise NotImplementedError

    def __call__(self, image: np.ndarray, seed: Seed = None) -> np.ndarray:
        return self.sample(seed)(image)


def _check_range(name: str, r, *, above: float = 0.0, below: float = float("inf")) -> None:
    """One line for a draw range that is not (low, high) with ``above`` < low <= high < ``below`` (a reversed
    or negative range failed inside numpy, or drew NaN and overflowed)."""
    try:
        lo, hi = (float(v) for v in r)
    except (TypeError, ValueError):
        lo = hi = float("nan")
    if not (above < lo <= hi < below):
        raise BadParameterError(f"{name} must be (low, high) with {above:g} < low <= high"
                                + (f" < {below:g}" if below != float("inf") else "") + f"; got {r!r}")


@dataclass
class RandomGamma(RandomContrastTransform):
    """Gamma with ``gamma`` drawn log-uniformly from ``gamma_range``."""

    gamma_range: Tuple[float, float] = (0.4, 2.5)

    def __post_init__(self):
        _check_range("gamma_range", self.gamma_range)

    def sample(self, seed: Seed = None) -> Gamma:
        lo, hi = np.log(self.gamma_range)
        return Gamma(float(np.exp(as_rng(seed).uniform(lo, hi))))


@dataclass
class RandomLogarithmic(RandomContrastTransform):
    """Logarithmic (or inverse) with ``gain`` uniform in ``gain_range``."""

    gain_range: Tuple[float, float] = (0.8, 1.2)

    def __post_init__(self):
        _check_range("gain_range", self.gain_range)

    def sample(self, seed: Seed = None) -> Logarithmic:
        rng = as_rng(seed)
        return Logarithmic(float(rng.uniform(*self.gain_range)), bool(rng.integers(2)))


@dataclass
class RandomSigmoid(RandomContrastTransform):
    """Sigmoid with ``cutoff`` and ``gain`` uniform in their ranges."""

    cutoff_range: Tuple[float, float] = (0.3, 0.7)
    gain_range: Tuple[float, float] = (4.0, 12.0)

    def __post_init__(self):
        _check_range("cutoff_range", self.cutoff_range, below=1.0)
        _check_range("gain_range", self.gain_range)

    def sample(self, seed: Seed = None) -> Sigmoid:
        rng = as_rng(seed)
        return Sigmoid(float(rng.uniform(*self.cutoff_range)), float(rng.uniform(*self.gain_range)))


@dataclass
class RandomAdaptiveHistogramEqualization(RandomContrastTransform):
    """AHE with ``clip_limit`` drawn log-uniformly from ``clip_range``."""

    clip_range: Tuple[float, float] = (0.005, 0.03)

    def __post_init__(self):
        _check_range("clip_range", self.clip_range, below=1.0 + 1e-12)

    def sample(self, seed: Seed = None) -> AdaptiveHistogramEqualization:
        lo, hi = np.log(self.clip_range)
        return AdaptiveHistogramEqualization(float(np.exp(as_rng(seed).uniform(lo, hi))))


#: The random twin of each kind, by name.
RANDOM_KINDS = dict(zip(CONTRAST_KINDS, (RandomGamma, RandomLogarithmic, RandomSigmoid,
                                        RandomAdaptiveHistogramEqualization)))


class RandomContrast(RandomContrastTransform):
    """The method's contrast augmentation: with probability ``p`` one of the four, at random.

    Parameters
    ----------
    p : float in [0, 1]
        Probability of applying an adjustment at all (the rest: identity).
    kinds : sequence of str
        Which adjustments to pick from (default all: gamma, log, sigmoid, ahe).

    Examples
    --------
    >>> t = RandomContrast(p=1.0).sample(seed=3)
    >>> t.name in KINDS
    True
    """

    def __init__(self, p: float = 0.8, kinds: Sequence[str] = tuple(KINDS)):
        if not 0 <= p <= 1:
            raise BadParameterError(f"p must be in [0, 1], got {p}")
        kinds = (kinds,) if isinstance(kinds, str) else kinds  # "gamma" read as the kinds 'a', 'g', 'm'
        unknown = set(kinds) - set(KINDS)
        if unknown or not kinds:
            raise BadParameterError(f"unknown contrast kinds {sorted(unknown)}; choose from {sorted(KINDS)}")
        self.p = float(p)
        self.kinds = tuple(kinds)
        self._random = {name: cls() for name, cls in RANDOM_KINDS.items()}

    def sample(self, seed: Seed = None) -> ContrastTransform:
        rng = as_rng(seed)
        if rng.random() >= self.p:
            return Identity()
        kind = self.kinds[int(rng.integers(len(self.kinds)))]
        return self._random[kind].sample(rng)


def make_contrast(kind: str, parameter: Optional[float] = None) -> ContrastTransform:
    """A deterministic transform from a kind name and its main parameter (for GUIs and CLIs).

    The main parameter is ``gamma`` for gamma, ``gain`` for log, ``gain`` for
    sigmoid (cutoff 0.5) and ``clip_limit`` for ahe; ``None`` gives a
    moderate default (:data:`~SSIMQualityLib.vocabulary.CONTRAST_PARAMETERS`).
    """
    if kind not in KINDS:
        raise BadParameterError(f"unknown contrast kind {kind!r}; choose from {', '.join(KINDS)}")
    value = CONTRAST_PARAMETERS[kind][0] if parameter is None else float(parameter)
    if kind == "gamma":
        return Gamma(value)
    if kind == "log":
        return Logarithmic(value)
    if kind == "sigmoid":
        return Sigmoid(0.5, value)
    return AdaptiveHistogramEqualization(value)


def apply_contrast_batch(images: torch.Tensor, transforms: Sequence[ContrastTransform], *,
                         check: bool = True) -> torch.Tensor:
    """Apply one deterministic transform per image of (B, H, W) in [0, 1], batched on the images' device.

    Images outside [0, 1] are refused, as a single transform refuses them (clipped, a raw slice came back as a
    mask).  ``check=False`` skips the test, for a caller whose images are normalised by construction (the
    sample factory: the test reads a value back, which waits for a GPU).

    Gamma, log and sigmoid are elementwise (the same formulas as scikit-image's
    ``adjust_*`` on float images, whose range is [0, 1]); AHE runs as the
    batched CLAHE of :mod:`SSIMQualityLib.clahe` (its difference from
    scikit-image is documented there).
    """
    if len(transforms) != images.shape[0]:
        raise BadParameterError(f"need one transform per image: {len(transforms)} for {images.shape[0]}")
    if check and images.numel():
        _check_unit(float(images.min()), float(images.max()), "slices", "these span")
    out = images.clone()
    dev, dt = images.device, images.dtype

    def column(values):
        return torch.tensor(values, dtype=dt, device=dev)[:, None, None]

    by_kind = {}
    for k, t in enumerate(transforms):
        by_kind.setdefault(t.name, []).append(k)
    for name, members in by_kind.items():
        x = images[members].clamp(0, 1)  # as ContrastTransform.__call__: in and out clipped to [0, 1]
        ts = [transforms[k] for k in members]
        if name == "gamma":
            y = x ** column([t.gamma for t in ts])
        elif name == "log":
            gain, inverse = column([t.gain for t in ts]), column([float(t.inverse) for t in ts]) > 0
            y = gain * torch.where(inverse, torch.exp2(x) - 1, torch.log2(1 + x))
        elif name == "sigmoid":
            cutoff, gain = column([t.cutoff for t in ts]), column([t.gain for t in ts])
            lo, hi = 1 / (1 + torch.exp(gain * cutoff)), 1 / (1 + torch.exp(gain * (cutoff - 1)))
            y = (1 / (1 + torch.exp(gain * (cutoff - x))) - lo) / (hi - lo)
        elif name == "ahe":
            from .clahe import equalize_adapthist_batch

            fractions = {t.kernel_fraction for t in ts}
            if len(fractions) != 1:
                raise BadParameterError("one kernel_fraction per batch")
            # float64 clip limits: the same integer limit in counts as scikit-image's
            limits = torch.tensor([t.clip_limit for t in ts], dtype=torch.float64, device=dev)
            y = equalize_adapthist_batch(x, limits, kernel_fraction=fractions.pop())
        else:
            continue  # identity
        out[members] = y.clamp(0, 1).to(dt)
    return out
