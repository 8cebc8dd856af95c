"""Fixtures of the perf tests: a free local port, and a ``dask scheduler`` + ``dask worker``
started as separate processes on 127.0.0.1 (tests/perf/test_report.py, test_sweep.py)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

DASK = Path(sys.executable).with_name("dask")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on."""
    return _port()


def _stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@dataclass
class DaskCluster:
    """``addr`` of the scheduler; ``env`` of its processes (the repository on PYTHONPATH);
    ``t0`` the monotonic time just before the fixture waited for the worker."""
    addr: str
    env: dict
    t0: float


@pytest.fixture
def dask_cluster(tmp_path):
    """A ``dask scheduler`` and one single-threaded ``dask worker`` (separate processes, logs in
    ``tmp_path/dask.log``), connected within 30 s; both stopped (terminate, then kill) after
    the test."""
    port = _port()
    addr = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    log = open(tmp_path / "dask.log", "w")
    procs = []
    try:
        procs.append(subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1",
                                       "--port", str(port), "--no-dashboard",
                                       "--dashboard-address", ":0"],
                                      stdout=log, stderr=subprocess.STDOUT, env=env))
        procs.append(subprocess.Popen([str(DASK), "worker", addr, "--nthreads", "1",
                                       "--nworkers", "1", "--no-dashboard", "--host",
                                       "127.0.0.1", "--death-timeout", "60"],
                                      stdout=log, stderr=subprocess.STDOUT, env=env))
        from dask.distributed import Client
        t0 = time.monotonic()
        with Client(addr, timeout="30s") as c:
            c.wait_for_workers(1, timeout=30)
        yield DaskCluster(addr, env, t0)
    finally:
        for p in reversed(procs):
            _stop(p)
        log.close()
