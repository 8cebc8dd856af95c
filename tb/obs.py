"""Bit positions of the lockstep wrapper's packed ``ctl`` and ``obs`` ports (see tb/probe.py).

Kept apart from the wrapper so the cocotb bench does not import Amaranth inside the simulator.
"""
OBS_WR_READY, OBS_REQ_READY, OBS_RES_VALID, OBS_ERR, OBS_BUSY, OBS_CHG = 0, 1, 2, 3, 5, 6
CTL_WR_VALID, CTL_REQ_VALID, CTL_RES_READY = 0, 1, 2
