"""Crop-and-resize of a batch as matrix products: one operator per sample and axis, built on the device.

The sample factory crops every sample of a group to its own field of view and resizes it to the group's
matrix (in image space, or in k-space for Gibbs ringing: :func:`~SSIMQualityLib.slices.fourier_resample`).
One sample at a time that is a dozen small operations per sample; on a GPU, where each operation is a
kernel launch and the arithmetic is nearly free, it was the largest single source of launches in the factory
(about 13,000 of 33,000 operations for a batch of 512).  Every one of these resizes is linear along each axis,
so a sample's crop-and-resize is ``R @ image @ C.T`` with ``R`` (rows out × rows in) and ``C`` (columns out ×
columns in); the operators of a whole group are built at once from index arithmetic, and the group is resized
by two batched products.

The operators reproduce, to float round-off (tested against the per-sample functions):

* :data:`AREA`: ``F.interpolate(mode="area")`` (adaptive average pooling: output ``i`` averages inputs
  ``floor(i n_in / n_out)`` to ``ceil((i + 1) n_in / n_out) - 1``);
* :data:`BILINEAR`: ``F.interpolate(mode="bilinear", align_corners=False)``;
* :data:`FOURIER`: the centred spectrum cropped or zero-filled, as :func:`~SSIMQualityLib.slices.fourier_resample`
  (a Dirichlet kernel, summed in closed form, complex).

A crop reaching outside the image reads zeros there, as :func:`~SSIMQualityLib.slices.crop` pads.
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np
import torch

#: Kinds of resize, by code in :func:`axis_operators`' ``kind``.
AREA, BILINEAR, FOURIER = 0, 1, 2


def axis_operators(n_in, n_out, kind, *, offset=None, in_len: int, out_len: int, device="cpu") -> torch.Tensor:
    """(B, out_len, in_len) resize matrices along one axis, one per sample.

    Sample ``b`` reads positions ``offset[b] .. offset[b] + n_in[b] - 1`` of an axis of ``in_len`` samples (its
    crop; positions outside ``0 .. in_len - 1`` are zeros) and writes ``n_out[b]`` samples; rows from
    ``n_out[b]`` on are zero.  Real (float32) unless some ``kind`` is :data:`FOURIER` (then complex64).

    Parameters
    ----------
    n_in, n_out, kind, offset : array-like of int, shape (B,)
        Crop lengths, output lengths, kinds (:data:`AREA`, :data:`BILINEAR`, :data:`FOURIER`) and crop starts
        (default 0).

    Examples
    --------
    >>> m = axis_operators([4], [2], [AREA], in_len=4, out_len=2)
    >>> m[0].tolist()
    [[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]]
    >>> x = torch.arange(6.0)
    >>> m = axis_operators([4], [2], [AREA], offset=[1], in_len=6, out_len=2)
    >>> (m[0] @ x).tolist()                        # the crop 1 .. 4, halved
    [1.5, 3.5]
    """
    kinds = np.asarray(kind, dtype=np.int64)
    b = len(kinds)
    # One copy to the device for all the per-sample integers.
    ints = np.stack([np.asarray(n_in, dtype=np.int64), np.asarray(n_out, dtype=np.int64),
                     np.zeros(b, np.int64) if offset is None else np.asarray(offset, dtype=np.int64), kinds])
    nin, nout, off, kd = torch.as_tensor(ints, device=device)[:, :, None, None].unbind(0)  # each (B, 1, 1)
    i = torch.arange(out_len, device=device)[None, :, None]
    p = torch.arange(in_len, device=device)[None, None, :] - off  # position within the crop
    valid = (p >= 0) & (p < nin) & (i < nout)
    out = None
    if (kinds == AREA).any():
        start = torch.div(i * nin, nout, rounding_mode="floor")
        end = torch.div((i + 1) * nin + nout - 1, nout, rounding_mode="floor")
        w = ((p >= start) & (p < end)).to(torch.float32) / (end - start).clamp_min(1).to(torch.float32)
        out = torch.where(kd == AREA, w, 0.0)
    if (kinds == BILINEAR).any():
        # As torch's upsample_bilinear2d (align_corners=False): source = scale (i + 0.5) - 0.5, floored at 0,
        # in float32 with scale = n_in / n_out.
        scale = nin.to(torch.float32) / nout.to(torch.float32)
        src = (scale * (i.to(torch.float32) + 0.5) - 0.5).clamp_min(0)
        i0 = src.floor().to(torch.int64).minimum(nin - 1)
        i1 = i0 + (i0 < nin - 1).to(torch.int64)
        frac = (src - i0.to(torch.float32)).clamp(0, 1)
        w = (p == i0).to(torch.float32) * (1 - frac) + (p == i1).to(torch.float32) * frac
        out = torch.where(kd == BILINEAR, w, 0.0 if out is None else out)
    if (kinds == FOURIER).any():
        # sum over f = -(m//2) .. m - m//2 - 1 of exp(2 pi i f theta) / n_in, theta = i / n_out - p / n_in
        # = exp(i pi theta (m - 1 - 2 (m//2))) sin(pi m theta) / sin(pi theta) / n_in, and m where theta is an
        # integer.  theta from exact integers, reduced to (-1/2, 1/2] (the sum has period 1).
        m = torch.minimum(nin, nout)
        n = nin * nout
        q = torch.remainder(i * nin - p * nout, n)
        q = torch.where(2 * q > n, q - n, q)
        theta = q.to(torch.float64) / n.to(torch.float64)
        zero = q == 0
        ratio = torch.where(zero, m.to(torch.float64),
                            torch.sin(math.pi * m * theta) / torch.where(zero, 1.0, torch.sin(math.pi * theta)))
        phase = math.pi * theta * (m - 1 - 2 * torch.div(m, 2, rounding_mode="floor")).to(torch.float64)
        amplitude = ratio / nin.to(torch.float64)  # signed: torch.polar leaves negative magnitudes undefined
        w = torch.complex(amplitude * torch.cos(phase), amplitude * torch.sin(phase)).to(torch.complex64)
        out = torch.where(kd == FOURIER, w, torch.zeros((), dtype=torch.complex64, device=device)
                          if out is None else out.to(torch.complex64))
    return torch.where(valid, out, torch.zeros((), dtype=out.dtype, device=device))


def crop_resize_batch(images: torch.Tensor, boxes: np.ndarray, size: Tuple[int, int], in_kspace) -> torch.Tensor:
    """Each image of (B, H, W) cropped to its box and resized to ``size``, as one pair of batched products.

    ``boxes`` (B, 4): rows ``r0:r1`` and columns ``c0:c1`` (may reach outside the image: zeros there).
    ``in_kspace`` (B,) bool: resize in k-space (:func:`~SSIMQualityLib.slices.fourier_resample`), else in
    image space (:func:`~SSIMQualityLib.slices.resample`: area averaging when the longest side shrinks,
    bilinear otherwise).  Equal to ``crop`` then the per-sample resize, to float round-off (tested).

    Examples
    --------
    >>> img = torch.arange(16.0).reshape(1, 4, 4)
    >>> crop_resize_batch(img, np.array([[0, 4, 0, 4]]), (2, 2), [False])
    tensor([[[ 2.5000,  4.5000],
             [10.5000, 12.5000]]])
    """
    b, h, w = images.shape
    boxes = np.asarray(boxes, dtype=np.int64).reshape(b, 4)
    oh, ow = int(size[0]), int(size[1])
    heights, widths = boxes[:, 1] - boxes[:, 0], boxes[:, 3] - boxes[:, 2]
    area = max(oh, ow) < np.maximum(heights, widths)
    kind = np.where(np.asarray(in_kspace, dtype=bool), FOURIER, np.where(area, AREA, BILINEAR))
    rows = axis_operators(heights, np.full(b, oh), kind, offset=boxes[:, 0], in_len=h, out_len=oh,
                          device=images.device)
    cols = axis_operators(widths, np.full(b, ow), kind, offset=boxes[:, 2], in_len=w, out_len=ow,
                          device=images.device)
    if rows.is_complex():
        return (rows @ (images.to(torch.complex64) @ cols.transpose(1, 2))).abs().to(images.dtype)
    return (rows @ images.float() @ cols.transpose(1, 2)).to(images.dtype)
