"""Privacy amplification by Toeplitz hashing over GF(2), exact and fast.

Conventions
-----------
Bits are ``np.uint8`` arrays of 0/1 values. Where noted, *packed* bits are also accepted:
a ``np.uint64`` array in which bit ``j`` of the bit string is bit ``j % 64`` (least
significant first) of word ``j // 64``; unused high bits of the last word are ignored.
:func:`pack_bits` and :func:`unpack_bits` convert.

The Toeplitz matrix. For a key of ``n`` bits, an output of ``m`` bits and a seed of
``n + m - 1`` bits, ``T`` is the ``m x n`` matrix

    T[i, j] = seed[n - 1 + i - j]        (0 <= i < m, 0 <= j < n)

so its first row is ``seed[n-1], seed[n-2], ..., seed[0]`` and its first column is
``seed[n-1], seed[n], ..., seed[n+m-2]``. The hash is ``y = T x`` over GF(2):

    y[i] = XOR_j seed[n - 1 + i - j] & x[j]  =  parity( sum_t seed[i + t] * x[n - 1 - t] ),

that is, ``y`` is the window ``[n-1, n+m-1)`` of the integer linear convolution
``seed * x`` reduced mod 2 (a "middle product"). Every binary Toeplitz family of fixed
shape is two-universal (for x != 0, T x is uniform), which is what the leftover hash lemma
needs (Krawczyk, CRYPTO 1994; Mansour, Nisan, Tiwari, STOC 1990; Tomamichel, Schaffner,
Smith, Renner, IEEE TIT 57, 5524 (2011) for the quantum side information case).

How it is computed
------------------
Two exact engines; ``method="auto"`` (the default) takes the native one when its C++
kernel builds on this machine (:mod:`qkdlink.host.native`; a failed build warns once), else
the numpy one; ``QKDLINK_PA_NATIVE=0`` in the environment forces the numpy one.

*Native (``method="native"``, ``host/native/toeplitz.cpp``).* The hash is the window
``[n-1, n+m-1)`` of the product ``seed(z) * key(z)`` in GF(2)[z], so it is computed in
GF(2)[z] itself: no rounding anywhere, exact by construction. Both bit strings are cut
into 32-bit chunks, coefficients of polynomials in ``y = z^32`` over the field
``F = GF(2)[z]/(z^64 + z^4 + z^3 + z + 1)`` (irreducible; a product of two chunks has degree
< 63, so it is not reduced and the field product is the GF(2)[z] product). The product in
``F[y]`` (length ``2^K >= ceil((n+m-1)/32) + ceil(n/32) - 1``) is taken with the additive FFT
of Lin, Chung and Han (FOCS 2014, "novel polynomial basis") on the subspace spanned by a
Cantor basis (``beta_0 = 1, beta_i^2 + beta_i = beta_(i-1)``; Cantor, J. Combin. Theory A
50 (1989) 285-300; Gao and Mateer, IEEE TIT 56 (2010) 6265-6272), whose subspace
polynomials have 0/1 coefficients, so the change between the monomial and the novel basis is
XORs only. Multiplying binary polynomials by an additive FFT over an extension field is
also the approach of Li, Chen, Kuo, Cheng and Yang ("Frobenius additive fast Fourier
transform", ISSAC 2018), who pack the input bits more densely; field multiplications use
PCLMULQDQ (VPCLMULQDQ on 8 lanes with AVX-512), with portable fallbacks. Work memory is
``2 x 8 x 2^K`` bytes (128 MB at n = 10^8, m = n/2, against ~2.6 GB for the float path);
at large sizes each pass is cut into chunks that the caller and persistent worker threads
take as they come (``workers``), so a worker descheduled on a busy machine costs nothing.
Why not a numeric transform: the counts of ``seed * key`` need ~27 bits per input bit in a
float FFT or an NTT (and a float FFT an error bound), while here a field element carries 32
input bits and the arithmetic is carry-less. Measured (``benchmarks/pa_throughput.py``,
AVX-512 machine, both engines in one run): n = 10^8, m = n/2 costs 0.22 s of CPU (~450
Mbit/s of CPU time; the float four-step below costs 4.6 s), n = 10^7 0.02 s; wall time
depends on the load of the machine.

*Numpy float FFT (``method="fft"``, the reference and fallback).* The integer
convolution is taken with float64 FFTs of length ``N >= n + m - 1``; a cyclic convolution
of that length leaves the wanted window free of wrap-around. Each output count ``c`` is an
integer ``0 <= c <= n``, recovered by rounding, and its parity is the hash bit.

Error bound. Let ``u = 2**-53`` and let the FFT be a product of ``D`` sparse butterfly
levels, each computed with normwise (and componentwise, entry by entry) relative error at
most ``eta``; then ``theta = (1 + eta)**D - 1`` bounds the relative error of a transform,
normwise for the forward ones (Higham, *Accuracy and Stability of Numerical Algorithms*,
2nd ed., Thm. 24.2) and, because every entry of the product of the absolute butterfly
matrices is 1 (one path from each input to each output), componentwise in ``l1`` for the
inverse: ``|fl(F^-1 v) - F^-1 v|_inf <= theta ||v||_1 / N``. With ``a`` the key and ``b``
the seed (0/1 vectors, weights ``w_a``, ``w_b``), ``||F a||_2 = sqrt(N w_a)``, and
``||p q||_1 <= ||p||_2 ||q||_2``, the three transforms and the pointwise product
(relative error ``gamma <= sqrt(5) u``, Brent, Percival, Zimmermann, Math. Comp. 76 (2007))
give for every output

    |computed - exact| <= (3 theta + gamma + O(theta^2)) * sqrt(w_a * w_b),

the form of Percival's Theorem 5.1 (Math. Comp. 72 (2003) 387-395). We take ``eta = 16 u``
per level (radix-2 needs ``sqrt(2) gamma_4 + mu ~ 6u`` with twiddles of error ``mu``; the
library's radix-3/4/5 passes and our extra twiddle stage are counted as separate levels) and
``D = ceil(log2 N) + 4``. For n = 10^8, m = n/2 and all-ones inputs (the worst case) the
bound is 2e-5, four orders of magnitude below the 1/2 that rounding tolerates.
:func:`float_error_bound` evaluates it for the actual weights before every hash; if it
were ever above 1/8 the key is split in two column blocks (``T = [T_lo | T_hi]``, both
Toeplitz, hashes XORed) until it is not. Independently, every output's distance to the
nearest integer is measured and the call raises ``FloatingPointError`` if any exceeds 1/4,
so a violated assumption fails loudly instead of returning a wrong key.

Speed. pocketfft (numpy/scipy) runs one long transform at 15-50 ns per point (cache
misses); a batch of short, contiguous rows runs near 2 ns per point. So large sizes use the
four-step decomposition (Bailey, J. Supercomputing 4 (1990) 23-35) ``N = R x C``: real
FFTs of length ``R`` over column panels, a twiddle, complex FFTs of length ``C`` over row
panels, with the product by the seed spectrum and the inverse row FFT fused into the same
cache-resident row panel, and the inverse column stage reading only the rows that hold
the ``m`` wanted outputs. Panels are spread over ``workers`` threads (numpy and pocketfft
release the GIL). Reference figures: a CPU FFT implementation reached 71 Mbps on 128 Mb
blocks (Tang et al. 2019) and Toshiba's real-time system 108 Mb/s (Yuan et al. 2018).
``benchmarks/pa_throughput.py`` measures both engines.
"""
from __future__ import annotations

