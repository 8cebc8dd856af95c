"""cimphony/compat.py: the pinned toolchain versions, and every private hook still there.

A version bump of amaranth or cocotb fails here first, naming the hook to re-check.
"""
from __future__ import annotations

import gc
import inspect
import os
import warnings
from importlib import metadata
from pathlib import Path

import pytest
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from cimphony import compat


@pytest.mark.parametrize("dist", sorted(compat.PINNED))
def test_installed_versions_are_the_pinned_ones(dist):
    assert metadata.version(dist) == compat.PINNED[dist], (
        f"{dist} {metadata.version(dist)} installed, compat.py written against "
        f"{compat.PINNED[dist]}: re-check every hook in cimphony/compat.py, then update PINNED")


def test_pins_match_the_lock_file():
    lock = (Path(compat.__file__).resolve().parent.parent / "requirements.lock").read_text()
    for dist, version in compat.PINNED.items():
        assert f"{dist}=={version}" in lock.lower(), f"{dist}=={version} not in requirements.lock"


def test_must_use_hook_exists():
    from amaranth import _unused
    from amaranth.hdl._ir import Elaboratable
    assert getattr(_unused.MustUse, compat.MUST_USE_ATTR) is False
    assert issubclass(Elaboratable, _unused.MustUse)


class _Dummy(wiring.Component):
    def __init__(self):
        super().__init__({"a": In(1), "y": Out(1)})

    def elaborate(self, platform):      # pragma: no cover - never elaborated
        raise AssertionError


def _unused_warnings(silence: bool | None) -> list:
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        d = _Dummy()
        if silence is not None:
            assert compat.silence_unused(d, silence) is d
        del d
        gc.collect()
    return [x for x in w if "never used" in str(x.message)]


def test_silence_unused_suppresses_the_warning(monkeypatch):
    from amaranth.hdl._ir import UnusedElaboratable
    # amaranth keeps the warning off until the first elaboration of the process
    monkeypatch.setattr(UnusedElaboratable, compat.MUST_USE_ATTR, False)
    assert _unused_warnings(None), "amaranth no longer warns about an unused Elaboratable"
    assert not _unused_warnings(True)
    assert _unused_warnings(False)        # re-armed


def test_silence_unused_rejects_a_non_bool():
    d = _Dummy()
    with pytest.raises(ValueError, match="flag must be a bool, not 1"):
        compat.silence_unused(d, 1)
    compat.silence_unused(d)


def test_runner_build_command_hook_exists():
    from cocotb_tools import runner
    hook = getattr(runner.Verilator, compat.RUNNER_BUILD_HOOK)
    assert callable(hook) and list(inspect.signature(hook).parameters) == ["self"]
    assert compat.Verilator._build_command is not hook     # compat overrides it


def test_runner_edit_build_args_sees_the_real_command(tmp_path, monkeypatch):
    """The Verilator command line reaches edit_build_args, and its result is what runs."""
    from tb import vlenv
    monkeypatch.setenv("PATH", f"{vlenv.BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    seen = []

    class R(compat.Verilator):
        def edit_build_args(self, argv):
            seen.append(list(argv))
            return [a for a in argv if a != "--public-flat-rw"] + ["--marker"]

        def _execute(self, cmds, cwd):          # record instead of running Verilator
            self.ran = cmds

    (tmp_path / "top.v").write_text("module top; endmodule\n")
    r = R()
    r.build(sources=[tmp_path / "top.v"], hdl_toplevel="top", build_dir=tmp_path, always=True)
    assert len(seen) == 1 and "--public-flat-rw" in seen[0], seen
    assert seen[0][0].endswith("verilator") and str(tmp_path / "top.v") in seen[0]
    assert "--public-flat-rw" not in r.ran[0] and r.ran[0][-1] == "--marker"


def test_gpi_handle_hook_exists():
    from cocotb import simulator
    from cocotb.handle import SimHandleBase
    assert f"self.{compat.HANDLE_ATTR} = " in inspect.getsource(SimHandleBase.__init__)
    for method in ("get_signal_val_long", "get_signal_val_binstr", "set_signal_val_int",
                   "set_signal_val_binstr"):
        assert hasattr(simulator.sim_obj, method), method


def test_deposit_is_cocotbs_deposit_action():
    from cocotb.handle import _GPISetAction
    assert _GPISetAction.DEPOSIT.value == compat.DEPOSIT
