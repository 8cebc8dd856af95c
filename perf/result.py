"""Result of the performance model (perf/sim.py): :class:`SimResult` and its counters."""
from __future__ import annotations

from dataclasses import dataclass

from perf.params import SimParams

__all__ = ["STATS", "SimResult"]

#: counters (SimResult.stats keys, in this order; see SimResult)
STATS = ("busy", "mac", "wr_inp", "wr_w", "rd_out", "beats", "act", "host_cmds", "mac_ab",
         "act16", "waits")


@dataclass
class SimResult:
    """Result of :func:`perf.sim.simulate`.

    t_end      first cycle in which the module is idle after the last push (everything done;
               the host pushed the first command in cycle 0)
    cycles     the golden model's convention for the same program (``pace`` adds a trailing NOP
               once drained, ``ModuleModel.run`` ends TAIL cycles after idle, plus 1):
               t_end + 3 + TAIL
    stats      counters over the whole run: busy (bank busy cycles, summed over banks and
               channels); mac (bank MACs: a single-bank MAC counts 1 per channel of its mask,
               an all-bank MAC n_banks); mac_ab (all-bank MACs, per channel); wr_inp / wr_w /
               rd_out (channel commands, i.e. host commands x channels in their mask); beats
               (results delivered); act (DRAM bank-row activations: an ACT16 counts n_banks);
               act16 (DRAM all-bank activations); host_cmds (host commands consumed); waits
               (host WAITs passed); busy_ch (busy bank-cycles per channel)
    sim_cycles cycles actually simulated (the rest were added in closed form)
    skipped    (label, iterations, cycles) of every closed-form skip
    """
    params: SimParams
    t_end: int
    cycles: int
    stats: dict
    sim_cycles: int
    skipped: list

    @property
    def time_s(self) -> float:
        """Wall time of the run, s: t_end cycles at the module clock, DRAM refresh included."""
        p = self.params
        return self.t_end * p.refresh_factor / (p.clock_ghz * 1e9)

    @property
    def mac_util(self) -> float:
        """Busy bank-cycles / (t_end x banks x channels)."""
        p = self.params
        return self.stats["busy"] / max(1, self.t_end * p.n_banks * p.n_ch)

    @property
    def channel_util(self) -> float:
        """Channel balance: mean over channels of busy bank-cycles / the busiest channel's (1: every
        channel does as much MAC work as the busiest; 1/C: one channel does everything)."""
        b = self.stats["busy_ch"]
        return sum(b) / (len(b) * max(b)) if max(b, default=0) else 0.0
