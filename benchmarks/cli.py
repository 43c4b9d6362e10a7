"""How long the first-day commands take: ``mracq runs`` and ``mracq show`` on 100 runs.

Builds a data folder of 100 stored runs (coherence scans of a few points on the simulated
NV, through the real RunEngine and TiledWriter, as ``mracq demo`` stores them, plus one
VQNS estimate, one COSY and one MRFM run, so every kind is listed and shown), then times
fresh ``python -m mracq`` processes, as a user starts them:

- ``mracq runs`` (the listing; target <= 3 s);
- ``mracq show -1 --no-plot`` (one run's summary, event data read);
- ``mracq show N`` for each kind (summary + figure).

Usage: ``python benchmarks/cli.py [--runs 100] [--repeats 5] [--out FILE]``. Prints the
times with the load (``uptime``) and writes JSON (default ``benchmarks/cli.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET_RUNS_S = 3.0


def build_catalog(data_dir: Path, n_runs: int) -> dict:
    """Store ``n_runs`` runs in ``data_dir``; returns {kind: scan_id} of the special ones."""
    from mracq.config import validate_config
    from mracq.plans.coherence import coherence_scan, prepare_nv
    from mracq.session import make_session

    here = Path(__file__).resolve().parents[1] / "tests"
    sys.path.insert(0, str(here))
    from cli_runs import store_cosy, store_estimate_run, store_mrfm

    kinds = {}
    with make_session(validate_config({"sim": {"seed": 0}}), data_dir=data_dir) as s:
        d = s.devices
        nv = d["nv"].transport.nv
        s.RE(prepare_nv(d["mw"], d["laser"], frequency=nv.transition_frequency,
                        power_dbm=0.0))
        kinds["cosy"] = store_cosy(s)
        kinds["mrfm"] = store_mrfm(s)
        kinds["spectrum"] = store_estimate_run(s)
        for k in range(n_runs - 3):
            n = 2 ** (1 + k % 5)
            s.RE(coherence_scan(d["nv"], "cpmg", np.geomspace(4e-6, 60e-6, 5), n=n,
                                shots=10_000))
        kinds["coherence"] = s.RE.md["scan_id"]
    return kinds


def _time(cmd: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    dt = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr}")
    return dt, done.stdout


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).with_name("cli.json")))
    args = ap.parse_args(argv)

    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("MRACQ_CONFIG", None)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        t0 = time.perf_counter()
        kinds = build_catalog(data, args.runs)
        build_s = time.perf_counter() - t0
        mracq = [sys.executable, "-m", "mracq"]
        load_before = os.getloadavg()
        runs_s = []
        for _ in range(args.repeats):
            dt, out = _time(mracq + ["runs", "--data-dir", str(data), "-n", str(args.runs)],
                            env)
            runs_s.append(dt)
        listed = sum(1 for line in out.splitlines()[1:] if line.strip())
        show_s = [_time(mracq + ["show", "-1", "--no-plot", "--data-dir", str(data)], env)[0]
                  for _ in range(args.repeats)]
        figure_s = {}
        for kind, scan in kinds.items():
            figure_s[kind] = _time(mracq + ["show", str(scan), "--data-dir", str(data),
                                            "--out", tmp], env)[0]
        load_after = os.getloadavg()
    res = {
        "runs_stored": args.runs,
        "runs_listed": listed,
        "build_catalog_s": build_s,
        "mracq_runs_s_median": statistics.median(runs_s),
        "mracq_runs_s_max": max(runs_s),
        "mracq_runs_s_all": runs_s,
        "target_runs_s": TARGET_RUNS_S,
        "mracq_show_no_plot_s_median": statistics.median(show_s),
        "mracq_show_with_figure_s": figure_s,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
        "machine": f"{platform.machine()} {platform.python_version()} {os.cpu_count()} cpus",
    }
    print(f"catalog of {args.runs} runs built in {build_s:.1f} s; `mracq runs` listed "
          f"{listed}")
    print(f"mracq runs: median {res['mracq_runs_s_median']:.2f} s, max "
          f"{res['mracq_runs_s_max']:.2f} s (target <= {TARGET_RUNS_S} s)")
    print(f"mracq show -1 --no-plot: median {res['mracq_show_no_plot_s_median']:.2f} s")
    print("mracq show with figure: " + ", ".join(f"{k} {v:.2f} s"
                                                  for k, v in figure_s.items()))
    print(f"load (1/5/15 min) before {res['load_before']}, after {res['load_after']}")
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
