"""Toeplitz privacy amplification: both engines (native GF(2)[z] additive FFT and numpy
float FFT) bit-exact against the GF(2) matrix product and against each other, linear,
statistically sound, and strict about their inputs. All randomness is seeded."""
import ctypes
import math

import numpy as np
import pytest

from qkdlink.host import privacy as P
from qkdlink.host.privacy import (PrivacyAmplifier, ToeplitzHasher, float_error_bound, native_available,
                                  pack_bits, toeplitz_bits_direct, toeplitz_hash, toeplitz_hash_naive,
                                  unpack_bits)

METHODS = ["native", "fft"]


def _bits(rng, k):
    return rng.integers(0, 2, k, dtype=np.uint8)


def _case(rng, n, m):
    return _bits(rng, n), _bits(rng, n + m - 1)


# ------------------------------------------------------------------ exactness

def test_convention_matches_explicit_matrix():
    """T[i, j] = seed[n - 1 + i - j], built entry by entry."""
    rng = np.random.default_rng(1)
    n, m = 7, 4
    x, s = _case(rng, n, m)
    T = np.array([[s[n - 1 + i - j] for j in range(n)] for i in range(m)], dtype=np.int64)
    assert np.array_equal(toeplitz_hash(x, s, m), (T @ x) % 2)
    assert np.array_equal(toeplitz_hash_naive(x, s, m), (T @ x) % 2)


def test_native_kernel_is_built():
    """g++ is part of the fresh-machine contract: the fast engine must be there, not skipped."""
    assert native_available()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n, m", [(1, 1), (2, 1), (2, 2), (3, 3), (64, 1), (64, 64), (65, 33), (200, 200)])
def test_edge_sizes_equal_naive(n, m, method):
    rng = np.random.default_rng(n * 1000 + m)
    for _ in range(5):
        x, s = _case(rng, n, m)
        assert np.array_equal(toeplitz_hash(x, s, m, method=method), toeplitz_hash_naive(x, s, m))


@pytest.mark.parametrize("method, cases", [("native", 400), ("fft", 100)])
def test_many_random_small_sizes_equal_naive(method, cases):
    rng = np.random.default_rng(2)
    for _ in range(cases):
        n = int(rng.integers(1, 300))
        m = int(rng.integers(1, n + 1))
        x, s = _case(rng, n, m)
        assert np.array_equal(toeplitz_hash(x, s, m, method=method), toeplitz_hash_naive(x, s, m)), (n, m)


@pytest.mark.parametrize("method", METHODS)
def test_all_ones_worst_case_counts(method):
    """All-ones key and seed: largest counts, y[i] = n mod 2 for every i."""
    n, m = 5001, 2500
    y = toeplitz_hash(np.ones(n, np.uint8), np.ones(n + m - 1, np.uint8), m, method=method)
    assert np.all(y == n % 2)


@pytest.mark.parametrize("n, m", [(5000, 2500), (5000, 1), (5000, 5000), (4999, 3001)])
def test_medium_sizes_equal_naive(n, m):
    rng = np.random.default_rng(n + m)
    x, s = _case(rng, n, m)
    want = toeplitz_hash_naive(x, s, m)
    for method in METHODS:
        assert np.array_equal(toeplitz_hash(x, s, m, method=method), want), method


# ------------------------------------------------------------------ native engine

