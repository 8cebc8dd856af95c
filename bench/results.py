"""What the benches share: their output directory and options, their two result files (JSON and
Markdown) and the ``python -m bench.<name>`` entry point."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["RESULTS_DIR", "add_common", "outputs", "read_json", "write_json", "write_md",
           "main"]

#: default output directory of every bench (relative to the working directory)
RESULTS_DIR = Path("build/bench")


def add_common(ap, seed: int, what: str) -> None:
    """``--seed`` (``what`` it seeds; default ``$SEED``, else ``seed``) and ``--out`` (default
    :data:`RESULTS_DIR`): the options ``cimphony bench`` shares between the benches."""
    from cimphony.cli import add_seed_and_out
    add_seed_and_out(ap, seed=seed, out=RESULTS_DIR, what=what)


def outputs(out, name: str) -> list[Path]:
    """The files a bench ``name`` writes into ``out``: ``<name>.json`` and ``<name>.md``."""
    return [Path(out) / f"{name}.json", Path(out) / f"{name}.md"]


def read_json(path: Path) -> dict:
    """The results in ``path``, ``{}`` if there is no such file."""
    return json.loads(path.read_text()) if path.exists() else {}


def write_json(path: Path, res: dict, indent: int = 2) -> None:
    """Write ``res`` to ``path`` (its directory created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=indent, default=str) + "\n")


def write_md(path: Path, text: str) -> None:
    """Write the Markdown report ``text`` to ``path`` and print it."""
    path.write_text(text + "\n")
    print(text)


def main(argv, prog: str, doc: str, add_arguments, run) -> int:
    """``python -m <prog>``: parse ``argv`` with ``add_arguments`` (the first line of ``doc``
    describes it), then ``run(args)``."""
    ap = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


def token_list(text: str, step: int) -> list[int]:
    """A ``--tokens``-style option value: comma-separated positive multiples of ``step``
    (argparse.ArgumentTypeError naming the value otherwise)."""
    import argparse
    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        vals = []
    if not vals or any(v < step or v % step for v in vals):
        raise argparse.ArgumentTypeError(
            f"invalid token list {text!r}: comma-separated multiples of {step}, e.g. 2048,8192")
    return vals
