"""The native-kernel builder compiles once, caches by content, and reports failures clearly."""
import ctypes

import numpy as np
import pytest

from qkdlink.host import native


def test_selftest_kernel_counts_bits():
    lib = native.load("selftest")
    lib.qk_popcount_words.restype = ctypes.c_uint64
    lib.qk_popcount_words.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    w = np.random.default_rng(7).integers(0, 2**63, 1000, dtype=np.uint64)
    expected = int(np.unpackbits(w.view(np.uint8)).sum())
    assert lib.qk_popcount_words(w.ctypes.data, w.size) == expected
    assert native.load("selftest") is lib  # loaded once per process


def test_missing_kernel_is_named():
    with pytest.raises(native.NativeBuildError, match="no_such_kernel"):
        native.load("no_such_kernel")
