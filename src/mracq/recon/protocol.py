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

__all__ = ["ID_KEY"]

#: Key of a suggestion's identifier (``bluesky_adaptive.protocols.ID_KEY``).
ID_KEY = "_id"
