"""Training data and training loop for DLNet (used by ``mracq train dlnet``).

Data (seed 000, Fig. 2c, broadened to what users measure; issue 12): the same number of
noiseless maps from every family of `mracq.sim.cosy.families` (13C pairs bonded above
the NV, 2, 3 and 5 13C on diamond lattice sites, the five-spin peptide of the seed's Fig.
11 at random positions and orientations, and clusters drawn directly by their couplings),
fields 153-163 mT along the NV axis, on the experiment's 50 x 50 grid, each normalized to
[0, 1]. Every time a map is used it gets fresh noise (sigma uniform in ``noise``, 0.05-0.3;
Gaussian or shot noise with equal probability, `mracq.sim.cosy.families.add_noise`) and a
fresh random mask (coverage uniform in ``coverage``, 5-50 %), and is transposed with
probability 1/2. The network input is the noisy map min-max normalized over its observed
entries (what `mracq.recon.cosy.dlmc.reconstruct` does to measured data) and the target is
the noiseless map under the same affine map. Loss: mean squared error over the map
(padding excluded; the figure of merit is the RMSE), Adam, learning rate on a cosine
schedule from ``lr`` to ``lr / 20`` over ``steps``. The run is fixed by its step count and
seeds (reproducible on any machine; only the wall time depends on the load).

Validation (`family_validation`): maps of every family from ``val_seed`` (never a
training seed), Gaussian noise 0.1, fixed masks at 10 % and 40 % coverage.
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
from mracq.sim.cosy.families import FAMILIES, add_noise, family_maps
from mracq.sim.cosy.model import simulate_map

log = logging.getLogger(__name__)

NOISE_KINDS = ("gaussian", "shot")
VAL_COVERAGES = (0.1, 0.4)


def training_maps(
    n: int, rng: np.random.Generator, *, m: int = 2, min_ptp: float = 0.05
) -> np.ndarray:
    """``n`` noiseless bonded-pair maps (n, 50, 50) in [0, 1] at 158 mT, ptp >= ``min_ptp``
    (the training data of the first shipped weights; kept for comparison)."""
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


def mixture_maps(
    per_family: int,
    rng: np.random.Generator,
    families: tuple[str, ...] = FAMILIES,
    min_ptp: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """``per_family`` normalized maps of each family; returns ``(maps, family_index)``."""
    maps, label = [], []
    for k, fam in enumerate(families):
        t = time.time()
        maps.append(family_maps(fam, per_family, rng, min_ptp=min_ptp))
        label.append(np.full(per_family, k))
        log.info("%d %s maps in %.1f s", per_family, fam, time.time() - t)
    return np.concatenate(maps), np.concatenate(label)


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
    coverage: tuple[float, float] = (0.05, 0.5),
    kinds: tuple[str, ...] = ("gaussian",),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs, masks and targets (B, n1, n2) from normalized noiseless maps ``truth``.

    Per map: sigma uniform in ``noise``, a noise kind drawn from ``kinds`` (`add_noise`),
    coverage uniform in ``coverage``.
    """
    b = truth.shape[0]
    sigma = rng.uniform(*noise, size=b)
    kind = rng.integers(0, len(kinds), size=b)
    noisy = np.empty_like(truth, dtype=float)
    for k, name in enumerate(kinds):
        sel = kind == k
        if sel.any():
            noisy[sel] = add_noise(truth[sel], sigma[sel], rng, name)
    mask = random_masks(truth.shape, rng, coverage)
    x, lo, span = normalize_observed(noisy, mask)
    return x, mask, (truth - lo) / span


@dataclass
class TrainConfig:
    """Training settings (defaults: the shipped weights)."""

    per_family: int = 1000
    families: tuple[str, ...] = FAMILIES
    n_val: int = 40
    width: int = 8
    depth: int = 4
    batch: int = 32
    lr: float = 1e-3
    steps: int = 3000
    minutes: float | None = None
    noise: tuple[float, float] = (0.05, 0.3)
    kinds: tuple[str, ...] = NOISE_KINDS
    coverage: tuple[float, float] = (0.05, 0.5)
    min_ptp: float = 0.05
    seed: int = 0
    val_seed: int = 12345
    threads: int = 1
    checkpoint_every: int = 250
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TrainResult:
    """Outcome of `train`: the network, steps, seconds, and validation metrics.

    ``val``: ``{family: {"rmse_10pct": .., "rmse_40pct": ..}}`` plus ``"history"``;
    ``data_seconds``: time to simulate the training maps (not in ``seconds``).
    """

    net: DLNet
    steps: int
    seconds: float
    samples: int
    val: dict
    data_seconds: float = 0.0


