"""Per-point overhead of the journal and of the coherence plan vs plain bluesky ``count``.

Everything runs in one process against one embedded Tiled catalog (SQLite + files) with
the same ``TiledWriter(max_array_size=0)``:

- baseline: ``bluesky.plans.count([sig], N)`` on an ``ophyd.Signal`` (the cheapest
  possible point), TiledWriter alone (no journal);
- journal: the same ``count`` through a session's writer, :class:`mracq.storage.
  JournalWriter` (each document appended and flushed, fsync at start/descriptor/stop and
  every 1 s of events) in front of the TiledWriter; target <= 1.2x the baseline;
- journal, fsync every document: the same with ``fsync_interval=0`` (what a power-cut-proof
  policy costs here);
- ours: ``mracq.plans.coherence.coherence_scan`` with N evolution times on the simulated
  NV (program validation, pulse-program set, trigger, physics, normalization, derived
  coherence signals, checkpoints, journal, Tiled write).

- the wire path (unless ``--no-wire``): the same ``coherence_scan`` through the vendor
  clients (pyvisa, pulsestreamer, nidaqmx over gRPC) against ``mracq emulate nv`` in
  another process, against the in-process simulator in the same RunEngine and catalog.

Usage: ``python benchmarks/overhead.py [--points 200] [--repeats 3] [--no-wire] [--out FILE]``.
Prints per-point times and the ratio, writes JSON (default ``benchmarks/overhead.json``).

``--publisher``: instead, the per-point cost of ``coherence_scan`` with the 0MQ publisher
(``make_session(publish=...)``) on against off, through a proxy to a subscriber in another
process that counts every document, and a 1000-point scan whose documents are counted
at the far end (target: ratio <= 1.2, nothing lost). JSON: ``benchmarks/overhead_publisher.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-wire", action="store_true",
                    help="skip the wire path (emulated instruments over TCP)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--publisher", action="store_true",
                    help="measure the 0MQ publisher's overhead instead")
    args = ap.parse_args(argv)
    if args.publisher:
        from overhead_publisher import publisher_overhead

        return publisher_overhead(args.points, args.repeats,
                                  args.out or str(Path(__file__).with_name(
                                      "overhead_publisher.json")))
    args.out = args.out or str(Path(__file__).with_name("overhead.json"))

    import bluesky.plans as bp
    from bluesky import RunEngine
    from ophyd import Signal

    from mracq.config import validate_config
    from mracq.plans.coherence import coherence_scan, prepare_nv
    from mracq.session import make_session
    from mracq.storage import subscribe_writer

    with tempfile.TemporaryDirectory() as tmp, \
            make_session(validate_config({"sim": {"seed": 0}}), data_dir=tmp) as s:
        d = s.devices
        nv_sim = d["nv"].transport.nv
        s.RE(prepare_nv(d["mw"], d["laser"], frequency=nv_sim.transition_frequency,
                        power_dbm=0.0))
        sig = Signal(name="sig", value=1.0)
        times = np.geomspace(2e-6, 2e-4, args.points)
        RE_plain = RunEngine(call_returns_result=True)  # TiledWriter alone, same catalog
        subscribe_writer(RE_plain, s.catalog)
        RE_sync = RunEngine(call_returns_result=True)  # journal fsync'ed at every document
        subscribe_writer(RE_sync, s.catalog, journal_dir=Path(tmp) / "journal-sync",
                         fsync_interval=0)
        # warm up every path (imports, first-write table creation)
        for RE in (RE_plain, s.RE, RE_sync):
            RE(bp.count([sig], 5))
        s.RE(coherence_scan(d["nv"], "cpmg", times[:5], n=8))
        base, journal, fsync_all, ours = [], [], [], []

        def per_point(RE, plan):
            t0 = time.perf_counter()
            RE(plan)
            return (time.perf_counter() - t0) / args.points

        for rep in range(args.repeats):  # interleaved, so drifts hit all alike
            base.append(per_point(RE_plain, bp.count([sig], args.points)))
            journal.append(per_point(s.RE, bp.count([sig], args.points)))
            fsync_all.append(per_point(RE_sync, bp.count([sig], args.points)))
            fresh = times * (1 + 1e-3 * (rep + 1))  # new programs: no cached physics
            ours.append(per_point(s.RE, coherence_scan(d["nv"], "cpmg", fresh, n=8)))
        # the same pair without the writer: how much of each is the RunEngine itself
        RE0 = RunEngine(call_returns_result=True)
        base0, ours0 = [], []
        for rep in range(args.repeats):
            base0.append(per_point(RE0, bp.count([sig], args.points)))
            fresh = times * (1 + 1e-3 * (rep + 11))
            ours0.append(per_point(RE0, coherence_scan(d["nv"], "cpmg", fresh, n=8)))
        wire = None if args.no_wire else wire_overhead(s, times, args)
    b, o = float(np.median(base)), float(np.median(ours))
    j, f = float(np.median(journal)), float(np.median(fsync_all))
    b0, o0 = float(np.median(base0)), float(np.median(ours0))
    load = os.getloadavg()
    result = {
        "points": args.points, "repeats": args.repeats,
        "baseline_count_s_per_point": b,
        "journal_count_s_per_point": j, "journal_ratio": j / b, "journal_target_ratio": 1.2,
        "journal_fsync_every_document_s_per_point": f, "journal_fsync_every_ratio": f / b,
        "fsync_policy": "flush every document; fsync at start, descriptor, stop and at an "
                        "event when >= 1 s since the last fsync",
        "coherence_scan_s_per_point": o, "ratio": o / b, "target_ratio": 1.5,
        "no_writer_count_s_per_point": b0, "no_writer_coherence_scan_s_per_point": o0,
        "no_writer_ratio": o0 / b0,
        "baseline_all": base, "journal_all": journal, "fsync_all": fsync_all, "ours_all": ours,
        "machine": f"{platform.machine()} {platform.python_version()}",
        "load_average_1_5_15": [round(x, 2) for x in load],
    }
    print(f"plain count, TiledWriter : {b * 1e3:7.2f} ms/point (median of {args.repeats})")
    print(f"count + journal (1 s)    : {j * 1e3:7.2f} ms/point, ratio {j / b:.2f} "
          "(target <= 1.2)")
    print(f"count + journal (fsync)  : {f * 1e3:7.2f} ms/point, ratio {f / b:.2f}")
    print(f"coherence_scan (sim NV)  : {o * 1e3:7.2f} ms/point, ratio {o / b:.2f} "
          "(target <= 1.5)")
    print(f"without the writer       : {b0 * 1e3:7.2f} vs {o0 * 1e3:.2f} ms/point, "
          f"ratio {o0 / b0:.2f}")
    if wire is not None:
        result.update(wire)
        w, loc = wire["wire_coherence_scan_s_per_point"], wire["local_coherence_scan_s_per_point"]
        print(f"wire path (emulated, TCP): {w * 1e3:7.2f} ms/point vs in-process "
              f"{loc * 1e3:.2f} ms/point: +{(w - loc) * 1e3:.2f} ms/point "
              f"({wire['wire_rpcs_per_point']} requests/point)")
    result["load_average"] = list(os.getloadavg())
    print(f"load average: {result['load_average']}")
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


def wire_overhead(s, times, args) -> dict:
    """Per-point time of ``coherence_scan`` over the wire vs in-process (same RE, writer)."""
    from mracq.config import validate_config
    from mracq.devices import build_devices
    from mracq.emulators.process import EmulatorProcess
    from mracq.plans.coherence import coherence_scan, prepare_nv

    with tempfile.TemporaryDirectory() as tmp:
        rig = EmulatorProcess(tmp, seed=0)
        try:
            wired = build_devices(validate_config(rig.raw))
            local = s.devices
            f0 = local["nv"].transport.nv.transition_frequency
            s.RE(prepare_nv(wired["mw"], wired["laser"], frequency=f0, power_dbm=0.0))
            # times on a 16 ns grid: CPMG-8 pulse centres land on the sequencer's 1 ns grid,
            # so the emulated NV sees exact CPMG timing (closed-form chi, as in-process);
            # off-grid times make it integrate chi numerically (the instrument's cost, not
            # the wire's)
            step = 16e-9
            grid = np.round(times / step) * step
            s.RE(coherence_scan(wired["nv"], "cpmg", grid[:5], n=8))  # warm up
            w, loc = [], []
            for rep in range(args.repeats):
                fresh = np.round(grid * (1 + 1e-3 * (rep + 21)) / step) * step
                for dev, out in ((wired, w), (local, loc)):
                    t0 = time.perf_counter()
                    s.RE(coherence_scan(dev["nv"], "cpmg", fresh, n=8))
                    out.append((time.perf_counter() - t0) / args.points)
            before = rig.control(cmd="state")["streams"]
            s.RE(coherence_scan(wired["nv"], "cpmg", grid[:10], n=8))
            streams = rig.control(cmd="state")["streams"] - before
            wired["nv"].transport.close()
            wired["mw"].transport.close()
        finally:
            rig.stop()
    # requests per point: 1 stream (binary) + 1 hasFinished (JSON-RPC) + 3 x (StartTask,
    # ReadCounterF64Ex with its attribute reads, StopTask) over gRPC
    return {"wire_coherence_scan_s_per_point": float(np.median(w)),
            "local_coherence_scan_s_per_point": float(np.median(loc)),
            "wire_extra_s_per_point": float(np.median(w) - np.median(loc)),
            "wire_all": w, "local_all": loc, "wire_streams_per_point": streams / 10,
            "wire_rpcs_per_point": "1 stream + 1 hasFinished + 3 x (start, read, stop)"}


if __name__ == "__main__":
    main()
