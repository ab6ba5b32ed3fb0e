"""Clock generation from a board oscillator: PLL parameter solvers and clocking blocks.

* :class:`ICE40Clocking`: ``SB_PLL40_PAD`` -> ``sync`` domain. Parameter ranges from Lattice
  TN1251 "iCE40 sysCLOCK PLL Design and Usage Guide": PFD 10-133 MHz, VCO 533-1066 MHz,
  ``f_out = f_in (DIVF+1) / ((DIVR+1) 2^DIVQ)``; the loop filter range follows the PFD
  frequency as in Project IceStorm's ``icepll``.
* :class:`ECP5Clocking`: ``EHXPLLL`` -> (``S`` = 4) ``ECLKSYNCB`` -> ``eclk`` domain and
  ``CLKDIVF`` (divide by 2) -> ``sync``; (``S`` < 4) the PLL output is ``sync``. Ranges from
  Lattice TN1263 "ECP5 and ECP5-5G sysCLOCK PLL/DLL Design and Usage Guide": PFD 3.125-400
  MHz, VCO 400-800 MHz, ``f_out = f_in CLKFB_DIV / CLKI_DIV`` with feedback from CLKOP and
  ``f_vco = f_out CLKOP_DIV``. The ``eclk``/``sync`` pair is what the x2 gearing primitives
  need (TN1265).

The domains themselves (``sync``, and ``eclk`` when ``geared``, reset-less) are defined by
the enclosing top; these blocks drive their clocks and resets. Both hold ``sync`` in reset until the PLL reports lock (then release it synchronously).
Timing constraints: the oscillator pin carries its frequency (amaranth-boards ``Clock``), and
nextpnr derives the PLL, ``ECLKSYNCB`` and ``CLKDIVF`` output constraints from it and from the
divider parameters (its log: "Derived frequency constraint ..."). Explicit constraints on the
generated nets would be dropped, as Yosys renames those nets.
"""
from __future__ import annotations

from amaranth.hdl import ClockSignal, Const, Instance, Module, Signal, Elaboratable
from amaranth.lib.cdc import ResetSynchronizer

__all__ = ["ice40_pll_params", "ecp5_pll_params", "ICE40Clocking", "ECP5Clocking", "PLL_MAX_ERROR"]

#: Largest accepted relative error of the PLL output frequency.
PLL_MAX_ERROR = 0.005


def ice40_pll_params(f_in_mhz: float, f_out_mhz: float) -> dict:
    """Closest ``SB_PLL40`` setting: dict with DIVR, DIVF, DIVQ, FILTER_RANGE, f_out_mhz."""
    best = None
    for divr in range(16):
        f_pfd = f_in_mhz / (divr + 1)
        if not 10 <= f_pfd <= 133:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not 533 <= f_vco <= 1066:
                continue
            for divq in range(1, 7):
                f = f_vco / (1 << divq)
                if not 16 <= f <= 275:
                    continue
                err = abs(f - f_out_mhz)
                if best is None or err < best[0] - 1e-12:
                    best = (err, divr, divf, divq, f_pfd, f)
    if best is None or best[0] / f_out_mhz > PLL_MAX_ERROR:
        got = "nothing" if best is None else f"{best[5]:.4f} MHz"
        raise ValueError(f"iCE40 PLL: {f_out_mhz:g} MHz from {f_in_mhz:g} MHz not reachable within "
                         f"{100 * PLL_MAX_ERROR:g} % (closest {got}; outputs 16-275 MHz)")
    _, divr, divf, divq, f_pfd, f = best
    filt = next((r for r, hi in ((1, 17), (2, 26), (3, 44), (4, 66), (5, 101)) if f_pfd < hi), 6)
    return dict(DIVR=divr, DIVF=divf, DIVQ=divq, FILTER_RANGE=filt, f_out_mhz=f)