def test_native_many_shapes_and_formats_equal_naive(monkeypatch):
    """Random shapes (m = 1, n = 1, n and m around multiples of 32 and 64), every input and
    output format, one and two threads (threads forced on at every size)."""
    monkeypatch.setattr(P, "_NATIVE_PARALLEL_MIN_K", 0)
    rng = np.random.default_rng(21)
    shapes = [(1, 1), (31, 1), (32, 32), (33, 1), (63, 63), (64, 1), (65, 65), (127, 64), (128, 65),
              (1023, 1), (1024, 1024), (1025, 512), (4097, 1)]
    shapes += [(int(n), int(rng.integers(1, n + 1))) for n in rng.integers(1, 1500, 100)]
    for k, (n, m) in enumerate(shapes):
        x, s = _case(rng, n, m)
        if k % 7 == 0:
            x[:] = 1
            s[:] = 1
        want = toeplitz_hash_naive(x, s, m)
        fmt = k % 4
        if fmt == 0:
            y = toeplitz_hash(x, s, m, method="native", workers=1 + k % 2)
        elif fmt == 1:       # packed in, packed out
            y = unpack_bits(toeplitz_hash(pack_bits(x), pack_bits(s), m, n=n, packed_output=True,
                                          method="native", workers=1 + k % 2), m)
        elif fmt == 2:       # bool key, packed seed
            y = toeplitz_hash(x.astype(bool), pack_bits(s), m, method="native")
        else:                # wider integer dtypes go through the checked conversion
            y = toeplitz_hash(x.astype(np.int64), s.astype(np.uint16), m, method="native")
        assert y.dtype == np.uint8 and y.shape == (m,)
        assert np.array_equal(y, want), (n, m, fmt)


def test_native_packed_output_has_clean_padding():
    """Unused high bits: zero in packed output, ignored in packed input."""
    rng = np.random.default_rng(22)
    x, s = np.ones(300, np.uint8), np.ones(300 + 70 - 1, np.uint8)
    yp = toeplitz_hash(x, s, 70, packed_output=True, method="native")
    assert yp.dtype == np.uint64 and yp.size == 2 and int(yp[1]) >> 6 == 0
    xp, sp = pack_bits(_bits(rng, 300)), pack_bits(_bits(rng, 369))
    xg, sg = xp.copy(), sp.copy()
    xg[-1] |= np.uint64(0xFFFF_FFFF_FFFF_FFFF) << np.uint64(300 % 64)     # bits 300.. of the last word
    sg[-1] |= np.uint64(0xFFFF_FFFF_FFFF_FFFF) << np.uint64(369 % 64)
    assert np.array_equal(toeplitz_hash(xg, sg, 70, n=300, method="native"),
                          toeplitz_hash(xp, sp, 70, n=300, method="native"))


@pytest.mark.parametrize("n, m", [(1_000_003, 100_003), (2_100_001, 70_001)])
def test_native_large_equals_numpy_path(n, m, monkeypatch):
    """Sizes with one and two levels above the cache-sized blocks (2^17, 2^18 chunks):
    native with 1 and 2 threads, the numpy float path and direct row parities agree."""
    monkeypatch.setattr(P, "_NATIVE_PARALLEL_MIN_K", 0)
    assert P._native_lib().tz_plan(n, m) == (17 if n < 2_000_000 else 18)
    rng = np.random.default_rng(n)
    x, s = _case(rng, n, m)
    y = toeplitz_hash(x, s, m, method="native", workers=2)
    assert np.array_equal(y, toeplitz_hash(x, s, m, method="native", workers=1))
    assert np.array_equal(y, toeplitz_hash(x, s, m, method="fft"))
    rows = np.concatenate([[0, m - 1], rng.integers(0, m, 8)])
    assert np.array_equal(toeplitz_bits_direct(x, s, m, rows), y[rows])


def test_native_concurrent_calls_are_exact(monkeypatch):
    """Python threads hashing at once (same and different sizes, thread pool shared or busy)."""
    from concurrent.futures import ThreadPoolExecutor
    monkeypatch.setattr(P, "_NATIVE_PARALLEL_MIN_K", 0)
    rng = np.random.default_rng(25)
    cases = [_case(rng, n, m) + (m,) for n, m in [(20_000, 10_000), (20_000, 10_000), (7_000, 3_000),
                                                     (33_333, 100), (20_000, 10_000), (7_000, 3_000)]]
    want = [toeplitz_hash(x, s, m, method="fft") for x, s, m in cases]
    with ThreadPoolExecutor(4) as ex:
        for _ in range(3):
            got = list(ex.map(lambda c: toeplitz_hash(c[0], c[1], c[2], method="native", workers=2), cases))
            assert all(np.array_equal(g, w) for g, w in zip(got, want))


