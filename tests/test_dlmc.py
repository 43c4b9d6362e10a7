"""DLMC reconstruction API, the orig baseline, DLNet shapes and offline loading."""

import socket

import numpy as np
import pytest
import torch

from mracq.recon.cosy.dlmc import neighbour_fill, reconstruct
from mracq.recon.cosy.dlnet import DLNet, load_weights, save_weights
from mracq.recon.cosy.training import make_batch, normalize_observed, random_masks
from mracq.sim.cosy.couplings import random_clusters
from mracq.sim.cosy.model import shot_noise, simulate_map


def test_neighbour_fill_known_answer():
    x = np.array([[1.0, 0.0, 3.0], [0.0, 0.0, 0.0], [5.0, 0.0, 7.0]])
    mask = np.array([[1, 0, 1], [0, 0, 0], [1, 0, 1]], bool)
    out = neighbour_fill(x, mask)
    assert out[0, 1] == pytest.approx(2.0)  # mean of 1 and 3
    assert out[1, 1] == pytest.approx(4.0)  # mean of the four corners
    assert out[1, 0] == pytest.approx(3.0)
    np.testing.assert_array_equal(out[mask], x[mask])
    # far from data: filled in later sweeps, still finite
    big = np.zeros((9, 9))
    m2 = np.zeros((9, 9), bool)
    m2[0, 0] = True
    big[0, 0] = 2.5
    assert np.allclose(neighbour_fill(big, m2), 2.5)


def test_dlnet_shapes_and_roundtrip(tmp_path):
    torch.manual_seed(0)
    net = DLNet(width=4, depth=4).eval()
    x = torch.rand(3, 2, 64, 64)
    assert net(x).shape == (3, 1, 64, 64)
    path = tmp_path / "w.pt"
    save_weights(net, path)
    net2 = load_weights(path)
    with torch.no_grad():
        # float16 storage: outputs agree to half precision
        assert torch.allclose(net(x), net2(x), atol=2e-2)


