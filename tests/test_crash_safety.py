"""Nothing lost, nothing stored twice: hard pauses, kill -9, two owners of one folder.

Real RunEngines, real Tiled storage, real processes (the kill test forks a process per
run from a pre-imported parent and kills it with SIGKILL); the plans are tiny versions of
every mracq plan (tests/crash_rig.py).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from bluesky.utils import RunEngineInterrupted

sys.path.insert(0, str(Path(__file__).parent))
import crash_rig  # noqa: E402

SRC = str(Path(__file__).resolve().parents[1] / "src")
TESTS = str(Path(__file__).resolve().parent)
PLAN_NAMES = list(crash_rig.plans())


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    from mracq.session import make_session

    s = make_session(data_dir=tmp_path_factory.mktemp("pause"), devices=crash_rig.build())
    s.RE(crash_rig.prepare(s.devices))
    yield s
    s.close()


class HardPauser:
    """``RE.msg_hook``: at every ``every``-th message of the commands in turn (inside a
    run), request an immediate pause, as a second Ctrl-C does.  The request is queued on
    the RunEngine's loop (what ``RE.request_pause`` does from another thread), so it lands
    before the next message: after a ``save`` (the point is replayed), between ``read``
    and ``save`` (the replayed reading is the one saved), after a ``set`` or ``trigger``.
    """

    def __init__(self, RE, every=5, commands=("save", "read", "trigger", "set", "checkpoint"),
                 most=5):
        self.RE, self.every, self.commands, self.most = RE, every, commands, most
        self.seen = dict.fromkeys(commands, 0)
        self.pauses = 0

    def __call__(self, msg):
        if msg.command not in self.commands or not self.RE._run_bundlers:
            return
        self.seen[msg.command] += 1
        # the k-th pause at the (k + 1) * every-th message of the k-th command (in turn)
        want = self.commands[self.pauses % len(self.commands)]
        if (self.pauses < self.most and msg.command == want
                and self.seen[want] >= (self.pauses + 1) * self.every):
            self.pauses += 1
            asyncio.ensure_future(self._pause(), loop=self.RE.loop)

    async def _pause(self):
        if self.RE.state == "running":
            await self.RE._request_pause_coro(defer=False)


def run_with_pauses(RE, plan, every):
    pauser = HardPauser(RE, every=every)
    RE.msg_hook = pauser
    pauses = 0
    try:
        try:
            result = RE(plan)
        except RunEngineInterrupted:
            pauses += 1
            while True:
                try:
                    result = RE.resume()
                    break
                except RunEngineInterrupted:
                    pauses += 1
    finally:
        RE.msg_hook = None
        if RE.state == "paused":
            RE.abort()
    return result, pauses


@pytest.mark.parametrize("name", PLAN_NAMES)
def test_hard_pause_and_resume_stores_each_point_once(session, name):
    plan = crash_rig.plans()[name](session.devices)
    result, pauses = run_with_pauses(session.RE, plan, every=3)
    assert result.exit_status == "success"
    assert pauses >= 2, f"{name}: only {pauses} pauses landed"
    n = crash_rig.check_result(name, result.plan_result, session.catalog)
    expected = {"coherence_scan": 8, "vqns_loop": 12, "cosy_random_mask": 11,
                "cosy_adaptive": 14, "xyz_scan": 18, "multislice_scan": 12,
                "adaptive_multislice_scan": 26}
    if name in expected:
        assert n == expected[name], (name, n)
    # every stored run of this call is closed and unique
    assert len(set(result.run_start_uids)) == len(result.run_start_uids)


def test_deferred_pause_stops_every_mrfm_plan_between_points(session):
    RE = session.RE
    for name in ("xyz_scan", "multislice_scan", "adaptive_multislice_scan"):
        seen = []

        def hook(msg, seen=seen):
            if msg.command == "save":
                seen.append(1)
                if len(seen) == 2:
                    threading.Thread(target=RE.request_pause, kwargs={"defer": True},
                                     daemon=True).start()

        RE.msg_hook = hook
        try:
            with pytest.raises(RunEngineInterrupted):
                RE(crash_rig.plans()[name](session.devices))
            assert RE.state == "paused"
            RE.msg_hook = None
            result = RE.resume()
        finally:
            RE.msg_hook = None
            if RE.state == "paused":
                RE.abort()
        crash_rig.check_result(name, result.plan_result, session.catalog)


# --- kill -9 -------------------------------------------------------------------------

FORKER = textwrap.dedent("""
    import json, os, signal, sys, time
    sys.path[:0] = [{src!r}, {tests!r}]
    import crash_rig
    from mracq.session import make_session
    plans = crash_rig.plans()
    import tiled.server.app, bluesky_tiled_plugins  # noqa: F401  (imported before forking)

    for line in sys.stdin:
        job = json.loads(line)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the measuring process
            os.close(r)
            s = make_session(data_dir=job["dir"], devices=crash_rig.build())
            s.RE(crash_rig.prepare(s.devices))

            def report(name, doc):
                if name == "event":
                    time.sleep(0.02)  # instrument time per point
                    os.write(w, b"E")
            s.RE.subscribe(report)
            s.RE(plans[job["plan"]](s.devices))
            os.write(w, b"D")
            os._exit(0)
        os.close(w)
        seen = 0
        while seen < job["kill_after"]:
            b = os.read(r, 1)
            if not b or b == b"D":
                break
            seen += 1
        time.sleep(job["delay"])
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)
        print(json.dumps({{"seen": seen}}), flush=True)
