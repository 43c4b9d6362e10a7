"""Start and stop ``mracq emulate nv`` as a subprocess for the wire tests."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import tomllib

SRC = Path(__file__).resolve().parents[1] / "src"


def free_loopback_host() -> str:
    """A 127.x.y.z address where the Pulse Streamer's fixed ports are free."""
    for _ in range(50):
        host = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
        try:
            for port in (8050, 21328):
                with socket.socket() as s:
                    s.bind((host, port))
            return host
        except OSError:
            continue
    raise RuntimeError("no free loopback address for the Pulse Streamer emulator")


class Rig:
    """One ``mracq emulate nv`` process; ``restart()`` brings it back on the same ports."""

    def __init__(self, tmp: Path, seed: int, extra=()):
        self.tmp, self.seed, self.extra = Path(tmp), seed, list(extra)
        self.config_path = self.tmp / "lab.toml"
        self.pulser_host = free_loopback_host()
        self.ports: list[str] = []
        self.proc = None
        self.start()

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        cmd = [sys.executable, "-m", "mracq", "emulate", "nv", "--seed", str(self.seed),
               "--pulser-host", self.pulser_host, "--config-out", str(self.config_path),
               *self.extra, *self.ports]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=env, text=True)
        lines = []
        deadline = time.monotonic() + 60
        for line in self.proc.stdout:
            lines.append(line)
            if line.startswith("# Ctrl-C"):
                break
            if time.monotonic() > deadline:
                break
        if self.proc.poll() is not None or not lines or not lines[-1].startswith("# Ctrl-C"):
            raise RuntimeError("mracq emulate nv did not start:\n" + "".join(lines))
        self.text = "".join(lines)
        cfg = tomllib.loads(self.config_path.read_text())
        self.raw = cfg
        mw_port = cfg["instruments"]["mw"]["address"].split("::")[2]
        counter_port = cfg["instruments"]["nv"]["counter"]["address"].rsplit(":", 1)[1]
        self.control_port = int(self.text.split("control port ")[1].split(")")[0])
        self.ports = ["--mw-port", mw_port, "--counter-port", counter_port,
                      "--control-port", str(self.control_port)]

    def control(self, **msg) -> dict:
        from mracq.emulators.control import control

        return control(self.control_port, msg)

    def kill(self) -> None:
        """SIGKILL: the instrument vanishes without closing anything."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def restart(self) -> None:
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()
