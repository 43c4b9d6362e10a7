"""Training data and training loop for DLNet (used by ``mracq train dlnet``).

Data (seed 000, Fig. 2c, with the normalization made identical to inference): random
13C clusters (`mracq.sim.cosy.couplings.random_clusters`) give noiseless COSY maps on the
experiment's grid; maps with a peak-to-peak signal below ``min_ptp`` (clusters the
experiment would not see) are redrawn. Each map is normalized to [0, 1]; every time it is
used it gets fresh Gaussian noise (sigma drawn in ``noise``, the seed's 0.1 inside the
range) and a fresh random mask (coverage drawn in ``coverage``, 10-40%). The network input
is the noisy map min-max normalized over its observed entries (what
`mracq.recon.dlmc.reconstruct` does to measured data) and the target is the noiseless map
under the same affine map. Loss L1 over the map (padding excluded), Adam 5e-4.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from mracq.recon.cosy.dlnet import SIZE, DLNet, pad_input
from mracq.sim.cosy.couplings import random_clusters
from mracq.sim.cosy.model import simulate_map

log = logging.getLogger(__name__)


def training_maps(
    n: int, rng: np.random.Generator, *, m: int = 2, min_ptp: float = 0.05
) -> np.ndarray:
    """``n`` noiseless maps (n, 50, 50) normalized to [0, 1], signal ptp >= ``min_ptp``."""
    out = []
    have = 0
    while have < n:
        pos = random_clusters(max(2 * (n - have), 64), rng, m=m)
        maps = simulate_map(pos)
        ptp = np.ptp(maps, axis=(1, 2))
        keep = maps[ptp >= min_ptp]
        out.append(keep)
        have += len(keep)
    maps = np.concatenate(out)[:n]
    lo = maps.min(axis=(1, 2), keepdims=True)
    return (maps - lo) / np.ptp(maps, axis=(1, 2), keepdims=True)


def random_masks(
    shape: tuple[int, ...], rng: np.random.Generator, coverage: float | tuple[float, float]
) -> np.ndarray:
    """Boolean masks (B, n1, n2), each with exactly round(c n1 n2) entries, c per mask."""
    b, n1, n2 = shape
    cov = np.broadcast_to(
        rng.uniform(*coverage, size=b) if isinstance(coverage, tuple) else coverage, (b,)
    )
    keys = rng.random((b, n1 * n2))
    ranks = keys.argsort(axis=1).argsort(axis=1)
    k = np.maximum(1, np.round(cov * n1 * n2)).astype(int)
    return (ranks < k[:, None]).reshape(b, n1, n2)


def normalize_observed(
    measured: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Min-max normalize each map (B, n1, n2) over its observed entries.

    Returns ``(normalized, lo, span)`` with lo, span of shape (B, 1, 1).
    """
    big = np.where(mask, measured, np.inf)
    lo = big.min(axis=(1, 2), keepdims=True)
    hi = np.where(mask, measured, -np.inf).max(axis=(1, 2), keepdims=True)
    span = np.where(hi > lo, hi - lo, 1.0)
    return np.where(mask, (measured - lo) / span, 0.0), lo, span