def _clmul_mod(a, b):
    """Reference GF(2^64) product modulo z^64 + z^4 + z^3 + z + 1 with Python integers."""
    p = 0
    for k in range(64):
        if (b >> k) & 1:
            p ^= a << k
    for k in range(127, 63, -1):
        if (p >> k) & 1:
            p ^= ((1 << 64) | 0x1B) << (k - 64)
    return p


def test_native_field_and_cantor_basis():
    lib = P._native_lib()
    rng = np.random.default_rng(23)
    vals = [0, 1, 2, (1 << 64) - 1, 1 << 63] + [int(v) for v in rng.integers(0, 2**63, 40, dtype=np.uint64) * 2 + 1]
    for a, b in zip(vals, vals[::-1]):
        assert lib.tz_gf_mul(a, b) == _clmul_mod(a, b)
    beta = [lib.tz_cantor(i) for i in range(30)]
    assert beta[0] == 1
    for i in range(1, 30):
        assert _clmul_mod(beta[i], beta[i]) ^ beta[i] == beta[i - 1]


def test_native_portable_build_equals_naive():
    """The kernel built without -march=native (scalar code, software carry-less product: what
    a machine without PCLMULQDQ/AVX-512 runs) gives the same bits. The PCLMULQDQ scalar
    product and the AVX2 byte packing are compiled into the native build and used above."""
    from qkdlink.host.native import load
    lib = load("toeplitz", ("-O1", "-std=c++17", "-fPIC", "-shared"))     # -O1: quick to build
    vp, u64, i = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int
    lib.tz_plan.argtypes, lib.tz_plan.restype = [u64, u64], i
    lib.tz_hash.argtypes, lib.tz_hash.restype = [vp, i, vp, i, u64, u64, vp, vp, vp, i, i], i
    assert lib.tz_vector_path() == 0
    rng = np.random.default_rng(24)
    for n, m in [(1, 1), (77, 77), (1000, 1), (5000, 2500), (40_000, 9_999)]:
        x, s = _case(rng, n, m)
        K = lib.tz_plan(n, m)
        S, W = np.empty(1 << K, np.uint64), np.empty(1 << K, np.uint64)
        out = np.empty(m, np.uint8)
        assert lib.tz_hash(x.ctypes.data, 1, pack_bits(s).ctypes.data, 0, n, m, S.ctypes.data,
                           W.ctypes.data, out.ctypes.data, 1, 2) == 0
        assert np.array_equal(out, toeplitz_hash_naive(x, s, m) if m * n <= 1 << 26 else
                              toeplitz_hash(x, s, m, method="fft")), (n, m)


def test_method_selection(monkeypatch):
    x, s = np.ones(10, np.uint8), np.ones(14, np.uint8)
    with pytest.raises(ValueError, match="method = 'gpu'"):
        toeplitz_hash(x, s, 5, method="gpu")
    with pytest.raises(ValueError, match="method = 'gpu'"):
        PrivacyAmplifier(10, 5, method="gpu")
    monkeypatch.setattr(P, "_native_lib", lambda: None)     # as if the build had failed
    assert P._resolve_method("auto") == "fft"
    assert np.array_equal(toeplitz_hash(x, s, 5), toeplitz_hash_naive(x, s, 5))
    with pytest.raises(RuntimeError, match="not available"):
        toeplitz_hash(x, s, 5, method="native")


