"""Virtual hardware clock for simulated instruments."""

from __future__ import annotations

import math


class VirtualClock:
    """Simulated hardware time.

    Simulated backends never sleep: each advances this clock by the time the real
    instrument would have taken (sequence duration x shots for the NV sequencer, the
    integration time per point for MRFM). Plans report differences of :attr:`now` as the
    hardware time a measurement would have cost.

    Parameters
    ----------
    start : float
        Initial time in s.
    """

    def __init__(self, start: float = 0.0):
        self._now = float(start)

    @property
    def now(self) -> float:
        """Elapsed simulated hardware time in s."""
        return self._now

    def advance(self, dt: float) -> float:
        """Advance by ``dt`` seconds (>= 0, finite); returns the new time in s."""
        dt = float(dt)
        if not math.isfinite(dt) or dt < 0:
            raise ValueError(f"clock can only advance by a finite dt >= 0 s, got {dt!r}")
        self._now += dt
        return self._now

    def __repr__(self) -> str:
        return f"VirtualClock(now={self._now:.6g} s)"