import ctypes
import math
import os
import threading
import warnings
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft as sfft

__all__ = ["toeplitz_hash", "toeplitz_hash_naive", "toeplitz_bits_direct", "ToeplitzHasher",
           "PrivacyAmplifier", "pack_bits", "unpack_bits", "float_error_bound", "bits_from_bytes",
           "release_work_memory", "AmplifiedKey", "native_available", "METHODS"]

_U = 2.0 ** -53
_ETA = 16 * _U
_SPLIT_ABOVE = 0.125          # split the key if the a-priori bound exceeds this
_RESIDUAL_LIMIT = 0.25        # measured distance to the nearest integer that aborts
_DIRECT_MAX_N = 1 << 17       # one plain rfft below this cyclic length
_MAGIC = 6755399441055744.0   # 1.5 * 2**52: adding it rounds to an integer kept in the low mantissa bits
_NAIVE_MAX_CELLS = 1 << 26
_FFT_OUT = np.lib.NumpyVersion(np.__version__) >= "2.0.0"   # numpy.fft gained out= in 2.0


def _rfft_into(f, a):
    if _FFT_OUT:
        np.fft.rfft(f, axis=1, out=a)
    else:
        a[...] = sfft.rfft(f, axis=1)


def _irfft_into(a, n, f):
    if _FFT_OUT:
        np.fft.irfft(a, n=n, axis=1, out=f)
    else:
        f[...] = sfft.irfft(a, n=n, axis=1)


def _fft_inplace(z, inverse=False):
    if _FFT_OUT:
        (np.fft.ifft if inverse else np.fft.fft)(z, axis=1, out=z)
    else:
        z[...] = (sfft.ifft if inverse else sfft.fft)(z, axis=1)


# ---------------------------------------------------------------- bit helpers

def pack_bits(bits) -> np.ndarray:
    """0/1 ``uint8`` bits -> ``uint64`` words, bit ``j`` in bit ``j % 64`` of word ``j // 64``."""
    b = _as_bits(bits, "bits")
    nb = np.packbits(b, bitorder="little")
    pad = (-nb.size) % 8
    if pad:
        nb = np.concatenate([nb, np.zeros(pad, np.uint8)])
    return nb.view("<u8").astype(np.uint64, copy=False)


