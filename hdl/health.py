"""Continuous entropy health tests (NIST SP 800-90B, section 4.4), gateware and model.

One :class:`HealthTests` instance watches one lane. Its sample is the 8-bit value
``word[24:32]`` of every *available* entropy word (see ``docs/transmitter.md``, "Entropy").

Repetition Count Test (RCT, 90B 4.4.1)
    ``B`` is the length of the current run of identical samples; a sample that differs from
    the previous one (or the first sample after reset/restart) starts a new run with
    ``B = 1``. The test fires once, on the sample where ``B`` becomes equal to
    ``rct_cutoff``; a stuck source therefore fires once per run, not on every sample.

Adaptive Proportion Test (APT, 90B 4.4.2)
    Windows of ``APT_WINDOW = 512`` consecutive samples. The first sample of a window is
    ``A`` and starts the count at 1; every later sample of the window equal to ``A`` adds 1.
    The test fires once, on the sample where the count becomes equal to ``apt_cutoff``;
    the window continues to its end and the next sample starts a new window.

A cutoff of 0 disables its test (the run length and the count are at least 1). Only
*valid* samples advance the tests. ``restart`` puts both tests back into their reset
state *before* the sample of the same clock, so that sample (if valid) is the first of a
new run and of a new window.

Cutoffs (90B, the host computes them, see :func:`rct_cutoff` and :func:`apt_cutoff`), for
an assessed min-entropy ``H`` bits per sample and a false-alarm probability ``alpha``:

* ``C_rct = 1 + ceil(-log2(alpha) / H)``;
* ``C_apt`` = the smallest ``c`` with ``P[Binom(W-1, 2^-H) >= c-1] <= alpha``. This counts
  ``A`` itself plus ``W-1`` trials, which is exact for the test as specified; 90B's
  spreadsheet formula ``1 + CRITBINOM(W, 2^-H, 1-alpha)`` (its Table 2) uses ``W`` trials
  and is 0 or 1 lower.

The defaults ``H = 6`` bits per 8-bit sample and ``alpha = 2^-40`` give ``C_rct = 8`` and
``C_apt = 36``, the reset values of ``HEALTH_RCT_CUTOFF`` / ``HEALTH_APT_CUTOFF`` in
:mod:`qkdlink.gateware.regmap`.

False alarms. For an i.i.d. source whose most likely sample value has probability
``2^-H`` (exactly the assessed min-entropy), the probability that a given sample fires the
RCT is at most ``2^(-H (C_rct - 1))`` and the probability that a given window fires the APT
is at most ``alpha``; see :func:`false_alarm_rate`. With the defaults this is
``2^-42 = 2.3e-13`` (RCT) plus ``1.5e-15`` (APT, per sample) per sample, i.e. about one false
alarm per 73 minutes per lane at 10^9 samples/s, if the source really were at the assessed
``H = 6``. A good 8-bit source (``H = 8``) has ``2^-56 = 1.4e-17`` per sample with the same
cutoffs (about one per 2.3 years at 10^9 samples/s). The sticky alarm is cleared by the host
(CLEAR_ALARM); choose a smaller ``alpha`` if that rate is too high.
"""
# no "from __future__ import annotations": wiring.Component reads the port annotations
import math
import numbers

import numpy as np
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = [
    "APT_WINDOW", "SAMPLE_BITS", "CUTOFF_BITS",
    "HealthTests", "health_model", "rct_cutoff", "apt_cutoff", "false_alarm_rate",
]

APT_WINDOW = 512      # W, samples per APT window (90B, non-binary sources)
SAMPLE_BITS = 8       # sample = word[24:32]
CUTOFF_BITS = 16      # width of the cutoff registers

_RCT_MAX = (1 << CUTOFF_BITS) - 1


# --------------------------------------------------------------------------------------
# Cutoff computation (host side)
# --------------------------------------------------------------------------------------

