// Smallest kernel: proves the native build path works (used by tests/host/test_native.py).
#include <cstdint>
extern "C" uint64_t qk_popcount_words(const uint64_t* w, int64_t n) {
    uint64_t c = 0;
    for (int64_t i = 0; i < n; ++i) c += __builtin_popcountll(w[i]);
    return c;
}
