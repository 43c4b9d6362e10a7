"""Reconstruction workers: consume a live document stream, store and publish estimates.

A worker runs in its own process (``mracq worker vqns|cosy|mrfm --zmq ADDR``), usually on
another machine than the acquisition. It follows the runs of one method as their
documents arrive (:mod:`mracq.stream`), reconstructs as data come in, and writes every
estimate as a run of its own to its catalog, with the uids of the runs it used
(``source_uids``), through its own RunEngine, so the estimate runs are ordinary Bluesky
runs, also published back to the proxy (prefix ``mracq-worker``) for whoever listens: a
live plot, or the acquisition's strategy (:class:`RemoteEstimates`).

Estimate layouts (the same fields the in-process loops store):

- ``vqns``: each finished ``coherence_scan`` joins its loop's measurements (the runs of one
  :func:`mracq.plans.vqns.vqns_loop` share ``vqns_step`` 1, 2, ...; stand-alone scans
  accumulate, a newer scan of a sequence replacing the older); from ``min_measurements``
  on, each one gives a ``vqns_estimate`` run exactly as
  :func:`mracq.plans.vqns.store_estimate` writes it (``primary``: ``omega``, ``mean``,
  ``std``; ``measurement_uids``).
- ``cosy``: runs of ``cosy_random_mask`` / ``cosy_adaptive`` give a ``cosy_estimate`` run
  with a ``reconstruction`` stream (``mask``, ``measured``, ``reconstruction``,
  ``spectrum``: the stream the plans append to their own run) every ``every`` points and
  at the stop.
- ``mrfm``: scans with a ``geometry`` in the start document give an ``mrfm_estimate`` run
  with a ``reconstruction`` stream (``density``, m^-3, (n_xy, n_xy, n_z); ``mask``) at
  the stop (and every ``every`` positions).

Every estimate run records ``source_uids``, ``source_plan`` and ``mracq_worker`` (the
method) in its start document.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

__all__ = ["METHODS", "ReconstructionWorker", "RemoteEstimates", "RemoteVQNSStrategy", "serve",
           "vqns_result_from_estimate"]

log = logging.getLogger(__name__)

WORKER_PREFIX = b"mracq-worker"
METHODS = ("vqns", "cosy", "mrfm")
COSY_PLANS = ("cosy_random_mask", "cosy_adaptive")


@dataclass
class _Run:
    start: dict
    streams: dict = field(default_factory=dict)  # descriptor uid -> stream name
    events: dict = field(default_factory=dict)   # stream -> list of data dicts
    since: int = 0                               # primary events since the last estimate

    @property
    def uid(self) -> str:
        return self.start["uid"]


def _estimate_md(method, sources, start, extra=None):
    md = {"mracq_worker": method, "source_uids": list(sources),
          "source_plan": start.get("plan_name"), "source_scan_id": start.get("scan_id")}
    md.update(extra or {})
    return md


def _store_arrays(arrays: dict, md: dict, stream: str):
    """A run with one event of ``arrays`` in ``stream``; returns its uid."""
    from bluesky import plan_stubs as bps
    from ophyd import Signal

    sigs = [Signal(name=k, value=np.asarray(v)) for k, v in arrays.items()]
    uid = yield from bps.open_run(md=md)
    yield from bps.trigger_and_read(sigs, name=stream)
    yield from bps.close_run()
    return uid


class _VQNS:
    """Coherence runs -> VQNS spectrum estimates (one per finished scan of a loop)."""

    def __init__(self, *, min_measurements=2, reconstruct_kw=None, seed=None, **_):
        self.min_measurements = int(min_measurements)
        self.reconstruct_kw = dict(reconstruct_kw or {})
        self.rng = np.random.default_rng(seed)
        self.group: list = []  # (uid, Measurement)

    def accepts(self, start) -> bool:
        return start.get("plan_name") == "coherence_scan"

    def partial(self, run):
        return []

    def finish(self, run, stop):
        from mracq.plans.vqns import store_estimate
        from mracq.recon.vqns.data import COHERENCE_RANGE, Measurement
        from mracq.recon.vqns.model import reconstruct

        ev = run.events.get("primary", [])
        if stop.get("exit_status") != "success" or len(ev) < 2:
            log.info("vqns worker: run %s ended %s with %d points: not used", run.uid[:8],
                     stop.get("exit_status"), len(ev))
            return []
        start = run.start
        lo, hi = COHERENCE_RANGE
        m = Measurement(start["sequence"], [e["t"] for e in ev],
                        np.clip([e["coherence"] for e in ev], lo, hi),
                        np.maximum([e["coherence_error"] for e in ev], 1e-6))
        if start.get("vqns_step") == 1:
            self.group = []  # a new loop
        self.group = [(u, x) for u, x in self.group if x.sequence != m.sequence]
        self.group.append((run.uid, m))
        if len(self.group) < self.min_measurements:
            return []
        uids = [u for u, _ in self.group]
        t0 = time.perf_counter()
        result = reconstruct([x for _, x in self.group], seed=self.rng, **self.reconstruct_kw)
        log.info("vqns worker: %d measurements reconstructed in %.2f s", len(uids),
                 time.perf_counter() - t0)
        step = start.get("vqns_step") or len(uids)
        md = _estimate_md("vqns", uids, start)
        return [store_estimate(result, uids, step=step, md=md)]


class _EveryN:
    """An estimate every ``self.every`` new points (0: only at the end) and a final one."""

    def partial(self, run):
        if self.every and run.since >= self.every:
            run.since = 0
            return self._estimate(run, final=False)
        return []

    def finish(self, run, stop):
        return self._estimate(run, final=True)


class _Cosy(_EveryN):
    """COSY points -> DLMC reconstructions every ``every`` points and at the stop."""

    def __init__(self, *, every=0, method=None, **_):
        self.every = int(every or 0)
        self.method = method

    def accepts(self, start) -> bool:
        return start.get("plan_name") in COSY_PLANS

    def _estimate(self, run, final):
        from mracq.recon.cosy.dlmc import reconstruct
        from mracq.recon.metrics import spectrum2d

        start = run.start
        shape = (len(start["t1_grid"]), len(start["t2_grid"]))
        key = f"{start['detectors'][0]}_value"
        values = np.zeros(shape)
        mask = np.zeros(shape, bool)
        for e in run.events.get("primary", []):
            values[int(e["i"]), int(e["j"])] = e[key]
            mask[int(e["i"]), int(e["j"])] = True
        if not mask.any():
            return []
        method = self.method or start.get("plan_args", {}).get("method", "dlmc")
        recon = reconstruct(np.where(mask, values, np.nan), mask, method)
        report = getattr(recon, "report", None)  # method="auto": choice and error
        recon = np.asarray(recon)
        spec = np.fft.fftshift(spectrum2d(recon))
        md = _estimate_md("cosy", [run.uid], start, {
            "plan_name": "cosy_estimate", "method": method, "n_points": int(mask.sum()),
            "final": final, **({"validation": report.to_dict()} if report else {})})
        arrays = {"mask": mask.astype(np.uint8), "measured": np.where(mask, values, 0.0),
                  "reconstruction": recon, "spectrum": spec}
        return [_store_arrays(arrays, md, "reconstruction")]


class _MRFM(_EveryN):
    """MRFM scan positions -> ADMM-TV density at the stop (and every ``every`` points)."""

    def __init__(self, *, every=0, n_z=8, n_iter=None, recon_method="admm", **_):
        self.every = int(every or 0)
        self.n_z = int(n_z)
        self.n_iter = n_iter
        self.recon_method = recon_method

    def accepts(self, start) -> bool:
        geo = start.get("geometry") or {}
        return bool(geo.get("x")) and bool(geo.get("y")) and "pulses" in start

    def _cube(self, run):
        start = run.start
        geo = start["geometry"]
        x, y = np.asarray(geo["x"], float), np.asarray(geo["y"], float)
        z = np.asarray(geo.get("z", [15e-9]), float)
        cubes = run.events.get("cube", [])
        if cubes:
            return (np.asarray(cubes[-1]["cube_data"], float),
                    np.asarray(cubes[-1]["cube_mask"], bool))
        xyz = start.get("protocol") == "xyz"
        n_ch = z.size if xyz else len(start["pulses"])
        cube = np.zeros((x.size, y.size, n_ch))
        mask = np.zeros((x.size, y.size), bool)
        for e in run.events.get("primary", []):
            i = int(np.argmin(np.abs(x - e["scanner_x"])))
            j = int(np.argmin(np.abs(y - e["scanner_y"])))
            val = np.asarray(e["readout_spin_signal"], float)
            if xyz:
                cube[i, j, int(np.argmin(np.abs(z - e["scanner_z"])))] = val[0]
            else:
                cube[i, j, :] = val
            mask[i, j] = True
        return cube, mask

    def _estimate(self, run, final):
        from mracq.recon.mrfm.pipeline import reconstruct
        from mracq.sim.mrfm.setup import default_setup

        start = run.start
        data, mask = self._cube(run)
        if not mask.any() or data.shape[0] != data.shape[1]:
            return []
        geo = start["geometry"]
        x = np.asarray(geo["x"], float)
        pulses = [p["f0"] for p in start["pulses"]]
        kw = {"voxel_size": float(np.median(np.abs(np.diff(np.sort(x))))),
              "n_xy": data.shape[0], "n_z": self.n_z, "z0": float(min(geo.get("z", [15e-9])))}
        protocol = start.get("protocol", "multislice")
        if protocol == "multislice":
            kw["f0"] = pulses
        else:
            kw.update(f0=pulses[:1], n_heights=data.shape[2])
        setup = default_setup(geo.get("resonator") or "membrane", protocol, **kw)
        params = {} if self.n_iter is None else {"n_iter": int(self.n_iter)}
        vol = reconstruct(data, setup, mask=None if mask.all() else mask,
                          method=self.recon_method, **params)
        md = _estimate_md("mrfm", [run.uid], start, {
            "plan_name": "mrfm_estimate", "method": self.recon_method,
            "n_points": int(mask.sum()), "final": final,
            "z_layers": [float(v) for v in setup.z_layers], "units": {"density": "m^-3"}})
        return [_store_arrays({"density": vol, "mask": mask.astype(np.uint8)}, md,
                              "reconstruction")]


_HANDLERS = {"vqns": _VQNS, "cosy": _Cosy, "mrfm": _MRFM}


class ReconstructionWorker:
    """A document callback (``worker(name, doc)``) that reconstructs one method's runs.

    Parameters
    ----------
    method : {"vqns", "cosy", "mrfm"}
    catalog : tiled client, optional
        Where estimate runs are written (:func:`mracq.storage.open_catalog`).
    publisher : callable, optional
        ``publisher(name, doc)`` for the estimate runs' documents (a
        :class:`mracq.stream.DocumentPublisher`).
    **options
        vqns: ``min_measurements`` (2), ``reconstruct_kw`` (for
        :func:`mracq.recon.vqns.reconstruct`), ``seed``; cosy: ``every`` (points between
        live estimates, 0: only at the stop), ``method`` (default: the plan's); mrfm:
        ``every``, ``n_z`` (layers, 8), ``n_iter``, ``recon_method`` ("admm").

    Attributes
    ----------
    estimate_uids : list of str
        Uids of the estimate runs written so far.
    finished : int
        Source runs of this method that have ended.
    documents : int
        Documents received.
    """

    def __init__(self, method: str, *, catalog=None, publisher=None, **options):
        if method not in _HANDLERS:
            raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
        from bluesky import RunEngine

        self.method = method
        self.handler = _HANDLERS[method](**options)
        self.RE = RunEngine({}, context_managers=[], call_returns_result=True)
        self.tokens = []
        if catalog is not None:
            from mracq.storage import subscribe_writer

            self.tokens.append(subscribe_writer(self.RE, catalog))
        if publisher is not None:
            self.tokens.append(self.RE.subscribe(publisher))
        self.runs: dict[str, _Run] = {}
        self.descriptors: dict[str, tuple[str, str]] = {}
        self.estimate_uids: list[str] = []
        self.finished = 0
        self.documents = 0
        self.errors = 0

    def __call__(self, name: str, doc: dict) -> None:
        self.documents += 1
        try:
            plans = self._route(name, doc)
        except Exception:  # noqa: BLE001 - one bad run must not stop the worker
            self.errors += 1
            log.exception("%s worker: failed on a %s document", self.method, name)
            return
        for plan in plans:
            try:
                ret = self.RE(plan)
            except Exception:  # noqa: BLE001
                self.errors += 1
                log.exception("%s worker: storing an estimate failed", self.method)
                continue
            uid = ret.plan_result if hasattr(ret, "plan_result") else ret
            self.estimate_uids.append(uid)
            log.info("%s worker: estimate run %s", self.method, str(uid)[:8])

    def _route(self, name, doc):
        if name == "start":
            if not doc.get("mracq_worker") and self.handler.accepts(doc):
                self.runs[doc["uid"]] = _Run(doc)
            return []
        if name == "descriptor":
            if doc["run_start"] in self.runs:
                self.descriptors[doc["uid"]] = (doc["run_start"], doc.get("name", "primary"))
            return []
        if name == "event_page":
            from event_model import unpack_event_page

            out = []
            for ev in unpack_event_page(doc):
                out += self._route("event", ev)
            return out
        if name == "event":
            where = self.descriptors.get(doc["descriptor"])
            if where is None:
                return []
            run = self.runs[where[0]]
            run.events.setdefault(where[1], []).append(doc["data"])
            if where[1] == "primary":
                run.since += 1
                return self.handler.partial(run)
            return []
        if name == "stop":
            run = self.runs.pop(doc["run_start"], None)
            if run is None:
                return []
            self.descriptors = {k: v for k, v in self.descriptors.items()
                                if v[0] != run.uid}
            self.finished += 1
            return self.handler.finish(run, doc)
        return []

    def close(self) -> None:
        for t in self.tokens:
            self.RE.unsubscribe(t)
        self.tokens.clear()


def serve(method: str, address=None, *, catalog=None, publish=None, max_runs=None,
          idle_timeout=None, stop_event=None, on_ready=None, **options) -> ReconstructionWorker:
    """Run a :class:`ReconstructionWorker` on the documents from a proxy until told to stop.

    Parameters
    ----------
    method : {"vqns", "cosy", "mrfm"}
    address : str or int, optional
        The proxy's output (default ``tcp://127.0.0.1:5578``).
    catalog : tiled client, optional
        Where the estimate runs go.
    publish : str, int or False, optional
        Proxy input for the estimates (default: the output's host, port - 1, the
        convention of ``mracq proxy``); False: do not publish.
    max_runs : int, optional
        Return after this many source runs of the method have ended.
    idle_timeout : float, optional
        Return after this many seconds without a document, once the first has arrived.
    stop_event : threading.Event, optional
        Return when set (checked every 0.2 s).
    on_ready : callable, optional
        Called once subscribed (the stream flows from then on).
    **options
        For :class:`ReconstructionWorker`.

    Returns
    -------
    ReconstructionWorker
        With the counts (``documents``, ``finished``, ``estimate_uids``).
    """
    from mracq.stream import DEFAULT_OUT, DocumentPublisher, DocumentSubscriber, normalize_address

    out = normalize_address(address, DEFAULT_OUT)
    pub = None
    if publish is not False:
        if publish is None:
            host, port = out.rsplit(":", 1)
            publish = f"{host}:{int(port) - 1}"
        pub = DocumentPublisher(publish, prefix=WORKER_PREFIX)
    sub = DocumentSubscriber(out, ignore_prefixes=[WORKER_PREFIX])
    worker = ReconstructionWorker(method, catalog=catalog, publisher=pub, **options)
    try:
        if not sub.wait_connected(10.0):
            log.warning("%s worker: no proxy at %s yet; waiting for it", method, out)
        log.info("%s worker listening on %s", method, out)
        if on_ready is not None:
            on_ready()
        last = None
        while True:
            if stop_event is not None and stop_event.is_set():
                break
            if max_runs is not None and worker.finished >= max_runs:
                break
            got = sub.recv(timeout=0.2)
            if got is None:
                if idle_timeout is not None and last is not None \
                        and time.monotonic() - last > idle_timeout:
                    log.info("%s worker: idle for %.0f s, stopping", method, idle_timeout)
                    break
                continue
            last = time.monotonic()
            _, name, doc = got
            worker(name, doc)
            if name == "stop":
                log.info("%s worker: %d documents received, %d runs of the method ended",
                         method, worker.documents, worker.finished)
    finally:
        worker.close()
        sub.close()
        if pub is not None:
            pub.close()
    return worker


class RemoteEstimates:
    """Collect the estimate runs workers publish (in a background thread).

    Parameters
    ----------
    address : str or int, optional
        The proxy's output (default ``tcp://127.0.0.1:5578``).

    Notes
    -----
    :meth:`wait` returns the arrays of the first estimate (start document and the first
    event's data) whose ``source_uids`` contain a given uid. Use as a context manager.
    """

    def __init__(self, address=None):
        from mracq.stream import DEFAULT_OUT, DocumentSubscriber

        self._sub = DocumentSubscriber(address or DEFAULT_OUT, prefixes=[WORKER_PREFIX])
        self._sub.wait_connected(10.0)
        self._cond = threading.Condition()
        self._starts: dict[str, dict] = {}
        self._desc: dict[str, str] = {}
        self.estimates: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mracq-remote-estimates",
                                        daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.is_set():
            got = self._sub.recv(timeout=0.2)
            if got is None:
                continue
            _, name, doc = got
            if name == "start":
                self._starts[doc["uid"]] = doc
            elif name == "descriptor":
                self._desc[doc["uid"]] = doc["run_start"]
            elif name == "event" and doc["descriptor"] in self._desc:
                start = self._starts.pop(self._desc.pop(doc["descriptor"]), None)
                if start is not None:
                    with self._cond:
                        self.estimates.append({"start": start, "data": doc["data"]})
                        self._cond.notify_all()

    def wait(self, source_uid: str, timeout: float = 60.0) -> dict:
        """The first estimate that used ``source_uid``; TimeoutError after ``timeout`` s."""
        return self.wait_for(lambda e: source_uid in e["start"].get("source_uids", []),
                             timeout, f"for run {source_uid[:8]}")

    def wait_for(self, match, timeout: float = 60.0, what: str = "") -> dict:
        """The first estimate ``e`` (``{"start", "data"}``) with ``match(e)`` true."""
        def find():
            return next((e for e in self.estimates if match(e)), None)

        with self._cond:
            if not self._cond.wait_for(lambda: find() is not None, timeout):
                raise TimeoutError(f"no worker estimate {what} within {timeout} s "
                                   "(is `mracq worker` running?)")
            return find()

    def close(self):
        self._stop.set()
        self._thread.join()
        self._sub.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def vqns_result_from_estimate(start: dict, data: dict):
    """A :class:`~mracq.recon.vqns.model.VQNSResult` from a ``vqns_estimate`` run's start
    document and event data (what :func:`mracq.plans.vqns.store_estimate` wrote)."""
    from mracq.recon.vqns.model import VQNSResult

    samples = np.asarray(start["samples"], float).reshape(-1, *np.shape(start["samples"])[1:])
    return VQNSResult(
        omega=np.asarray(data["omega"], float), mean=np.asarray(data["mean"], float),
        std=np.asarray(data["std"], float), samples=samples,
        losses=np.full(len(samples), np.nan), iterations=np.zeros(len(samples), int),
        n_failed=int(start.get("n_failed", 0)), n_steps=0,
        loss_threshold=float(start.get("loss_threshold", np.nan)), threshold_history=(),
        runtime_s=float(start.get("runtime_s", np.nan)),
        band=tuple(float(x) for x in start["band_rad_s"]),
        settings={"sequences": list(start.get("sequences", [])), "remote": True,
                  "estimate_uid": start.get("uid")})


def RemoteVQNSStrategy(remote: RemoteEstimates, *args, timeout: float = 600.0, **kwargs):
    """A :class:`~mracq.recon.vqns.strategy.NextSequenceStrategy` whose reconstructions come
    from a ``mracq worker vqns`` instead of this process.

    ``ingest`` waits (up to ``timeout`` s) for the worker's estimate over the same
    sequences and uses it as ``result``; everything else is the local strategy. Give it to
    :func:`mracq.plans.vqns.vqns_loop` in a session that publishes to the worker's proxy.
    """
    from mracq.recon.vqns.data import Measurement
    from mracq.recon.vqns.strategy import NextSequenceStrategy, relative_band_width

    class _Remote(NextSequenceStrategy):
        def ingest(self, points) -> None:
            if isinstance(points, (Measurement, dict)):
                points = [points]
            for p in points:
                if isinstance(p, dict):
                    p = Measurement(p["sequence"], p["t"], p["coherence"], p.get("sigma"))
                self.measurements = [m for m in self.measurements if m.sequence != p.sequence]
                self.measurements.append(p)
            if self._pending_initial():
                return
            want = [m.sequence for m in self.measurements]
            est = remote.wait_for(
                lambda e: e["start"].get("plan_name") == "vqns_estimate"
                and list(e["start"].get("sequences", [])) == want
                and e["start"].get("uid") not in self._used, timeout)
            self._used.add(est["start"]["uid"])
            self.result = vqns_result_from_estimate(est["start"], est["data"])
            self.history.append({"sequences": want, "result": self.result,
                                 "band_width": relative_band_width(self.result)})
            log.info("remote VQNS estimate %s for %s", est["start"]["uid"][:8], want)

    strategy = _Remote(*args, **kwargs)
    strategy._used = set()
    return strategy