def ecp5_pll_params(f_in_mhz: float, f_out_mhz: float) -> dict:
    """Closest ``EHXPLLL`` setting (CLKOP feedback): CLKI_DIV, CLKFB_DIV, CLKOP_DIV, f_out_mhz."""
    best = None
    for clki_div in range(1, 129):
        f_pfd = f_in_mhz / clki_div
        if not 3.125 <= f_pfd <= 400:
            continue
        for clkfb_div in range(1, 81):
            f = f_pfd * clkfb_div
            for clkop_div in range(1, 129):
                if 400 <= f * clkop_div <= 800:
                    err = abs(f - f_out_mhz)
                    if best is None or err < best[0] - 1e-12:
                        best = (err, clki_div, clkfb_div, clkop_div, f)
                    break
    if best is None or best[0] / f_out_mhz > PLL_MAX_ERROR:
        got = "nothing" if best is None else f"{best[4]:.4f} MHz"
        raise ValueError(f"ECP5 PLL: {f_out_mhz:g} MHz from {f_in_mhz:g} MHz not reachable within "
                         f"{100 * PLL_MAX_ERROR:g} % (closest {got})")
    _, clki_div, clkfb_div, clkop_div, f = best
    return dict(CLKI_DIV=clki_div, CLKFB_DIV=clkfb_div, CLKOP_DIV=clkop_div, f_out_mhz=f)


class ICE40Clocking(Elaboratable):
    """``sync`` at ``clock_mhz`` from the oscillator pad ``clk_port`` (raw port, dir ``-``)."""

    def __init__(self, clk_port, f_in_mhz: float, clock_mhz: float):
        self.clk_port = clk_port
        self.pll = ice40_pll_params(f_in_mhz, clock_mhz)
        self.f_in_mhz = f_in_mhz
        self.sync_mhz = self.pll["f_out_mhz"]
        self.geared = False
        self.locked = Signal()

    def elaborate(self, platform):
        m = Module()
        clk_sync = ClockSignal("sync")
        p = self.pll
        m.submodules.pll = Instance(
            "SB_PLL40_PAD",
            p_FEEDBACK_PATH="SIMPLE", p_DIVR=p["DIVR"], p_DIVF=p["DIVF"], p_DIVQ=p["DIVQ"],
            p_FILTER_RANGE=p["FILTER_RANGE"],
            io_PACKAGEPIN=self.clk_port.io[0], i_RESETB=Const(1), i_BYPASS=Const(0),
            o_PLLOUTGLOBAL=clk_sync, o_LOCK=self.locked)
        m.submodules.reset = ResetSynchronizer(~self.locked, domain="sync")
        return m


class ECP5Clocking(Elaboratable):
    """``sync`` at ``clock_mhz`` (and ``eclk`` at twice that when ``samples_per_clock`` = 4)
    from the oscillator input ``clk_in`` (a 1-bit signal) at ``f_in_mhz``."""

    def __init__(self, clk_in, f_in_mhz: float, clock_mhz: float, samples_per_clock: int):
        self.clk_in = clk_in
        self.geared = samples_per_clock == 4
        self.pll = ecp5_pll_params(f_in_mhz, 2 * clock_mhz if self.geared else clock_mhz)
        self.f_in_mhz = f_in_mhz
        self.sync_mhz = self.pll["f_out_mhz"] / (2 if self.geared else 1)
        self.locked = Signal()

    def elaborate(self, platform):
        m = Module()
        clk_sync = ClockSignal("sync")
        p = self.pll
        clkop = Signal()
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{self.f_in_mhz:g}", a_FREQUENCY_PIN_CLKOP=f"{p['f_out_mhz']:.6g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_FEEDBK_PATH="CLKOP",
            p_CLKI_DIV=p["CLKI_DIV"], p_CLKFB_DIV=p["CLKFB_DIV"], p_CLKOP_DIV=p["CLKOP_DIV"],
            p_CLKOP_ENABLE="ENABLED", p_CLKOP_CPHASE=p["CLKOP_DIV"] - 1, p_CLKOP_FPHASE=0,
            i_CLKI=self.clk_in, i_CLKFB=clkop, i_RST=Const(0), i_STDBY=Const(0),
            i_PHASESEL0=Const(0), i_PHASESEL1=Const(0), i_PHASEDIR=Const(0), i_PHASESTEP=Const(0),
            i_PHASELOADREG=Const(0), i_PLLWAKESYNC=Const(0), i_ENCLKOP=Const(0),
            o_CLKOP=clkop, o_LOCK=self.locked)
        if self.geared:
            clk_eclk = ClockSignal("eclk")
            m.submodules.eclksync = Instance("ECLKSYNCB", i_ECLKI=clkop, i_STOP=Const(0), o_ECLKO=clk_eclk)
            m.submodules.clkdiv = Instance("CLKDIVF", p_DIV="2.0", i_CLKI=clk_eclk,
                                           i_RST=~self.locked, i_ALIGNWD=Const(0), o_CDIVX=clk_sync)
        else:
            m.d.comb += clk_sync.eq(clkop)
        m.submodules.reset = ResetSynchronizer(~self.locked, domain="sync")
        return m
