"""Block RAM whose read-during-write collision is undefined, and simulation that proves it unused.

A simple dual-port block RAM written and read at the same address in the same clock returns
an undefined word on the iCE40 (``SB_RAM40_4K``; Yosys' ``ice40/brams.txt`` declares no
read-during-write behaviour). Amaranth's synchronous read port promises the old word
(``transparent_for=()``), so Yosys emulates that with a delayed write, a bypass register and
a multiplexer per data bit: on the iCEBreaker receiver that emulation cost about 650
flip-flops and 275 LUTs for ten memories, more than the device had left.

None of our memories needs the word read in a colliding clock (each user's docstring says
why: FIFO pointers that never meet while a read is taken, pipelines that revisit a word only
after its write, ports that are idle or refreshed before their data is used). So
:func:`read_port` declares the collision undefined: a combinational read port and a
reset-less output register, which Yosys merges into one synchronous block RAM port, and the
memory attribute ``no_rw_check`` (:data:`NO_RW_CHECK`) that tells it the colliding word is a
don't-care; no emulation logic is generated.

**Simulation proves the claim.** Without a platform (Amaranth simulation and the Verilog the
co-simulation builds) a read in the clock of a write to the same address returns the bitwise
complement of the old word instead (the *poison*), so any use of such a word makes the
gateware disagree with its reference model; every bit-exact test then shows the collision is
harmless. With a platform (a bitstream build, or :data:`FOR_SYNTHESIS` for the Verilog that
``qkdlink verilog`` writes for other tools) the port is a plain block RAM read.
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Shape, Signal
from amaranth.lib.memory import Memory

__all__ = ["NO_RW_CHECK", "FOR_SYNTHESIS", "bram", "read_port", "ReadPort"]

#: Memory attributes that make Yosys treat a read-during-write collision as a don't-care.
NO_RW_CHECK = {"no_rw_check": 1}


class _ForSynthesis:
    """The ``platform`` to elaborate with for Verilog that another tool synthesises (no
    simulation poison); the blocks need nothing else from a platform."""

    def __repr__(self):
        return "FOR_SYNTHESIS"


#: Elaborate with this platform to get the synthesis netlist without a board platform.
FOR_SYNTHESIS = _ForSynthesis()


def bram(shape, depth: int, init=()) -> Memory:
    """A :class:`Memory` for :func:`read_port` (``no_rw_check`` set)."""
    return Memory(shape=shape, depth=depth, init=list(init), attrs=NO_RW_CHECK)


class ReadPort:
    """The registered read port of :func:`read_port`: ``addr`` and ``en`` in clock ``c``,
    ``data`` = the word in clock ``c + 1``, held while ``en`` is low (``en`` is 1 unless
    driven)."""

    def __init__(self, memory: Memory, name: str):
        self.addr = Signal(range(memory.depth), name=f"{name}_addr")
        self.en = Signal(init=1, name=f"{name}_en")
        self.data = Signal(Shape.cast(memory.shape).width, name=f"{name}_data", reset_less=True)


def read_port(m: Module, memory: Memory, write_port, *, platform, name: str) -> ReadPort:
    """A synchronous read port of ``memory`` (made by :func:`bram`) whose word is undefined
    when ``write_port`` writes its address in the same clock; poisoned in simulation
    (``platform is None``), see the module docstring."""
    if memory.attrs.get("no_rw_check") != 1:
        raise ValueError(f"{name}: memory must be made with bram() (attribute no_rw_check)")
    port = ReadPort(memory, name)
    comb = memory.read_port(domain="comb")
    m.d.comb += comb.addr.eq(port.addr)
    word = comb.data
    if platform is None:
        collide = Signal(name=f"{name}_collision")
        m.d.comb += collide.eq(port.en & write_port.en.any() & (write_port.addr == port.addr))
        word = Mux(collide, ~comb.data, comb.data)
    with m.If(port.en):
        m.d.sync += port.data.eq(word)
    return port
