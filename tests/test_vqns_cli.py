"""`mracq analyze vqns FILE`: CSV in, spectrum CSV + PNG out, clear errors naming the line."""

import csv

import numpy as np
import pytest

from mracq.cli import CLIError, main
from mracq.cli.analyze_vqns import read_csv
from mracq.recon.vqns.data import simulate_measurements
from mracq.sim.spectra import Lorentzians

TP = 2 * np.pi
SPEC = Lorentzians([(TP * 50e3) ** 2, (TP * 30e3) ** 2], [TP * 60e3, TP * 100e3],
                   [0.0, TP * 1e6])

GOOD = "sequence,t,coherence,sigma\nfid,1e-6,0.9,0.01\nfid,2e-6,0.7,0.01\nse,1e-6,0.95,0.01\n"


def _write(tmp_path, text, name="data.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_read_csv_groups_sequences(tmp_path):
    ms = read_csv(_write(tmp_path, GOOD))
    assert [m.sequence for m in ms] == ["fid", "se"]
    assert np.allclose(ms[0].t, [1e-6, 2e-6]) and np.allclose(ms[0].sigma, 0.01)


@pytest.mark.parametrize("text, match", [
    ("sequence,time,coherence\nfid,1e-6,0.9\n", r"data.csv:1: header lacks column\(s\) t"),
    ("sequence,t\nfid,1e-6\n", r":1: header lacks column\(s\) coherence"),
    ("sequence,t,coherence\nfid,1e-6,0.9\nfid,2e-6,nan\n", r"data.csv:3: coherence is nan"),
    ("sequence,t,coherence\nfid,1e-6,0.9\nfid,2e-6,1.2\n", r":3: coherence = 1.2 is outside"),
    ("sequence,t,coherence\nfid,2e-6,0.9\nse,1e-6,0.9\nfid,1e-6,0.5\n",
     r":4: t = 1e-06 s does not increase \(previous fid row at line 2"),
    ("sequence,t,coherence\nfid,1e-6,abc\n", r":2: coherence = 'abc' is not a number"),
    ("sequence,t,coherence\nfoo-3,1e-6,0.5\n", r":2: unknown sequence 'foo-3'"),
    ("sequence,t,coherence\nfid,1e-6\n", r":2: 2 fields, header has 3"),
    ("sequence,t,coherence,sigma\nfid,1e-6,0.9,0\n", r":2: sigma = 0.0 must be > 0"),
    ("", r"empty file"),
    ("sequence,t,coherence\n", r"no data rows"),
])
def test_malformed_files_name_the_line(tmp_path, text, match):
    with pytest.raises(CLIError, match=match):
        read_csv(_write(tmp_path, text))


def test_cli_error_exit_code(tmp_path, capsys):
    p = _write(tmp_path, "sequence,t,coherence\nfid,1e-6,0.9\nfid,2e-6,-0.3\n")
    assert main(["analyze", "vqns", str(p)]) == 2
    assert ":3: coherence = -0.3" in capsys.readouterr().err


def test_cli_end_to_end(tmp_path):
    ms = simulate_measurements(SPEC, ["fid", "se", "cpmg-4"], n_points=20, noise=0.01,
                               rng=np.random.default_rng(0))
    p = tmp_path / "decays.csv"
    with p.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["sequence", "t", "coherence", "sigma"])
        for m in ms:
            for row in zip(m.t, m.coherence, m.sigma, strict=True):
                w.writerow([m.sequence, *row])
    assert main(["analyze", "vqns", str(p), "-r", "8", "-k", "3", "--seed", "1"]) == 0
    out = tmp_path / "decays_vqns.csv"
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 400 and set(rows[0]) == {"omega_rad_s", "freq_hz", "mean", "std",
                                                  "lower", "upper"}
    w = np.array([float(r["omega_rad_s"]) for r in rows])
    mean = np.array([float(r["mean"]) for r in rows])
    assert np.allclose(w / TP, [float(r["freq_hz"]) for r in rows])
    sel = (w > 3e5) & (w < 3e6)
    assert np.median(np.abs(mean[sel] / SPEC(w[sel]) - 1)) < 0.3
    png = tmp_path / "decays_vqns.png"
    assert png.stat().st_size > 10_000
