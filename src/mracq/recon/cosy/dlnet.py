"""DLNet: the seed's encoder-decoder residual CNN for sparse 2D COSY maps (seed 000, Fig. 2).

Input: two channels, the normalized sparse map (zeros where missing) and the sampling mask,
padded to 64 x 64. Encoder: a 3x3 convolution to ``width`` channels; ``depth`` groups of a
residual block (conv-ReLU-conv, sum, ReLU) followed by a learnable 2x2/stride-2 pooling
convolution that doubles the channels; a bottleneck residual block (``width 2^depth``
channels: 512 for the seed's width 32). Decoder: ``depth`` groups of a 2x2/stride-2
transposed convolution, a skip connection (sum) from the encoder level of the same
resolution, and a residual block; a final 3x3 convolution to one channel.

The shipped weights (``mracq/data/dlnet.pt``) are loaded with ``torch.load(...,
weights_only=True)``: nothing is downloaded.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

SIZE = 64
"""Network input size (maps are padded to SIZE x SIZE)."""
DEFAULT_WEIGHTS = "dlnet.pt"


class ResBlock(nn.Module):
    """conv3x3 - ReLU - conv3x3 - (+ input) - ReLU, channels preserved."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.c2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.c2(torch.relu(self.c1(x))))


class DLNet(nn.Module):
    """Encoder-decoder residual CNN.

    Parameters
    ----------
    width : int
        Channels of the first level (the seed uses 32; doubled at each pooling).
    depth : int
        Number of pooling levels (64 -> 4 for depth 4, the seed's layout).
    """

    def __init__(self, width: int = 32, depth: int = 4) -> None:
        super().__init__()
        if width < 1 or depth < 1 or SIZE % 2**depth:
            raise ValueError(f"bad DLNet shape: width={width}, depth={depth}")
        self.config = {"width": int(width), "depth": int(depth)}
        ch = [width * 2**k for k in range(depth + 1)]
        self.inp = nn.Conv2d(2, width, 3, padding=1)
        self.enc = nn.ModuleList(ResBlock(c) for c in ch[:-1])
        self.pool = nn.ModuleList(nn.Conv2d(ch[k], ch[k + 1], 2, stride=2) for k in range(depth))
        self.mid = ResBlock(ch[-1])
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(ch[k + 1], ch[k], 2, stride=2) for k in reversed(range(depth))
        )
        self.dec = nn.ModuleList(ResBlock(ch[k]) for k in reversed(range(depth)))
        self.out = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, 2, 64, 64) map and mask; returns (B, 1, 64, 64)."""
        h = torch.relu(self.inp(x))
        skips = []
        for res, pool in zip(self.enc, self.pool, strict=True):
            h = res(h)
            skips.append(h)
            h = pool(h)
        h = self.mid(h)
        for up, res, skip in zip(self.up, self.dec, reversed(skips), strict=True):
            h = res(up(h) + skip)
        return self.out(h)


def pad_input(x: np.ndarray, mask: np.ndarray) -> torch.Tensor:
    """Stack normalized maps and masks (B, n1, n2) into a zero-padded (B, 2, 64, 64) tensor."""
    x = np.asarray(x, dtype=np.float32)
    mask = np.asarray(mask, dtype=np.float32)
    b, n1, n2 = x.shape
    if n1 > SIZE or n2 > SIZE:
        raise ValueError(f"map {n1} x {n2} is larger than {SIZE} x {SIZE}")
    out = np.zeros((b, 2, SIZE, SIZE), dtype=np.float32)
    out[:, 0, :n1, :n2] = np.where(mask > 0, x, 0.0)
    out[:, 1, :n1, :n2] = mask
    return torch.from_numpy(out)


def save_weights(net: DLNet, path: str | Path, extra: dict | None = None) -> None:
    """Save config and state dict (half precision to keep the file small)."""
    state = {k: v.detach().to(torch.float16) for k, v in net.state_dict().items()}
    torch.save({"config": dict(net.config), "state": state, "extra": extra or {}}, path)


def load_weights(path: str | Path | None = None) -> DLNet:
    """Load a DLNet from ``path`` (default: the shipped weights), offline, eval mode."""
    if path is None:
        ref = resources.files("mracq") / "data" / DEFAULT_WEIGHTS
        with resources.as_file(ref) as p:
            return load_weights(p)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no DLNet weights at {path}")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    net = DLNet(**blob["config"])
    net.load_state_dict({k: v.float() for k, v in blob["state"].items()})
    net.eval()
    return net


@lru_cache(maxsize=1)
def default_net() -> DLNet:
    """The shipped network (loaded once)."""
    return load_weights()


def predict(net: DLNet, x: np.ndarray, mask: np.ndarray, threads: int | None = 1) -> np.ndarray:
    """Run ``net`` on normalized maps (B, n1, n2) with masks; returns (B, n1, n2).

    ``threads``: torch intra-op threads during the call (restored after). One thread is
    the default: a 64 x 64 map takes ~10 ms, while two threads on a loaded 2-core machine
    took 0.7 s (thread synchronization under oversubscription). None keeps the setting.
    """
    n1, n2 = x.shape[-2:]
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            y = net(pad_input(x, mask))
    finally:
        torch.set_num_threads(old)
    return y[:, 0, :n1, :n2].double().numpy()
