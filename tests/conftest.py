"""Shared pytest setup: seeds, reproduce commands, waveforms, the ``verilator`` marker.

Seeds
    The ``seed`` fixture is ``SEED`` from the environment, else a stable per-test value.  A
    failing test's report ends with a ``cimphony`` section::

        reproduce: SEED=1234 .venv/bin/python -m pytest 'tests/rtl/test_rtl.py::test_x[cfg]'

    which re-runs it with the same seed (derive every other seed of the test from it); with
    ``WAVES=1`` the section also lists the waveforms the test wrote.
Markers
    Every test that builds or runs Verilator is marked ``verilator``: every test under
    ``tests/rtl``, every test whose body names one of :data:`VERILATOR_CALLS` (``lint``,
    ``run_lockstep``, ...) and the tests listed in :data:`VERILATOR_TESTS`.  An unmarked test
    that reaches Verilator anyway fails, naming itself (``tb/vlenv.py`` refuses), so ``make
    test-fast`` (``-m "not verilator and not slow"``) provably builds nothing.  Under ``--dist loadgroup`` each ``tests/rtl`` file is one
    ``xdist_group`` (its tests share builds) unless a test names its own group.
Dask
    ``free_port`` (a TCP port on 127.0.0.1 nothing listens on) and ``dask_cluster`` (a ``dask
    scheduler`` + ``dask worker`` started as separate processes on 127.0.0.1), used by
    tests/perf/test_report.py, test_sweep.py and tests/verif/test_regress.py.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tb.mismatch import REPRODUCE_ENV, env_seed, reproduce_command, waves_requested

RTL_DIR = Path(__file__).resolve().parent / "rtl"
VERILATOR_CALLS = frozenset({"lint", "run_lockstep", "run_channel_lockstep",
                             "run_module_lockstep", "run_job", "trace_check", "run_trace",
                             "dump_ready"})
"""Names (functions, methods, imports) whose use in a test's body marks it ``verilator``."""
VERILATOR_TESTS: set[tuple[str, str]] = set()
"""(file, function) of tests that reach Verilator through a helper (not by those names)."""
NO_VERILATOR = "CIMPHONY_NO_VERILATOR"   # = tb.vlenv.NO_VERILATOR (not imported: no Verilator)


def _seed_of(request) -> int:
    try:
        s = env_seed()
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None
    return sum(map(ord, request.node.name)) * 7919 % 100_000 if s is None else s


def _nodeid(item) -> str:
    """``item``'s node id without the ``@group`` suffix xdist's loadgroup appends."""
    groups = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                     for m in item.iter_markers("xdist_group")})
    suffix = "@" + "_".join(groups)
    nid = item.nodeid
    return nid[:-len(suffix)] if groups and nid.endswith(suffix) else nid


@pytest.fixture
def seed(request, monkeypatch) -> int:
    """SEED from the environment, else a stable per-test seed; printed on failure with the
    command that reproduces the test."""
    s = _seed_of(request)
    request.node.user_properties.append(("seed", s))
    monkeypatch.setenv(REPRODUCE_ENV, reproduce_command(_nodeid(request.node), s))
    return s


@pytest.fixture(autouse=True)
def _cimphony_test_env(request, monkeypatch):
    """Reproduce command of this test for reports written below it (``tb.mismatch``); refuse
    Verilator in tests not marked ``verilator``; forget earlier waveforms."""
    monkeypatch.setenv(REPRODUCE_ENV, reproduce_command(_nodeid(request.node)))
    if request.node.get_closest_marker("verilator") is None:
        monkeypatch.setenv(NO_VERILATOR, request.node.nodeid)
    else:
        monkeypatch.delenv(NO_VERILATOR, raising=False)
    mm = sys.modules.get("tb.mismatch")
    if mm is not None:
        mm.WAVEFORMS.clear()


def pytest_configure(config):
    # registered by pytest-xdist too; here for runs with -p no:xdist
    config.addinivalue_line("markers", "xdist_group(name): run on one xdist worker")


def _runs_verilator(item, path: Path) -> bool:
    func = getattr(item, "function", None)
    if (path.name, getattr(item, "originalname", item.name)) in VERILATOR_TESTS:
        return True
    return func is not None and not VERILATOR_CALLS.isdisjoint(func.__code__.co_names)


@pytest.hookimpl(tryfirst=True)   # before xdist's loadgroup reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(item.path))
        in_rtl = path.parent == RTL_DIR
        if in_rtl or _runs_verilator(item, path):
            item.add_marker(pytest.mark.verilator)
        if in_rtl and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(path.stem))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed or rep.when == "teardown":
        return
    seed = dict(item.user_properties).get("seed")
    lines = [f"reproduce: {reproduce_command(_nodeid(item), seed)}"]
    mm = sys.modules.get("tb.mismatch")
    waves = list(mm.WAVEFORMS) if mm is not None else []
    lines += [f"waveform: {w}" for w in waves]
    if not waves and item.get_closest_marker("verilator") and not waves_requested():
        lines.append(f"waveform: re-run with {reproduce_command(_nodeid(item), seed, waves=True)}")
    rep.sections.append(("cimphony", "\n".join(lines)))


# --- Dask: a free port, a separate scheduler + worker (moved from tests/perf/conftest.py) ---
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
    """``addr`` of the scheduler; ``env`` of its processes (the installed package imports from any folder, no PYTHONPATH);
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
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
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
