"""``mracq analyze mrfm RUN``: reconstruct a stored MRFM scan, write PNG slices and .npy.

RUN is a run reference in the catalog under ``--data-dir`` (uid, scan id or -1, resolved by
``mracq.storage.get_run``) or a ``.npz`` file with ``data`` (nx, ny, n_channels, N^2), ``mask``
(nx, ny) and ``meta`` (the run's start document as JSON). The scan grid becomes the
reconstruction grid: voxel size = x step, ``--n-z`` layers above the scan height.
"""

from __future__ import annotations

import json
from pathlib import Path

from mracq.cli import CLIError

HELP = "reconstruct a stored MRFM scan (ADMM-TV or Landweber) to PNG slices and .npy"


def add_arguments(parser):
    parser.add_argument("run", help="run reference (uid, scan id, -1) or a .npz file")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="catalog folder (default: the configured data folder)")
    parser.add_argument("--out", type=Path, default=Path("mrfm_recon"), help="output folder")
    parser.add_argument("--method", choices=["admm", "landweber"], default="admm")
    parser.add_argument("--n-iter", type=int, default=None, help="iterations")
    parser.add_argument("--n-z", type=int, default=46, help="sample layers to reconstruct")
    parser.add_argument("--geometry", choices=["membrane", "cantilever"], default=None,
                        help="resonator geometry (default: from the run, else membrane)")
    parser.add_argument("--edge-radius", type=float, default=0.0, metavar="NM",
                        help="rounded rim of the magnet, nm (default 0: plain cylinder)")
    parser.add_argument("--surface-offset", type=float, default=None, metavar="NM",
                        help="magnet top above the nominal surface, nm (default: the Table 2 "
                             "calibration for this edge radius)")


def _magnet(args):
    """The field model for the reconstruction (nm arguments), calibrated on Table 2."""
    from mracq.sim.mrfm.field import CylinderMagnet, calibrate_surface_offset

    try:
        magnet = CylinderMagnet(edge_radius=args.edge_radius * 1e-9)
    except ValueError as exc:
        raise CLIError(f"--edge-radius {args.edge_radius} nm: {exc}") from exc
    if args.surface_offset is not None:
        off = args.surface_offset * 1e-9
    elif args.edge_radius > 0:
        off = calibrate_surface_offset(magnet)[0]
    else:
        return magnet
    return CylinderMagnet(edge_radius=magnet.edge_radius, surface_offset=off)


def _load(args):
    import numpy as np

    path = Path(args.run)
    if path.suffix == ".npz" and path.exists():
        z = np.load(path, allow_pickle=False)
        return np.asarray(z["data"], float), np.asarray(z["mask"], bool), json.loads(str(z["meta"]))
    from mracq.storage import RunNotFoundError, close_catalog, get_run, open_catalog, run_table

    client = open_catalog(args.data_dir, readonly=True)
    try:
        run = get_run(client, args.run)
        start = dict(run.metadata["start"])
        try:
            cube = run_table(run, "cube")
        except KeyError as exc:
            raise CLIError(f"run {args.run!r} has no 'cube' stream: not an MRFM scan") from exc
        data = np.asarray(cube["cube_data"][-1], float)
        mask = np.asarray(cube["cube_mask"][-1], bool)
    except RunNotFoundError as exc:
        raise CLIError(str(exc)) from exc
    finally:
        close_catalog(client)
    return data, mask, start


def run(args) -> int:
    import numpy as np

    from mracq.recon.mrfm.pipeline import reconstruct
    from mracq.sim.mrfm.setup import default_setup

    data, mask, meta = _load(args)
    geo = meta.get("geometry", {})
    x = np.asarray(geo.get("x", []), float)
    if data.ndim != 3 or data.shape[0] != data.shape[1]:
        raise CLIError(f"scan data must be a square xy grid with channels, got {data.shape}")
    if x.size < 2:
        raise CLIError("the run does not record its x positions")
    dx = float(np.median(np.diff(x)))
    protocol = meta.get("protocol", "multislice")
    pulses = [p["f0"] for p in meta.get("pulses", [])]
    resonator = args.geometry or geo.get("resonator", "membrane")
    z = geo.get("z", [15e-9])
    kw = {"voxel_size": dx, "n_xy": data.shape[0], "n_z": args.n_z, "z0": float(min(z)),
          "magnet": _magnet(args)}
    if protocol == "multislice":
        kw["f0"] = pulses
    else:
        kw.update(f0=pulses[:1], n_heights=data.shape[2])
    setup = default_setup(resonator, protocol, **kw)
    params = {} if args.n_iter is None else {"n_iter": args.n_iter}
    sampled = mask if not mask.all() else None
    vol = reconstruct(np.nan_to_num(data), setup, mask=sampled, method=args.method, **params)
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / "volume.npy", vol)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shifted = np.fft.fftshift(vol, axes=(0, 1)) / 1e27
    for k in range(vol.shape[2]):
        fig, ax = plt.subplots(figsize=(4, 4))
        im = ax.imshow(shifted[:, :, k].T, origin="lower", cmap="viridis")
        fig.colorbar(im, ax=ax, label="spin density (nm$^{-3}$)")
        ax.set_title(f"layer {k}: z = {(setup.z_layers[k]) * 1e9:.1f} nm")
        fig.savefig(args.out / f"slice_{k:03d}.png", dpi=80)
        plt.close(fig)
    print(f"wrote {args.out / 'volume.npy'} and {vol.shape[2]} slices to {args.out}")
    return 0
