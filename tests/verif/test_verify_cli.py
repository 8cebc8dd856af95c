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
