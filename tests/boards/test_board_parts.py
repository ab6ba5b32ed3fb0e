"""Board parts without the tool flow: PLL solvers, QRNG serial input, pin maps, CLI parsing."""
import argparse

import numpy as np
import pytest
from amaranth.sim import Simulator

from qkdlink.boards.clocking import ecp5_pll_params, ice40_pll_params
from qkdlink.boards.cli import add_parser
from qkdlink.boards.platforms import BOARDS, PIN_ROLES, get_board
from qkdlink.boards.top import QRNGSerialInput


def test_ice40_pll():
    p = ice40_pll_params(12, 48)
    assert p["f_out_mhz"] == 48.0
    assert 12 * (p["DIVF"] + 1) / ((p["DIVR"] + 1) * 2 ** p["DIVQ"]) == 48.0
    assert 533 <= 12 / (p["DIVR"] + 1) * (p["DIVF"] + 1) <= 1066
    with pytest.raises(ValueError, match="not reachable"):
        ice40_pll_params(12, 400)


def test_ecp5_pll():
    for f_out in (312.5, 156.25, 200.0, 125.0):
        p = ecp5_pll_params(100, f_out)
        assert abs(p["f_out_mhz"] - f_out) < 1e-9
        assert p["f_out_mhz"] == 100 / p["CLKI_DIV"] * p["CLKFB_DIV"]
        assert 400 <= p["f_out_mhz"] * p["CLKOP_DIV"] <= 800
    with pytest.raises(ValueError, match="not reachable"):
        ecp5_pll_params(100, 1000.0)


def test_pin_maps_complete():
    for board in BOARDS.values():
        alice = {r for r, *_ in board.pins["alice"]}
        bob = {r for r, *_ in board.pins["bob"]}
        assert alice == {"qkd_laser", "qkd_im", "qkd_sync_out", "qkd_qrng_data", "qkd_qrng_strobe"}
        assert bob == {"qkd_det", "qkd_sync_in"}
        assert alice | bob <= set(PIN_ROLES)
        for role in ("alice", "bob"):           # no PMOD pin used twice
            used = [(pmod, pin) for _, pmod, pins, _ in board.pins[role] for pin in pins.split()]
            assert len(used) == len(set(used))
    with pytest.raises(ValueError, match="must be one of"):
        get_board("de0")


def test_qrng_serial_input():
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2, 200).tolist()
    dut = QRNGSerialInput(32)
    got = []

    async def bench(ctx):
        ready_plan = rng.random(4000) < 0.05
        t = 0
        for b in bits:
            for strobe in (0, 0, 1, 1):                 # one bit per 4 clocks
                ctx.set(dut.data, b)
                ctx.set(dut.strobe, strobe)
                ctx.set(dut.words.ready, int(ready_plan[t]))
                if ctx.get(dut.words.valid) and ready_plan[t]:
                    got.append(ctx.get(dut.words.payload))
                t += 1
                await ctx.tick()
        dropped = ctx.get(dut.dropped_bits)
        # every bit is either in a taken word, in the pending word/shift register, or dropped
        pending = 32 if ctx.get(dut.words.valid) else None
        assert dropped + 32 * len(got) <= len(bits)
        assert dropped > 0 and got
        return pending

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    # words are the bit stream, LSB first, with dropped bits skipped: each word is a contiguous
    # run of the input (synchroniser delay does not reorder)
    stream = "".join(str(b) for b in bits)
    for w in got:
        chunk = "".join(str((w >> i) & 1) for i in range(32))
        assert chunk in stream


def test_cli_arguments():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_parser(sub)
    args = parser.parse_args(["build", "--board", "icebreaker", "--role", "bob", "--out", "x", "--baud", "115200"])
    assert (args.board, args.role, args.baud, args.samples_per_clock) == ("icebreaker", "bob", 115200, None)
    with pytest.raises(SystemExit):
        parser.parse_args(["build", "--board", "nope", "--role", "bob", "--out", "x"])
    with pytest.raises(SystemExit):
        parser.parse_args(["build", "--board", "icebreaker", "--role", "bob", "--out", "x", "--baud", "-1"])


