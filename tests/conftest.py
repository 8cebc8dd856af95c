"""Shared pytest setup: seeds (SEED=n to reproduce), repo on sys.path."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@pytest.fixture
def seed(request) -> int:
    """SEED from the environment, else a stable per-test seed; printed on failure."""
    env = os.environ.get("SEED")
    s = int(env) if env else sum(map(ord, request.node.name)) * 7919 % 100_000
    request.node.user_properties.append(("seed", s))
    return s


def pytest_runtest_makereport(item, call):
    if call.when == "call" and call.excinfo is not None:
        for k, v in item.user_properties:
            if k == "seed":
                print(f"\n[cimphony] {item.nodeid} failed with seed {v}: "
                      f"re-run with SEED={v} (add WAVES=1 for a waveform)")