@pytest.mark.parametrize("n, m", [(5000, 2500), (5000, 1), (5000, 5000), (3001, 17)])
def test_four_step_engine_equals_naive(n, m):
    """The large-size engine, forced on medium sizes (its panel and row edges included)."""
    rng = np.random.default_rng(7 * n + m)
    x, s = _case(rng, n, m)
    eng = P._FourStep(n, m)
    for workers in (1, 2):
        y, resid = eng.hash(x, eng.seed_spectrum(s, workers), workers)
        assert np.array_equal(y, toeplitz_hash_naive(x, s, m))
        assert resid < 1e-6


def test_large_four_step_against_direct_rows_and_single_fft():
    """n = 3e5 (four-step engine): every bit equals one plain FFT, sampled rows equal popcounts."""
    rng = np.random.default_rng(11)
    n, m = 300_000, 150_000
    x, s = _case(rng, n, m)
    assert isinstance(P._engine(n, m), P._FourStep)
    y = toeplitz_hash(x, s, m)
    d = P._Direct(n, m)
    y_direct, _ = d.hash(x, d.seed_spectrum(s, 1), 1)
    assert np.array_equal(y, y_direct)
    rows = np.concatenate([[0, 1, m - 2, m - 1], rng.integers(0, m, 60)])
    assert np.array_equal(toeplitz_bits_direct(x, s, m, rows), y[rows])


def test_split_into_column_blocks_is_exact():
    """Forcing the block split (used if the error bound were too large) gives the same hash."""
    rng = np.random.default_rng(5)
    for n, m in [(1, 1), (37, 20), (300, 150), (513, 513)]:
        x, s = _case(rng, n, m)
        y = P._hash_exact(x, s, m, workers=1, split_above=-1.0)     # split down to 1-bit blocks
        assert np.array_equal(y, toeplitz_hash_naive(x, s, m))


def test_error_bound_documented_margin():
    assert float_error_bound(10**8, 5 * 10**7) < 1e-4
    assert float_error_bound(10**9, 5 * 10**8) < 1e-3
    # grows with the operands' weights
    assert float_error_bound(1000, 500, 10, 10) < float_error_bound(1000, 500)


def test_residual_guard_raises_instead_of_returning_a_key(monkeypatch):
    rng = np.random.default_rng(6)
    x, s = _case(rng, 100, 50)
    monkeypatch.setattr(P, "_RESIDUAL_LIMIT", -1.0)
    with pytest.raises(FloatingPointError, match="refusing"):
        toeplitz_hash(x, s, 50, method="fft")


@pytest.mark.parametrize("method", METHODS)
def test_zero_key_hashes_to_zero(method):
    assert not toeplitz_hash(np.zeros(100, np.uint8), np.ones(149, np.uint8), 50, method=method).any()


# ------------------------------------------------------------------ algebra

def test_linear_in_key_and_in_seed():
    rng = np.random.default_rng(8)
    for n, m in [(1, 1), (50, 25), (5000, 2500), (200_000, 100_000)]:
        x1, s1 = _case(rng, n, m)
        x2, s2 = _case(rng, n, m)
        h = lambda x, s: toeplitz_hash(x, s, m)  # noqa: E731
        assert np.array_equal(h(x1 ^ x2, s1), h(x1, s1) ^ h(x2, s1))
        assert np.array_equal(h(x1, s1 ^ s2), h(x1, s1) ^ h(x1, s2))


def test_packed_input_and_output():
    rng = np.random.default_rng(9)
    n, m = 1000, 333
    x, s = _case(rng, n, m)
    y = toeplitz_hash(x, s, m)
    yp = toeplitz_hash(pack_bits(x), pack_bits(s), m, n=n, packed_output=True)
    assert yp.dtype == np.uint64 and yp.size == math.ceil(m / 64)
    assert np.array_equal(unpack_bits(yp, m), y)
    assert np.array_equal(unpack_bits(pack_bits(x), n), x)