""")

KILLS = {  # plan: (events seen before the kill, extra delay in s) for each kill
    "coherence_scan": [(2, 0.0), (6, 0.013)],
    "vqns_loop": [(5, 0.0), (9, 0.03)],
    "cosy_random_mask": [(3, 0.007), (9, 0.0)],
    "cosy_adaptive": [(4, 0.0), (7, 0.02)],
    "xyz_scan": [(1, 0.0), (10, 0.011)],
    "multislice_scan": [(4, 0.005)],
    "cs_multislice_scan": [(3, 0.0)],
    "adaptive_multislice_scan": [(5, 0.0), (12, 0.015)],
}


def test_kill_9_loses_at_most_the_point_in_flight(tmp_path):
    from mracq.session import make_session
    from mracq.storage import get_run, run_table

    data = tmp_path / "data"
    jobs = [{"plan": p, "kill_after": k, "delay": d, "dir": str(data)}
            for p, ks in KILLS.items() for k, d in ks]
    proc = subprocess.run([sys.executable, "-c", FORKER.format(src=SRC, tests=TESTS)],
                          input="".join(json.dumps(j) + "\n" for j in jobs),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = [json.loads(line)["seen"] for line in proc.stdout.split()]
    assert len(seen) == len(jobs)
    with make_session(data_dir=data, devices={}) as s:
        assert not list((data / "journal").glob("*.jsonl"))
        runs = [get_run(s.catalog, r) for r in list(s.catalog)]
    # the runs of each job in order: count primary events per job
    counts, reasons = [], []
    for run in runs:
        start, stop = run.metadata["start"], run.metadata.get("stop") or {}
        if start.get("plan_name") in ("vqns_estimate", None) or "primary" not in run:
            if not stop:
                raise AssertionError(f"run {start['uid'][:8]} left without a stop document")
            continue
        t = run_table(run)
        seq = t["seq_num"].tolist()
        assert seq == list(range(1, len(seq) + 1)), seq
        counts.append((start["plan_name"], start.get("vqns_step"), len(seq)))
        reasons.append(stop.get("reason", ""))
        assert stop, f"run {start['uid'][:8]} has no stop document"
    # per job, the points stored (all runs of a vqns_loop together) cover what was seen
    k = 0
    recovered = sum("recovered from the journal" in r for r in reasons)
    assert recovered == len(jobs), (recovered, reasons)
    for job, n_seen in zip(jobs, seen, strict=True):
        stored = 0
        while k < len(counts) and counts[k][0] in (job["plan"], "coherence_scan"):
            stored += counts[k][2]
            k += 1
            if job["plan"] != "vqns_loop":
                break
            if "recovered" in reasons[k - 1]:
                break
        assert stored >= n_seen, (job, stored, n_seen)
        assert stored <= n_seen + 2, (job, stored, n_seen)  # the kill came right after
