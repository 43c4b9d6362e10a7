"""Helpers for tests that start servers in their own process group, on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_group(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM a process group started with ``start_new_session=True``; SIGKILL it late."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)


def serve_tiled(args: list, port: int, log: Path, *, wait: float, env=None):
    """Run ``tiled serve ...`` (``args`` after ``-m tiled``) until it answers; yield its URL.

    A generator for a pytest fixture: the server is stopped when the fixture is torn
    down; a server that exits or does not answer in ``wait`` seconds fails the test with
    the end of its log.
    """
    import sys

    import httpx

    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tiled", *args, "--host", "127.0.0.1",
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + wait
        while True:
            if proc.poll() is not None:
                pytest.fail(f"tiled serve exited ({proc.returncode}): {log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/api/v1/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"tiled serve did not answer in {wait:g} s: "
                            f"{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        stop_group(proc)
