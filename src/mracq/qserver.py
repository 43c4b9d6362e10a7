"""bluesky-queueserver: a startup profile exposing mracq's devices and plans.

``mracq qserver-profile DIR`` writes ``DIR/00-mracq.py`` (the startup code: a session with
its devices and ``RE``, and the plans below) and ``DIR/user_group_permissions.yaml``. Then,
all on loopback::

    redis-server --bind 127.0.0.1 --port 6379 --save "" --appendonly no &
    start-re-manager --startup-dir DIR --redis-addr 127.0.0.1:6379 \\
        --zmq-control-addr tcp://127.0.0.1:60615 --zmq-info-addr tcp://127.0.0.1:60625
    qserver environment open
    qserver queue add plan '{"name": "coherence_scan", "args": ["nv", "cpmg", [1e-6, 2e-6]],
                             "kwargs": {"n": 8}}'
    qserver queue start

The plans a queue can run take only names, numbers, strings and lists: devices by name
(``"nv"``), everything else JSON-like. Plans that need objects in-process (a strategy, a
random generator) get a queue form here: :func:`vqns_adaptive` (the VQNS loop with its
strategy built from numbers) and :func:`cs_multislice_scan_seeded`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["PLANS", "cs_multislice_scan_seeded", "vqns_adaptive", "write_profile"]

#: plans the profile exposes (bluesky's count and scan too)
PLANS = ("prepare_nv", "coherence_scan", "vqns_adaptive", "cosy_random_mask", "cosy_adaptive",
         "multislice_scan", "xyz_scan", "cs_multislice_scan_seeded")


def vqns_adaptive(nv, *, fid_times=None, se_times=None, candidates=None,
                  max_measurements: int = 6, n_points: int = 30, target: float = 0.1,
                  shots: int = 1_000_000, time_budget=None, restarts: int = 100,
                  max_iter: int = 1000, seed=None, md=None):
    """The VQNS closed loop (:func:`mracq.plans.vqns.vqns_loop`) from plain parameters.

    Parameters
    ----------
    nv : PulseSequencer
    fid_times, se_times : list of float, optional
        Times (s) of the initial FID and spin-echo measurements (default: 30 log-spaced
        from 0.2 to 20 us, and from 1 to 100 us).
    candidates : list of str, optional
        Sequences the strategy may choose (default CPMG-2 ... CPMG-64).
    max_measurements, n_points, target : int, int, float
        As :class:`mracq.recon.vqns.strategy.NextSequenceStrategy`.
    shots : int
        Repetitions per point.
    time_budget : float, optional
        Hardware time in s.
    restarts, max_iter : int
        Reconstruction settings (:func:`mracq.recon.vqns.reconstruct`).
    seed : int, optional
    md : dict, optional
    """
    from mracq.plans.vqns import vqns_loop
    from mracq.recon.vqns.strategy import DEFAULT_CANDIDATES, NextSequenceStrategy

    fid = np.geomspace(2e-7, 2e-5, 30) if fid_times is None else np.asarray(fid_times, float)
    se = np.geomspace(1e-6, 1e-4, 30) if se_times is None else np.asarray(se_times, float)
    strategy = NextSequenceStrategy(
        list(candidates) if candidates else DEFAULT_CANDIDATES,
        initial=[("fid", fid), ("se", se)], n_points=n_points, target=target,
        max_measurements=max_measurements, seed=seed,
        reconstruct_kw={"restarts": int(restarts), "max_iter": int(max_iter)})
    result = yield from vqns_loop(nv, strategy, shots=shots, time_budget=time_budget, md=md)
    return {k: v for k, v in result.items() if k != "result"}


def cs_multislice_scan_seeded(scanner, rf, readout, x, y, p: float, seed: int = 0,
                              z: float = 15e-9, f0_list=None, t_m: float = 1.0, md=None):
    """:func:`mracq.plans.mrfm.cs_multislice_scan` with the mask drawn from ``seed``."""
    from mracq.plans.mrfm import cs_multislice_scan

    return (yield from cs_multislice_scan(scanner, rf, readout, x, y, p,
                                          np.random.default_rng(seed), z=z, f0_list=f0_list,
                                          t_m=t_m, md=md))


PERMISSIONS = """\
# Who may run what (bluesky-queueserver). Written by `mracq qserver-profile`.
user_groups:
  root:  # filters for every group
    allowed_plans:
      - null
    forbidden_plans:
      - ":^_"  # private names
    allowed_devices:
      - null
    forbidden_devices:
      - ":^_:?.*"
    allowed_functions:
      - null
    forbidden_functions:
      - ":^_"
  primary:  # the default group
    allowed_plans:
      - ":.*"
    forbidden_plans:
      - null
    allowed_devices:
      - ":?.*:depth=5"
    forbidden_devices:
      - null
    allowed_functions:
      - null
    forbidden_functions:
      - null
"""

STARTUP = '''\
"""mracq startup profile for bluesky-queueserver (written by `mracq qserver-profile`).

The RE Worker runs this when the environment opens: one mracq session (its RunEngine is
the queue's `RE`; runs go to {where}), its devices by name, and the queueable plans.
"""

import atexit

from bluesky.plans import count, scan  # noqa: F401
from mracq.plans.coherence import coherence_scan, prepare_nv  # noqa: F401
from mracq.plans.cosy import cosy_adaptive, cosy_random_mask  # noqa: F401
from mracq.plans.mrfm import multislice_scan, xyz_scan  # noqa: F401
from mracq.qserver import cs_multislice_scan_seeded, vqns_adaptive  # noqa: F401
from mracq.session import make_session

_session = make_session({config!r}, data_dir={data_dir!r}, url={url!r}, api_key={api_key!r},
                        publish={publish!r})
atexit.register(_session.close)
RE = _session.RE
db = None
globals().update(_session.devices)  # mw, laser, nv, scanner, rf, readout, ...
'''


def write_profile(directory, *, config=None, data_dir=None, url=None, api_key=None,
                  publish=None, overwrite: bool = False) -> list[Path]:
    """Write a queue-server startup folder; returns the files written.

    Parameters
    ----------
    directory : path-like
        The startup folder (created).
    config : str, optional
        Lab configuration file (default: as :func:`mracq.session.make_session`).
    data_dir, url, api_key : str, optional
        Where the runs go (as ``make_session``); a relative ``data_dir`` is made absolute.
        An API key written here is readable by whoever can read the folder: prefer
        ``TILED_API_KEY`` in the manager's environment.
    publish : str, optional
        0MQ proxy to publish every document to (workers, live plots).
    overwrite : bool
        Replace existing files.
    """
    directory = Path(directory).expanduser().absolute()
    files = {directory / "00-mracq.py": None, directory / "user_group_permissions.yaml": None}
    existing = [p for p in files if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists (overwrite=True to replace it)")
    if config is not None:
        config = str(Path(config).expanduser().absolute())
    if data_dir is not None:
        data_dir = str(Path(data_dir).expanduser().absolute())
    text = STARTUP.format(config=config, data_dir=data_dir, url=url, api_key=api_key,
                          publish=publish, where=json.dumps(url or data_dir or "the default "
                                                            "data folder"))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "00-mracq.py").write_text(text)
    (directory / "user_group_permissions.yaml").write_text(PERMISSIONS)
    return list(files)
