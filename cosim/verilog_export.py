"""``qkdlink verilog``: write an endpoint's Verilog, with the lint waivers and their reasons.

The Verilog comes from Amaranth's Yosys back end. It is linted with Verilator ``-Wall``;
the only warnings waived are listed in :data:`LINT_WAIVERS` with the reason each is harmless
for Amaranth-generated code, and written next to the Verilog as ``LINT_WAIVERS.md``.
"""
from __future__ import annotations

from pathlib import Path

from .toolchain import verilator_lint

__all__ = ["LINT_WAIVERS", "export_verilog", "endpoint_verilog"]

LINT_WAIVERS = {
    "UNUSEDSIGNAL": "Yosys keeps intermediate wires and carry-out bits that nothing reads "
                    "(e.g. the top bit of a counter's adder, unused bits of an entropy word).",
    "PROCASSINIT": "Amaranth gives every register an initial value in its declaration and also "
                   "assigns it in the reset branch of its always block; both agree by construction.",
    "WIDTHEXPAND": "Yosys writes comparisons and shifts with operands of their natural widths "
                   "(e.g. a 10-bit counter == a 16-bit register); Verilog's context-determined "
                   "sizing zero-extends them exactly as Amaranth's semantics require.",
    "WIDTHTRUNC": "Yosys writes a reduction 'x == 0' as the logical '!x' on a multi-bit x, which "
                  "Verilator reports as truncation; '!x' is exactly the intended 1-bit result.",
    "CASEINCOMPLETE": "Yosys emits address decoders as casez without a default item after a default "
                      "assignment at the top of the same always block, so uncovered values keep that "
                      "assignment: no latch and no X.",
    "DECLFILENAME": "Amaranth writes the whole hierarchy (alice, alice.choices, ...) into one file.",
}


def endpoint_verilog(role: str, cfg) -> tuple[str, str]:
    """(module name, Verilog text) of an endpoint built from a link config."""
    from amaranth.back import verilog
    from ..gateware.alice import Alice, AliceParams
    from ..gateware.bob import Bob, BobParams
    from ..gateware.link import Link
    from ..hdl.bram import FOR_SYNTHESIS
    tops = {
        "alice": lambda: Alice(AliceParams.from_config(cfg.gateware)),
        "bob": lambda: Bob(BobParams.from_config(cfg.gateware)),
        "link": lambda: Link(AliceParams.from_config(cfg.gateware), BobParams.from_config(cfg.gateware)),
    }
    if role in tops:
        # the synthesis netlist: block RAM read-during-write collisions undefined (hdl/bram.py)
        return role, verilog.convert(tops[role](), name=role, platform=FOR_SYNTHESIS)
    raise ValueError(f"role {role!r}: must be one of 'alice', 'bob', 'link'")


def export_verilog(role: str, cfg, out: Path, *, lint: bool = True):
    """Write ``<role>.v`` and ``LINT_WAIVERS.md`` into ``out``; lint unless told not to."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    name, text = endpoint_verilog(role, cfg)
    vfile = out / f"{name}.v"
    vfile.write_text(text)
    wfile = out / "LINT_WAIVERS.md"
    wfile.write_text("# Verilator -Wall warnings waived for this Verilog\n\n"
                     + "".join(f"- `{w}`: {why}\n" for w, why in LINT_WAIVERS.items()))
    report = None
    if lint:
        report = verilator_lint({vfile.name: text}, name, LINT_WAIVERS, out / "lint")
    return [vfile, wfile], report