def unpack_bits(words, nbits: int) -> np.ndarray:
    """``uint64`` words -> ``nbits`` 0/1 ``uint8`` bits (inverse of :func:`pack_bits`)."""
    w = np.ascontiguousarray(words, dtype="<u8")
    if w.ndim != 1:
        raise ValueError(f"packed words must be a 1-D uint64 array, got shape {w.shape}")
    if not 0 <= nbits <= 64 * w.size:
        raise ValueError(f"nbits = {nbits}: must be in [0, {64 * w.size}] for {w.size} words")
    return np.unpackbits(w.view(np.uint8), count=nbits, bitorder="little")


def bits_from_bytes(data, nbits: int) -> np.ndarray:
    """The first ``nbits`` bits of ``data`` (bytes-like), least significant bit of each byte first."""
    buf = np.frombuffer(bytes(data), dtype=np.uint8)
    if 8 * buf.size < nbits:
        raise ValueError(f"random source has {8 * buf.size} bits, {nbits} are needed")
    return np.unpackbits(buf, count=nbits, bitorder="little")


def _checked_1d(a, name: str, nbits: int | None) -> np.ndarray:
    """``a`` as a 1-D array; packed uint64 input must come with its length and word count right."""
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise ValueError(f"{name}: must be a 1-D bit array, got shape {arr.shape}")
    if arr.dtype == np.uint64:
        if nbits is None:
            raise ValueError(f"{name}: packed uint64 input needs its length in bits")
        if arr.size != -(-nbits // 64):
            raise ValueError(f"{name}: {arr.size} packed words for {nbits} bits, expected {-(-nbits // 64)}")
    return arr


def _as_bits(a, name: str, nbits: int | None = None) -> np.ndarray:
    """Validate and return a 1-D uint8 0/1 array; uint64 input is unpacked (needs ``nbits``)."""
    arr = _checked_1d(a, name, nbits)
    if arr.dtype == np.uint64:
        return unpack_bits(arr, nbits)
    if arr.dtype == np.bool_:
        return arr.view(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: must be an integer 0/1 array, got dtype {arr.dtype}")
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise ValueError(f"{name}: values must be 0 or 1")
        return arr.astype(np.uint8)
    if arr.size and arr.max() > 1:
        raise ValueError(f"{name}: values must be 0 or 1")
    return arr


def _check_shapes(n: int, m: int, seed_len: int) -> None:
    if n <= 0:
        raise ValueError("key: empty input (n = 0); privacy amplification needs at least one bit")
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)):
        raise ValueError(f"m = {m!r}: must be an integer")
    if m <= 0:
        raise ValueError(f"m = {m}: output length must be at least 1")
    if m > n:
        raise ValueError(f"m = {m}: output length must not exceed the key length n = {n}")
    if seed_len != n + m - 1:
        raise ValueError(f"seed: {seed_len} bits, the {m} x {n} Toeplitz matrix needs n + m - 1 = {n + m - 1}")


# ---------------------------------------------------------------- references

def toeplitz_hash_naive(key, seed, m: int) -> np.ndarray:
    """Reference: build ``T`` (module docstring convention) and return ``T @ key mod 2``.

    Only for small sizes (``m * n <= 2**26``); used by the tests to pin the fast path.
    """
    x = _as_bits(key, "key")
    s = _as_bits(seed, "seed")
    n = x.size
    _check_shapes(n, m, s.size)
    if m * n > _NAIVE_MAX_CELLS:
        raise ValueError(f"naive Toeplitz product of {m} x {n} is too large (limit {_NAIVE_MAX_CELLS} cells)")
    rs = s[::-1]
    # row i of T is rs[m-1-i : m-1-i+n]: T[i, j] = seed[n-1+i-j] = rs[m-1-i+j]
    T = np.lib.stride_tricks.sliding_window_view(rs, n)[::-1]
    return ((T.astype(np.int64) @ x.astype(np.int64)) & 1).astype(np.uint8)


def toeplitz_bits_direct(key, seed, m: int, rows) -> np.ndarray:
    """Selected output bits ``y[i]`` for ``i in rows``, each by one packed AND + popcount.

    O(n / 64) word operations per row, independent of the FFT path: the benchmark and the
    tests cross-check large hashes on a random subset of rows with it.
    """
    x = _as_bits(key, "key")
    s = _as_bits(seed, "seed")
    n = x.size
    _check_shapes(n, m, s.size)
    xr = np.packbits(x[::-1])
    out = np.empty(len(rows), np.uint8)
    for k, i in enumerate(rows):
        if not 0 <= i < m:
            raise ValueError(f"row {i} out of range [0, {m})")
        w = np.packbits(s[i:i + n])               # y[i] = parity(sum_t seed[i+t] x[n-1-t])
        out[k] = int(np.bitwise_xor.reduce(w & xr)).bit_count() & 1
    return out


# ---------------------------------------------------------------- error bound

def float_error_bound(n: int, m: int, w_key: int | None = None, w_seed: int | None = None) -> float:
    """A-priori bound on |computed - exact| of every convolution count (module docstring).

    ``w_key``, ``w_seed`` are the numbers of ones (default: all ones, the worst case).
    """
    N = n + m - 1
    wa = n if w_key is None else w_key
    wb = N if w_seed is None else w_seed
    D = math.ceil(math.log2(max(N, 2))) + 4
    theta = math.expm1(D * math.log1p(_ETA))
    gamma = math.sqrt(5) * _U
    return (3 * theta + gamma + 3 * theta * theta) * math.sqrt(float(wa) * float(wb))


