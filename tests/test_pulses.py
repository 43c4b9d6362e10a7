"""Tests for mracq.pulses: model, generators, validation, timing, plot."""

import json
import math

import numpy as np
import pytest

from mracq.pulses import (
    XY8_PHASES,
    Delay,
    Parallel,
    Pulse,
    PulseProgram,
    Repeat,
    TimingLimits,
    coherence_programs,
    cpmg,
    evolution_timing,
    fid,
    hahn_echo,
    plot_timing,
    rabi,
    xy8,
)

PI = math.pi


def udd_program(t, n, pi=40e-9, pi2=20e-9):
    """Hand-built UDD-n: pi pulses centred at t sin^2(pi k / (2n + 2))."""
    centres = [t * math.sin(PI * k / (2 * n + 2)) ** 2 for k in range(1, n + 1)]
    edges = [0.0, *centres, t]
    widths = [pi2, *([pi] * n), pi2]
    elements = [Pulse("laser", 3e-6), Delay(1e-6)]
    for i, (c, w) in enumerate(zip(edges, widths, strict=True)):
        if i:
            elements.append(Delay(c - edges[i - 1] - 0.5 * (w + widths[i - 1])))
        rot = PI if 0 < i <= n else PI / 2
        elements.append(Pulse("mw", w, PI / 2 if rot == PI else 0.0, rot))
    elements.append(Parallel((Pulse("laser", 3e-6), Pulse("gate", 300e-9))))
    return PulseProgram(elements, {"sequence": "udd", "n": n, "t": t}).validate(), centres


@pytest.mark.parametrize("prog", [
    rabi(123e-9), fid(1e-6), hahn_echo(2e-6), cpmg(3e-6, 4), xy8(4e-6, 2),
    PulseProgram([Pulse("rf", 1e-6, 0.3, PI / 2, 2.1e6), Repeat([Pulse("mw", 1e-8), Delay(1e-8)],
                                                             5)], {"tags": ("a", 1)}),
])
def test_json_round_trip_exact(prog):
    d = json.loads(json.dumps(prog.to_dict()))
    back = PulseProgram.from_dict(d)
    assert back == prog
    assert back.flatten() == prog.flatten()
    assert back.duration == prog.duration
    assert back.to_dict() == prog.to_dict()


def test_cpmg4_pi_centres():
    t = 3.3e-6
    prog = cpmg(t, 4)
    mw = prog.pulses_on("mw")
    assert len(mw) == 6
    c0 = mw[0].centre
    for k, p in enumerate(mw[1:-1], start=1):
        assert abs((p.centre - c0) - (k - 0.5) * t / 4) < 1e-15
        assert p.rotation == PI and p.phase == PI / 2
    assert abs(mw[-1].centre - c0 - t) < 1e-15
    assert mw[0].rotation == PI / 2 and mw[0].phase == 0.0
    assert prog.metadata == {"sequence": "cpmg", "n": 4, "t": t, "pi_duration": 40e-9,
                             "pi2_duration": 20e-9}


def test_xy8_2_phases_and_centres():
    t = 5e-6
    prog = xy8(t, 2)
    pis = [p for p in prog.pulses_on("mw") if p.rotation == PI]
    assert len(pis) == 16
    assert [p.phase for p in pis] == list(XY8_PHASES) * 2
    assert [p.phase for p in pis[:8]] == [0, PI / 2, 0, PI / 2, PI / 2, 0, PI / 2, 0]
    t_back, centres = evolution_timing(prog)
    assert abs(t_back - t) < 1e-15
    np.testing.assert_allclose(centres, (np.arange(1, 17) - 0.5) * t / 16, rtol=0, atol=1e-15)
    assert prog.metadata["n"] == 2 and prog.metadata["sequence"] == "xy8"
    # stored compactly: one Repeat of 8 pulses instead of 16 pulses
    assert sum(isinstance(e, Repeat) for e in prog.elements) == 1


