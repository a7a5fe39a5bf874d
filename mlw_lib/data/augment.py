"""Batch augmentation of whole image tensors: random crop with zero padding, random flip.

One gather per batch (no per-image Python loop), on CPU or CUDA; dtype and memory format
(contiguous or channels_last) are kept. The data are normalized at load time, so the zero
padding is the per-channel mean colour, not black.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def random_crop_flip(
    x: torch.Tensor,
    padding: int = 4,
    flip: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Randomly crop and flip every image of `x` (N, C, H, W) independently -> (N, C, H, W).

    Each image is zero-padded by `padding` on every side and an H x W window is taken at a
    uniform offset in [0, 2*padding]^2 (content shifts by at most `padding` pixels); with
    `flip`, each image is mirrored left-right with probability 1/2. Random numbers come from
    `generator` (on its own device; default: the global generator of `x`'s device).
    `padding` >= 0 (`Augment` checks it).
    """
    if x.dim() != 4:
        raise ValueError(f"expected images (N, C, H, W), got shape {tuple(x.shape)}")
    if padding == 0 and not flip:
        return x
    n, c, h, w = x.shape
    on = dict(device=x.device)

    def draw(high: int) -> torch.Tensor:
        """(N,) ints in [0, high) on x's device."""
        rng_device = generator.device if generator is not None else x.device
        return torch.randint(0, high, (n,), generator=generator, device=rng_device).to(x.device)

    dy, dx = draw(2 * padding + 1), draw(2 * padding + 1)
    rows = dy[:, None] + torch.arange(h, **on)  # (N, H) rows of the padded image
    cols = torch.arange(w, **on).expand(n, w)
    if flip:
        cols = torch.where(draw(2)[:, None].bool(), w - 1 - cols, cols)
    cols = dx[:, None] + cols  # (N, W)
    padded = F.pad(x, (padding, padding, padding, padding))
    out = padded[
        torch.arange(n, **on)[:, None, None, None],
        torch.arange(c, **on)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


@dataclass(frozen=True)
class Augment:
    """Per-batch transform: `Augment(crop_padding=4, flip=True)(x, generator)`, x (N, C, H, W).

    See `random_crop_flip`; `crop_padding=0` disables the crop, `flip=False` the flip.
    """

    crop_padding: int = 4
    flip: bool = True

    def __post_init__(self) -> None:
        p = self.crop_padding
        if isinstance(p, bool) or not isinstance(p, int) or p < 0:
            raise ValueError(f"crop_padding must be an int >= 0, got {p!r}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return random_crop_flip(x, self.crop_padding, self.flip, generator)
