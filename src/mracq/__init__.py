"""mracq: instrument control and adaptive acquisition for nanoscale magnetic resonance.

Layers, lowest first; a module imports only from its own layer or lower ones:

1. ``mracq.pulses``, ``mracq.config``: data models (pulse programs, lab configuration).
2. ``mracq.sim``: physics simulators (numpy/scipy/torch; no Bluesky, no ophyd).
3. ``mracq.recon``: reconstruction algorithms, pure functions over arrays; may use the
   forward models of ``mracq.sim``.
4. ``mracq.devices``: ophyd devices with transports (simulated physics or VISA).
5. ``mracq.plans``: Bluesky plans (the closed-loop strategies they drive are pure code in
   ``mracq.recon.<method>.strategy``).
6. ``mracq.storage``, ``mracq.session``, ``mracq.cli``: Tiled storage, ready-made
   sessions, the ``mracq`` command.
"""

__version__ = "0.1.0"
