"""Soft signals for plans: ``set`` is a put that finishes at once."""

from __future__ import annotations

from ophyd import Signal
from ophyd.status import StatusBase


class SoftSignal(Signal):
    """An ophyd Signal whose ``set`` puts the value and returns a finished status.

    ``ophyd.Signal.set`` puts in a new thread and then polls until the readback equals
    the setpoint, without a timeout; for a value that never compares equal to itself (an
    array holding NaN) that never ends, and each set costs a thread. Plans that record
    derived values with ``bps.mv`` use this instead. Subclasses validate in
    ``check_value``, which runs before anything is written.
    """

    def set(self, value, **kwargs):
        self.check_value(value)
        self.put(value)
        st = StatusBase()
        st.set_finished()
        return st
