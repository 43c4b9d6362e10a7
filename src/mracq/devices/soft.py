"""Soft signals for plans: ``set`` is a put that finishes at once."""

from __future__ import annotations

from ophyd import Signal
from ophyd.status import StatusBase


class NamedStatus(StatusBase):
    """A status that says what it was for: ``str`` gives the action and, once failed, the
    reason (bluesky's ``FailedStatus`` message is the status's text)."""

    def __init__(self, action: str, **kwargs):
        self.action = action
        super().__init__(**kwargs)

    def __repr__(self):
        if not self.done:
            return f"{self.action}: pending"
        if self.success:
            return f"{self.action}: done"
        exc = self.exception()
        return f"{self.action}: failed ({type(exc).__name__}: {exc})"

    __str__ = __repr__


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
        st = NamedStatus(f"set {self.name}")
        st.set_finished()
        return st
