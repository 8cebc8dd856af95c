"""perf/sweep.py: Dask sweeps with an on-disk cache; a local cluster and a separately started
``dask scheduler`` + ``dask worker``."""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

import cloudpickle
import numpy as np
import pytest

from perf.sweep import Point, failures, point_key, run_sweep

# Workers cannot import this test module by name: ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def square(x, log):
    """The point under test: x * x, one line appended to ``log`` per call."""
    with open(log, "a") as f:
        f.write(f"{x}\n")
    return {"x": x, "y": x * x, "pid": os.getpid()}


def boom(x, log):
    with open(log, "a") as f:
        f.write(f"boom {x}\n")
    raise ValueError(f"point x={x} fails")


def calls(log) -> list[str]:
    return Path(log).read_text().split() if Path(log).exists() else []


def test_cache_second_run_computes_nothing(tmp_path):
    log = str(tmp_path / "calls.txt")
    pts = [Point(square, {"x": x, "log": log}) for x in (1, 2, 3)]
    pts.append((square, {"x": 2, "log": log}))               # a duplicate runs once
    first = run_sweep(pts, cache_dir=tmp_path / "c", code_version="v1", n_workers=1,
                      progress=False)
    assert [r["result"]["y"] for r in first] == [1, 4, 9, 4]
    assert not any(r["cached"] for r in first) and failures(first) == []
    assert sorted(calls(log)) == ["1", "2", "3"]
    second = run_sweep(pts, cache_dir=tmp_path / "c", code_version="v1", n_workers=1,
                       progress=False)
    assert [r["result"] for r in second] == [r["result"] for r in first]
    assert all(r["cached"] for r in second)
    assert sorted(calls(log)) == ["1", "2", "3"]              # nothing computed
    more = pts + [Point(square, {"x": 4, "log": log})]
    third = run_sweep(more, cache_dir=tmp_path / "c", code_version="v1", n_workers=1,
                      progress=False)
    assert [r["cached"] for r in third] == [True] * 4 + [False]
    assert sorted(calls(log)) == ["1", "2", "3", "4"]         # only the new point
    run_sweep(pts[:1], cache_dir=tmp_path / "c", code_version="v2", n_workers=1,
              progress=False)
    assert sorted(calls(log)) == ["1", "1", "2", "3", "4"]    # a new code version recomputes


def test_failing_point_is_reported_not_raised(tmp_path):
    log = str(tmp_path / "calls.txt")
    pts = [Point(square, {"x": 5, "log": log}), Point(boom, {"x": 6, "log": log})]
    recs = run_sweep(pts, cache_dir=tmp_path, code_version="v", n_workers=1, progress=False)
    assert recs[0]["status"] == "ok" and recs[0]["result"]["y"] == 25
    bad = failures(recs)
    assert len(bad) == 1 and bad[0] is recs[1]
    assert "ValueError: point x=6 fails" in bad[0]["error"] and "boom" in bad[0]["traceback"]
    # errors are not cached: a re-run tries the failing point again, and only it
    run_sweep(pts, cache_dir=tmp_path, code_version="v", n_workers=1, progress=False)
    assert calls(log).count("boom") == 2 and calls(log).count("5") == 1


def test_unreadable_cache_entry_is_recomputed(tmp_path):
    log = str(tmp_path / "calls.txt")
    pts = [Point(square, {"x": 7, "log": log})]
    run_sweep(pts, cache_dir=tmp_path / "c", code_version="v", n_workers=1, progress=False)
    key = point_key(square, {"x": 7, "log": log}, "v")
    (tmp_path / "c" / f"{key}.pkl").write_bytes(b"not a pickle")
    r = run_sweep(pts, cache_dir=tmp_path / "c", code_version="v", n_workers=1, progress=False)
    assert r[0]["result"]["y"] == 49 and not r[0]["cached"] and calls(log) == ["7", "7"]


@dataclasses.dataclass(frozen=True)
class Cfg:
    n: int
    name: str