@pytest.mark.parametrize("method", METHODS)
def test_hasher_with_precomputed_seed_equals_toeplitz_hash(method):
    rng = np.random.default_rng(10)
    for n, m in [(40, 20), (300_000, 150_000)]:
        s = _bits(rng, n + m - 1)
        hasher = ToeplitzHasher(s, n, m, method=method)
        for k in range(2):
            x = _bits(rng, n)
            want = toeplitz_hash(x, s, m, method="fft" if method == "native" else "native")
            assert np.array_equal(hasher(x), want)
            assert np.array_equal(unpack_bits(hasher(pack_bits(x), packed_output=True), m), want)


# ------------------------------------------------------------------ statistics

def _chi2_sf(stat, dof):
    from scipy.stats import chi2
    return chi2.sf(stat, dof)


def _pattern_counts(bits, k=4):
    """Counts of the 2^k non-overlapping k-bit patterns."""
    b = bits[: bits.size // k * k].reshape(-1, k).astype(np.int64)
    idx = b @ (1 << np.arange(k))
    return np.bincount(idx, minlength=1 << k)


def test_outputs_under_two_seeds_are_independent():
    """For a fixed key, T1 x xor T2 x is uniform: balanced bits and 4-bit patterns (chi-square)."""
    rng = np.random.default_rng(12)
    n, m = 4096, 2048
    x = _bits(rng, n)
    xs = np.concatenate([toeplitz_hash(x, _bits(rng, n + m - 1), m) ^ toeplitz_hash(x, _bits(rng, n + m - 1), m)
                         for _ in range(40)])
    ones = int(xs.sum())
    z = (ones - xs.size / 2) / math.sqrt(xs.size / 4)
    assert abs(z) < 5, z
    c = _pattern_counts(xs)
    e = c.sum() / c.size
    assert _chi2_sf(((c - e) ** 2 / e).sum(), c.size - 1) > 1e-6


def test_outputs_for_fixed_seed_over_random_keys_are_balanced():
    rng = np.random.default_rng(13)
    n, m = 4096, 2048
    s = _bits(rng, n + m - 1)
    hasher = ToeplitzHasher(s, n, m)
    ys = np.stack([hasher(_bits(rng, n)) for _ in range(64)])
    c = _pattern_counts(ys.reshape(-1))
    e = c.sum() / c.size
    assert _chi2_sf(((c - e) ** 2 / e).sum(), c.size - 1) > 1e-6
    # every output position is balanced over keys as well (no stuck column)
    col = ys.sum(axis=0)
    assert col.min() > 0 and col.max() < ys.shape[0]


def test_seed_bit_changes_the_output():
    """Flipping one seed bit that T uses changes y for a key with a one in the right place."""
    rng = np.random.default_rng(14)
    n, m = 300, 100
    x, s = _case(rng, n, m)
    x[:] = 0
    x[0] = 1                                   # y[i] = seed[n - 1 + i]
    y = toeplitz_hash(x, s, m)
    assert np.array_equal(y, s[n - 1:])


# ------------------------------------------------------------------ validation

@pytest.mark.parametrize("n, m, seed_len, msg", [
    (10, 5, 13, "n \\+ m - 1 = 14"),
    (10, 5, 15, "n \\+ m - 1 = 14"),
    (10, 11, 20, "must not exceed"),
    (10, 0, 9, "at least 1"),
    (10, -3, 6, "at least 1"),
])
def test_bad_lengths_raise(n, m, seed_len, msg):
    with pytest.raises(ValueError, match=msg):
        toeplitz_hash(np.zeros(n, np.uint8), np.zeros(seed_len, np.uint8), m)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="empty"):
        toeplitz_hash(np.zeros(0, np.uint8), np.zeros(0, np.uint8), 1)
    for method in METHODS:
        with pytest.raises(ValueError, match="key: values must be 0 or 1"):
            toeplitz_hash(np.array([0, 2, 1], np.uint8), np.zeros(3, np.uint8), 1, method=method)
        with pytest.raises(ValueError, match="seed: values must be 0 or 1"):
            toeplitz_hash(np.zeros(40, np.uint8), np.r_[np.zeros(39, np.uint8), 255], 1, method=method)
        with pytest.raises(ValueError, match="expected 1"):
            toeplitz_hash(pack_bits(np.zeros(128, np.uint8)), np.zeros(41, np.uint8), 2, n=40, method=method)
    with pytest.raises(ValueError, match="1-D"):
        toeplitz_hash(np.zeros((2, 2), np.uint8), np.zeros(3, np.uint8), 1)
    with pytest.raises(ValueError, match="integer"):
        toeplitz_hash(np.zeros(4, np.uint8), np.zeros(5, np.uint8), 2.0)
    with pytest.raises(ValueError, match="needs n"):
        toeplitz_hash(pack_bits(np.zeros(4, np.uint8)), np.zeros(5, np.uint8), 2)
    with pytest.raises(ValueError, match="integer 0/1"):
        toeplitz_hash(np.zeros(4), np.zeros(5, np.uint8), 2)
    with pytest.raises(ValueError, match="too large"):
        toeplitz_hash_naive(np.zeros(10_000, np.uint8), np.zeros(19_999, np.uint8), 10_000)


