"""Fine-time histogram: per channel, live edges counted by fine time within the slot.

See ``docs/receiver.md`` ("Fine-time histogram"). Fed by the :class:`TimeTagger` outputs
``live`` and ``fine``; ``bins`` is ``K`` samples per slot. ``counts[c][b]`` counts the clocks
with ``live[c]`` and ``fine[c] == b`` (``fine >= bins`` is not counted), wrapping at 2^32.
``clear`` zeroes every bin and has priority: an edge presented with ``clear`` is not counted.
The counters are registers: an input is counted ``LATENCY = 1`` clock later.
"""
import numpy as np
from amaranth.hdl import Module
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["FineTimeHistogram", "histogram_model", "COUNT_BITS"]

COUNT_BITS = 32      # width of a bin counter


def _check(channels, bins):
    for name, v, hi in (("channels", channels, None), ("bins", bins, 8)):
        if isinstance(v, bool) or int(v) != v or v < 1 or (hi is not None and v > hi):
            raise ValueError(f"{name} must be an integer in [1, {hi or 'inf'}], not {v!r}")


class FineTimeHistogram(wiring.Component):
    """``channels`` x ``bins`` 32-bit counters of live edges by fine time.

    Ports
    -----
    live : In(channels)
        Bit ``c``: channel ``c`` has a live edge this clock.
    fine : In(ArrayLayout(unsigned(3), channels))
        Its fine time within the slot, samples.
    clear : In(1)
        Zero all bins (takes priority over counting).
    counts : Out(ArrayLayout(ArrayLayout(unsigned(32), bins), channels))
        ``counts[c][b]``: live edges of channel ``c`` with ``fine == b`` since reset or clear.
    """

    LATENCY = 1

    def __init__(self, channels: int, bins: int):
        _check(channels, bins)
        self.channels = int(channels)
        self.bins = int(bins)
        super().__init__({
            "live": In(self.channels),
            "fine": In(data.ArrayLayout(3, self.channels)),
            "clear": In(1),
            "counts": Out(data.ArrayLayout(data.ArrayLayout(COUNT_BITS, self.bins),
                                           self.channels)),
        })

    def elaborate(self, platform):
        m = Module()
        for c in range(self.channels):
            for b in range(self.bins):
                count = self.counts[c][b]
                with m.If(self.clear):
                    m.d.sync += count.eq(0)
                with m.Elif(self.live[c] & (self.fine[c] == b)):
                    m.d.sync += count.eq(count + 1)
        return m


def histogram_model(live, fine, bins: int, clear=None) -> np.ndarray:
    """Model of :class:`FineTimeHistogram` after ``n`` clocks from reset.

    ``live``: (n, channels) bool; ``fine``: (n, channels) int; ``clear``: optional (n,) bool.
    Returns the counts (channels, bins) uint32 after the last clock: live edges with
    ``fine == b`` after the last clear, modulo 2^32.
    """
    lv = np.asarray(live, dtype=bool)
    fn = np.asarray(fine, dtype=np.int64)
    if lv.ndim != 2 or fn.shape != lv.shape:
        raise ValueError(f"live and fine must both be (n, channels), got {lv.shape}, {fn.shape}")
    _check(lv.shape[1], bins)
    if clear is not None:
        cl = np.asarray(clear, dtype=bool)
        if cl.shape != lv.shape[:1]:
            raise ValueError(f"clear must have shape ({lv.shape[0]},), got {cl.shape}")
        hit = np.flatnonzero(cl)
        if hit.size:
            lv, fn = lv[hit[-1] + 1:], fn[hit[-1] + 1:]
    channels = lv.shape[1]
    ok = lv & (fn >= 0) & (fn < bins)
    chan = np.broadcast_to(np.arange(channels), lv.shape)[ok]
    counts = np.bincount(chan * bins + fn[ok], minlength=channels * bins)
    return (counts % (1 << COUNT_BITS)).astype(np.uint32).reshape(channels, bins)
