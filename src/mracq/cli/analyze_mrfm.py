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
from mracq.cli.common import positive_int

#: nm^-3: 1H densities of solids are ~50-100 nm^-3 (the seed's phantom peaks near 125);
#: a reconstruction well above this is noise or a model that does not fit, not spins
DENSITY_PLAUSIBLE = 200.0

HELP = "reconstruct a stored MRFM scan (ADMM-TV or Landweber) to PNG slices and .npy"


def add_arguments(parser):
    parser.add_argument("run", help="run reference (uid, scan id, -1) or a .npz file")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="catalog folder (default: the configured data folder)")
    parser.add_argument("--config", metavar="TOML", help="lab configuration file (its "
                        "storage.data_dir is used; default: $MRACQ_CONFIG)")
    parser.add_argument("--out", type=Path, default=Path("mrfm_recon"),
                        help="output folder (volume.npy, slices.png; default mrfm_recon)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite earlier outputs in --out (default: refuse)")
    parser.add_argument("--method", choices=["admm", "landweber"], default="admm")
    parser.add_argument("--n-iter", type=positive_int, default=None, help="iterations")
    parser.add_argument("--n-z", type=positive_int, default=46,
                        help="sample layers to reconstruct (one voxel = the x step each)")
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
    if path.suffix == ".npz":
        raise CLIError(f"{path}: no such file")
    from mracq.cli.common import open_store_from_args
    from mracq.storage import RunNotFoundError

    store = open_store_from_args(args)
    try:
        run = store.get_run(args.run)
        start = dict(run.start)
        try:
            cube = run.table("cube")
        except KeyError as exc:
            raise CLIError(f"run {args.run!r} has no 'cube' stream: not an MRFM scan "
                           "(or it was stopped before the cube was stored)") from exc
        data = np.asarray(cube["cube_data"][-1], float)
        mask = np.asarray(cube["cube_mask"][-1]).astype(bool)
    except RunNotFoundError as exc:
        raise CLIError(str(exc)) from exc
    finally:
        store.close()
    return data, mask, start


def plausibility(volume, z_layers=None) -> list[str]:
    """Warnings for a reconstructed density (m^-3) that cannot be spins in a sample."""
    import numpy as np

    nm3 = np.asarray(volume, float) / 1e27
    warnings = []
    top = float(np.nanmax(nm3)) if nm3.size else 0.0
    if top > DENSITY_PLAUSIBLE:
        warnings.append(f"the reconstruction reaches {top:.0f} nm^-3, far above any proton "
                        f"density (~50-100 nm^-3; warned above {DENSITY_PLAUSIBLE:.0f}): "
                        "noise or a model that does not fit the scan (grid, standoff, T_m, "
                        "geometry), not spins")
    if z_layers is not None and len(z_layers) and max(z_layers) > 300e-9:
        warnings.append(f"layers reach z = {max(z_layers) * 1e9:.0f} nm, beyond where the "
                        "magnet's field gradient resolves anything; use fewer --n-z or a "
                        "finer scan step")
    return warnings


def run(args) -> int:
    import numpy as np

    if args.out.exists() and any(args.out.iterdir()) and not args.force:
        raise CLIError(f"output folder {args.out} is not empty; choose another --out or pass "
                       "--force to overwrite")
    data, mask, meta = _load(args)
    from mracq.recon.mrfm.pipeline import reconstruct
    from mracq.sim.mrfm.setup import default_setup

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
    png = write_montage(vol, setup, args.out / "slices.png",
                        title=f"{meta.get('plan_name', 'MRFM')} {args.method} reconstruction")
    for text in plausibility(vol, setup.z_layers):
        print(f"warning: {text}")
    print(f"wrote {args.out / 'volume.npy'} ({vol.shape[0]} x {vol.shape[1]} x "
          f"{vol.shape[2]} voxels of {dx * 1e9:.3g} nm) and {png}")
    return 0


def write_montage(vol, setup, png, *, title=""):
    """The reconstruction as one slice montage (nm, one colour scale in nm^-3)."""
    import matplotlib.pyplot as plt
    import numpy as np

    from mracq.viz import plot_montage

    n = vol.shape[0]
    x = np.fft.fftfreq(n, 1.0 / n) * setup.voxel_size
    fig = plot_montage(vol, png, x=x, y=x,
                       labels=[f"z = {z * 1e9:.1f} nm" for z in setup.z_layers], title=title,
                       unit="spin density (nm$^{-3}$)", scale=1e-27)
    plt.close(fig)
    return png
