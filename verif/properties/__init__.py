"""Formal property harnesses (Amaranth ``Assert`` / ``Assume`` / ``Cover``) for
``verif/formal.py``: :mod:`.streams` (any component's output streams), :mod:`.macro` (the
DIMC macro's contract)."""
