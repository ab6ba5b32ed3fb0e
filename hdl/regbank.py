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
* ``busy`` (slave to master, combinational): a command is still being carried out (a
  :class:`~qkdlink.hdl.counter_ram.CounterRam` snapshot or clear sweep, also the one after
  reset). A master issues ``w_en`` only while ``busy`` is low (the counter RAM ignores
  commands during a sweep), and one that answers a write (the host link's REG_WRITE
  acknowledgement) waits until ``busy`` is low again, so a host that reads after the
  acknowledgement sees the finished command. Reads may be issued at any time.

RAM-backed registers (``ram_registers``): RO registers whose value is a slice of a word of an
external synchronous RAM read port (a counter RAM's shadows). The bank drives ``ram_addr``
with the word of the addressed register and ``ram_en`` with ``r_en`` in the request cycle;
the RAM's registered output ``ram_data`` (held while ``ram_en`` is low) is sliced and
returned in the next cycle, as any register read.

Live registers (``live_registers``, ``read_latency=2`` only): RO registers read from an
external reader with a two-clock read, such as :class:`~qkdlink.hdl.live_counters.LiveCounters`
(the host link's counters). The bank drives ``live_en`` with ``r_en`` and ``live_addr`` with
the register's index in the request cycle (unregistered), and returns ``live_data`` two
cycles later; the reader's value is the one a flip-flop register would give when sampled.

``read_latency=2``: read data and read ``err`` come two cycles after ``r_en`` instead of one
(the address decode, a dense register index and flags, and the RAM word address are
registered in the request cycle); writes are unchanged. The host link is built with the same
``read_latency``. The endpoints use 2: the cycle before the read data is then only a
multiplexer on the index.
"""
from amaranth.hdl import Array, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from qkdlink.gateware.regmap import ACCESS_RO, ACCESS_RW, ACCESS_STROBE, RegisterMap

__all__ = ["RegisterBusSignature", "RegisterBank"]


def _distinguishing_low_bits(addrs) -> int:
    """The fewest low address bits that tell ``addrs`` apart."""
    addrs = list(addrs)
    return next(b for b in range(17) if len({a & ((1 << b) - 1) for a in addrs}) == len(addrs))


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
            "busy": In(1),
        })

    def __eq__(self, other):
        return type(other) is type(self)

    def __hash__(self):
        return hash(type(self))


class RegisterBank(wiring.Component):
    """The registers of ``regmap`` behind a :class:`RegisterBusSignature` slave port.

    One port per register, named ``register.name.lower()``: RW -> ``Out(width)`` holding the
    value (init = reset value), RO -> ``In(width)``, STROBE -> ``Out(width)`` one-cycle pulses;
    none for RAM-backed registers. ``busy`` (In) is passed to the bus.

    ``ram_registers``: ``{name: (word, lsb)}`` of RO registers read from bits
    ``lsb .. lsb + width - 1`` of word ``word`` of a RAM with ``ram_depth`` words of
    ``ram_width`` bits; then the bank has ports ``ram_en``, ``ram_addr`` (Out) and ``ram_data``
    (In) for the RAM's read port (address in the request cycle, data in the next).

    ``live_registers``: ``{name: index}`` of RO registers read through ports ``live_en``,
    ``live_addr`` (Out, request cycle) and ``live_data`` (In, two cycles later); needs
    ``read_latency=2``.
    """

    def __init__(self, regmap: RegisterMap, ram_registers: dict | None = None, ram_depth: int = 0,
                 ram_width: int = 32, read_latency: int = 1, live_registers: dict | None = None):
        if read_latency not in (1, 2):
            raise ValueError(f"read_latency = {read_latency!r} must be 1 or 2")
        self.live_registers = dict(live_registers or {})
        if self.live_registers and read_latency != 2:
            raise ValueError("live registers need read_latency = 2")
        self.read_latency = read_latency
        self.regmap = regmap
        self.ram_registers = dict(ram_registers or {})
        members = {"bus": In(RegisterBusSignature()), "busy": In(1)}
        if self.ram_registers:
            if ram_depth < 1 or ram_width < 1:
                raise ValueError(f"ram_depth = {ram_depth} and ram_width = {ram_width} must be >= 1 "
                                 "with RAM-backed registers")
            members.update({"ram_en": Out(1), "ram_addr": Out(range(ram_depth)), "ram_data": In(ram_width)})
        for name, (word, lsb) in self.ram_registers.items():
            if name not in regmap:
                raise ValueError(f"RAM-backed register {name!r} is not in register map {regmap.name}")
            reg = regmap[name]
            if reg.access != ACCESS_RO:
                raise ValueError(f"RAM-backed register {name}: access {reg.access!r}, must be {ACCESS_RO!r}")
            if not 0 <= word < ram_depth or lsb < 0 or lsb + reg.width > ram_width:
                raise ValueError(f"RAM-backed register {name}: word {word}, bits {lsb}..{lsb + reg.width - 1} "
                                 f"outside the RAM ({ram_depth} x {ram_width} bits)")
        for name, index in self.live_registers.items():
            if name not in regmap or regmap[name].access != ACCESS_RO or name in self.ram_registers:
                raise ValueError(f"live register {name!r}: must be an RO register of {regmap.name} "
                                 "that is not RAM-backed")
            if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                raise ValueError(f"live register {name}: index {index!r} must be an integer >= 0")
        if self.live_registers:
            depth = max(self.live_registers.values()) + 1
            members.update({"live_en": Out(1), "live_addr": Out(range(depth)), "live_data": In(32)})
        self.ram_depth, self.ram_width = ram_depth, ram_width
        for reg in regmap:
            pname = reg.name.lower()
            if pname in members or pname.startswith("_") or hasattr(wiring.Component, pname):
                raise ValueError(f"register {reg.name}: port name {pname!r} clashes with the component")
            if reg.name in self.ram_registers or reg.name in self.live_registers:
                continue
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
        if reg.name in self.ram_registers or reg.name in self.live_registers:
            raise KeyError(f"register {reg.name} is RAM-backed or live and has no port")
        return getattr(self, reg.name.lower())

    def elaborate(self, platform):
        m = Module()
        bus = self.bus

        for reg in self.regmap:
            if reg.access == ACCESS_STROBE:
                m.d.sync += self.port(reg.name).eq(0)   # default: no pulse

        err = Signal()
        r_data = Signal(32)
        m.d.comb += [bus.err.eq(err), bus.busy.eq(self.busy)]
        m.d.sync += err.eq(0)

        # RAM-backed registers: word address in the request cycle, slice in the response.
        slices = sorted({(lsb, self.regmap[n].width) for n, (_, lsb) in self.ram_registers.items()})
        from_ram = Signal()
        ram_sel = Signal(range(max(1, len(slices))))
        # read_latency 2: the read decode (below) and the RAM word address are registered in
        # the request cycle.
        if self.read_latency == 2:
            r_en_eff = Signal()
            m.d.sync += r_en_eff.eq(bus.r_en)
        else:
            r_en_eff = bus.r_en
        if self.ram_registers:
            ram_value = Signal(32)
            word = Signal.like(self.ram_addr)
            # The word address matters only for RAM-backed registers: decode just enough low
            # address bits to tell those apart (a short path to the RAM's address input).
            low = _distinguishing_low_bits(self.regmap[name].addr for name in self.ram_registers)
            with m.Switch(bus.addr[:low]):
                for name, (w, _) in self.ram_registers.items():
                    with m.Case(self.regmap[name].addr & ((1 << low) - 1)):
                        m.d.comb += word.eq(w)
            if self.read_latency == 2:
                m.d.sync += [self.ram_en.eq(bus.r_en), self.ram_addr.eq(word)]
            else:
                m.d.comb += [self.ram_en.eq(bus.r_en), self.ram_addr.eq(word)]
            with m.Switch(ram_sel):
                for j, (lsb, width) in enumerate(slices):
                    with m.Case(j):
                        m.d.comb += ram_value.eq(self.ram_data[lsb:lsb + width])
        else:
            ram_value = None
        # Live registers: index in the request cycle, the reader's data two cycles later.
        from_live = Signal()
        if self.live_registers:
            low = _distinguishing_low_bits(self.regmap[name].addr for name in self.live_registers)
            m.d.comb += self.live_en.eq(bus.r_en)
            with m.Switch(bus.addr[:low]):
                for name, index in self.live_registers.items():
                    with m.Case(self.regmap[name].addr & ((1 << low) - 1)):
                        m.d.comb += self.live_addr.eq(index)
        out = r_data
        if self.live_registers:
            out = Mux(from_live, self.live_data, out)
        if ram_value is not None:
            out = Mux(from_ram, ram_value, out)
        m.d.comb += bus.r_data.eq(out)

        # Read decode: the address becomes a dense index into the port-read registers (the
        # last index reads 0: STROBE registers and unmapped addresses) and flags. With
        # read_latency 2 the decode is registered in the request cycle, so the next cycle is
        # only a multiplexer on the index (the UP5K's critical path was the 16-bit compares
        # folded into the read data's clock enable).
        plain = [reg for reg in self.regmap if reg.name not in self.ram_registers
                 and reg.name not in self.live_registers and reg.access != ACCESS_STROBE]
        d_sel = Signal(range(len(plain) + 1), init=len(plain))
        d_ram, d_live, d_err = Signal(), Signal(), Signal()
        d_ram_sel = Signal.like(ram_sel)
        with m.Switch(bus.addr):
            for reg in self.regmap:
                with m.Case(reg.addr):
                    if reg.name in self.ram_registers:
                        lsb = self.ram_registers[reg.name][1]
                        m.d.comb += [d_ram.eq(1), d_ram_sel.eq(slices.index((lsb, reg.width)))]
                    elif reg.name in self.live_registers:
                        m.d.comb += d_live.eq(1)
                    elif reg.access != ACCESS_STROBE:
                        m.d.comb += d_sel.eq(plain.index(reg))
            with m.Default():
                m.d.comb += d_err.eq(1)
        if self.read_latency == 2:
            q_sel, q_ram, q_live, q_err = (Signal.like(d_sel), Signal(), Signal(), Signal())
            q_ram_sel = Signal.like(ram_sel)
            m.d.sync += [q_sel.eq(d_sel), q_ram.eq(d_ram), q_ram_sel.eq(d_ram_sel), q_live.eq(d_live),
                         q_err.eq(d_err)]
        else:
            q_sel, q_ram, q_ram_sel, q_live, q_err = d_sel, d_ram, d_ram_sel, d_live, d_err
        values = [self.port(reg.name) for reg in plain] + [0]
        with m.If(r_en_eff):
            m.d.sync += [from_ram.eq(q_ram), from_live.eq(q_live), err.eq(q_err)]
            with m.If(q_ram):
                m.d.sync += ram_sel.eq(q_ram_sel)
            with m.Elif(~q_live):
                m.d.sync += r_data.eq(Array(values)[q_sel])

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
