"""Shared pytest setup: seeds (SEED=n to reproduce)."""
from __future__ import annotations

import os
import pytest

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