def family_validation(
    families: tuple[str, ...] = FAMILIES,
    n: int = 40,
    seed: int = 12345,
    min_ptp: float = 0.05,
    coverages: tuple[float, ...] = VAL_COVERAGES,
    sigma: float = 0.1,
) -> dict:
    """Fixed validation batches: ``{family: {coverage: (x, mask, target, scale)}}``.

    ``n`` maps per family from ``seed``, Gaussian noise ``sigma``, one fixed mask per map and
    coverage; ``scale`` maps target-scale errors back to the [0, 1] scale of the truth.
    """
    out = {}
    for k, fam in enumerate(families):
        rng = np.random.default_rng([seed, k])
        truth = family_maps(fam, n, rng, min_ptp=min_ptp)
        out[fam] = {}
        for cov in coverages:
            x, mask, target = make_batch(truth, rng, noise=(sigma, sigma), coverage=(cov, cov))
            scale = 1.0 / np.ptp(target, axis=(1, 2), keepdims=True)
            out[fam][cov] = (x, mask, target, scale)
    return out


def validate(net: DLNet, val: dict) -> dict:
    """DL-only RMSE (on the truth's [0, 1] scale) per family and coverage of `family_validation`
    batches: ``{family: {"rmse_10pct": ...}}`` plus ``"mean"`` over families."""
    out = {}
    was_training = net.training
    net.eval()
    with torch.no_grad():
        for fam, by_cov in val.items():
            out[fam] = {}
            for cov, (x, mask, target, scale) in by_cov.items():
                y = net(pad_input(x, mask))[:, 0, : x.shape[1], : x.shape[2]].numpy()
                err = (y - target) * scale
                out[fam][f"rmse_{round(cov * 100)}pct"] = float(np.sqrt(np.mean(err**2)))
    keys = next(iter(out.values())).keys()
    out["mean"] = {k: float(np.mean([out[f][k] for f in val])) for k in keys}
    net.train(was_training)
    return out


def _lr(cfg: TrainConfig, step: int) -> float:
    frac = min(step / max(cfg.steps, 1), 1.0)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * frac)))


