"""One owner per data folder, readers beside it, and RunEngine metadata without pickle."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from bluesky.plans import count
from ophyd.sim import det

from mracq.session import make_session
from mracq.storage import StorageBusyError

SRC = str(Path(__file__).resolve().parents[1] / "src")

READER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {src!r})
    from mracq.cli import main
    if {try_session}:
        from mracq.session import make_session
        from mracq.storage import StorageBusyError
        try:
            make_session(data_dir={d!r}, devices={{}})
            print("OPENED")
        except StorageBusyError as exc:
            print("BUSY", exc)
    print("RUNS-RC", main(["runs", "--data-dir", {d!r}]))
    print("SHOW-RC", main(["show", "-1", "--no-plot", "--data-dir", {d!r}]))
""")


@pytest.fixture
def shared_dir():
    """A folder other users can read (the read-only test runs as 'nobody')."""
    d = Path(tempfile.mkdtemp(prefix="mracq-owner-"))
    d.chmod(0o755)
    yield d / "data"
    subprocess.run(["chmod", "-R", "u+w", str(d)], check=False)
    shutil.rmtree(d, ignore_errors=True)


def _reader(d, try_session=False, read_only_mount=False):
    cmd = [sys.executable, "-c", READER.format(src=SRC, d=str(d), try_session=try_session)]
    if read_only_mount:  # the folder on a read-only file system, in a private mount space
        cmd = ["unshare", "-m", "sh", "-c", f'mount --bind -o ro "{d}" "{d}" && exec "$@"',
               "sh", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_second_session_refused_while_readers_work(shared_dir):
    with make_session(data_dir=shared_dir, devices={"det": det}) as s:
        uid = s.RE(count([det], 3)).run_start_uids[0]
        # this process: refused too (one owner, whatever the process)
        with pytest.raises(StorageBusyError, match=f"pid {os.getpid()}"):
            make_session(data_dir=shared_dir, devices={})
        out = _reader(shared_dir, try_session=True)
        assert f"BUSY the data folder {shared_dir} is in use by another process (pid " \
            f"{os.getpid()}" in out
        assert "RUNS-RC 0" in out and uid[:8] in out
        assert "SHOW-RC 0" in out and "events    3" in out
        s.RE(count([det], 2))  # the owner still writes after the readers
    # released at close: a new owner opens the folder and continues the scan ids
    with make_session(data_dir=shared_dir, devices={}) as s:
        assert s.RE.md["scan_id"] == 2


def _can_mount_read_only():
    if shutil.which("unshare") is None:
        return False
    d = tempfile.mkdtemp()
    try:
        return subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind -o ro {d} {d}"],
                              capture_output=True).returncode == 0
    finally:
        os.rmdir(d)


@pytest.mark.skipif(not _can_mount_read_only(), reason="cannot mount a read-only folder here")
def test_runs_and_show_on_a_read_only_folder(shared_dir):
    with make_session(data_dir=shared_dir, devices={"det": det}) as s:
        s.RE(count([det], 4))
    before = sorted(p.name for p in shared_dir.rglob("*"))
    out = _reader(shared_dir, read_only_mount=True)
    assert "RUNS-RC 0" in out and "SHOW-RC 0" in out and "events    4" in out
    assert sorted(p.name for p in shared_dir.rglob("*")) == before  # nothing written


def test_old_runengine_metadata_is_migrated_without_pickle(tmp_path):
    import msgpack
    from bluesky.utils import PersistentDict

    old = PersistentDict(str(tmp_path / "runengine-md"))
    old["scan_id"] = 7
    old["operator"] = "ann"
    old["versions"] = {"bluesky": "1.0"}
    old.flush()
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    import pickle

    payload = msgpack.packb({b"nd": True, b"type": "|O", b"kind": b"O", b"shape": [1],
                             b"data": pickle.dumps(Evil())})
    (tmp_path / "runengine-md" / "evil#99").write_bytes(payload)
    del old

    with make_session(data_dir=tmp_path, devices={"det": det}) as s:
        assert s.RE.md["scan_id"] == 7 and s.RE.md["operator"] == "ann"
        assert "evil" not in s.RE.md
        s.RE(count([det]))
        assert s.RE.md["scan_id"] == 8
    assert not marker.exists()
    assert (tmp_path / "runengine-md.json").exists()
    assert not (tmp_path / "runengine-md").exists()
    with make_session(data_dir=tmp_path, devices={}) as s:
        assert s.RE.md["scan_id"] == 8


def test_cli_resume_goes_on_with_an_aborted_cosy_adaptive_run(tmp_path, capsys):
    """`mracq resume UID` on a cosy_adaptive run stopped after its first batch: the new run
    measures only new points, up to the stored plan's budget."""
    import numpy as np
    from bluesky.utils import RunEngineInterrupted

    from mracq.cli import main
    from mracq.plans.coherence import prepare_nv
    from mracq.plans.cosy import cosy_adaptive
    from mracq.sim.cosy.model import T_GRID
    from mracq.storage import resume_state

    grid = T_GRID[:6]
    with make_session(data_dir=tmp_path) as s:
        d = s.devices
        s.RE(prepare_nv(d["mw"], d["laser"], frequency=d["nv"].transport.nv.transition_frequency,
                        power_dbm=0.0))
        saves = []

        def hook(msg):
            if msg.command == "save":
                saves.append(1)
                if len(saves) == 5:
                    s.RE.loop.call_soon(lambda: s.RE.loop.create_task(
                        s.RE._request_pause_coro(defer=False)))

        s.RE.msg_hook = hook
        with pytest.raises(RunEngineInterrupted):
            s.RE(cosy_adaptive(d["nv"], t1=grid, t2=grid, shots=20_000, initial=0.12, batch=3,
                               max_coverage=0.4, tol=1e-9, members=2, method="svt",
                               rng=np.random.default_rng(3)))
        s.RE.msg_hook = None
        s.RE.abort()
        old = resume_state(s.catalog, -1)
    n_old = len(old["primary"]["i"])
    assert old["stop"]["exit_status"] == "abort" and n_old >= 4
    assert main(["resume", old["uid"][:8], "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"{n_old} points stored" in out
    with make_session(data_dir=tmp_path, devices={}) as s:
        new = resume_state(s.catalog, -1)
    assert new["start"]["resumed_from"] == old["uid"]
    pairs = lambda t: set(zip(t["i"].astype(int), t["j"].astype(int), strict=True))  # noqa: E731
    assert not pairs(old["primary"]) & pairs(new["primary"])
    assert n_old + len(new["primary"]["i"]) == round(0.4 * 36)
