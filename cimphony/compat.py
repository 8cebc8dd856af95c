"""Private-API hooks into the pinned toolchain, gathered in one place.

Each hook below relies on a private name of amaranth 0.5.10 or cocotb 2.1.0 (the versions in
``requirements.lock``); ``tests/cli/test_compat.py`` checks the installed versions and that
every hook still exists, so a version bump fails there first, loudly.

Hooks
-----
silence_unused
    amaranth's ``MustUse._MustUse__silence``: suppress the "created but never used" warning
    of an Elaboratable that is inspected (signature, ports) but never elaborated.
Verilator
    cocotb's runner ``Verilator._build_command``: a subclass whose build command line can be
    edited by overriding the public :meth:`Verilator.edit_build_args`.  Built on first use
    (``compat.Verilator``), so importing this module (as ``hdl`` does, for
    :func:`silence_unused`) does not import cocotb.
raw_handle
    cocotb's ``SimHandleBase._handle``: the GPI handle under a cocotb handle, whose
    ``get_signal_val_*`` / ``set_signal_val_*`` calls skip cocotb's value queue (the
    lockstep loop's one-wake-per-cycle speed depends on them).
"""
from __future__ import annotations

PINNED = {"amaranth": "0.5.10", "cocotb": "2.1.0"}
"""Versions the hooks were written against (also pinned in ``requirements.lock``)."""

MUST_USE_ATTR = "_MustUse__silence"
RUNNER_BUILD_HOOK = "_build_command"
HANDLE_ATTR = "_handle"

DEPOSIT = 0
"""cocotb's ``_GPISetAction.DEPOSIT``: the action argument of the raw ``set_signal_val_*``."""


def silence_unused(obj, flag: bool = True):
    """Silence (``flag=True``) or re-arm amaranth's unused-Elaboratable warning on ``obj``.

    Parameters
    ----------
    obj : amaranth.hdl.Elaboratable
        A design object (e.g. a ``wiring.Component``).
    flag : bool
        True: no warning if ``obj`` is never elaborated; False: the default behaviour.

    Returns
    -------
    obj, for chaining.
    """
    if not isinstance(flag, bool):
        raise ValueError(f"silence_unused: flag must be a bool, not {flag!r}")
    setattr(obj, MUST_USE_ATTR, flag)
    return obj


def raw_handle(handle):
    """The GPI handle under the cocotb handle ``handle`` (``dut.sig`` -> its ``_handle``).

    Its ``get_signal_val_long()``, ``get_signal_val_binstr()``, ``set_signal_val_int(DEPOSIT,
    v)`` and ``set_signal_val_binstr(DEPOSIT, s)`` read and write the simulator directly.
    """
    return getattr(handle, HANDLE_ATTR)


def _make_verilator() -> type:
    from cocotb_tools import runner

    class Verilator(runner.Verilator):
        """cocotb's Verilator runner with an editable build command line.

        Override :meth:`edit_build_args` (public) instead of the runner's private
        ``_build_command``.
        """

        def edit_build_args(self, argv: list[str]) -> list[str]:
            """Return the Verilator command line ``argv`` (program first) to run; default as
            is."""
            return argv

        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = list(self.edit_build_args(list(cmds[0])))
            return cmds

    Verilator.__module__, Verilator.__qualname__ = __name__, "Verilator"
    return Verilator


def __getattr__(name: str):
    """``Verilator``: built (importing cocotb) on first access, then a module attribute."""
    if name == "Verilator":
        cls = globals()["Verilator"] = _make_verilator()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
