"""The closed-loop demo over the wire against in-process: same spectrum within its band?

Runs ``mracq emulate nv --seed S`` in its own process, then ``mracq demo --config
<printed config>`` (vendor clients over TCP) and ``mracq demo --seed S`` (in-process
simulator), each into its own data folder, reads the last VQNS spectrum estimate of each
from its catalog and compares them over the estimate's band: the fraction of frequencies
where the two means differ by less than the larger of the two standard deviations, and
the largest difference in units of that standard deviation.

Usage: ``python benchmarks/wire_demo.py [--seed 5] [--points 20] [--shots 1000000]
[--out FILE]``; writes JSON (default ``benchmarks/wire_demo.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _last_estimate(data_dir: Path) -> dict:
    from mracq.storage import close_catalog, open_catalog, run_table

    client = open_catalog(data_dir)
    try:
        uids = [uid for uid, run in client.items()
                if run.metadata["start"].get("plan_name") == "vqns_estimate"]
        run = client[uids[-1]]
        table = run_table(run)
        return {k: np.asarray(table[k][-1], float) for k in ("omega", "mean", "std")}
    finally:
        close_catalog(client)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--points", type=int, default=20)
    ap.add_argument("--shots", type=int, default=1_000_000)
    ap.add_argument("--out", default=str(Path(__file__).with_name("wire_demo.json")))
    args = ap.parse_args(argv)

    from mracq.emulators.process import EmulatorProcess

    common = ["--points", str(args.points), "--shots", str(args.shots), "--seed",
              str(args.seed)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    walls = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rig = EmulatorProcess(tmp, seed=args.seed)
        try:
            for label, extra in (("wire", ["--config", str(rig.config_path)]), ("local", [])):
                t0 = time.perf_counter()
                proc = subprocess.run([sys.executable, "-m", "mracq", "demo", *common, *extra,
                                       "--data-dir", str(tmp / label)], env=env, text=True,
                                      capture_output=True)
                if proc.returncode:
                    raise SystemExit(f"mracq demo ({label}) failed:\n{proc.stdout}\n"
                                     f"{proc.stderr[-4000:]}")
                out = proc.stdout
                walls[label] = time.perf_counter() - t0
                print(f"--- {label} ({walls[label]:.1f} s)\n{out}")
        finally:
            rig.stop()
        wire, local = _last_estimate(tmp / "wire"), _last_estimate(tmp / "local")
    np.testing.assert_array_equal(wire["omega"], local["omega"])
    sd = np.maximum(wire["std"], local["std"])
    diff = np.abs(wire["mean"] - local["mean"])
    band = local["mean"] > 1e-3 * local["mean"].max()  # where the spectrum has weight
    within = float(np.mean(diff[band] <= sd[band]))
    worst = float(np.max(diff[band] / np.maximum(sd[band], 1e-300)))
    rel = float(np.max(diff[band]) / np.max(local["mean"]))
    result = {"seed": args.seed, "points": args.points, "shots": args.shots,
              "fraction_within_band": within, "max_diff_over_sd": worst,
              "max_diff_over_peak": rel, "wall_s": walls,
              "load_average": list(os.getloadavg())}
    print(f"wire vs in-process spectrum: {within:.1%} of frequencies within 1 sd "
          f"(worst {worst:.2f} sd; max difference {rel:.2%} of the peak)")
    print(f"load average: {result['load_average']}")
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
