"""Old name of :mod:`mracq.recon.cosy.dlmc`: the same module object, kept for callers."""

import sys

from mracq.recon.cosy import dlmc as _dlmc

sys.modules[__name__] = _dlmc
