"""Tiled on PostgreSQL for real: a private PostgreSQL cluster in a temporary folder (free
port, loopback, stopped and removed afterwards), a ``tiled serve catalog`` on it, runs
written by a session with ``url``/``api_key``, read back equal from another process."""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from _procs import free_port, serve_tiled

API_KEY = secrets.token_hex(16)  # tiled wants alphanumeric keys
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


def _as_postgres(cmd):
    """PostgreSQL refuses to run as root: run its tools as the `postgres` user then."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


@pytest.fixture(scope="module")
def postgres():
    """A private cluster (initdb) on a free loopback port; yields (host, port, user)."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no pg_ctl/initdb): apt-get install "
                    "postgresql")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL")
    root = Path(tempfile.mkdtemp(prefix="mracq-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, port, user = root / "data", free_port(), "mracq"
    run = lambda cmd: subprocess.run(_as_postgres(cmd), check=True, capture_output=True,  # noqa: E731
                                     text=True, timeout=120)
    started = False
    try:
        run([str(bindir / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8",
             "--no-sync"])
        run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w",
             "-t", "60", "-o",
             f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off", "start"])
        started = True
        for db in ("catalog", "storage"):
            run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", user, db])
        yield "127.0.0.1", port, user
    finally:
        if started:
            subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast",
                                         "-w", "stop"]), capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def tiled_on_postgres(postgres, tmp_path_factory):
    host, port, user = postgres
    files = tmp_path_factory.mktemp("tiled-pg")
    yield from serve_tiled(
        ["serve", "catalog", f"postgresql+asyncpg://{user}@{host}:{port}/catalog", "--init",
         "-w", f"postgresql://{user}@{host}:{port}/storage", "-w", str(files / "data"),
         "--api-key", API_KEY], free_port(), files / "tiled.log", wait=120)


READER = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {src!r})
    from mracq.storage import get_run, open_catalog, run_table
    client = open_catalog(url={url!r}, api_key={key!r})
    out = {{}}
    for uid, stream in {wanted!r}:
        run = get_run(client, uid)
        table = run_table(run, stream)
        out[uid + "/" + stream] = {{
            "start": run.metadata["start"], "stop": run.metadata["stop"],
            "data": {{k: v.tolist() for k, v in table.items()}},
            "dtypes": {{k: str(v.dtype) for k, v in table.items()}}}}
    print(json.dumps(out))
""")


@pytest.mark.slow
def test_runs_written_to_tiled_on_postgres_read_back_equal(tiled_on_postgres, tmp_path):
    from mracq.config import validate_config
    from mracq.plans.coherence import coherence_scan, prepare_nv
    from mracq.plans.cosy import cosy_random_mask
    from mracq.session import make_session
    from mracq.sim.cosy.model import T_GRID
    from mracq.storage import get_run, list_runs, run_table

    cfg = validate_config({"sim": {"seed": 4}})
    with make_session(cfg, data_dir=tmp_path, url=tiled_on_postgres, api_key=API_KEY) as s:
        d = s.devices
        s.RE(prepare_nv(d["mw"], d["laser"], frequency=d["nv"].transport.nv.transition_frequency,
                        power_dbm=0.0))
        coh = s.RE(coherence_scan(d["nv"], "cpmg", np.geomspace(2e-6, 1e-4, 15), n=4,
                                  shots=200_000)).plan_result
        grid = T_GRID[:8]
        cosy = s.RE(cosy_random_mask(d["nv"], 0.4, t1=grid, t2=grid,
                                     rng=np.random.default_rng(0))).plan_result
        assert [r["uid"] for r in list_runs(s.catalog, 2)] == [cosy["uid"], coh["uid"]]
        local = {}
        for uid, stream in ((coh["uid"], "primary"), (cosy["uid"], "primary"),
                            (cosy["uid"], "reconstruction")):
            local[f"{uid}/{stream}"] = run_table(get_run(s.catalog, uid), stream)
    assert not (tmp_path / "catalog.db").exists()  # the runs went to the server

    wanted = [k.split("/") for k in local]
    code = READER.format(src=SRC, url=tiled_on_postgres, key=API_KEY, wanted=wanted)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    remote = json.loads(proc.stdout.strip().splitlines()[-1])
    for key, table in local.items():
        got = remote[key]
        assert set(got["data"]) == set(table), key
        for col, arr in table.items():
            np.testing.assert_array_equal(np.asarray(got["data"][col]), arr, err_msg=col)
            assert got["dtypes"][col] == str(arr.dtype), col
    # the numbers are the plans' own, not only self-consistent
    c = remote[f"{coh['uid']}/primary"]
    np.testing.assert_array_equal(c["data"]["coherence"], coh["coherence"])
    assert c["start"]["plan_name"] == "coherence_scan" and c["stop"]["exit_status"] == "success"
    r = remote[f"{cosy['uid']}/reconstruction"]["data"]
    np.testing.assert_array_equal(np.asarray(r["reconstruction"])[0], cosy["reconstruction"])
    np.testing.assert_array_equal(np.asarray(r["mask"])[0].astype(bool), cosy["mask"])