# ---------------------------------------------------------------- native engine

METHODS = ("auto", "native", "fft")
_NATIVE_ENV = "QKDLINK_PA_NATIVE"   # "0": never load the C++ kernel (method "auto" = "fft")
_NATIVE_ERRORS = {-1: "too large for the native kernel (more than 2^30 chunks of 32 bits)",
                  -2: "native kernel could not build its Cantor basis"}


@lru_cache(maxsize=1)
def _native_lib():
    """The compiled ``toeplitz.cpp`` with its signatures, or None (warned once) if unusable."""
    if os.environ.get(_NATIVE_ENV, "1") == "0":
        return None
    from .native import NativeBuildError, load
    try:
        lib = load("toeplitz")
    except NativeBuildError as e:
        warnings.warn(f"privacy amplification falls back to the numpy FFT path: {e}", RuntimeWarning)
        return None
    u64, vp, i = ctypes.c_uint64, ctypes.c_void_p, ctypes.c_int
    lib.tz_plan.argtypes, lib.tz_plan.restype = [u64, u64], i
    lib.tz_vector_path.argtypes, lib.tz_vector_path.restype = [], i
    lib.tz_seed_spectrum.argtypes, lib.tz_seed_spectrum.restype = [vp, i, u64, u64, vp, i], i
    lib.tz_hash_spectrum.argtypes = [vp, i, u64, u64, vp, vp, vp, i, i]
    lib.tz_hash_spectrum.restype = i
    lib.tz_hash.argtypes, lib.tz_hash.restype = [vp, i, vp, i, u64, u64, vp, vp, vp, i, i], i
    lib.tz_gf_mul.argtypes, lib.tz_gf_mul.restype = [u64, u64], u64
    lib.tz_cantor.argtypes, lib.tz_cantor.restype = [i], u64
    return lib


def native_available() -> bool:
    """True if the exact C++ engine (``method="native"``) is built and loaded on this machine."""
    return _native_lib() is not None


def _resolve_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"method = {method!r}: must be one of {METHODS}")
    if method == "auto":
        return "native" if native_available() else "fft"
    if method == "native" and not native_available():
        raise RuntimeError("method = 'native': the C++ kernel is not available "
                           f"(build failed, or {_NATIVE_ENV}=0)")
    return method


def _native_operand(a, name: str, nbits: int | None = None) -> tuple[np.ndarray, int, int]:
    """``(array, is_bytes, nbits)`` for the kernel: packed words or 0/1 bytes, no unpacking.

    uint8 values are checked by the kernel itself (one pass with the packing); other integer
    dtypes go through :func:`_as_bits`.
    """
    arr = _checked_1d(a, name, nbits)
    if arr.dtype == np.uint64:
        return np.ascontiguousarray(arr), 0, nbits
    if arr.dtype == np.bool_:
        return np.ascontiguousarray(arr).view(np.uint8), 1, arr.size
    if arr.dtype != np.uint8:
        arr = _as_bits(arr, name)
    return np.ascontiguousarray(arr), 1, arr.size


def _native_check(rc: int, key_name: str = "key", seed_name: str = "seed") -> None:
    if rc == -4:
        raise ValueError(f"{seed_name}: values must be 0 or 1")
    if rc == -5:
        raise ValueError(f"{key_name}: values must be 0 or 1")
    if rc != 0:
        raise ValueError(_NATIVE_ERRORS.get(rc, f"native Toeplitz kernel failed (code {rc})"))


_NATIVE_WORK: OrderedDict = OrderedDict()      # K -> [lock, W, S]; the last two sizes are kept
_NATIVE_WORK_LOCK = threading.Lock()


def _native_work(K: int) -> list:
    with _NATIVE_WORK_LOCK:
        entry = _NATIVE_WORK.get(K)
        if entry is None:
            entry = _NATIVE_WORK[K] = [threading.Lock(), None, None]
            while len(_NATIVE_WORK) > 2:
                _NATIVE_WORK.popitem(last=False)
        _NATIVE_WORK.move_to_end(K)
        return entry


def _native_threads(K: int, workers: int) -> int:
    return 1 if K < _NATIVE_PARALLEL_MIN_K else max(1, workers)


_NATIVE_PARALLEL_MIN_K = 18        # below 2^18 words, thread start-up costs more than it saves


def _native_plan(lib, n: int, m: int) -> int:
    K = lib.tz_plan(n, m)
    if K < 0:
        raise ValueError(f"n = {n}, m = {m}: " + _NATIVE_ERRORS[-1])
    return K