def _check_real(name, value, lo, hi, lo_open=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise ValueError(f"{name} must be a number in {'(' if lo_open else '['}{lo}, {hi}], "
                         f"got {value!r}")
    if (value <= lo if lo_open else value < lo) or value > hi:
        raise ValueError(f"{name} = {value!r} is outside {'(' if lo_open else '['}{lo}, {hi}]")
    return float(value)


def _check_h_alpha(h_bits, alpha_log2):
    h = _check_real("h_bits", h_bits, 0, SAMPLE_BITS, lo_open=True)
    a = _check_real("alpha_log2", alpha_log2, -64, -20)
    return h, a


def rct_cutoff(h_bits: float, alpha_log2: float = -40) -> int:
    """Repetition Count Test cutoff ``C = 1 + ceil(-alpha_log2 / h_bits)`` (SP 800-90B 4.4.1).

    ``h_bits``: assessed min-entropy per 8-bit sample, in (0, 8]; ``alpha_log2``: log2 of the
    false-alarm probability, in [-64, -20]. Raises ValueError if the cutoff would not fit
    the 16-bit register (``h_bits`` too small).
    """
    h, a = _check_h_alpha(h_bits, alpha_log2)
    # round() guards against float noise such as 40 / (40 / 7) = 7.000000000000001
    c = 1 + math.ceil(round(-a / h, 9))
    if c > _RCT_MAX:
        raise ValueError(f"h_bits = {h_bits!r} is too small: RCT cutoff {c} exceeds the "
                         f"{CUTOFF_BITS}-bit register (max {_RCT_MAX})")
    return c


def apt_cutoff(h_bits: float, alpha_log2: float = -40) -> int:
    """Adaptive Proportion Test cutoff (SP 800-90B 4.4.2, window ``W = 512``).

    The smallest ``c`` with ``P[Binom(W-1, 2^-h_bits) >= c-1] <= 2^alpha_log2``: the first
    sample ``A`` of the window counts 1, each of the ``W-1`` later samples equals ``A`` with
    probability at most ``2^-h_bits``. Returns a value in ``[1, W+1]``; ``W+1`` (the test can
    never fire) only for sources so predictable that even a full window of ``A`` is more
    likely than ``alpha``. Arguments as for :func:`rct_cutoff`.
    """
    from scipy.stats import binom

    h, a = _check_h_alpha(h_bits, alpha_log2)
    cs = np.arange(1, APT_WINDOW + 2)
    tail = binom.sf(cs - 2, APT_WINDOW - 1, 2.0 ** -h)     # P[X >= c-1]
    return int(cs[np.argmax(tail <= 2.0 ** a)])


def false_alarm_rate(h_bits: float = 6.0, rct_cutoff: int = 8, apt_cutoff: int = 36,
                     sample_rate_hz: float = 1.0) -> dict:
    """Upper bounds on the false-alarm probabilities of the two tests.

    Assumes an i.i.d. source whose most likely 8-bit sample has probability ``p = 2^-h_bits``
    (the source is exactly as good as assessed; a better source alarms less often):

    * ``rct_per_sample`` = ``p^(C_rct - 1)``: a sample is the ``C_rct``-th of a run;
    * ``apt_per_window`` = ``P[Binom(W-1, p) >= C_apt - 1]``; ``apt_per_sample`` = that / W;
    * ``per_sample`` = their sum; ``per_second`` = ``per_sample * sample_rate_hz`` (samples
      per second of one lane; multiply by the number of lanes for the whole source);
    * ``mean_seconds_between`` = ``1 / per_second``.

    Cutoffs 0 (test disabled) give 0 for that test.
    """
    from scipy.stats import binom

    h = _check_real("h_bits", h_bits, 0, SAMPLE_BITS, lo_open=True)
    _check_cutoff("rct_cutoff", rct_cutoff)
    _check_cutoff("apt_cutoff", apt_cutoff)
    p = 2.0 ** -h
    rct = 0.0 if rct_cutoff == 0 else p ** (rct_cutoff - 1)
    apt_w = 0.0 if apt_cutoff == 0 else float(binom.sf(apt_cutoff - 2, APT_WINDOW - 1, p))
    per_sample = rct + apt_w / APT_WINDOW
    per_second = per_sample * float(sample_rate_hz)
    return {
        "rct_per_sample": rct,
        "apt_per_window": apt_w,
        "apt_per_sample": apt_w / APT_WINDOW,
        "per_sample": per_sample,
        "per_second": per_second,
        "mean_seconds_between": math.inf if per_second == 0 else 1.0 / per_second,
    }


def _check_cutoff(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or not 0 <= value <= _RCT_MAX:
        raise ValueError(f"{name} must be an integer in [0, {_RCT_MAX}], got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------
# Reference model (vectorised)
# --------------------------------------------------------------------------------------

def health_model(samples, valid, rct_cutoff: int, apt_cutoff: int, *, restart=None):
    """Fire pulses of the RCT and APT for a sequence of clocks, vectorised.

    ``samples``: ``(n, lanes)`` uint8 (a 1-D array is one lane and gives 1-D results);
    ``valid``: ``(n,)`` bool, the clocks whose samples are tested; ``restart``: optional
    ``(n,)`` bool, restart both tests before that clock's sample (as the gateware's
    ``restart`` input). The state starts from reset. Returns ``(rct_fire, apt_fire)``, bool
    arrays shaped like ``samples``; a clock that is not valid never fires.
    """
    rct_c = _check_cutoff("rct_cutoff", rct_cutoff)
    apt_c = _check_cutoff("apt_cutoff", apt_cutoff)
    samples = np.asarray(samples)
    one_d = samples.ndim == 1
    if one_d:
        samples = samples[:, None]
    if samples.ndim != 2:
        raise ValueError(f"samples must have shape (n, lanes), got {samples.shape}")
    if samples.size and (samples.min() < 0 or samples.max() > 255):
        raise ValueError("samples must be 8-bit values")
    samples = samples.astype(np.uint8, copy=False)
    n, lanes = samples.shape
    valid = np.broadcast_to(np.asarray(valid, dtype=bool), (n,))
    rct_fire = np.zeros((n, lanes), dtype=bool)
    apt_fire = np.zeros((n, lanes), dtype=bool)

    idx = np.flatnonzero(valid)
    m = idx.size
    if m:
        s = samples[idx]
        pos = np.arange(m, dtype=np.int64)
        # segments: the valid samples between restarts
        seg_start = np.zeros(m, dtype=bool)
        seg_start[0] = True
        if restart is not None:
            restart = np.broadcast_to(np.asarray(restart, dtype=bool), (n,))
            seg_id = np.cumsum(restart)[idx]
            seg_start[1:] |= seg_id[1:] != seg_id[:-1]
        seg_first = np.maximum.accumulate(np.where(seg_start, pos, 0))

        # RCT: run length since the last change of value or segment start
        new_run = np.empty((m, lanes), dtype=bool)
        new_run[0] = True
        new_run[1:] = s[1:] != s[:-1]
        new_run |= seg_start[:, None]
        run_first = np.maximum.accumulate(np.where(new_run, pos[:, None], 0), axis=0)
        rct_fire[idx] = (pos[:, None] - run_first + 1) == rct_c

        # APT: windows of W samples from each segment start
        win_first = seg_first + ((pos - seg_first) // APT_WINDOW) * APT_WINDOW
        eq = s == s[win_first]
        cum = np.cumsum(eq, axis=0, dtype=np.int64)
        count = cum - cum[win_first] + 1
        apt_fire[idx] = eq & (count == apt_c)

    if one_d:
        return rct_fire[:, 0], apt_fire[:, 0]
    return rct_fire, apt_fire


# --------------------------------------------------------------------------------------
# Gateware
# --------------------------------------------------------------------------------------

class HealthTests(wiring.Component):
    """RCT and APT for one lane (see the module docstring for the exact semantics).

    Ports:

    * ``sample``: the lane's 8-bit sample; ``valid``: this clock's sample is tested;
    * ``rct_cutoff``, ``apt_cutoff``: 16-bit cutoffs (0 disables the test);
    * ``restart``: reset both tests before this clock's sample;
    * ``rct_fire``, ``apt_fire``: the test fires on this clock's sample (combinational from
      the sample and the registered state).

    State: last sample and run length (16 bits, saturating at 0xFFFF, where it no longer
    fires), window position (9 bits, wraps every 512 samples), ``A`` and its count (10 bits).
    """

    sample: In(SAMPLE_BITS)
    valid: In(1)
    rct_cutoff: In(CUTOFF_BITS)
    apt_cutoff: In(CUTOFF_BITS)
    restart: In(1)
    rct_fire: Out(1)
    apt_fire: Out(1)

    def elaborate(self, platform):
        m = Module()

        # registered state
        rct_last = Signal(SAMPLE_BITS)
        rct_len = Signal(CUTOFF_BITS)          # 0 = no sample since reset/restart
        apt_a = Signal(SAMPLE_BITS)
        apt_pos = Signal(range(APT_WINDOW))    # samples already in the current window
        apt_cnt = Signal(range(APT_WINDOW + 1))
        # rct_len + 1 and apt_cnt + 1, kept in registers of their own so that the cutoff
        # compares are plain equalities of registers (no carry chain before the alarm)
        rct_len_p1 = Signal(CUTOFF_BITS + 1, init=1)
        apt_cnt_p1 = Signal(range(APT_WINDOW + 2), init=1)
        rct_len_p2 = Signal.like(rct_len_p1)
        m.d.comb += rct_len_p2.eq(rct_len_p1 + 1)

        # state as seen by this clock's sample (restart acts first)
        len_eff = Signal.like(rct_len)
        pos_eff = Signal.like(apt_pos)
        m.d.comb += [
            len_eff.eq(Mux(self.restart, 0, rct_len)),
            pos_eff.eq(Mux(self.restart, 0, apt_pos)),
        ]

        # RCT
        same = Signal()
        saturated = Signal()
        len_next = Signal.like(rct_len)
        m.d.comb += [
            same.eq((len_eff != 0) & (self.sample == rct_last)),
            saturated.eq(rct_len == _RCT_MAX),
        ]
        # len_next and len_next + 1 are choices among registered values and constants, so no
        # adder follows the sample compare
        len_next_p1 = Signal.like(rct_len_p1)
        with m.If(~same):
            m.d.comb += [len_next.eq(1), len_next_p1.eq(2)]
        with m.Elif(saturated):
            m.d.comb += [len_next.eq(_RCT_MAX), len_next_p1.eq(_RCT_MAX + 1)]
        with m.Else():
            m.d.comb += [len_next.eq(rct_len_p1), len_next_p1.eq(rct_len_p2)]
        # fire = valid & (len_next == cutoff) & ~(same & saturated), arranged so that only the
        # sample compare and a 2:1 choice lie after the sample (the rest is from registers).
        fire_if_same = Signal()
        fire_if_new = Signal()
        m.d.comb += [
            fire_if_same.eq(~saturated & (rct_len_p1 == self.rct_cutoff)),
            fire_if_new.eq(self.rct_cutoff == 1),
            self.rct_fire.eq(self.valid & Mux(same, fire_if_same, fire_if_new)),
        ]

        # APT
        first = Signal()
        hit = Signal()
        cnt_next = Signal.like(apt_cnt)
        m.d.comb += [
            first.eq(pos_eff == 0),
            hit.eq(first | (self.sample == apt_a)),
        ]
        cnt_next_p1 = Signal.like(apt_cnt_p1)
        with m.If(first):
            m.d.comb += [cnt_next.eq(1), cnt_next_p1.eq(2)]
        with m.Elif(self.sample == apt_a):
            m.d.comb += [cnt_next.eq(apt_cnt_p1), cnt_next_p1.eq(apt_cnt_p1 + 1)]
        with m.Else():
            m.d.comb += [cnt_next.eq(apt_cnt), cnt_next_p1.eq(apt_cnt_p1)]
        # fire = valid & hit & (cnt_next == cutoff), with the count compare from registers only
        match = Signal()
        cnt1_eq = Signal()
        m.d.comb += [
            match.eq(self.sample == apt_a),
            cnt1_eq.eq(apt_cnt_p1 == self.apt_cutoff),
            self.apt_fire.eq(self.valid & Mux(first, self.apt_cutoff == 1, match & cnt1_eq)),
        ]

        # state update
        with m.If(self.valid):
            m.d.sync += [
                rct_last.eq(self.sample),
                rct_len.eq(len_next),
                rct_len_p1.eq(len_next_p1),
                apt_pos.eq(pos_eff + 1),       # wraps to 0 after the 512th sample
                apt_cnt.eq(cnt_next),
                apt_cnt_p1.eq(cnt_next_p1),
            ]
            with m.If(first):
                m.d.sync += apt_a.eq(self.sample)
        with m.Elif(self.restart):
            m.d.sync += [rct_len.eq(0), rct_len_p1.eq(1), apt_pos.eq(0)]

        return m
