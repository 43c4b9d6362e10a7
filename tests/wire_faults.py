"""Shared helper of the wire fault tests (NV and MRFM emulators)."""

from __future__ import annotations

import pytest

from mracq.devices.drivers import InstrumentError


def fail_after(session, k, action, plan, counts=lambda doc: True):
    """Run ``plan``, calling ``action()`` once ``k`` counted events are out.

    ``counts(doc)`` says which event documents count (default: all). The plan must fail
    with an `InstrumentError`; returns (start uid, the error).
    """
    seen = {"n": 0, "uid": None}

    def cb(name, doc):
        if name == "start":
            seen["uid"] = doc["uid"]
        if name == "event" and counts(doc):
            seen["n"] += 1
            if seen["n"] == k:
                action()

    token = session.RE.subscribe(cb)
    try:
        with pytest.raises(InstrumentError) as err:
            session.RE(plan)
    finally:
        session.RE.unsubscribe(token)
    return seen["uid"], err.value