def test_shipped_weights_load_offline(monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    net = load_weights()
    assert isinstance(net, DLNet) and not net.training


def _case(seed=3, coverage=0.2):
    rng = np.random.default_rng(seed)
    pos = random_clusters(40, rng)
    maps = simulate_map(pos)
    truth = maps[np.argmax(np.ptp(maps, axis=(1, 2)))]
    noisy = shot_noise(truth, rng)
    mask = random_masks((1, 50, 50), rng, coverage)[0]
    return truth, noisy, mask


@pytest.mark.parametrize("method", ["orig", "svt", "dl", "dlmc"])
def test_reconstruct_methods_scale_and_shape(method):
    truth, noisy, mask = _case()
    measured = np.where(mask, noisy, np.nan)
    out = reconstruct(measured, mask, method)
    assert out.shape == truth.shape and np.all(np.isfinite(out))
    # output on the input's scale: same order as P(ms=0), not [0, 1]
    assert abs(out.mean() - noisy[mask].mean()) < 0.05
    # scaling the input scales the output (affine equivariance of the normalization)
    out2 = reconstruct(2.0 * measured + 1.0, mask, method)
    np.testing.assert_allclose(out2, 2.0 * out + 1.0, atol=1e-6)


def test_dlmc_beats_orig_and_small_maps():
    truth, noisy, mask = _case(coverage=0.1)
    measured = np.where(mask, noisy, np.nan)
    err = {m: np.sqrt(np.mean((reconstruct(measured, mask, m) - truth) ** 2)) for m in
           ("orig", "dlmc")}
    assert err["dlmc"] < err["orig"]
    small = reconstruct(noisy[:20, :33], mask[:20, :33], "dlmc")
    assert small.shape == (20, 33)


def test_reconstruct_errors():
    truth, noisy, mask = _case()
    bad = noisy.copy()
    i, j = np.argwhere(mask)[0]
    bad[i, j] = np.nan
    with pytest.raises(ValueError, match=f"\\({i}, {j}\\)"):
        reconstruct(bad, mask)
    with pytest.raises(ValueError, match="shape"):
        reconstruct(noisy, mask[:, :40])
    with pytest.raises(ValueError, match="empty"):
        reconstruct(noisy, np.zeros_like(mask))
    with pytest.raises(ValueError, match="larger"):
        reconstruct(np.zeros((65, 10)), np.ones((65, 10), bool))
    with pytest.raises(ValueError, match="method"):
        reconstruct(noisy, mask, "magic")


def test_training_batch_normalization():
    rng = np.random.default_rng(0)
    truth = rng.random((4, 50, 50))
    x, mask, target = make_batch(truth, rng, noise=(0.1, 0.1), coverage=(0.2, 0.2))
    assert mask.sum(axis=(1, 2)).tolist() == [500] * 4
    assert np.allclose(x[mask].min(), 0.0) and np.allclose(x.max(), 1.0)
    assert np.all(x[~mask] == 0)
    # the target is the truth under the same affine map as the input
    xn, lo, span = normalize_observed(truth, mask)
    assert np.allclose(xn[mask], ((truth - lo) / span)[mask])


def test_analyze_cosy_cli(tmp_path):
    from mracq.cli import main

    truth, noisy, mask = _case(coverage=0.3)
    path = tmp_path / "map.csv"
    np.savetxt(path, np.where(mask, noisy, np.nan), delimiter=",")
    assert main(["analyze", "cosy", str(path), "--method", "svt"]) == 0
    rec = np.load(tmp_path / "map_recon.npy")
    np.testing.assert_allclose(rec, reconstruct(np.where(mask, noisy, np.nan), mask, "svt"),
                               atol=1e-12)
    assert (tmp_path / "map_cosy.png").stat().st_size > 1000
    assert np.load(tmp_path / "map_spectrum.npy").shape == (50, 50)
    np.save(tmp_path / "bad.npy", np.zeros(5))
    assert main(["analyze", "cosy", str(tmp_path / "bad.npy")]) == 2



def test_training_mixture_noise_kinds_and_resume_is_exact(tmp_path, monkeypatch):
    """A tiny run on every family; stopping at a checkpoint and resuming gives the same
    weights as an uninterrupted run (the documented command is fixed by steps and seed)."""
    import mracq.recon.cosy.training as tr

    maps, label = tr.mixture_maps(3, np.random.default_rng(0), ("bonded_pair", "couplings"))
    assert maps.shape == (6, 50, 50) and label.tolist() == [0, 0, 0, 1, 1, 1]
    x, mask, target = make_batch(maps, np.random.default_rng(1), kinds=("shot",))
    cov = mask.mean(axis=(1, 2))
    assert np.all((cov >= 0.05 - 1e-3) & (cov <= 0.5 + 1e-3))  # the default 5-50 %
    cfg = tr.TrainConfig(per_family=2, n_val=2, width=2, depth=2, batch=4, steps=4,
                         checkpoint_every=2, seed=3, families=("bonded_pair", "couplings"))
    full = tr.train(cfg, progress=False)
    assert full.steps == 4 and set(full.val) == {"bonded_pair", "couplings", "mean", "history"}
    assert 0 < full.val["couplings"]["rmse_10pct"] < 2
    with pytest.raises(ValueError, match="validation seed"):
        tr.train(tr.TrainConfig(seed=12345), progress=False)

    ck = tmp_path / "ck.pt"
    orig = tr._lr

    def stop_at_two(c, step):  # a Ctrl-C right after the step-2 checkpoint
        if step == 2:
            raise KeyboardInterrupt
        return orig(c, step)

    monkeypatch.setattr(tr, "_lr", stop_at_two)
    with pytest.raises(KeyboardInterrupt):
        tr.train(cfg, checkpoint=ck, progress=False)
    monkeypatch.setattr(tr, "_lr", orig)
    assert torch.load(ck, weights_only=False)["step"] == 2
    resumed = tr.train(cfg, checkpoint=ck, progress=False)
    assert resumed.steps == 4
    for (k, a), b in zip(full.net.state_dict().items(), resumed.net.state_dict().values(),
                         strict=True):
        assert torch.equal(a, b), k
