"""The optimizer protocol of bluesky-adaptive 1.0, as the strategies implement it.

Pure code (no Bluesky, no bluesky-adaptive import): the strategies of
``mracq.recon.<method>.strategy`` follow ``bluesky_adaptive.protocols.Optimizer`` and
``SupportsStoppingCriteria`` by their method names alone:

- ``suggest(n) -> [dict]``: up to ``n`` points to measure, each with a unique hashable
  ``_id`` (:data:`ID_KEY`) beside its parameters;
- ``ingest(outcomes)``: outcome dicts, each keyed by the ``_id`` of the suggestion it
  answers (points without ``_id`` name their parameters themselves);
- ``get_best_points() -> [(_id, parameters, outcome)]``;
- ``should_stop() -> (bool, reason or None)``.

Our own closed-loop plans (:mod:`mracq.plans.vqns`, :mod:`mracq.plans.cosy`,
:mod:`mracq.plans.mrfm`) drive the same objects; :mod:`mracq.plans.adaptive` hands them to
bluesky-adaptive's ``optimize`` plan.
"""

from __future__ import annotations

__all__ = ["ID_KEY", "grid_outcome"]

#: Key of a suggestion's identifier (``bluesky_adaptive.protocols.ID_KEY``).
ID_KEY = "_id"


def grid_outcome(outcome: dict, suggested: dict) -> tuple[dict, object]:
    """An outcome dict merged with the open suggestion it answers (popped from
    ``suggested``), for strategies whose points are grid indices ``i``, ``j``.

    Returns ``(merged, id)``; ``id`` is the outcome's ``_id`` or, without one, ``(i, j)``.
    Raises ValueError when neither names the point.
    """
    sid = outcome.get(ID_KEY)
    merged = {**suggested.pop(sid, {}), **outcome}
    if "i" not in merged or "j" not in merged:
        raise ValueError(f"outcome {sid!r} names no (i, j) and matches no open suggestion")
    return merged, (sid if sid is not None else (int(merged["i"]), int(merged["j"])))
