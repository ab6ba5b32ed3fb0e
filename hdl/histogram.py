"""Fine-time histogram: per channel, live edges counted by fine time within the slot.

See ``docs/receiver.md`` ("Fine-time histogram"). :class:`FineTimeBins` turns the
:class:`TimeTagger` outputs ``live`` and ``fine`` into one hit per channel and bin and clock
(combinational); the bins are counted by the endpoint's
:class:`~qkdlink.hdl.counter_ram.CounterRam` (block RAM, one word per bin, cleared by its
own clear group, read as snapshot values), which is far cheaper than ``channels x bins``
32-bit counter registers and their read multiplexer. ``counts[c][b]`` counts the clocks with
``live[c]`` and ``fine[c] == b`` (``fine >= bins`` is not counted), wrapping at 2^32 (the low
32 bits of the counter); a clear drops the edges of its own clock (:func:`histogram_model`).
"""
import numpy as np
from amaranth.hdl import Module
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["FineTimeBins", "histogram_model", "COUNT_BITS"]

COUNT_BITS = 32      # width of a bin count as the host reads it


def _check(channels, bins):
    for name, v, hi in (("channels", channels, None), ("bins", bins, 8)):
        if isinstance(v, bool) or int(v) != v or v < 1 or (hi is not None and v > hi):
            raise ValueError(f"{name} must be an integer in [1, {hi or 'inf'}], not {v!r}")


class FineTimeBins(wiring.Component):
    """Hits of ``channels`` x ``bins`` fine-time bins this clock (combinational).

    Ports
    -----
    live : In(channels)
        Bit ``c``: channel ``c`` has a live edge this clock.
    fine : In(ArrayLayout(unsigned(3), channels))
        Its fine time within the slot, samples.
    hits : Out(ArrayLayout(ArrayLayout(unsigned(1), bins), channels))
        ``hits[c][b]``: ``live[c]`` and ``fine[c] == b``; the increments of the bin counters.
    """

    def __init__(self, channels: int, bins: int):
        _check(channels, bins)
        self.channels = int(channels)
        self.bins = int(bins)
        super().__init__({
            "live": In(self.channels),
            "fine": In(data.ArrayLayout(3, self.channels)),
            "hits": Out(data.ArrayLayout(data.ArrayLayout(1, self.bins), self.channels)),
        })

    def elaborate(self, platform):
        m = Module()
        for c in range(self.channels):
            for b in range(self.bins):
                m.d.comb += self.hits[c][b].eq(self.live[c] & (self.fine[c] == b))
        return m


def histogram_model(live, fine, bins: int, clear=None) -> np.ndarray:
    """Model of the bin counts (:class:`FineTimeBins` counted from reset) after ``n`` clocks.

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
