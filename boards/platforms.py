"""Supported boards: platform, oscillator, board-appropriate gateware defaults and pin map.

The pin map of each board (``docs/boards.md`` shows the same tables) is one list of
``(resource, PMOD connector, PMOD pins, direction)`` per role, turned into amaranth-boards
resources by :func:`add_qkd_resources`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from amaranth.build import Attrs, Pins, Resource

__all__ = ["Board", "BOARDS", "get_board", "add_qkd_resources", "PIN_ROLES", "pin_table", "pin_table_markdown"]

#: What each board resource carries, for the docs and the report.
PIN_ROLES = {
    "qkd_laser": "laser triggers H, V, D, A (S samples per clock each)",
    "qkd_im": "intensity-modulator code, 2 bits (0 signal, 1 decoy, 2 vacuum), one code per slot",
    "qkd_sync_out": "sync marker output (S samples per clock)",
    "qkd_qrng_data": "external QRNG serial data, sampled on a rising edge of qkd_qrng_strobe",
    "qkd_qrng_strobe": "external QRNG bit strobe (rate <= clock / 4)",
    "qkd_det": "detector click inputs H, V, D, A (S samples per clock each)",
    "qkd_sync_in": "sync input from Alice (S samples per clock)",
}


@dataclass(frozen=True)
class Board:
    name: str
    title: str
    family: str                       # "ice40" or "ecp5"
    device: str
    speed_grade: str
    osc_resource: str
    osc_mhz: float
    samples_per_clock: int
    slots_per_clock: int
    clock_mhz: float
    choice_depth_slots: int
    record_rows: int
    pending_depth: int
    io_attrs: dict
    pins: dict = field(default_factory=dict)        # role -> [(resource, pmod, "pins", dir)]
    status_led: str = ""
    pmod_names: tuple = ("PMOD0", "PMOD1", "PMOD2")   # silkscreen names of amaranth's ("pmod", n)
    io_pipeline_clocks: int = 1       # register stages between the gearing and the endpoint
    digests: bool = True              # the CRC-32 self-check digests (SNAP_DIGEST_*) are built in
    prng_fits: bool = True            # Alice has room for the simulation PRNG next to the QRNG input
    histogram: bool = True            # Bob's fine-time histograms (HIST_*) are built in

    def platform(self):
        if self.name == "icebreaker":
            from amaranth_boards.icebreaker import ICEBreakerPlatform
            return ICEBreakerPlatform()
        if self.name == "ecpix5-85":
            from amaranth_boards.ecpix5 import ECPIX585Platform
            return ECPIX585Platform()
        raise AssertionError(self.name)


_ALICE_ICE40 = [("qkd_laser", 0, "1 2 3 4", "o"), ("qkd_im", 0, "7 8", "o"), ("qkd_sync_out", 0, "9", "o"),
                ("qkd_qrng_data", 1, "1", "i"), ("qkd_qrng_strobe", 1, "2", "i")]
_BOB_ICE40 = [("qkd_det", 0, "1 2 3 4", "i"), ("qkd_sync_in", 0, "7", "i")]

BOARDS = {
    "icebreaker": Board(
        name="icebreaker", title="1BitSquared iCEBreaker", family="ice40", device="iCE40UP5K-SG48",
        speed_grade="-", osc_resource="clk12", osc_mhz=12.0,
        samples_per_clock=2, slots_per_clock=1, clock_mhz=24.0, choice_depth_slots=1024,
        record_rows=64, pending_depth=256, io_attrs=dict(IO_STANDARD="SB_LVCMOS"),
        pins={"alice": _ALICE_ICE40, "bob": _BOB_ICE40}, status_led="led_g",
        pmod_names=("PMOD1A", "PMOD1B", "PMOD2"), digests=False, prng_fits=False,
        histogram=False),
    "ecpix5-85": Board(
        name="ecpix5-85", title="LambdaConcept ECPIX-5 85F", family="ecp5", device="LFE5UM5G-85F-8BG554",
        speed_grade="8", osc_resource="clk100", osc_mhz=100.0,
        samples_per_clock=4, slots_per_clock=4, clock_mhz=156.25, choice_depth_slots=16384,
        record_rows=256, pending_depth=1024, io_attrs=dict(IO_TYPE="LVCMOS33"),
        pins={"alice": _ALICE_ICE40, "bob": _BOB_ICE40}, io_pipeline_clocks=2),
}


def get_board(name: str) -> Board:
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError(f"board {name!r}: must be one of {', '.join(BOARDS)}") from None


def add_qkd_resources(platform, board: Board, role: str) -> None:
    """Declare the role's QKD pins on the board's PMOD connectors."""
    res = []
    for name, pmod, pins, direction in board.pins[role]:
        res.append(Resource(name, 0, Pins(pins, dir=direction, conn=("pmod", pmod)), Attrs(**board.io_attrs)))
    platform.add_resources(res)


def pin_table(board: Board, role: str) -> list[tuple[str, str, str, str, str]]:
    """Rows ``(signal, PMOD, PMOD pin, FPGA pin, direction)`` of the role's pin map."""
    platform = board.platform()
    rows = []
    for name, pmod, pins, direction in board.pins[role]:
        mapping = platform.connectors[("pmod", pmod)].mapping
        for k, pin in enumerate(pins.split()):
            rows.append((f"{name}[{k}]" if len(pins.split()) > 1 else name, board.pmod_names[pmod], pin,
                         mapping[pin], "out" if direction == "o" else "in"))
    return rows


def pin_table_markdown(board: Board) -> str:
    """The board's pin maps (both roles) as Markdown tables."""
    lines = []
    for role in ("alice", "bob"):
        lines += [f"**{role}**", "", "| signal | connector | pin | FPGA pin | dir | meaning |", "|---|---|---|---|---|---|"]
        for sig, pmod, pin, fpga, d in pin_table(board, role):
            base, _, index = sig.partition("[")
            meaning = PIN_ROLES[base]
            if base in ("qkd_laser", "qkd_det"):
                meaning = f"{'laser trigger' if base == 'qkd_laser' else 'detector'} {'HVDA'[int(index[:-1])]}"
            elif base == "qkd_im":
                meaning = f"intensity-modulator code bit {index[:-1]}"
            lines.append(f"| `{sig}` | {pmod} | {pin} | {fpga} | {d} | {meaning} |")
        lines.append("")
    return "\n".join(lines)
