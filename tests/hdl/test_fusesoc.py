"""``cimphony.core`` (FuseSoC CAPI2): its lint target passes on the generated macro Verilog.

The core is parsed as YAML; the macro's Verilog (a small configuration) is exported into a
temporary copy of the layout the core expects (``build/verilog/dimc_macro.v``,
``hdl/waivers.vlt`` beside ``cimphony.core``), and the lint target is run: with ``fusesoc``
itself when it is installed (required once ``requirements.lock`` pins it), else as the
Verilator command the target describes.  Without the waivers the same lint must fail.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hdl import export as hexport
from spec.isa import ChannelParams, ModuleParams
from spec.params import MacroParams

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "cimphony.core"
SMALL = MacroParams(n_in=8, n_out=4, w_bits=4, x_bits=4, n_acc=2)


def _core() -> dict:
    text = CORE.read_text()
    assert text.startswith("CAPI=2:"), "a CAPI2 core starts with 'CAPI=2:'"
    return yaml.safe_load(text)


def _files(core: dict, target: str) -> list[tuple[str, str]]:
    """(path, file_type) of the target's filesets, in order."""
    out = []
    for fs in core["targets"][target]["filesets"]:
        s = core["filesets"][fs]
        out += [(f, s["file_type"]) for f in s["files"]]
    return out


def _pinned(package: str) -> bool:
    lock = (REPO / "requirements.lock").read_text().lower()
    return re.search(rf"^{re.escape(package)}==", lock, re.M) is not None


def test_core_describes_the_macro_and_its_lint():
    core = _core()
    vlnv = core["name"].split(":")
    assert len(vlnv) == 4 and vlnv[2] == "dimc_macro"
    lint = core["targets"]["lint"]
    assert lint["toplevel"] == "dimc_macro" == core["targets"]["default"]["toplevel"]
    assert lint["flow"] == "lint" and lint["flow_options"]["tool"] == "verilator"
    assert "-Wall" in lint["flow_options"]["verilator_options"]
    files = dict(_files(core, "lint"))
    assert files == {"build/verilog/dimc_macro.v": "verilogSource", "hdl/waivers.vlt": "vlt"}
    assert REPO / "hdl/waivers.vlt" == hexport.WAIVERS


def _layout(root: Path) -> None:
    """``root``: cimphony.core, hdl/waivers.vlt and the exported build/verilog/dimc_macro.v."""
    shutil.copy(CORE, root / "cimphony.core")
    (root / "hdl").mkdir()
    shutil.copy(hexport.WAIVERS, root / "hdl" / "waivers.vlt")
    out = root / "build" / "verilog"
    if hasattr(hexport, "export"):
        ch = ChannelParams(macro=SMALL, n_banks=1)
        assert hexport.export(out, tops=["dimc_macro"], macro=SMALL, channel=ch,
                              module=ModuleParams(channel=ch, n_ch=1))
    else:                                                     # older hdl.export
        out.mkdir(parents=True)
        (out / "dimc_macro.v").write_text(hexport.generate(SMALL))
    assert (out / "dimc_macro.v").is_file()


def _fusesoc() -> str | None:
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return shutil.which("fusesoc", path=path)


def _run_lint(root: Path, env: dict) -> subprocess.CompletedProcess:
    """The core's lint target on ``root``: FuseSoC if installed, else its Verilator command."""
    core = _core()
    fusesoc = _fusesoc()
    if fusesoc is None and _pinned("fusesoc"):
        pytest.fail("requirements.lock pins fusesoc but no fusesoc command is installed")
    if fusesoc is not None:
        cmd = [fusesoc, "--cores-root", str(root), "run", "--build-root", str(root / "fs"),
               "--target", "lint", core["name"]]
    else:
        from tb import vlenv
        lint = core["targets"]["lint"]
        files = _files(core, "lint")
        cmd = [vlenv.verilator(), "--lint-only", *lint["flow_options"]["verilator_options"],
               *[f for f, t in files if t == "vlt"],
               *[f for f, t in files if t.startswith("verilogSource")],
               "--top-module", lint["toplevel"]]
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)


@pytest.mark.verilator
def test_lint_target_passes_and_needs_the_waivers(tmp_path):
    from tb import vlenv
    env = vlenv.apply(dict(os.environ))
    _layout(tmp_path)
    r = _run_lint(tmp_path, env)
    assert r.returncode == 0, f"lint target failed:\n{r.stdout}\n{r.stderr}"
    (tmp_path / "hdl" / "waivers.vlt").write_text("`verilator_config\n")    # no waivers
    shutil.rmtree(tmp_path / "fs", ignore_errors=True)
    r = _run_lint(tmp_path, env)
    assert r.returncode != 0 and "%Warning" in r.stdout + r.stderr
