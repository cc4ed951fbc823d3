"""The DCDM direction network for 2-D grids (Kaneda et al., ICML 2023, §3.3 and the authors' ``DIM=2`` model): a
small U-Net-like residual CNN mapping a normalized residual to a search direction (≈ ``A⁻¹ r`` up to a scale).

Layout (defaults as the paper's): a lifting 3×3 conv and ``fine − 1`` residual 3×3 convs at full resolution
(16 channels), 2×2 average pooling, ``coarse`` residual convs, nearest upsampling added to the skip, ``post``
residual convs and a 1×1 conv to one channel.  Deviation: the fluid mask is a second input channel (so one
network serves several obstacle layouts) and the output is zeroed on solid cells.  Save/load keep the
configuration with the weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DirectionNet", "load_direction_net", "save_direction_net"]


class DirectionNet(nn.Module):
    """``f_θ(r, mask) → direction`` on ``[B, 1, H, W]`` grids (``H``, ``W`` even)."""

    def __init__(self, channels: int = 16, fine: int = 5, coarse: int = 6, post: int = 4) -> None:
        super().__init__()
        for name, v in (("channels", channels), ("fine", fine), ("coarse", coarse), ("post", post)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"`{name}` must be an integer ≥ 1, got {v!r}")
        self.config = {"channels": channels, "fine": fine, "coarse": coarse, "post": post}

        def conv() -> nn.Conv2d:
            return nn.Conv2d(channels, channels, 3, padding=1)

        self.lift = nn.Conv2d(2, channels, 3, padding=1)
        self.fine = nn.ModuleList(conv() for _ in range(fine - 1))
        self.coarse = nn.ModuleList(conv() for _ in range(coarse))
        self.post = nn.ModuleList(conv() for _ in range(post))
        self.head = nn.Conv2d(channels, 1, 1)

    def forward(self, r: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if r.ndim != 4 or r.shape[1] != 1 or r.shape[2] % 2 or r.shape[3] % 2:
            raise ValueError(f"`r` must be [B, 1, H, W] with even H and W, got {tuple(r.shape)}")
        m = mask.to(r.dtype).expand_as(r)
        h = F.relu(self.lift(torch.cat([r, m], 1)))
        for layer in self.fine:
            h = h + F.relu(layer(h))
        c = F.avg_pool2d(h, 2)
        for layer in self.coarse:
            c = c + F.relu(layer(c))
        h = h + F.interpolate(c, scale_factor=2.0, mode="nearest")
        for layer in self.post:
            h = h + F.relu(layer(h))
        out: torch.Tensor = self.head(h) * m
        return out


def save_direction_net(net: DirectionNet, path: str | Path, **meta: Any) -> None:
    """Write the configuration, the weights and ``meta`` (e.g. how it was trained) to ``path``."""
    torch.save({"config": net.config, "state_dict": net.state_dict(), "meta": meta}, Path(path))


def load_direction_net(path: str | Path) -> DirectionNet:
    """A :class:`DirectionNet` from a file written by :func:`save_direction_net` (``weights_only`` loading)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no direction-network checkpoint at {p}")
    blob = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or "config" not in blob or "state_dict" not in blob:
        raise ValueError(f"{p} is not a checkpoint written by save_direction_net")
    net = DirectionNet(**blob["config"])
    net.load_state_dict(blob["state_dict"])
    net.eval()
    return net
