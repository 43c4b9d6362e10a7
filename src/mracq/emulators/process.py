"""``mracq emulate nv`` in a subprocess: start, wait until it serves, kill, restart, stop.

For tests, benchmarks and rehearsals::

    rig = EmulatorProcess(tmp_dir, seed=1)      # free ports; a free 127.x.y.z for the
    config = validate_config(rig.raw)           # Pulse Streamer's fixed ports
    ...
    rig.kill(); rig.restart()                   # same ports, power-on state
    rig.stop()
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

try:  # Python >= 3.11
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as _toml  # type: ignore[no-redef]


def free_loopback_host() -> str:
    """A 127.x.y.z address where the Pulse Streamer's fixed ports 8050 and 21328 are free."""
    rnd = random.Random()
    for _ in range(50):
        host = f"127.{rnd.randint(1, 254)}.{rnd.randint(1, 254)}.{rnd.randint(2, 254)}"
        try:
            for port in (8050, 21328):
                with socket.socket() as s:
                    s.bind((host, port))
            return host
        except OSError:
            continue
    raise RuntimeError("no free loopback address for the Pulse Streamer emulator")


class EmulatorProcess:
    """One ``mracq emulate nv`` process.

    Parameters
    ----------
    folder : path
        Where the lab config is written (``lab.toml``).
    seed : int
        Seed of the emulated NV.
    extra : sequence of str
        More command-line options (``["--model", "keysight_n5183b"]``).
    """

    def __init__(self, folder, seed: int, extra=(), timeout: float = 60.0):
        self.folder, self.seed, self.extra = Path(folder), int(seed), list(extra)
        self.config_path = self.folder / "lab.toml"
        self.pulser_host = free_loopback_host()
        self.timeout = float(timeout)
        self.ports: list[str] = []
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        src = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (src, os.environ.get("PYTHONPATH", "")) if p)}
        cmd = [sys.executable, "-m", "mracq", "emulate", *self._args(),
               "--config-out", str(self.config_path), *self.extra, *self.ports]
        self.log_path = self.folder / "emulator.log"
        start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "a") as log:  # a file, not a pipe: a full pipe would block
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         text=True)
        deadline = time.monotonic() + self.timeout
        lines: list[str] = []
        while time.monotonic() < deadline and self.proc.poll() is None:
            text = self.log_path.read_text()[start:] if self.log_path.exists() else ""
            lines = text.splitlines(keepends=True)
            if any(x.startswith("# Ctrl-C") for x in lines):
                break
            time.sleep(0.05)
        if self.proc.poll() is not None or not any(x.startswith("# Ctrl-C") for x in lines):
            self.stop()
            raise RuntimeError(f"mracq emulate {self._args()[0]} did not start:\n"
                               + "".join(lines))
        self.text = "".join(lines)
        self.raw = _toml.loads(self.config_path.read_text())
        self.control_port = int(self.text.split("control port ")[1].split(")")[0])
        self.ports = self._ports()

    def _args(self) -> list[str]:
        return ["nv", "--seed", str(self.seed), "--pulser-host", self.pulser_host]

    def _ports(self) -> list[str]:
        """Options that restart the emulator on the ports it has now."""
        mw_port = self.raw["instruments"]["mw"]["address"].split("::")[2]
        counter_port = self.raw["instruments"]["nv"]["counter"]["address"].rsplit(":", 1)[1]
        return ["--mw-port", mw_port, "--counter-port", counter_port,
                "--control-port", str(self.control_port)]

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def control(self, **msg) -> dict:
        """Send a control message (``cmd="fault"``, ``"state"``, ``"ping"``)."""
        from mracq.emulators.control import control

        return control(self.control_port, msg)

    def kill(self) -> None:
        """SIGKILL: the instruments vanish without closing anything."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def restart(self) -> None:
        """Start again on the same ports (after :meth:`kill` or :meth:`stop`)."""
        self.start()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class MRFMEmulatorProcess(EmulatorProcess):
    """One ``mracq emulate mrfm`` process (``extra``: its options, e.g. ``["--n-xy", "16"]``);
    the positioner keeps its place across :meth:`kill` / :meth:`restart` (``--state``)."""

    def __init__(self, folder, seed: int, extra=(), timeout: float = 60.0):
        self.state_path = Path(folder) / "positioner.json"
        super().__init__(folder, seed, extra, timeout)

    def _args(self) -> list[str]:
        return ["mrfm", "--seed", str(self.seed), "--state", str(self.state_path)]

    def _ports(self) -> list[str]:
        ins = self.raw["instruments"]
        return ["--scanner-port", ins["scanner"]["address"].rsplit(":", 1)[1],
                "--lockin-port", ins["readout"]["address"].rsplit(":", 1)[1],
                "--rf-port", ins["rf"]["address"].split("::")[2],
                "--control-port", str(self.control_port)]