def _native_out(m: int, packed_output: bool) -> np.ndarray:
    return np.empty(-(-m // 64), np.uint64) if packed_output else np.empty(m, np.uint8)


def _native_hash(key, seed, n: int, m: int, packed_output: bool, workers: int) -> np.ndarray:
    lib = _native_lib()
    xk, kb, _ = key
    sk, sb, _ = seed
    K = _native_plan(lib, n, m)
    out = _native_out(m, packed_output)
    entry = _native_work(K)
    with entry[0]:
        for k in (1, 2):
            if entry[k] is None:
                entry[k] = np.empty(1 << K, np.uint64)
        rc = lib.tz_hash(xk.ctypes.data, kb, sk.ctypes.data, sb, n, m, entry[2].ctypes.data,
                         entry[1].ctypes.data, out.ctypes.data, int(not packed_output),
                         _native_threads(K, workers))
    _native_check(rc)
    return out


# ---------------------------------------------------------------- FFT engines

def _default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _run(fn, items, workers: int) -> None:
    """Apply ``fn`` to each item; split into contiguous chunks over ``workers`` threads."""
    items = list(items)
    if workers <= 1 or len(items) < 2:
        for it in items:
            fn(it)
        return
    pool = _POOLS.get(workers)
    if pool is None:
        pool = _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="toeplitz")
    k = min(len(items), 4 * workers)
    chunks = [items[i * len(items) // k:(i + 1) * len(items) // k] for i in range(k)]
    for f in [pool.submit(lambda ch=ch: [fn(it) for it in ch]) for ch in chunks]:
        f.result()


def _parity_and_residual(v: np.ndarray) -> tuple[np.ndarray, float]:
    """Parity of round(v) and max |v - round(v)| for 0 <= v < 2**51."""
    t = v + _MAGIC
    par = (t.view(np.uint64) & np.uint64(1)).astype(np.uint8)
    t -= _MAGIC
    t -= v
    res = float(np.abs(t).max()) if t.size else 0.0
    return par, res


class _Direct:
    """One real FFT of length N (small sizes, everything in cache)."""

    def __init__(self, n: int, m: int):
        self.n, self.m = n, m
        self.N = sfft.next_fast_len(n + m - 1, real=True)
        self.lock = threading.Lock()

    def seed_spectrum(self, s: np.ndarray, workers: int, keep: bool = False) -> np.ndarray:
        return sfft.rfft(s.astype(np.float64), self.N, workers=workers)

    def hash(self, x: np.ndarray, S: np.ndarray, workers: int) -> tuple[np.ndarray, float]:
        X = sfft.rfft(x.astype(np.float64), self.N, workers=workers)
        X *= S
        v = sfft.irfft(X, self.N, overwrite_x=True, workers=workers)[self.n - 1:self.n - 1 + self.m]
        return _parity_and_residual(v)


class _FourStep:
    """Cyclic convolution of length N = R * C by the four-step FFT, in cache-sized panels.

    Flat index ``t = C r + c`` (the data viewed as an R x C row-major matrix); frequency
    ``k = r' + R c'``. Then ``X[r' + R c'] = sum_c w_C^{c c'} w_N^{c r'} sum_r w_R^{r r'} x[C r + c]``:
    stage A is a real FFT of length R down each column (done on transposed column panels,
    keeping ``r' <= R/2`` by Hermitian symmetry), then the twiddle ``w_N^{c r'}``, then stage
    B a complex FFT of length C along each row ``r'`` of the (R/2+1) x C spectrum. Work
    arrays are kept between calls (same sizes are hashed block after block; engines for the
    last two sizes are cached, :func:`release_work_memory` frees them) and every
    temporary is a per-thread buffer: no page faults in the hot loops.
    """

    def __init__(self, n: int, m: int, panel: int = 16):
        self.n, self.m = n, m
        Nmin = n + m - 1
        R = 1 << max(4, math.ceil(math.log2(math.sqrt(Nmin / 2))))
        C = sfft.next_fast_len(-(-Nmin // R))
        self.R, self.C, self.N, self.H, self.w = R, C, R * C, R // 2 + 1, panel
        rr = np.arange(self.H, dtype=np.int64)
        # twiddle w_N^{c r'} = w_N^{(c0 + j) r'} = base_p[r'] * loc[j, r'], each an accurately
        # rounded exp (integer angles reduced mod N before the division)
        self.loc = np.exp((-2j * np.pi / self.N) * np.outer(np.arange(panel), rr))
        self.loc_conj = self.loc.conj()
        self.panels = [(c0, min(C, c0 + panel)) for c0 in range(0, C, panel)]
        self.base = np.exp((-2j * np.pi / self.N) *
                           (np.outer([c0 for c0, _ in self.panels], rr) % self.N))
        self.row_block = max(2, (1 << 20) // (16 * C))
        self.row_blocks = [(r0, min(self.H, r0 + self.row_block)) for r0 in range(0, self.H, self.row_block)]
        lo, hi = n - 1, n + m - 1
        self.rlo, self.rhi = lo // C, -(-hi // C)
        self.lock = threading.Lock()
        self._tls = threading.local()
        self._MT = self._Zx = self._Zs = None

    # -- buffers
    def _buf(self):
        b = getattr(self._tls, "b", None)
        if b is None:
            w, R, H = self.w, self.R, self.H
            rows = self.rhi - self.rlo
            b = self._tls.b = dict(f=np.empty((w, R)), a=np.empty((w, H), np.complex128),
                                   h=np.empty(H, np.complex128), t=np.empty((w, rows)),
                                   u=np.empty((w, rows), np.uint64))
        return b

    def _columns(self, bits: np.ndarray) -> np.ndarray:
        """uint8 bits -> the C x R transposed layout MT[c, r] = x[C r + c] (zero padded)."""
        R, C = self.R, self.C
        if self._MT is None:
            self._MT = np.empty((C, R), np.uint8)
        MT = self._MT
        full = bits.size // C
        src = bits[:full * C].reshape(full, C)
        B = 512
        for r0 in range(0, full, B):
            r1 = min(full, r0 + B)
            MT[:, r0:r1] = src[r0:r1].T
        rest = bits.size - full * C
        if full < R:
            MT[:rest, full] = bits[full * C:]
            MT[rest:, full] = 0
            MT[:, full + 1:] = 0
        return MT

    def _stage_a(self, MT: np.ndarray, Z: np.ndarray, workers: int) -> None:
        loc, base = self.loc, self.base

        def one(p):
            c0, c1 = self.panels[p]
            k = c1 - c0
            b = self._buf()
            f, a = b["f"][:k], b["a"][:k]
            np.copyto(f, MT[c0:c1])
            _rfft_into(f, a)
            a *= loc[:k]
            np.multiply(a, base[p], out=Z[:, c0:c1].T)
        _run(one, range(len(self.panels)), workers)

    def seed_spectrum(self, s: np.ndarray, workers: int, keep: bool = False) -> np.ndarray:
        """The seed's spectrum; ``keep`` allocates it (else a work array reused by ``hash``)."""
        if keep:
            Z = np.empty((self.H, self.C), np.complex128)
        else:
            if self._Zs is None:
                self._Zs = np.empty((self.H, self.C), np.complex128)
            Z = self._Zs
        self._stage_a(self._columns(s), Z, workers)

        def one(rb):
            r0, r1 = rb
            _fft_inplace(Z[r0:r1])
        _run(one, self.row_blocks, workers)
        return Z

    def hash(self, x: np.ndarray, S: np.ndarray, workers: int) -> tuple[np.ndarray, float]:
        if self._Zx is None:
            self._Zx = np.empty((self.H, self.C), np.complex128)
        Z = self._Zx
        self._stage_a(self._columns(x), Z, workers)

        def rows(rb):
            r0, r1 = rb
            z = Z[r0:r1]
            _fft_inplace(z)
            z *= S[r0:r1]
            _fft_inplace(z, inverse=True)
        _run(rows, self.row_blocks, workers)

        rlo, rhi, R = self.rlo, self.rhi, self.R
        out = np.empty((rhi - rlo, self.C), np.uint8)
        resid = np.zeros(len(self.panels))
        loc_c, base = self.loc_conj, self.base

        def cols(p):
            c0, c1 = self.panels[p]
            k = c1 - c0
            b = self._buf()
            a, f, h, t, u = b["a"][:k], b["f"][:k], b["h"], b["t"][:k], b["u"][:k]
            np.multiply(Z[:, c0:c1].T, loc_c[:k], out=a)
            np.conjugate(base[p], out=h)
            a *= h
            _irfft_into(a, R, f)
            v = f[:, rlo:rhi]
            np.add(v, _MAGIC, out=t)                  # round to nearest, integer in the low bits
            np.bitwise_and(t.view(np.uint64), np.uint64(1), out=u)
            out[:, c0:c1] = u.T
            t -= _MAGIC
            t -= v
            np.abs(t, out=t)
            resid[p] = t.max()
        _run(cols, range(len(self.panels)), workers)
        lo = self.n - 1 - rlo * self.C
        return out.reshape(-1)[lo:lo + self.m], float(resid.max())


def release_work_memory() -> None:
    """Drop the cached work arrays (numpy path: ~2.5 GB at n = 10^8; native: 128 MB)."""
    _engine.cache_clear()
    with _NATIVE_WORK_LOCK:
        _NATIVE_WORK.clear()


@lru_cache(maxsize=2)
def _engine(n: int, m: int):
    if sfft.next_fast_len(n + m - 1, real=True) <= _DIRECT_MAX_N:
        return _Direct(n, m)
    return _FourStep(n, m)


# ---------------------------------------------------------------- public API

def _hash_exact(x: np.ndarray, s: np.ndarray, m: int, workers: int, split_above: float) -> np.ndarray:
    n = x.size
    wa, wb = int(np.count_nonzero(x)), int(np.count_nonzero(s))
    if wa == 0:
        return np.zeros(m, np.uint8)
    if float_error_bound(n, m, wa, wb) > split_above and n > 1:
        n1 = n // 2
        n2 = n - n1
        # T = [T_lo | T_hi]: T_lo uses seed[n2 : n2 + n1 + m - 1], T_hi uses seed[0 : n2 + m - 1]
        lo = _hash_exact(x[:n1], s[n2:n2 + n1 + m - 1], m, workers, split_above)
        hi = _hash_exact(x[n1:], s[:n2 + m - 1], m, workers, split_above)
        return lo ^ hi
    eng = _engine(n, m)
    with eng.lock:
        S = eng.seed_spectrum(s, workers)
        y, resid = eng.hash(x, S, workers)
    _check_residual(resid)
    return y


def _check_residual(resid: float) -> None:
    if not resid < _RESIDUAL_LIMIT:
        raise FloatingPointError(f"FFT rounding residual {resid:.3g} >= {_RESIDUAL_LIMIT}: "
                                 "exactness assumption violated, refusing to return a key")


def toeplitz_hash(key, seed, m: int, *, n: int | None = None, packed_output: bool = False,
                  workers: int | None = None, method: str = "auto") -> np.ndarray:
    """Exact GF(2) Toeplitz hash ``y = T x`` (``T[i, j] = seed[n-1+i-j]``, module docstring).

    Parameters
    ----------
    key : (n,) uint8 (or bool) 0/1 bits, or packed uint64 words (then pass ``n``).
    seed : (n + m - 1,) uint8 0/1 bits, or packed uint64 words.
    m : output length, 1 <= m <= n.
    packed_output : return ``pack_bits(y)`` (uint64 words) instead of (m,) uint8 bits.
    workers : threads (default min(2, cpu_count)).
    method : ``"auto"`` (native if available), ``"native"`` (C++ GF(2)[z] product) or
        ``"fft"`` (numpy float FFT); all three return the same bits.

    Raises ``ValueError`` on wrong lengths or values, ``RuntimeError`` for ``"native"``
    without the kernel, and (``"fft"`` only) ``FloatingPointError`` if the measured rounding
    residual ever reached 1/4 (never observed; see the error bound).
    """
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)):
        raise ValueError(f"m = {m!r}: must be an integer")
    m = int(m)
    how = _resolve_method(method)
    karr = np.asarray(key)
    if karr.dtype == np.uint64 and n is None:
        raise ValueError("key: packed uint64 input needs n (its length in bits)")
    if how == "native":
        kx = _native_operand(karr, "key", n)
        if n is not None and n != kx[2]:
            raise ValueError(f"n = {n} but the key has {kx[2]} bits")
        n = kx[2]
        if n <= 0:
            raise ValueError("key: empty input (n = 0); privacy amplification needs at least one bit")
        if m <= 0:
            raise ValueError(f"m = {m}: output length must be at least 1")
        sx = _native_operand(seed, "seed", n + m - 1)
        _check_shapes(n, m, sx[2])
        return _native_hash(kx, sx, n, m, packed_output, workers or _default_workers())
    if karr.dtype == np.uint64:
        x = _as_bits(karr, "key", n)
    else:
        x = _as_bits(karr, "key")
        if n is not None and n != x.size:
            raise ValueError(f"n = {n} but the key has {x.size} bits")
    n = x.size
    if n <= 0:
        raise ValueError("key: empty input (n = 0); privacy amplification needs at least one bit")
    if m <= 0:
        raise ValueError(f"m = {m}: output length must be at least 1")
    s = _as_bits(seed, "seed", n + m - 1)
    _check_shapes(n, m, s.size)
    y = _hash_exact(x, s, m, workers or _default_workers(), _SPLIT_ABOVE)
    return pack_bits(y) if packed_output else y


class ToeplitzHasher:
    """A fixed seed with its transform precomputed: hashes many keys at two transforms each.

    For protocols that reuse one public seed over blocks; :class:`PrivacyAmplifier` draws a
    fresh seed per block and does not use this. ``method`` as in :func:`toeplitz_hash`.
    """

    def __init__(self, seed, n: int, m: int, *, workers: int | None = None, method: str = "auto"):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
            raise ValueError(f"n = {n!r}: key length must be a positive integer")
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)):
            raise ValueError(f"m = {m!r}: must be an integer")
        self.n, self.m = int(n), int(m)
        if self.m <= 0:
            raise ValueError(f"m = {m}: output length must be at least 1")
        self.method = _resolve_method(method)
        self.seed = _as_bits(seed, "seed", self.n + self.m - 1)
        _check_shapes(self.n, self.m, self.seed.size)
        self.workers = workers or _default_workers()
        if self.method == "native":
            lib = _native_lib()
            self._K = _native_plan(lib, self.n, self.m)
            self._S = np.empty(1 << self._K, np.uint64)
            _native_check(lib.tz_seed_spectrum(self.seed.ctypes.data, 1, self.n, self.m, self._S.ctypes.data,
                                               _native_threads(self._K, self.workers)))
            return
        if float_error_bound(self.n, self.m) > _SPLIT_ABOVE:
            raise ValueError(f"n = {n}: too large for one FFT block; use toeplitz_hash (it splits)")
        self._eng = _engine(self.n, self.m)
        with self._eng.lock:
            self._S = self._eng.seed_spectrum(self.seed, self.workers, keep=True)

    def __call__(self, key, *, packed_output: bool = False) -> np.ndarray:
        karr = np.asarray(key)
        if self.method == "native":
            xk, kb, nbits = _native_operand(karr, "key", self.n if karr.dtype == np.uint64 else None)
            if nbits != self.n:
                raise ValueError(f"key: {nbits} bits, this hasher takes n = {self.n}")
            lib, K = _native_lib(), self._K
            out = _native_out(self.m, packed_output)
            entry = _native_work(K)
            with entry[0]:
                if entry[1] is None:
                    entry[1] = np.empty(1 << K, np.uint64)
                rc = lib.tz_hash_spectrum(xk.ctypes.data, kb, self.n, self.m, self._S.ctypes.data,
                                          entry[1].ctypes.data, out.ctypes.data, int(not packed_output),
                                          _native_threads(K, self.workers))
            _native_check(rc)
            return out
        x = _as_bits(karr, "key", self.n if karr.dtype == np.uint64 else None)
        if x.size != self.n:
            raise ValueError(f"key: {x.size} bits, this hasher takes n = {self.n}")
        with self._eng.lock:
            y, resid = self._eng.hash(x, self._S, self.workers)
        _check_residual(resid)
        return pack_bits(y) if packed_output else y


@dataclass(frozen=True)
class AmplifiedKey:
    """Result of :meth:`PrivacyAmplifier.amplify`: the final key and the public seed."""
    key: np.ndarray
    seed: np.ndarray


class PrivacyAmplifier:
    """Privacy amplification of ``n``-bit reconciled keys to ``m`` bits.

    ``m`` comes from the finite-key analysis (not computed here). Alice calls
    :meth:`amplify` with a random source (``np.random.Generator`` or bytes holding at least
    ``n + m - 1`` bits, least significant bit first), sends the returned seed, and Bob calls
    :meth:`amplify_with_seed`. Every length is checked before any work; on any error a
    ``ValueError`` is raised and no key (not even a partial one) is returned.
    """

    def __init__(self, n: int, m: int, *, workers: int | None = None, method: str = "auto"):
        if method not in METHODS:
            raise ValueError(f"method = {method!r}: must be one of {METHODS}")
        for name, v in (("n", n), ("m", m)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"{name} = {v!r}: must be an integer")
        if n <= 0:
            raise ValueError(f"n = {n}: key length must be at least 1")
        _check_shapes(int(n), int(m), int(n) + int(m) - 1)
        self.n, self.m, self.workers, self.method = int(n), int(m), workers, method

    @property
    def seed_bits(self) -> int:
        return self.n + self.m - 1

    def draw_seed(self, source) -> np.ndarray:
        """``n + m - 1`` seed bits from a ``np.random.Generator`` or a bytes-like source."""
        if isinstance(source, np.random.Generator):
            nbytes = -(-self.seed_bits // 8)
            return bits_from_bytes(source.bytes(nbytes), self.seed_bits)
        if isinstance(source, (bytes, bytearray, memoryview)):
            return bits_from_bytes(source, self.seed_bits)
        raise ValueError(f"random source must be a numpy Generator or bytes, got {type(source).__name__}")

    def _key(self, key) -> np.ndarray:
        """Shape and length checks; the values (0/1) are checked by :func:`toeplitz_hash`."""
        karr = np.asarray(key)
        if karr.ndim != 1:
            raise ValueError(f"key: must be a 1-D bit array, got shape {karr.shape}")
        if karr.dtype == np.uint64:
            if karr.size != -(-self.n // 64):
                raise ValueError(f"key: {karr.size} packed words, this amplifier was set up for "
                                 f"n = {self.n} ({-(-self.n // 64)} words)")
            return karr
        if karr.size == 0:
            raise ValueError("key: empty input")
        if karr.size != self.n:
            raise ValueError(f"key: {karr.size} bits, this amplifier was set up for n = {self.n}")
        return karr

    def amplify(self, key, source) -> AmplifiedKey:
        """Draw a fresh seed from ``source`` and hash ``key``; returns key and seed."""
        x = self._key(key)
        seed = self.draw_seed(source)
        return AmplifiedKey(toeplitz_hash(x, seed, self.m, n=self.n, workers=self.workers,
                                          method=self.method), seed)

    def amplify_with_seed(self, key, seed) -> np.ndarray:
        """Hash ``key`` with a seed received from the peer (``n + m - 1`` bits)."""
        x = self._key(key)
        s = np.asarray(seed)
        if s.ndim != 1:
            raise ValueError(f"seed: must be a 1-D bit array, got shape {s.shape}")
        if s.dtype == np.uint64:
            if s.size != -(-self.seed_bits // 64):
                raise ValueError(f"seed: {s.size} packed words, expected {-(-self.seed_bits // 64)} "
                                 f"for n + m - 1 = {self.seed_bits} bits")
        elif s.size != self.seed_bits:
            raise ValueError(f"seed: {s.size} bits, expected n + m - 1 = {self.seed_bits}")
        return toeplitz_hash(x, s, self.m, n=self.n, workers=self.workers, method=self.method)