def test_point_key_is_stable_and_discriminating():
    k = point_key(square, {"x": 1, "log": "a"}, "v")
    assert len(k) == 64 and k == point_key(square, {"log": "a", "x": 1}, "v")
    assert k != point_key(square, {"x": 1, "log": "a"}, "w")        # code version
    assert k != point_key(boom, {"x": 1, "log": "a"}, "v")          # function
    assert k != point_key(square, {"x": 1.0, "log": "a"}, "v")      # int vs float
    assert point_key(square, {"x": [1, 2]}, "v") != point_key(square, {"x": (1, 2)}, "v")
    assert point_key(square, {"x": np.int64(3)}, "v") == point_key(square, {"x": 3}, "v")
    c = point_key(square, {"x": Cfg(2, "a")}, "v")
    assert c == point_key(square, {"x": Cfg(2, "a")}, "v") != point_key(square,
                                                                       {"x": Cfg(3, "a")}, "v")


@pytest.mark.parametrize("call, name", [
    (lambda: point_key(square, {"x": object()}, "v"), r"kwargs\['x'\]"),
    (lambda: point_key(square, {"x": {1: 2}}, "v"), "non-str key"),
    (lambda: point_key(square, {}, ""), "code_version"),
    (lambda: point_key(lambda: 1, {}, "v"), "fn"),
    (lambda: Point(square, [1]), "kwargs"),
    (lambda: Point(42), "fn=42"),
    (lambda: run_sweep("abc", cache_dir="c", code_version="v"), "points"),
    (lambda: run_sweep([1], cache_dir="c", code_version="v"), r"points\[0\]"),
    (lambda: run_sweep([], cache_dir=None, code_version="v"), "cache_dir"),
    (lambda: run_sweep([], cache_dir="c", code_version="v", n_workers=0), "n_workers"),
    (lambda: run_sweep([], cache_dir="c", code_version="v", scheduler=""), "scheduler"),
    (lambda: run_sweep([], cache_dir="c", code_version="v", connect_timeout=0),
     "connect_timeout"),
    (lambda: run_sweep([(square, {})], cache_dir="c", code_version=""), "code_version"),
    (lambda: failures("x"), "records"),
])
def test_validation(call, name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=name):
        call()


def test_unreachable_scheduler_is_a_value_error(tmp_path, free_port):
    addr = f"tcp://127.0.0.1:{free_port}"
    with pytest.raises(ValueError, match="scheduler="):
        run_sweep([(square, {"x": 1, "log": str(tmp_path / "l")})], cache_dir=tmp_path,
                  code_version="v", scheduler=addr, connect_timeout=2, progress=False)


def test_separate_scheduler_and_worker(tmp_path, dask_cluster):
    """A grid against ``dask scheduler`` + ``dask worker`` started as processes."""
    addr, t0 = dask_cluster.addr, dask_cluster.t0
    log = str(tmp_path / "calls.txt")
    grid = [Point(square, {"x": x, "log": log}) for x in range(4)]
    grid.append(Point(boom, {"x": 9, "log": log}))
    recs = run_sweep(grid, cache_dir=tmp_path / "c", code_version="v", scheduler=addr,
                     connect_timeout=10, progress=False)
    assert [r["status"] for r in recs] == ["ok"] * 4 + ["error"], failures(recs)
    assert [r["result"]["y"] for r in recs[:4]] == [0, 1, 4, 9]
    assert os.getpid() not in {r["result"]["pid"] for r in recs[:4]}   # ran remotely
    assert [r["error"] for r in failures(recs)] == ["ValueError: point x=9 fails"]
    again = run_sweep(grid[:4], cache_dir=tmp_path / "c", code_version="v",
                      scheduler=addr, progress=False)
    assert all(r["cached"] for r in again) and sorted(calls(log)) == \
        ["0", "1", "2", "3", "9", "boom"]
    assert time.monotonic() - t0 < 30
