"""0MQ publisher overhead and delivery (run through ``benchmarks/overhead.py --publisher``).

A proxy (``mracq proxy``) runs in its own process; a subscriber in another process counts every
document it receives per run and reports at the end. Off/on runs are interleaved; the
publisher is the one ``make_session(publish=...)`` subscribes (msgpack on the wire).
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

COUNTER = """
import json, sys, time
from collections import Counter, defaultdict
from mracq.stream import DocumentSubscriber
sub = DocumentSubscriber(sys.argv[1])
sub.wait_connected(10)
print("ready", flush=True)
runs, by_desc, total = defaultdict(Counter), {}, 0
last = None
while True:
    got = sub.recv(timeout=120.0)
    if got is None:
        break  # a guard only: the end is the stop of the run marked "benchmark_last"
    _, name, doc = got
    total += 1
    if name == "start":
        uid = doc["uid"]
        if doc.get("benchmark_last"):
            last = uid
    elif name in ("descriptor", "stop"):
        uid = doc["run_start"]
        if name == "descriptor":
            by_desc[doc["uid"]] = uid
    else:
        uid = by_desc.get(doc.get("descriptor"), "?")
    runs[uid][name] += 1
    if name == "stop" and uid == last:
        break
print(json.dumps({"total": total, "dropped": sub.dropped, "runs": runs}), flush=True)
"""


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def publisher_overhead(points: int, repeats: int, out: str) -> dict:
    from mracq.config import validate_config
    from mracq.plans.coherence import coherence_scan, prepare_nv
    from mracq.session import make_session

    p_in, p_out = _free_port(), _free_port()
    proxy = subprocess.Popen([sys.executable, "-m", "mracq", "proxy", "--in", str(p_in),
                              "--out", str(p_out)], stdout=subprocess.PIPE, text=True)
    counter = None
    try:
        proxy.stdout.readline()
        counter = subprocess.Popen([sys.executable, "-c", COUNTER, str(p_out)],
                                   stdout=subprocess.PIPE, text=True)
        assert counter.stdout.readline().strip() == "ready"
        with tempfile.TemporaryDirectory() as tmp, \
                make_session(validate_config({"sim": {"seed": 0}}), data_dir=tmp,
                             publish=p_in) as s:
            pub = s.publisher
            assert pub.connected, "the publisher did not reach the proxy"
            token = s.tokens[-1]  # the publisher's subscription (make_session adds it last)
            s.RE.unsubscribe(token)
            d = s.devices
            nv_sim = d["nv"].transport.nv
            s.RE(prepare_nv(d["mw"], d["laser"], frequency=nv_sim.transition_frequency,
                            power_dbm=0.0))
            times = np.geomspace(2e-6, 2e-4, points)
            s.RE(coherence_scan(d["nv"], "cpmg", times[:5], n=8))  # warm up
            off, on = [], []
            spent = [0.0]

            def timed(name, doc):  # the publisher's own CPU time, immune to load swings
                t = time.thread_time()
                pub(name, doc)
                spent[0] += time.thread_time() - t

            cpu_off, cpu_on = [], []

            for rep in range(repeats):
                # alternate which goes first, so drifts and warm-up hit both alike
                for position, publishing in enumerate((False, True) if rep % 2 == 0
                                                      else (True, False)):
                    # new programs every run (1 % apart: never the same clock-rounded timing,
                    # so no run reuses physics another computed)
                    fresh = times * (1 + 0.01 * (2 * rep + 1 + position))
                    tok = s.RE.subscribe(timed) if publishing else None
                    t0, c0 = time.perf_counter(), time.process_time()
                    s.RE(coherence_scan(d["nv"], "cpmg", fresh, n=8))
                    (on if publishing else off).append((time.perf_counter() - t0) / points)
                    (cpu_on if publishing else cpu_off).append(
                        (time.process_time() - c0) / points)
                    if tok is not None:
                        s.RE.unsubscribe(tok)
            # 1000 points, every document counted here and at the far end
            local = {}
            tok = s.RE.subscribe(pub)
            ltok = s.RE.subscribe(lambda name, doc: local.__setitem__(
                name, local.get(name, 0) + 1))
            t0 = time.perf_counter()
            big = s.RE(coherence_scan(d["nv"], "fid", np.linspace(1e-7, 2e-5, 1000),
                                    md={"benchmark_last": True}))
            big_s = time.perf_counter() - t0
            s.RE.unsubscribe(ltok)
            s.RE.unsubscribe(tok)
            sent = pub.sent
            s.tokens.remove(token)
        far = json.loads(counter.communicate(timeout=120)[0].strip().splitlines()[-1])
    finally:
        if counter is not None and counter.poll() is None:
            counter.kill()
        proxy.terminate()
        proxy.wait(10)
    uid = big.run_start_uids[0]
    got = far["runs"].get(uid, {})
    f, o = float(np.median(off)), float(np.median(on))
    pub_pp = spent[0] / (repeats * points)
    cf, co = float(np.median(cpu_off)), float(np.median(cpu_on))
    result = {
        "points": points, "repeats": repeats,
        "publisher_off_s_per_point": f, "publisher_on_s_per_point": o, "ratio": o / f,
        "target_ratio": 1.2, "min_ratio": min(on) / min(off),
        "cpu_off_s_per_point": cf, "cpu_on_s_per_point": co, "cpu_ratio": co / cf,
        "publisher_cpu_s_per_point": pub_pp, "ratio_from_publisher_cpu": (cf + pub_pp) / cf,
        "off_all": off, "on_all": on,
        "scan_1000": {"sent_local": local, "received_far": got,
                      "lost": sum(local.values()) - sum(got.values()),
                      "seconds": big_s},
        "all_documents": {"sent": sent, "received": far["total"], "dropped": far["dropped"]},
        "machine": f"{platform.machine()} {platform.python_version()}",
        "load": os.getloadavg()[0],
    }
    print(f"coherence_scan, publisher off : {f * 1e3:7.2f} ms/point (median of {repeats})")
    print(f"coherence_scan, publisher on  : {o * 1e3:7.2f} ms/point")
    print(f"ratio                         : {o / f:7.2f}  (target <= 1.2; of the fastest "
          f"runs {min(on) / min(off):.2f})")
    print(f"CPU time (this process)       : {cf * 1e3:7.2f} vs {co * 1e3:.2f} ms/point, ratio "
          f"{co / cf:.3f}")
    print(f"CPU inside the publisher      : {pub_pp * 1e6:7.1f} us/point -> ratio "
          f"{(cf + pub_pp) / cf:.3f}")
    print(f"1000-point scan: sent {local}, received in another process {dict(got)}, "
          f"lost {result['scan_1000']['lost']}")
    print(f"all published documents: sent {sent}, received {far['total']}")
    Path(out).write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result
