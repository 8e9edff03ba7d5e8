"""The two fusion operations: CEN channel exchange and AsymFusion shuffle + pixel shift.

Both act on a list of branch tensors ``[N, C, H, W]`` inside a residual block.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .parallel import Branches

# Pixel-shift offsets (dy, dx) for the 4 channel groups: group k at (y, x) takes the value of
# its neighbour at (y + dy, x + dx), zero outside the image (official AsymFusion order).
SHIFT_OFFSETS = ((-1, 0), (0, -1), (0, 1), (1, 0))


def exchange_masks(gammas: list[torch.Tensor], threshold: float) -> list[torch.Tensor]:
    """Per branch, True where a channel keeps its own BN output (``|gamma| >= threshold``)."""
    return [g.detach().abs() >= threshold for g in gammas]


def channel_exchange(xs: Branches, keep: list[torch.Tensor]) -> Branches:
    """CEN exchange: branch m keeps channel c where ``keep[m][c]``, else takes the other branch's
    value (for more than two branches, the mean of all the others)."""
    num = len(xs)
    if num < 2:
        return xs
    total = torch.stack(xs).sum(0) if num > 2 else None
    out = []
    for m, x in enumerate(xs):
        others = xs[1 - m] if num == 2 else (total - x) / (num - 1)
        out.append(torch.where(keep[m].view(1, -1, 1, 1), x, others))
    return out


def shuffle_channels(xs: Branches, split: int, inverse: bool = False) -> Branches:
    """AsymFusion channel shuffle: branch m keeps its first ``split`` channels and takes the rest
    from its neighbour (m+1 for the forward shuffle, m-1 for the inverse; with two branches both
    are the swap of the official code, which is its own inverse)."""
    num = len(xs)
    if num < 2:
        return xs
    step = -1 if inverse else 1
    return [torch.cat([x[:, :split], xs[(m + step) % num][:, split:]], dim=1)
            for m, x in enumerate(xs)]


def pixel_shift(x: torch.Tensor, group: int) -> torch.Tensor:
    """Shift the first ``4 * group`` channels, ``group`` at a time, one pixel along
    ``SHIFT_OFFSETS`` with zero fill; the remaining channels are zero."""
    h, w = x.shape[-2:]
    padded = F.pad(x[:, :4 * group], (1, 1, 1, 1))
    parts = []
    for k, (dy, dx) in enumerate(SHIFT_OFFSETS):
        parts.append(padded[:, k * group:(k + 1) * group, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w])
    parts.append(torch.zeros_like(x[:, 4 * group:]))
    return torch.cat(parts, dim=1)