def test_privacy_amplifier_alice_and_bob_agree():
    rng = np.random.default_rng(15)
    n, m = 10_000, 4_000
    key = _bits(rng, n)
    pa = PrivacyAmplifier(n, m)
    out = pa.amplify(key, np.random.default_rng(99))
    assert out.key.shape == (m,) and out.seed.shape == (n + m - 1,)
    assert np.array_equal(pa.amplify_with_seed(key.copy(), out.seed), out.key)
    assert np.array_equal(pa.amplify_with_seed(pack_bits(key), pack_bits(out.seed)), out.key)
    assert np.array_equal(PrivacyAmplifier(n, m, method="fft").amplify_with_seed(key, out.seed), out.key)
    assert np.array_equal(out.key, toeplitz_hash(key, out.seed, m))
    # bytes source: least significant bit first
    raw = np.random.default_rng(3).bytes((n + m - 1 + 7) // 8)
    out2 = pa.amplify(key, raw)
    assert np.array_equal(out2.seed, np.unpackbits(np.frombuffer(raw, np.uint8), bitorder="little")[:n + m - 1])


def test_privacy_amplifier_validation_never_returns_a_partial_key():
    n, m = 100, 40
    pa = PrivacyAmplifier(n, m)
    key = np.zeros(n, np.uint8)
    with pytest.raises(ValueError, match="random source has 8 bits, 139 are needed"):
        pa.amplify(key, b"\x01")
    with pytest.raises(ValueError, match="set up for n = 100"):
        pa.amplify(np.zeros(99, np.uint8), np.random.default_rng(1))
    with pytest.raises(ValueError, match="empty"):
        pa.amplify(np.zeros(0, np.uint8), np.random.default_rng(1))
    with pytest.raises(ValueError, match="expected n \\+ m - 1 = 139|n \\+ m - 1 = 139"):
        pa.amplify_with_seed(key, np.zeros(138, np.uint8))
    with pytest.raises(ValueError, match="Generator or bytes"):
        pa.amplify(key, 12345)
    for bad in [(0, 1), (10, 11), (10, 0), (10, -1)]:
        with pytest.raises(ValueError):
            PrivacyAmplifier(*bad)
    with pytest.raises(ValueError, match="integer"):
        PrivacyAmplifier(10, 2.5)


def test_four_step_without_numpy_fft_out(monkeypatch):
    """numpy < 2 has no ``out=`` in numpy.fft: the scipy fallback gives the same bits."""
    monkeypatch.setattr(P, "_FFT_OUT", False)
    rng = np.random.default_rng(16)
    n, m = 3001, 1500
    x, s = _case(rng, n, m)
    eng = P._FourStep(n, m)
    y, _ = eng.hash(x, eng.seed_spectrum(s, 1), 1)
    assert np.array_equal(y, toeplitz_hash_naive(x, s, m))
