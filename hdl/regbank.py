"""Register bank generated from a :class:`~qkdlink.gateware.regmap.RegisterMap`.

Bus protocol (:class:`RegisterBusSignature`, master's view): a request is one cycle with
``w_en`` or ``r_en`` high and ``addr`` (and ``w_data``) valid; ``r_data`` and ``err`` are
valid in the following cycle (registered). Either request may be issued every cycle.

* read: ``r_data`` = the register value, zero-extended to 32 bits; RW registers read their
  held value, RO registers their input port sampled in the request cycle, STROBE registers 0
  (no error). An unmapped address sets ``err`` and reads 0.
* write: RW registers take ``w_data[:width]`` (upper bits ignored); STROBE registers pulse
  ``w_data[:width]`` on their port for exactly the cycle after the request. A write to an RO
  register or an unmapped address sets ``err`` and changes nothing.
* ``err`` is low in a cycle that follows no request. ``r_data`` keeps its value until the
  next read. A cycle with both ``w_en`` and ``r_en`` performs both (the read sees the old
  value) and ``err`` is the OR of both errors; the host link never does that.
"""
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from qkdlink.gateware.regmap import ACCESS_RO, ACCESS_RW, ACCESS_STROBE, RegisterMap

__all__ = ["RegisterBusSignature", "RegisterBank"]


class RegisterBusSignature(wiring.Signature):
    """Single-cycle request, next-cycle response register bus (master's view)."""

    def __init__(self):
        super().__init__({
            "addr": Out(16),
            "w_en": Out(1),
            "w_data": Out(32),
            "r_en": Out(1),
            "r_data": In(32),
            "err": In(1),
        })

    def __eq__(self, other):
        return type(other) is type(self)

    def __hash__(self):
        return hash(type(self))


class RegisterBank(wiring.Component):
    """The registers of ``regmap`` behind a :class:`RegisterBusSignature` slave port.

    One port per register, named ``register.name.lower()``: RW -> ``Out(width)`` holding the
    value (init = reset value), RO -> ``In(width)``, STROBE -> ``Out(width)`` one-cycle pulses.
    """

    def __init__(self, regmap: RegisterMap):
        self.regmap = regmap
        members = {"bus": In(RegisterBusSignature())}
        for reg in regmap:
            pname = reg.name.lower()
            if pname in members or pname.startswith("_") or hasattr(wiring.Component, pname):
                raise ValueError(f"register {reg.name}: port name {pname!r} clashes with the component")
            if reg.access == ACCESS_RO:
                members[pname] = In(reg.width)
            elif reg.access == ACCESS_RW:
                members[pname] = Out(reg.width, init=reg.reset)
            else:
                members[pname] = Out(reg.width)
        super().__init__(members)

    def port(self, name: str):
        """The port of register ``name`` (any case)."""
        reg = self.regmap[name.upper()]
        return getattr(self, reg.name.lower())

    def elaborate(self, platform):
        m = Module()
        bus = self.bus

        for reg in self.regmap:
            if reg.access == ACCESS_STROBE:
                m.d.sync += self.port(reg.name).eq(0)   # default: no pulse

        err = Signal()
        r_data = Signal(32)
        m.d.comb += [bus.err.eq(err), bus.r_data.eq(r_data)]
        m.d.sync += err.eq(0)

        with m.If(bus.r_en):
            with m.Switch(bus.addr):
                for reg in self.regmap:
                    with m.Case(reg.addr):
                        if reg.access == ACCESS_STROBE:
                            m.d.sync += r_data.eq(0)
                        else:
                            m.d.sync += r_data.eq(self.port(reg.name))
                with m.Default():
                    m.d.sync += [r_data.eq(0), err.eq(1)]

        with m.If(bus.w_en):
            with m.Switch(bus.addr):
                for reg in self.regmap:
                    with m.Case(reg.addr):
                        if reg.access == ACCESS_RO:
                            m.d.sync += err.eq(1)
                        else:
                            m.d.sync += self.port(reg.name).eq(bus.w_data[:reg.width])
                with m.Default():
                    m.d.sync += err.eq(1)

        return m
