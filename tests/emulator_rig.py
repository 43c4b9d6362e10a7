"""The emulator process the wire tests drive (:mod:`mracq.emulators.process`)."""

from mracq.emulators.process import EmulatorProcess as Rig
from mracq.emulators.process import free_loopback_host

__all__ = ["Rig", "free_loopback_host"]