def train(
    cfg: TrainConfig, checkpoint: str | Path | None = None, progress: bool = True
) -> TrainResult:
    """Train a DLNet on the family mixture for ``cfg.steps`` steps (module docstring).

    ``cfg.minutes`` (optional) stops earlier on wall time; the documented runs leave it
    unset so that the result depends only on the settings and seeds. A checkpoint (network,
    optimizer, step, random states) is written every ``cfg.checkpoint_every`` steps and
    resumed from when it exists.
    """
    from tqdm import tqdm

    if cfg.seed == cfg.val_seed:
        raise ValueError("the training seed must differ from the validation seed")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    t_data = time.time()
    truth, _ = mixture_maps(cfg.per_family, rng, cfg.families, cfg.min_ptp)
    data_seconds = time.time() - t_data
    log.info("made %d training maps in %.1f s", len(truth), data_seconds)
    val = family_validation(cfg.families, cfg.n_val, cfg.val_seed, cfg.min_ptp)
    net = DLNet(cfg.width, cfg.depth)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    step = 0
    history = []
    if checkpoint is not None and Path(checkpoint).is_file():
        blob = torch.load(checkpoint, map_location="cpu", weights_only=False)
        net.load_state_dict(blob["net"])
        opt.load_state_dict(blob["opt"])
        step = int(blob["step"])
        rng.bit_generator.state = blob["rng"]
        torch.set_rng_state(blob["torch_rng"])
        history = list(blob.get("history", []))
        log.info("resumed from %s at step %d", checkpoint, step)
    n1, n2 = truth.shape[1:]
    weight = torch.zeros(1, 1, SIZE, SIZE)
    weight[..., :n1, :n2] = 1.0
    t0 = time.time()
    budget = None if cfg.minutes is None else cfg.minutes * 60
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc="dlnet")
    while step < cfg.steps and (budget is None or time.time() - t0 < budget):
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, step)
        idx = rng.integers(0, len(truth), cfg.batch)
        batch = truth[idx]
        flip = rng.random(cfg.batch) < 0.5
        batch[flip] = np.swapaxes(batch[flip], 1, 2)
        x, mask, target = make_batch(batch, rng, noise=cfg.noise, coverage=cfg.coverage,
                                     kinds=cfg.kinds)
        inp = pad_input(x, mask)
        tgt = torch.zeros(cfg.batch, 1, SIZE, SIZE)
        tgt[:, 0, :n1, :n2] = torch.from_numpy(target.astype(np.float32))
        loss = (((net(inp) - tgt) ** 2) * weight).sum() / (cfg.batch * n1 * n2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            v = validate(net, val)["mean"]
            history.append({"step": step, "seconds": time.time() - t0,
                            "loss": float(loss.item()), **v})
            log.info("step %d loss %.4f val(mean) %s", step, loss.item(), v)
            if checkpoint is not None:
                tmp = Path(str(checkpoint) + ".tmp")
                torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "step": step,
                            "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                            "history": history}, tmp)
                os.replace(tmp, checkpoint)
    bar.close()
    seconds = time.time() - t0
    net.eval()
    v = validate(net, val)
    v["history"] = history
    return TrainResult(net, step, seconds, step * cfg.batch, v, data_seconds)


MODEL_CARD = """# DLNet model card (`{weights}`)

Encoder-decoder residual CNN of Kong et al., npj Quantum Inf. 6, 79 (2020), Fig. 2
(`mracq.recon.cosy.dlnet.DLNet`), width {width} (seed: 32), depth {depth} (64 -> {bottom} px),
{params} parameters, stored in float16 ({size_kb:.0f} kB).

## Data
{per_family} noiseless maps of each family of `mracq.sim.cosy.families` ({families}),
{n_maps} in all, training seed {seed}: on the experiment's grid (t1, t2 = 4 us ... 886 us
in 18 us steps, 50 x 50, N = 40), fields uniform in 153-163 mT along the NV axis with tau =
2045 ns x 158 mT / B, maps whose raw peak-to-peak P(ms=0) is below {min_ptp} redrawn, each
normalized to [0, 1]. Each use: noise sigma uniform in {noise} of kind {kinds} (equally
likely), random mask with coverage uniform in {coverage}, random transposition; input
renormalized over its observed entries, target the noiseless map under the same affine map.
Validation: {n_val} maps per family from seed {val_seed} (never a training seed), Gaussian
noise 0.1, fixed masks.

## Training
MSE loss, Adam, lr cosine {lr} -> {lr_end:g}, batch {batch}, {steps_done} steps
({samples} samples, {epochs:.1f} passes over the maps) in {used_minutes:.1f} min on
{threads} CPU thread(s), after {data_minutes:.1f} min simulating the maps; load average
(1, 5, 15 min) before / after: {load_before} / {load_after}.

Command: `{command}`

## Validation (DL only, RMSE on the [0, 1] scale of the noiseless map, noise 0.1)
| family | 10 % | 40 % |
| --- | --- | --- |
{metrics}
"""


def _metric_rows(val: dict) -> str:
    return "\n".join(f"| {fam} | {v['rmse_10pct']:.4f} | {v['rmse_40pct']:.4f} |"
                     for fam, v in val.items() if fam != "history")


def write_model_card(path: str | Path, cfg: TrainConfig, res: TrainResult, **info) -> None:
    """Write the markdown model card for a training run."""
    params = sum(p.numel() for p in res.net.parameters())
    n_maps = cfg.per_family * len(cfg.families)
    text = MODEL_CARD.format(
        params=params,
        bottom=SIZE // 2**cfg.depth,
        steps_done=res.steps,
        samples=res.samples,
        n_maps=n_maps,
        epochs=res.samples / n_maps,
        used_minutes=res.seconds / 60,
        data_minutes=res.data_seconds / 60,
        lr_end=cfg.lr / 20,
        metrics=_metric_rows(res.val),
        **{k: v for k, v in asdict(cfg).items() if k != "extra"},
        **info,
    )
    Path(path).write_text(text)
