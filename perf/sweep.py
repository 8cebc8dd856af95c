"""Experiment sweeps as tasks on ``dask.distributed``, with an on-disk result cache.

A sweep is a list of points, each a picklable callable and its keyword arguments
(:class:`Point`).  :func:`run_sweep` looks every point up in the cache, runs the missing ones
as tasks -- on a fresh ``LocalCluster`` (``n_workers`` processes, one thread each) or on an
existing cluster (``scheduler="tcp://host:port"``) -- with a tqdm progress bar, stores every
successful result, and returns one record per point in input order.  A point that raises is
returned as an error record (never raised), so a caller can report it and exit non-zero.

Cache key: SHA-256 of the canonical JSON of (the function's ``module.qualname``, its kwargs,
the caller's ``code_version``).  Kwargs must be JSON-like values (None, bool, int, float, str,
lists, tuples, dicts with str keys, enums, dataclasses, numpy scalars, paths); anything else is
a ValueError, since its key would not be stable across runs.  Each task carries its point as
cloudpickle bytes, so the scheduler never imports the points' code (functions of a module
registered with ``cloudpickle.register_pickle_by_value`` travel by value; others by reference
and must be importable on the workers).  Results are written by the client (workers need no
shared file system), one pickle per key, atomically.
"""
from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import json
import math
import os
import pickle
import tempfile
import time
import traceback
import uuid
from pathlib import Path, PurePath

import cloudpickle

from spec.params import check_int

__all__ = ["Point", "point_key", "run_sweep", "failures"]


@dataclasses.dataclass(frozen=True)
class Point:
    """One experiment point: ``fn(**kwargs)``; ``fn`` a module-level function (its qualified
    name is part of the cache key)."""
    fn: object
    kwargs: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        _fn_name(self.fn)
        if not isinstance(self.kwargs, dict) or any(not isinstance(k, str) for k in self.kwargs):
            raise ValueError(f"Point: kwargs={self.kwargs!r:.120} must be a dict with str keys")


def _fn_name(fn) -> str:
    name = getattr(fn, "__qualname__", None)
    mod = getattr(fn, "__module__", None)
    if not callable(fn) or not isinstance(name, str) or not isinstance(mod, str) \
            or "<lambda>" in name or "<locals>" in name:
        raise ValueError(f"Point: fn={fn!r} must be a module-level function (a stable "
                         f"qualified name for the cache key)")
    return f"{mod}.{name}"