def test_report_parsing(tmp_path):
    from qkdlink.boards.build import _domain_of, parse_log_utilisation, parse_nextpnr_report
    import json
    rep = {"fmax": {"$glbnet$clk": {"achieved": 150.5, "constraint": 156.25}},
           "utilization": {"TRELLIS_COMB": {"used": 900, "available": 83640},
                           "TRELLIS_FF": {"used": 700, "available": 83640},
                           "DP16KD": {"used": 4, "available": 208}, "TRELLIS_IO": {"used": 12, "available": 365}}}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(rep))
    got = parse_nextpnr_report(path, "ecp5")
    assert got["clocks"]["$glbnet$clk"] == {"achieved_mhz": 150.5, "constraint_mhz": 156.25, "met": False}
    assert got["resources"] == {"LUT": {"used": 900, "available": 83640}, "FF": {"used": 700, "available": 83640},
                                "BRAM": {"used": 4, "available": 208}, "IO": {"used": 12, "available": 365}}
    assert _domain_of("$glbnet$clk") == "sync" and _domain_of("clocking.eclk_clk") == "eclk"
    log = ("Info: Device utilisation:\nInfo: \t         ICESTORM_LC:   10215/   5280   193%\n"
           "Info: \t        ICESTORM_RAM:      15/     30    50%\n\nInfo: Placed 3 cells\n")
    assert parse_log_utilisation(log) == {"ICESTORM_LC": {"used": 10215, "available": 5280},
                                          "ICESTORM_RAM": {"used": 15, "available": 30}}
    assert parse_log_utilisation("no block") == {}


def test_yosys_cell_counts():
    """The design-wide counts of the last stat block; iCE40 LUT4 and FF from them."""
    from qkdlink.boards.build import ice40_netlist_resources, parse_yosys_cell_counts
    stat = ("2.50. Printing statistics.\n\n=== top ===\n\n        +----------Local Count, excluding submodules.\n"
            "        | \n       12 cells\n     7 SB_LUT4\n     2   SB_DFFESR\n\n=== design hierarchy ===\n\n"
            "        +----------Count including submodules.\n        | \n       1 top\n\n"
            "        +----------Count including submodules.\n        | \n       40 cells\n"
            "      955   SB_CARRY\n       11   SB_DFF\n     1695   SB_DFFESR\n      923   SB_DFFSR\n"
            "     3979   SB_LUT4\n\n2.51. Executing CHECK pass\n     99 SB_LUT4\n")
    counts = parse_yosys_cell_counts("1.1 Printing statistics.\n    5 SB_LUT4\n" + stat)
    assert counts["SB_LUT4"] == 3979 and counts["SB_CARRY"] == 955
    assert ice40_netlist_resources(counts, 5280) == {"LUT4": {"used": 3979, "available": 5280},
                                                     "FF": {"used": 2629, "available": 5280}}
    assert parse_yosys_cell_counts("no statistics here") == {}


@pytest.mark.parametrize("argv,match", [
    (["--board", "icebreaker", "--role", "alice", "--entropy", "qrng", "--samples-per-clock", "4"],
     "samples_per_clock = 4"),
    (["--board", "icebreaker", "--role", "alice"], "--entropy qrng"),       # no room for the PRNG
    (["--board", "icebreaker", "--role", "bob", "--baud", "20000000"], "clocks per bit"),
    (["--board", "ecpix5-85", "--role", "bob", "--clock-mhz", "900"], "not reachable"),
    (["--board", "ecpix5-85", "--role", "alice", "--slots-per-clock", "3"], "slots_per_clock"),
])
def test_cli_rejects_bad_parameters_before_tools(argv, match, tmp_path, capsys):
    import gc
    import warnings
    from amaranth.hdl import UnusedElaboratable
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_parser(sub)
    args = parser.parse_args(["build", "--out", str(tmp_path)] + argv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)      # the endpoint never elaborated
        assert args.func(args) == 2
        gc.collect()
    assert match in capsys.readouterr().err
    assert not (tmp_path / "build").exists()