def make_batch(
    truth: np.ndarray,
    rng: np.random.Generator,
    *,
    noise: tuple[float, float] = (0.05, 0.3),
    coverage: tuple[float, float] = (0.1, 0.4),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs, masks and targets (B, n1, n2) from normalized noiseless maps ``truth``."""
    b = truth.shape[0]
    sigma = rng.uniform(*noise, size=(b, 1, 1))
    noisy = truth + sigma * rng.normal(size=truth.shape)
    mask = random_masks(truth.shape, rng, coverage)
    x, lo, span = normalize_observed(noisy, mask)
    return x, mask, (truth - lo) / span


@dataclass
class TrainConfig:
    """Training settings (defaults: the shipped weights)."""

    n_maps: int = 10000
    n_val: int = 200
    width: int = 8
    depth: int = 4
    batch: int = 32
    lr: float = 5e-4
    minutes: float = 28.0
    max_steps: int = 4000
    noise: tuple[float, float] = (0.05, 0.3)
    coverage: tuple[float, float] = (0.1, 0.4)
    min_ptp: float = 0.05
    seed: int = 0
    val_seed: int = 12345
    threads: int = 2
    checkpoint_every: int = 200
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TrainResult:
    """Outcome of `train`: the network, steps, seconds, and validation metrics."""

    net: DLNet
    steps: int
    seconds: float
    samples: int
    val: dict


def _val_loss(net: DLNet, val: tuple[np.ndarray, ...]) -> dict:
    out = {}
    net.eval()
    with torch.no_grad():
        for name, (x, mask, target, truth_rng) in val.items():
            y = net(pad_input(x, mask))[:, 0, : x.shape[1], : x.shape[2]].numpy()
            err = (y - target) * truth_rng
            out[name] = float(np.sqrt(np.mean(err**2)))
    net.train()
    return out


def validation_set(cfg: TrainConfig) -> dict:
    """Fixed validation batches at 10% and 40% coverage, noise 0.1, held-out clusters."""
    rng = np.random.default_rng(cfg.val_seed)
    truth = training_maps(cfg.n_val, rng, min_ptp=cfg.min_ptp)
    val = {}
    for cov in (0.1, 0.4):
        x, mask, target = make_batch(truth, rng, noise=(0.1, 0.1), coverage=(cov, cov))
        span = 1.0 / np.ptp(target, axis=(1, 2), keepdims=True)  # back to the [0, 1] scale
        val[f"rmse_{int(cov * 100)}pct"] = (x, mask, target, span)
    return val


def train(
    cfg: TrainConfig, checkpoint: str | Path | None = None, progress: bool = True
) -> TrainResult:
    """Train a DLNet on simulated maps within ``cfg.minutes`` (and ``cfg.max_steps``).

    The learning rate is ``cfg.lr`` for the first 70% of the step or time budget and a third of it
    after. A checkpoint (network, optimizer, step) is written every
    ``cfg.checkpoint_every`` steps and resumed from when it exists.
    """
    from tqdm import tqdm

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    t_data = time.time()
    truth = training_maps(cfg.n_maps, rng, min_ptp=cfg.min_ptp)
    log.info("made %d training maps in %.1f s", len(truth), time.time() - t_data)
    val = validation_set(cfg)
    net = DLNet(cfg.width, cfg.depth)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    step = 0
    if checkpoint is not None and Path(checkpoint).is_file():
        blob = torch.load(checkpoint, map_location="cpu", weights_only=True)
        net.load_state_dict(blob["net"])
        opt.load_state_dict(blob["opt"])
        step = int(blob["step"])
        log.info("resumed from %s at step %d", checkpoint, step)
    n1, n2 = truth.shape[1:]
    weight = torch.zeros(1, 1, SIZE, SIZE)
    weight[..., :n1, :n2] = 1.0
    t0 = time.time()
    budget = cfg.minutes * 60
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not progress, desc="dlnet")
    history = []
    while step < cfg.max_steps and time.time() - t0 < budget:
        frac = max((time.time() - t0) / budget, step / cfg.max_steps)
        for g in opt.param_groups:
            g["lr"] = cfg.lr if frac < 0.7 else cfg.lr / 3
        idx = rng.integers(0, len(truth), cfg.batch)
        batch = truth[idx]
        if rng.random() < 0.5:
            batch = np.swapaxes(batch, 1, 2)
        x, mask, target = make_batch(batch, rng, noise=cfg.noise, coverage=cfg.coverage)
        inp = pad_input(x, mask)
        tgt = torch.zeros(cfg.batch, 1, SIZE, SIZE)
        tgt[:, 0, :n1, :n2] = torch.from_numpy(target.astype(np.float32))
        loss = ((net(inp) - tgt).abs() * weight).sum() / (cfg.batch * n1 * n2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % cfg.checkpoint_every == 0:
            v = _val_loss(net, val)
            history.append({"step": step, "loss": float(loss.item()), **v})
            log.info("step %d loss %.4f val %s", step, loss.item(), v)
            if checkpoint is not None:
                tmp = Path(str(checkpoint) + ".tmp")
                torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "step": step}, tmp)
                os.replace(tmp, checkpoint)
    bar.close()
    seconds = time.time() - t0
    net.eval()
    v = _val_loss(net, val)
    v["history"] = history
    return TrainResult(net, step, seconds, step * cfg.batch, v)


MODEL_CARD = """# DLNet model card (`{weights}`)

Encoder-decoder residual CNN of Kong et al., npj Quantum Inf. 6, 79 (2020), Fig. 2
(`mracq.recon.cosy.dlnet.DLNet`), width {width} (seed: 32), depth {depth} (64 -> {bottom} px),
{params} parameters, stored in float16 ({size_kb:.0f} kB).

## Data
{n_maps} simulated two-13C COSY maps (`mracq.sim.cosy.simulate_map`, B = 158 mT,
tau = 2045 ns, N = 40, t1, t2 = 4 us ... 886 us in 18 us steps, 50 x 50), random pairs
(C-C 0.154 nm, uniform orientation, centre 0.7-1.2 nm above the NV within 0.8 nm laterally;
maps with peak-to-peak signal < {min_ptp} redrawn), training seed {seed}. Each use: map
normalized to [0, 1], Gaussian noise sigma in {noise}, random mask with coverage in
{coverage}, input renormalized over its observed entries. Validation: {n_val} maps from
seed {val_seed} (clusters never used in training), noise 0.1.

## Training
L1 loss, Adam lr {lr} (a third of it after 70% of the step or time budget), batch {batch},
{steps} steps ({samples} samples, {epochs:.1f} passes over the maps) in {used_minutes:.1f} min
(budget {minutes} min) on {threads} CPU threads;
load average before/after: {load_before} / {load_after}.

Command: `{command}`

## Metrics (validation, RMSE on the [0, 1] scale of the noiseless map, DL only)
{metrics}

Trade-off: the seed trains width 32 for 500 epochs on a GPU; on 2 shared CPU cores a
30-minute budget allows width {width} and about {epochs:.0f} passes; more width or time
lowers the DL error (see `benchmarks/cosy.py` for DLMC figures with these weights).
"""


def write_model_card(path: str | Path, cfg: TrainConfig, res: TrainResult, **info) -> None:
    """Write the markdown model card for a training run."""
    params = sum(p.numel() for p in res.net.parameters())
    metrics = "\n".join(f"- {k}: {v:.4f}" for k, v in res.val.items() if k != "history")
    text = MODEL_CARD.format(
        params=params,
        bottom=SIZE // 2**cfg.depth,
        steps=res.steps,
        samples=res.samples,
        epochs=res.samples / cfg.n_maps,
        used_minutes=res.seconds / 60,
        metrics=metrics,
        **{k: v for k, v in asdict(cfg).items() if k != "extra"},
        **info,
    )
    Path(path).write_text(text)