def test_shot_layout():
    prog = hahn_echo(1e-6)
    laser = prog.pulses_on("laser")
    gate = prog.pulses_on("gate")
    mw = prog.pulses_on("mw")
    assert len(laser) == 2 and laser[0].start == 0 and laser[0].duration == 3e-6
    assert gate[0].start == laser[1].start and gate[0].duration == 300e-9
    assert laser[1].start == pytest.approx(mw[-1].end, abs=1e-18)
    assert prog.duration == pytest.approx(3e-6 + 1e-6 + 20e-9 + 1e-6 + 3e-6, abs=1e-18)
    starts = [p.start for p in prog.flatten()]
    assert starts == sorted(starts)
    assert prog.channels == ("laser", "mw", "gate")


def test_repeat_expands():
    body = (Pulse("mw", 30e-9, PI / 2, PI), Delay(70e-9))
    prog = PulseProgram([Pulse("laser", 1e-6), Repeat(body, 7), Pulse("laser", 1e-6)])
    mw = prog.pulses_on("mw")
    assert len(mw) == 7
    assert [p.start for p in mw] == pytest.approx([1e-6 + k * 100e-9 for k in range(7)],
                                                  abs=1e-18)
    assert prog.duration == pytest.approx(2e-6 + 700e-9, abs=1e-18)
    assert prog.pulses_on("laser")[1].start == pytest.approx(1.7e-6, abs=1e-18)
    assert PulseProgram([Repeat(body, 0)]).flatten() == ()
    nested = PulseProgram([Repeat([Repeat(body, 3), Delay(1e-7)], 2)])
    assert len(nested.flatten()) == 6 and nested.duration == pytest.approx(8e-7, abs=1e-18)


def test_validate_overlap_names_pulse():
    prog = PulseProgram([Parallel(((Pulse("mw", 100e-9),), (Delay(50e-9), Pulse("mw", 1e-7))))])
    with pytest.raises(ValueError, match=r"pulse 1 \(channel 'mw', start 5e-08 s\) overlaps"):
        prog.validate()
    # same times on different channels are fine
    PulseProgram([Parallel((Pulse("laser", 1e-7), Pulse("gate", 1e-7)))]).validate()


def test_validate_short_pulse_negative_delay_nonfinite_long():
    with pytest.raises(ValueError, match=r"pulse 1 \(channel 'mw'.*shorter than min_pulse"):
        PulseProgram([Pulse("laser", 1e-6), Pulse("mw", 1e-9)]).validate()
    with pytest.raises(ValueError, match=r"delay at start 1e-06 s has invalid duration -5e-08"):
        PulseProgram([Pulse("laser", 1e-6), Delay(-5e-8), Pulse("mw", 1e-7)]).validate()
    with pytest.raises(ValueError, match=r"shorter than min_delay"):
        PulseProgram([Pulse("laser", 1e-6), Delay(1e-9), Pulse("mw", 1e-7)]).validate()
    with pytest.raises(ValueError, match=r"pulse 0 \(channel 'mw'.*non-finite"):
        PulseProgram([Pulse("mw", math.nan)]).validate()
    with pytest.raises(ValueError, match=r"exceeds max_duration"):
        PulseProgram([Pulse("laser", 1e-3)]).validate(TimingLimits(max_duration=1e-4))
    with pytest.raises(ValueError, match="unknown channel"):
        Pulse("microwave", 1e-7)
    with pytest.raises(ValueError, match="count"):
        Repeat(Delay(1e-7), -1)
    with pytest.raises(ValueError, match="JSON-safe"):
        PulseProgram([], {"x": object()})