def _canon(v, path: str):
    """A JSON value that identifies ``v`` (stable across processes and runs)."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return v if math.isfinite(v) else {"__float__": repr(v)}
    if isinstance(v, enum.Enum):
        return {"__enum__": f"{type(v).__module__}.{type(v).__qualname__}", "name": v.name}
    if isinstance(v, PurePath):
        return {"__path__": str(v)}
    if type(v).__module__ == "numpy" and hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        return _canon(v.item(), path)
    if isinstance(v, list):
        return [_canon(x, f"{path}[{i}]") for i, x in enumerate(v)]
    if isinstance(v, tuple):
        return {"__tuple__": [_canon(x, f"{path}[{i}]") for i, x in enumerate(v)]}
    if isinstance(v, dict):
        bad = [k for k in v if not isinstance(k, str)]
        if bad:
            raise ValueError(f"point_key: {path} has a non-str key {bad[0]!r}")
        return {k: _canon(v[k], f"{path}[{k!r}]") for k in sorted(v)}
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {"__dataclass__": f"{type(v).__module__}.{type(v).__qualname__}",
                **{f.name: _canon(getattr(v, f.name), f"{path}.{f.name}")
                   for f in dataclasses.fields(v)}}
    raise ValueError(f"point_key: {path}={v!r:.80} of type {type(v).__name__} has no stable "
                     f"key (use JSON-like values, enums or dataclasses)")


def point_key(fn, kwargs: dict, code_version: str) -> str:
    """Cache key of ``fn(**kwargs)`` under ``code_version``: a 64-hex-digit SHA-256."""
    if not isinstance(code_version, str) or not code_version:
        raise ValueError(f"point_key: code_version={code_version!r} must be a non-empty str")
    if not isinstance(kwargs, dict):
        raise ValueError(f"point_key: kwargs={kwargs!r:.80} must be a dict")
    doc = {"fn": _fn_name(fn), "kwargs": _canon(kwargs, "kwargs"), "code_version": code_version}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _call(blob: bytes) -> dict:
    """Run one point on a worker (``blob``: the cloudpickled (fn, kwargs)); an exception
    becomes an error record."""
    t0 = time.perf_counter()
    try:
        fn, kwargs = cloudpickle.loads(blob)
        res = fn(**kwargs)
    except Exception as e:                          # noqa: BLE001 -- reported per point
        return {"status": "error", "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc(), "seconds": time.perf_counter() - t0}
    return {"status": "ok", "result": res, "seconds": time.perf_counter() - t0}


def _load(path: Path):
    try:
        with open(path, "rb") as f:
            doc = pickle.load(f)
        return doc if isinstance(doc, dict) and "result" in doc else None
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError,
            IndexError, TypeError, ValueError):
        return None                                 # unreadable: recompute


def _store(path: Path, doc: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".pkl")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(doc, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _failed(what: str, e: Exception) -> dict:
    return {"status": "error", "error": f"{what}: {type(e).__name__}: {e}",
            "traceback": traceback.format_exc(), "seconds": 0.0, "cached": False}


@contextlib.contextmanager
def _client(scheduler, n_workers: int, connect_timeout: float):
    from dask.distributed import Client, LocalCluster
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=f"{connect_timeout}s")
        except (OSError, TimeoutError) as e:
            raise ValueError(f"run_sweep: scheduler={scheduler!r} is not reachable: {e}") \
                from None
        with client:
            yield client
        return
    # no dashboard; the scheduler's HTTP (metrics) server on a free port, not on 8787
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                      dashboard_address=None, scheduler_kwargs={"dashboard_address": ":0"}) \
            as cluster, Client(cluster) as client:
        yield client


def _as_point(p, i: int) -> Point:
    if isinstance(p, Point):
        return p
    if isinstance(p, tuple) and len(p) == 2:
        return Point(p[0], p[1])
    raise ValueError(f"run_sweep: points[{i}]={p!r:.80} must be a Point or (fn, kwargs)")


def run_sweep(points, *, cache_dir, code_version: str, n_workers: int = 2, scheduler=None,
              progress: bool = True, connect_timeout: float = 30.0) -> list[dict]:
    """Run ``points`` (Point or (fn, kwargs)) on Dask, computing only those not in the cache.

    Parameters
    ----------
    cache_dir : str or Path
        directory of the cache (created); one ``<key>.pkl`` per successful point.
    code_version : str
        part of every key: change it when the code behind the points changes.
    n_workers : int
        worker processes of the LocalCluster (one thread each); ignored with ``scheduler``.
    scheduler : str, optional
        address of a running scheduler (``tcp://host:port``) instead of a LocalCluster.
    progress : bool
        show a tqdm progress bar.
    connect_timeout : float
        seconds to wait for ``scheduler``.

    Returns
    -------
    list of dict
        per point, in input order: ``key``, ``fn``, ``kwargs``, ``status`` ("ok" or
        "error"), ``cached`` (bool), ``result`` (ok), ``error`` and ``traceback`` (error),
        ``seconds`` (compute time of the point, s).  No cluster is started when every point
        is cached.

    Notes
    -----
    The LocalCluster's workers are spawned processes: a script that calls this must do so
    under ``if __name__ == "__main__":``.
    """
    from tqdm import tqdm
    if isinstance(points, (str, bytes, dict)) or not hasattr(points, "__iter__"):
        raise ValueError(f"run_sweep: points={points!r:.80} must be a list of points")
    pts = [_as_point(p, i) for i, p in enumerate(points)]
    if not isinstance(cache_dir, (str, PurePath)) or not str(cache_dir):
        raise ValueError(f"run_sweep: cache_dir={cache_dir!r} must be a path")
    n_workers = check_int("run_sweep: n_workers", n_workers, 1)
    if scheduler is not None and (not isinstance(scheduler, str) or not scheduler):
        raise ValueError(f"run_sweep: scheduler={scheduler!r} must be an address string")
    if isinstance(connect_timeout, bool) or not isinstance(connect_timeout, (int, float)) \
            or not connect_timeout > 0:
        raise ValueError(f"run_sweep: connect_timeout={connect_timeout!r} must be > 0")
    keys = [point_key(p.fn, p.kwargs, code_version) for p in pts]
    cache = Path(cache_dir)
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"run_sweep: cache_dir={str(cache_dir)!r} cannot be created: {e}") \
            from None

    done: dict[str, dict] = {}
    for k in set(keys):
        doc = _load(cache / f"{k}.pkl")
        if doc is not None:
            done[k] = {"status": "ok", "result": doc["result"], "cached": True,
                       "seconds": doc.get("seconds", 0.0)}
    todo = {}
    for p, k in zip(pts, keys, strict=True):
        if k not in done and k not in todo:
            todo[k] = p
    count = {k: keys.count(k) for k in todo}
    with tqdm(total=len(pts), disable=not progress, desc="sweep", unit="pt") as bar:
        bar.update(len(pts) - sum(count.values()))
        blobs = {}
        for k, p in todo.items():
            try:
                blobs[k] = cloudpickle.dumps((p.fn, p.kwargs))
            except Exception as e:                  # noqa: BLE001 -- reported per point
                done[k] = _failed("cannot pickle the point", e)
                bar.update(count[k])
        if blobs:
            from dask.distributed import as_completed
            with _client(scheduler, n_workers, connect_timeout) as client:
                futs = {client.submit(_call, b, pure=False,
                                      key=f"point-{k[:16]}-{uuid.uuid4().hex[:8]}"): k
                        for k, b in blobs.items()}
                for fut in as_completed(futs):
                    k = futs[fut]
                    try:
                        out = fut.result()
                    except Exception as e:          # noqa: BLE001 -- e.g. a worker died
                        out = _failed("task failed", e)
                    out["cached"] = False
                    if out["status"] == "ok":
                        _store(cache / f"{k}.pkl", {"key": k, "fn": _fn_name(todo[k].fn),
                                                    "code_version": code_version,
                                                    "kwargs": _canon(todo[k].kwargs, "kwargs"),
                                                    "result": out["result"],
                                                    "seconds": out["seconds"]})
                    done[k] = out
                    bar.update(count[k])
    return [{"key": k, "fn": _fn_name(p.fn), "kwargs": p.kwargs, **done[k]}
            for p, k in zip(pts, keys, strict=True)]


def failures(records: list[dict]) -> list[dict]:
    """The error records of :func:`run_sweep`'s result (empty: every point succeeded)."""
    if not isinstance(records, list) or any(not isinstance(r, dict) or "status" not in r
                                            for r in records):
        raise ValueError(f"failures: records={records!r:.80} must be run_sweep's result")
    return [r for r in records if r["status"] != "ok"]
