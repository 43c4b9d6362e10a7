"""Noise power spectra S(omega) of the qubit frequency noise.

Convention (physics.md section 1): two-sided spectrum in rad/s,
``S(omega) = Integral C(tau) exp(i omega tau) dtau`` of the autocorrelation ``C`` of the
frequency noise (rad/s), so ``S`` is in rad^2/s and the variance is
``Integral S domega / (2 pi)``. All spectra are even in omega.

Each spectrum is a callable on omega (rad/s) and lists its narrow ``features`` as
``(centre, width)`` pairs in rad/s, which quadrature uses to refine its grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GAMMA_1H = 2 * np.pi * 42.577478e6  # rad/s/T
GAMMA_13C = 2 * np.pi * 10.7084e6  # rad/s/T
NUCLEAR_GAMMA = {"1H": GAMMA_1H, "13C": GAMMA_13C, "19F": 2 * np.pi * 40.078e6}


class Spectrum:
    """Base class: ``S(omega)``, addition, and grid hints."""

    def __call__(self, omega):
        raise NotImplementedError

    def features(self) -> list[tuple[float, float]]:
        """Narrow features as (centre, width) in rad/s; broad spectra return []."""
        return []

    def scale(self) -> float:
        """A typical frequency scale in rad/s (for quadrature grids)."""
        return 0.0

    def low_frequency_exponent(self) -> float:
        """alpha in ``S ~ omega^-alpha`` as omega -> 0 (0 for a finite S(0))."""
        return 0.0

    def __add__(self, other: Spectrum) -> SumSpectrum:
        return SumSpectrum((self, other))


@dataclass(frozen=True)
class Lorentzians(Spectrum):
    """Sum of symmetrized Lorentzians.

    ``S(w) = sum_k A_k [g_k/((w - w0_k)^2 + g_k^2) + g_k/((w + w0_k)^2 + g_k^2)]``, the
    spectrum of ``C(tau) = sum_k A_k exp(-g_k |tau|) cos(w0_k tau)``.

    Parameters
    ----------
    amplitude : array_like
        A_k, the variance of each component in (rad/s)^2.
    width : array_like
        g_k, half width at half maximum in rad/s (> 0).
    centre : array_like
        w0_k, centre in rad/s (>= 0).
    """

    amplitude: tuple
    width: tuple
    centre: tuple

    def __post_init__(self):
        a, g, w0 = (np.atleast_1d(np.asarray(x, float)) for x in (self.amplitude, self.width,
                                                                   self.centre))
        if not (a.shape == g.shape == w0.shape):
            raise ValueError("amplitude, width and centre must have the same length")
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(g)) and np.all(np.isfinite(w0))):
            raise ValueError("Lorentzian parameters must be finite")
        if np.any(g <= 0):
            raise ValueError(f"Lorentzian widths must be > 0 rad/s, got {g}")
        if np.any(a < 0):
            raise ValueError(f"Lorentzian amplitudes must be >= 0, got {a}")
        object.__setattr__(self, "amplitude", tuple(a.tolist()))
        object.__setattr__(self, "width", tuple(g.tolist()))
        object.__setattr__(self, "centre", tuple(np.abs(w0).tolist()))

    @property
    def params(self) -> np.ndarray:
        """Array of shape (K, 3): columns A (rad^2/s^2), g (rad/s), w0 (rad/s)."""
        return np.column_stack([self.amplitude, self.width, self.centre])

    def __call__(self, omega):
        w = np.asarray(omega, float)[..., None]
        a, g, w0 = (np.asarray(x) for x in (self.amplitude, self.width, self.centre))
        s = a * (g / ((w - w0) ** 2 + g**2) + g / ((w + w0) ** 2 + g**2))
        return s.sum(-1)

    def features(self):
        return list(zip(self.centre, self.width, strict=True))

    def scale(self):
        return float(max(max(self.centre), max(self.width)))


@dataclass(frozen=True)
class Ohmic(Spectrum):
    """Ohmic spectrum with a Drude cutoff: ``S = eta |w| wc^2 / (w^2 + wc^2)``.

    Zero at ``w = 0``, linear below ``wc`` and falling as ``1/w`` above it.

    Parameters
    ----------
    strength : float
        eta, dimensionless coupling times rad/s scale: S in rad^2/s for w in rad/s.
    omega_c : float
        Cutoff frequency wc in rad/s.
    """

    strength: float
    omega_c: float

    def __call__(self, omega):
        w = np.abs(np.asarray(omega, float))
        return self.strength * w * self.omega_c**2 / (w**2 + self.omega_c**2)

    def scale(self):
        return float(self.omega_c)


@dataclass(frozen=True)
class PowerLaw(Spectrum):
    """1/f^alpha noise: ``S = amplitude (omega_ref / |omega|)^alpha``.

    Diverges at 0 for alpha > 0, so FID (whose filter does not vanish at 0) is undefined
    for alpha >= 1; echo sequences are fine for alpha < 3.

    Parameters
    ----------
    amplitude : float
        S at omega_ref, in rad^2/s.
    alpha : float
        Exponent (dimensionless).
    omega_ref : float
        Reference frequency in rad/s.
    """

    amplitude: float
    alpha: float
    omega_ref: float

    def __call__(self, omega):
        w = np.abs(np.asarray(omega, float))
        with np.errstate(divide="ignore"):
            return self.amplitude * (self.omega_ref / w) ** self.alpha

    def scale(self):
        return float(self.omega_ref)

    def low_frequency_exponent(self):
        return float(self.alpha)


def larmor_peak(field: float, nucleus: str = "1H", *, amplitude: float,
                width: float) -> Lorentzians:
    """A nuclear Larmor peak as a symmetrized Lorentzian at ``gamma * field``.

    Parameters
    ----------
    field : float
        Static magnetic field in T.
    nucleus : str
        "1H", "13C" or "19F".
    amplitude : float
        Variance of the nuclear field seen by the NV, (rad/s)^2.
    width : float
        Half width in rad/s.
    """
    try:
        gamma = NUCLEAR_GAMMA[nucleus]
    except KeyError:
        raise ValueError(f"unknown nucleus {nucleus!r}; known: {sorted(NUCLEAR_GAMMA)}") from None
    return Lorentzians([amplitude], [width], [gamma * field])


@dataclass(frozen=True)
class SumSpectrum(Spectrum):
    """Sum of spectra."""

    parts: tuple

    def __call__(self, omega):
        return sum(p(omega) for p in self.parts)

    def features(self):
        return [f for p in self.parts for f in p.features()]

    def scale(self):
        return max(p.scale() for p in self.parts)

    def low_frequency_exponent(self):
        return max(p.low_frequency_exponent() for p in self.parts)

    def __add__(self, other):
        return SumSpectrum((*self.parts, other))


def lorentzian_parts(spectrum: Spectrum) -> np.ndarray | None:
    """The (K, 3) Lorentzian parameters if ``spectrum`` is purely Lorentzian, else None."""
    if isinstance(spectrum, Lorentzians):
        return spectrum.params
    if isinstance(spectrum, SumSpectrum):
        parts = [lorentzian_parts(p) for p in spectrum.parts]
        if all(p is not None for p in parts):
            return np.vstack(parts)
    return None


def default_nv_spectrum(field: float = 0.05) -> Spectrum:
    """The default simulated NV environment: a near-surface NV in ``field`` (T).

    A slow bath (13C/paramagnetic spin bath, correlation time ~20 us), a faster surface
    term and a 1H Larmor peak (2.13 MHz at 0.05 T). Gives T2* ~ 3 us, T2(SE) ~ 50 us.
    """
    bath = Lorentzians(
        amplitude=[(2 * np.pi * 80e3) ** 2, (2 * np.pi * 30e3) ** 2],
        width=[2 * np.pi * 8e3, 2 * np.pi * 400e3],
        centre=[0.0, 0.0],
    )
    return bath + larmor_peak(field, "1H", amplitude=(2 * np.pi * 15e3) ** 2,
                              width=2 * np.pi * 50e3)