def test_too_short_t_names_minimum():
    with pytest.raises(ValueError, match=r"minimum t = 2.4e-06 s"):
        cpmg(1e-6, 40)  # 40 * (40 ns + 20 ns)
    with pytest.raises(ValueError, match=r"minimum t = 4.8e-07 s"):
        xy8(1e-7, 1)
    with pytest.raises(ValueError, match=r"minimum t = 2e-08 s"):
        fid(5e-9)
    with pytest.raises(ValueError, match=r"minimum t"):
        hahn_echo(-1e-6)
    with pytest.raises(ValueError, match=r"shorter than min_delay.*t >= 1.024e-06 s"):
        xy8(1e-6, 2)  # 1.25 ns delays; 16 * (40 + 20 + 2 * 2) ns needed
    mw = cpmg(2.4e-6, 40).pulses_on("mw")  # the minimum fits: pi/2 and pi back to back
    assert mw[1].start - mw[0].end == 0.0 and abs(mw[-1].start - mw[-2].end) < 1e-15
    assert mw[2].start - mw[1].end == pytest.approx(20e-9, abs=1e-15)
    xy8(1.024e-6, 2)


@pytest.mark.parametrize("prog,n_pi", [(hahn_echo(2e-6), 1), (cpmg(7e-6, 5), 5),
                                       (xy8(9e-6, 3), 24)])
def test_evolution_timing_generators(prog, n_pi):
    t, centres = evolution_timing(prog)
    assert abs(t - prog.metadata["t"]) < 1e-15
    expected = (np.arange(1, n_pi + 1) - 0.5) * prog.metadata["t"] / n_pi
    np.testing.assert_allclose(centres, expected, rtol=0, atol=1e-15)


def test_evolution_timing_udd_and_fid():
    prog, centres = udd_program(4e-6, 3)
    t, got = evolution_timing(prog)
    assert abs(t - 4e-6) < 1e-15
    np.testing.assert_allclose(got, centres, rtol=0, atol=1e-15)
    t, got = evolution_timing(fid(1.5e-6))
    assert abs(t - 1.5e-6) < 1e-15 and got.shape == (0,)
    with pytest.raises(ValueError, match="pi/2 ... pi/2"):
        evolution_timing(rabi(50e-9))


def test_coherence_programs():
    times = [2e-6, 4e-6, 8e-6]
    se = coherence_programs("se", times)
    assert [p.metadata["sequence"] for p in se] == ["hahn"] * 3
    assert [p.metadata["t"] for p in se] == times
    assert coherence_programs("ramsey", times)[0] == fid(2e-6)
    progs = coherence_programs("cpmg", times, n=8, pi_duration=30e-9)
    assert progs[2] == cpmg(8e-6, 8, pi_duration=30e-9)
    assert len(coherence_programs("XY8", times, n=2)[0].pulses_on("mw")) == 18
    with pytest.raises(ValueError, match="needs n"):
        coherence_programs("cpmg", times)
    with pytest.raises(ValueError, match="unknown sequence family"):
        coherence_programs("udd", times)


def test_rabi():
    prog = rabi(77e-9, phase=0.5, frequency=2.87e9)
    (mw,) = prog.pulses_on("mw")
    assert (mw.duration, mw.phase, mw.frequency, mw.rotation) == (77e-9, 0.5, 2.87e9, None)
    assert prog.metadata["sequence"] == "rabi" and prog.metadata["t"] == 77e-9
    assert rabi(0.0).pulses_on("mw") == ()


def test_plot_timing_agg():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = plot_timing(xy8(2e-6, 1))
    assert [t.get_text() for t in ax.get_yticklabels()] == ["gate", "mw", "laser"]
    assert len(ax.collections) == 3
    assert any(t.get_text() == "π/2x" for t in ax.texts)
    assert any(t.get_text() == "πy" for t in ax.texts)
    plt.close(ax.figure)
    fig, ax2 = plt.subplots()
    prog = PulseProgram([Pulse("rf", 1e-6, rotation=PI, frequency=1e6), Pulse("laser", 1e-6)])
    assert plot_timing(prog, ax=ax2) is ax2
    assert len(ax2.get_yticks()) == 2
    plt.close(fig)
