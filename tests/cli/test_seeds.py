"""tests/conftest.py: a failing test prints the command that reproduces it, and that command
reproduces its seed; WAVES=1 lists the waveforms; an unmarked test cannot reach Verilator.

Each case runs a tiny test file under a copy of tests/conftest.py in a pytest subprocess.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tb.mismatch import env_seed

CONFTEST = Path(__file__).resolve().parent.parent / "conftest.py"

FAILING = '''
from tb.mismatch import note_waveform

def test_draws(seed):
    print(f"drew seed {seed}")
    assert seed < 0

def test_no_seed():
    assert False

def test_waveform(seed):
    note_waveform("/tmp/some/dump.fst")
    assert False
'''

VERILATOR = '''
import pytest
from tb import vlenv

def test_unmarked():
    vlenv.apply(dict())

@pytest.mark.verilator
def test_marked():
    assert "VERILATOR_ROOT" in vlenv.apply(dict())
'''


def _pytest(tmp_path, source: str, *args, env_extra=None):
    (tmp_path / "conftest.py").write_text(CONFTEST.read_text())
    (tmp_path / "test_dummy.py").write_text(source)
    env = {k: v for k, v in os.environ.items()
           if k not in ("SEED", "WAVES", "PYTEST_ADDOPTS", "CIMPHONY_NO_VERILATOR")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "-p", "no:xdist", "-o", "markers=verilator: x", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def _reproduce_lines(out: str) -> dict[str, str]:
    """node id -> the reproduce command printed for it."""
    cmds = {}
    for line in out.splitlines():
        m = re.match(r"reproduce: (.*)$", line)
        if m:
            argv = shlex.split(m.group(1))
            cmds[argv[-1]] = m.group(1)
    return cmds


def test_failure_prints_a_command_that_reproduces_the_seed(tmp_path):
    r = _pytest(tmp_path, FAILING, "test_dummy.py", env_extra={"WAVES": "1"})
    assert r.returncode == 1, r.stdout + r.stderr
    assert "waveform: /tmp/some/dump.fst" in r.stdout, r.stdout      # WAVES=1: listed
    cmds = _reproduce_lines(r.stdout)
    assert set(cmds) == {"test_dummy.py::test_draws", "test_dummy.py::test_no_seed",
                         "test_dummy.py::test_waveform"}, r.stdout
    seed = int(re.search(r"drew seed (\d+)", r.stdout).group(1))
    assert cmds["test_dummy.py::test_draws"].startswith(f"SEED={seed} "), cmds
    assert "SEED=" not in cmds["test_dummy.py::test_no_seed"], cmds

    # run the printed command exactly (env assignment, interpreter, node id)
    argv = shlex.split(cmds["test_dummy.py::test_draws"])
    env_words = [a for a in argv if re.fullmatch(r"[A-Z_]+=\S*", a)]
    argv = argv[len(env_words):]
    assert argv[1:3] == ["-m", "pytest"], argv
    assert Path(argv[0]).resolve() == Path(sys.executable).resolve(), argv
    r2 = _pytest(tmp_path, FAILING, *argv[3:],
                 env_extra=dict(w.split("=", 1) for w in env_words))
    assert r2.returncode == 1 and "1 failed" in r2.stdout, r2.stdout
    assert f"drew seed {seed}" in r2.stdout, r2.stdout
    assert _reproduce_lines(r2.stdout) == {"test_dummy.py::test_draws":
                                           cmds["test_dummy.py::test_draws"]}
    # and SEED is what sets it
    r3 = _pytest(tmp_path, FAILING, "test_dummy.py::test_draws",
                 env_extra={"SEED": str(seed + 1)})
    assert f"drew seed {seed + 1}" in r3.stdout, r3.stdout
    assert f"reproduce: SEED={seed + 1} " in r3.stdout, r3.stdout


def test_bad_seed_env_is_a_clear_error(tmp_path):
    r = _pytest(tmp_path, FAILING, "test_dummy.py::test_draws", env_extra={"SEED": "abc"})
    assert r.returncode != 0 and "SEED='abc' is not an integer" in r.stdout + r.stderr, (
        r.stdout + r.stderr)


@pytest.mark.parametrize("text,seed", [("", None), ("0", 0), ("1234", 1234)])
def test_env_seed(monkeypatch, text, seed):
    monkeypatch.setenv("SEED", text)
    assert env_seed() == seed


@pytest.mark.parametrize("text,msg", [("abc", "SEED='abc' is not an integer"),
                                      ("-3", "SEED='-3' must be >= 0"),
                                      ("1.5", "SEED='1.5' is not an integer")])
def test_env_seed_rejects(monkeypatch, text, msg):
    monkeypatch.setenv("SEED", text)
    with pytest.raises(ValueError, match=re.escape(msg)):
        env_seed()


def test_unmarked_test_cannot_run_verilator(tmp_path):
    r = _pytest(tmp_path, VERILATOR, "test_dummy.py", "-rA")
    assert "test_dummy.py::test_unmarked runs Verilator but is not marked" in r.stdout, r.stdout
    assert re.search(r"PASSED test_dummy.py::test_marked", r.stdout), r.stdout
    assert re.search(r"FAILED test_dummy.py::test_unmarked", r.stdout), r.stdout
