"""A live table of a run's events in the units people read (nm, us, MHz, aN^2).

bluesky's BestEffortCallback prints hinted fields as stored, in SI: scanner positions of a
few nm become ``0.000`` on every row, and array-valued fields (the MRFM spin signal) are
left out. :class:`UnitTable` prints every measured field of the primary stream, scaled by
its ``units`` (``m`` -> nm, ``s`` -> us, ``Hz`` -> MHz, ``N^2`` -> aN^2); an array field
shows its largest value.
"""

from __future__ import annotations

import sys

#: stored unit -> (shown unit, factor)
SCALE = {"m": ("nm", 1e9), "s": ("us", 1e6), "Hz": ("MHz", 1e-6), "N^2": ("aN^2", 1e36),
         "W": ("mW", 1e3), "T": ("mT", 1e3)}


def _shown(name: str, key: dict) -> tuple[str, float]:
    unit = key.get("units") or ""
    if not unit and name.startswith("scanner_"):
        unit = "m"  # the scanner's axes carry no units in their describe()
    return SCALE.get(unit, (unit, 1.0))


class UnitTable:
    """A bluesky callback: ``RE.subscribe(UnitTable())``.

    Parameters
    ----------
    stream : str
        Stream to print (default ``primary``).
    every : int
        Print every n-th event (the first and the last are always printed when known).
    file : file-like
        Where to print (default stdout).
    """

    def __init__(self, stream: str = "primary", every: int = 1, file=None):
        self.stream, self.every, self.file = stream, max(1, int(every)), file
        self._cols: list = []
        self._desc: str | None = None
        self._n = 0

    def _print(self, text: str) -> None:
        print(text, file=self.file or sys.stdout, flush=True)

    def __call__(self, name, doc):
        getattr(self, name, lambda d: None)(doc)

    def start(self, doc):
        self._n, self._desc, self._cols = 0, None, []
        self._print(f"scan {doc.get('scan_id')}  {doc.get('plan_name', '')}  "
                    f"uid {doc.get('uid', '')[:8]}")

    def descriptor(self, doc):
        if doc.get("name") != self.stream:
            return
        self._desc = doc["uid"]
        cols = []
        for key, info in doc.get("data_keys", {}).items():
            if info.get("dtype") not in ("number", "integer", "array", "boolean"):
                continue
            unit, factor = _shown(key, info)
            label = f"{key} ({unit})" if unit else key
            if info.get("shape"):
                label = f"max {label}"
            cols.append((key, label, factor, max(10, len(label))))
        self._cols = cols
        self._print("  ".join(["event".rjust(6)] + [c[1].rjust(c[3]) for c in cols]))

    def event(self, doc):
        if doc.get("descriptor") != self._desc:
            return
        self._n += 1
        if self._n != 1 and self._n % self.every:
            return
        import numpy as np

        cells = [str(doc.get("seq_num", self._n)).rjust(6)]
        for key, _, factor, width in self._cols:
            v = doc["data"].get(key)
            try:
                a = np.asarray(v, float)
                x = (np.nanmax(a) if a.size else np.nan) * factor
                cells.append(f"{x:.5g}".rjust(width))
            except (TypeError, ValueError):
                cells.append(str(v)[:width].rjust(width))
        self._print("  ".join(cells))

    def stop(self, doc):
        self._print(f"scan done: {doc.get('exit_status')}, {self._n} events"
                    + (f" ({doc['reason']})" if doc.get("reason") else ""))
