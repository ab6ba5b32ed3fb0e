// Exact GF(2) Toeplitz hashing: the middle product of two bit polynomials through an
// additive FFT over GF(2^64). See host/privacy.py (module docstring) for the method and its
// sources; this file holds the kernels only. Written for qkdlink, no code taken elsewhere.
// Lin, Chung, Han, FOCS 2014 (additive FFT in the novel basis); Cantor, J. Combin. Theory A
// 50 (1989) (Cantor bases); Gao, Mateer, IEEE TIT 56 (2010) (additive FFTs in characteristic 2).
//
// Representation. A bit string b_0 b_1 ... is the polynomial sum b_j z^j over GF(2). It is cut
// into 32-bit chunks A_k(z) (degree < 32), A = sum_k A_k(z) y^k with y = z^32. The field is
// F = GF(2)[z] / (z^64 + z^4 + z^3 + z + 1); a chunk product has degree < 63, so it is the
// same in F and in GF(2)[z]: the product A B computed in F[y] gives the GF(2)[z] product
// after the overlapping sum sum_k C_k z^(32 k).
//
// Polynomials in F[y] of length 2^K are multiplied with the Lin-Chung-Han additive FFT
// (novel polynomial basis X_j = prod_{bit i of j} s_i(y)) on the subspace spanned by a
// Cantor basis beta_0 = 1, beta_i^2 + beta_i = beta_(i-1); then s_i(y) = sum_{t subset of i}
// y^(2^t) has 0/1 coefficients, s_i(beta_i) = 1 and s_i(beta_l) = beta_(l-i), so the twiddle
// of the block at offset o of level i is omega(o >> i) (omega(u) = sum of beta_l over the
// bits l of u), and the change between the monomial and the novel basis is a recursive
// division by the s_i, XORs only.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>
#include <unistd.h>
#if defined(__PCLMUL__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

typedef uint64_t u64;

#if defined(__AVX512F__) && defined(__VPCLMULQDQ__)
#define TZ_VEC 1
#else
#define TZ_VEC 0
#endif

static const int MAXK = 30;          // 2^30 chunks = 3.4e10 bits of product
static const int BL = 16;            // blocks of 2^16 elements (512 KB) are done depth-first
static const int L1B = 12;           // and within them, sub-blocks of 2^12 (32 KB) for the basis change

// ------------------------------------------------------------------ field arithmetic

static inline void clmul64(u64 a, u64 b, u64* lo, u64* hi) {
#if defined(__PCLMUL__)
    __m128i p = _mm_clmulepi64_si128(_mm_cvtsi64_si128((long long)a), _mm_cvtsi64_si128((long long)b), 0);
    *lo = (u64)_mm_cvtsi128_si64(p);
    *hi = (u64)_mm_extract_epi64(p, 1);
#else
    u64 l = 0, h = 0;
    for (int k = 0; k < 64; k++)
        if ((b >> k) & 1) {
            l ^= a << k;
            if (k) h ^= a >> (64 - k);
        }
    *lo = l;
    *hi = h;
#endif
}

// lo + hi z^64 mod z^64 + z^4 + z^3 + z + 1: hi z^64 = hi (1 + z + z^3 + z^4); the (at most
// 4) bits that spill past z^63 are folded once more, which cannot spill again.
static inline u64 reduce(u64 lo, u64 hi) {
    u64 h2 = hi ^ (hi >> 63) ^ (hi >> 61) ^ (hi >> 60);
    return lo ^ h2 ^ (h2 << 1) ^ (h2 << 3) ^ (h2 << 4);
}

static inline u64 gf_mul(u64 a, u64 b) {
    u64 lo, hi;
    clmul64(a, b, &lo, &hi);
    return reduce(lo, hi);
}

#if TZ_VEC
static inline __m512i mul8(__m512i a, __m512i b) {
    __m512i p0 = _mm512_clmulepi64_epi128(a, b, 0x00);
    __m512i p1 = _mm512_clmulepi64_epi128(a, b, 0x11);
    __m512i lo = _mm512_unpacklo_epi64(p0, p1);
    __m512i hi = _mm512_unpackhi_epi64(p0, p1);
    __m512i h2 = _mm512_ternarylogic_epi64(hi, _mm512_srli_epi64(hi, 63), _mm512_srli_epi64(hi, 61), 0x96);
    h2 = _mm512_xor_si512(h2, _mm512_srli_epi64(hi, 60));
    __m512i t = _mm512_ternarylogic_epi64(lo, h2, _mm512_slli_epi64(h2, 1), 0x96);
    return _mm512_ternarylogic_epi64(t, _mm512_slli_epi64(h2, 3), _mm512_slli_epi64(h2, 4), 0x96);
}
#endif

// ------------------------------------------------------------------ Cantor basis

static u64 BETA[MAXK];
static u64 OM[3][1024];              // omega(u) = OM[0][u & 1023] ^ OM[1][(u>>10) & 1023] ^ OM[2][u>>20]
static int BASIS_OK = 0;
static std::once_flag BASIS_ONCE;

// Solve x^2 + x = c over F (a GF(2)-linear map of rank 63); returns 0 if unsolvable.
static int solve_artin_schreier(u64 c, u64* x) {
    u64 vec[64], comb[64];
    int have[64] = {0};
    for (int k = 0; k < 64; k++) {
        u64 zk = (u64)1 << k;
        u64 v = gf_mul(zk, zk) ^ zk, cb = zk;
        for (int p = 63; p >= 0 && v; p--)
            if ((v >> p) & 1) {
                if (have[p]) { v ^= vec[p]; cb ^= comb[p]; }
                else { vec[p] = v; comb[p] = cb; have[p] = 1; v = 0; }
            }
    }
    u64 v = c, cb = 0;
    for (int p = 63; p >= 0 && v; p--)
        if ((v >> p) & 1) {
            if (!have[p]) return 0;
            v ^= vec[p];
            cb ^= comb[p];
        }
    *x = cb;
    return 1;
}

static void init_basis() {
    BETA[0] = 1;
    for (int i = 1; i < MAXK; i++)
        if (!solve_artin_schreier(BETA[i - 1], &BETA[i])) return;
    for (int t = 0; t < 3; t++)
        for (int u = 0; u < 1024; u++) {
            u64 w = 0;
            for (int l = 0; l < 10; l++)
                if ((u >> l) & 1 && 10 * t + l < MAXK) w ^= BETA[10 * t + l];
            OM[t][u] = w;
        }
    BASIS_OK = 1;
}

static inline u64 omega(u64 u) {
    return OM[0][u & 1023] ^ OM[1][(u >> 10) & 1023] ^ OM[2][(u >> 20) & 1023];
}

// ------------------------------------------------------------------ threads

// f(begin, end) over [0, count) on up to nt threads. Chunks are claimed dynamically from a
// persistent pool, and the caller waits only for chunks that were started, never for a worker
// to wake up: on a busy machine a descheduled worker costs nothing, the caller does its share.
struct Pool {
    std::mutex m;
    std::condition_variable wake, idle;
    const std::function<void(size_t, size_t)>* job = nullptr;
    size_t count = 0, chunk = 1;
    std::atomic<size_t> next{0}, done{0};
    int active = 0, nthreads = 0;
    uint64_t gen = 0;
    pid_t pid;
    std::mutex use;                       // one parallel region at a time (else serial)

    explicit Pool(int n) : pid(getpid()) {
        for (int t = 0; t < n; t++) {
            try {
                std::thread(&Pool::worker, this).detach();
                nthreads++;
            } catch (...) {
                break;
            }
        }
    }
    void claim(const std::function<void(size_t, size_t)>& f, size_t cnt, size_t ch) {
        for (;;) {
            size_t b = next.fetch_add(ch);
            if (b >= cnt) return;
            size_t e = b + ch < cnt ? b + ch : cnt;
            f(b, e);
            done.fetch_add(e - b);
        }
    }
    void worker() {
        uint64_t seen = 0;
        std::unique_lock<std::mutex> lk(m);
        for (;;) {
            wake.wait(lk, [&] { return gen != seen; });
            seen = gen;
            if (!job) continue;
            const auto* f = job;
            size_t cnt = count, ch = chunk;
            active++;
            lk.unlock();
            claim(*f, cnt, ch);
            lk.lock();
            if (--active == 0) idle.notify_all();
        }
    }
    void run(const std::function<void(size_t, size_t)>& f, size_t cnt, int nt) {
        size_t ch = cnt / (8 * (size_t)nt);
        if (ch == 0) ch = 1;
        {
            std::lock_guard<std::mutex> lk(m);
            job = &f;
            count = cnt;
            chunk = ch;
            next = 0;
            done = 0;
            gen++;
        }
        wake.notify_all();
        claim(f, cnt, ch);
        std::unique_lock<std::mutex> lk(m);
        idle.wait(lk, [&] { return active == 0 && done.load() == cnt; });
        job = nullptr;
    }
};

static Pool* pool_for_this_process() {
    static std::mutex pm;
    static Pool* pool = nullptr;
    std::lock_guard<std::mutex> lk(pm);
    if (!pool || pool->pid != getpid()) {   // first use, or a forked child (threads stay behind)
        unsigned hw = std::thread::hardware_concurrency();
        pool = new Pool(hw > 1 ? (hw < 16 ? (int)hw - 1 : 15) : 1);   // never freed: workers outlive exit
    }
    return pool;
}

template <class F>
static void par(int nt, size_t count, F f) {
    if (nt <= 1 || count < 2) {
        f((size_t)0, count);
        return;
    }
    Pool* pool = pool_for_this_process();
    std::unique_lock<std::mutex> busy(pool->use, std::try_to_lock);
    if (!busy.owns_lock() || pool->nthreads == 0) {   // another call holds the pool: run here
        f((size_t)0, count);
        return;
    }
    std::function<void(size_t, size_t)> fn = [&](size_t b, size_t e) { f(b, e); };
    pool->run(fn, count, nt < pool->nthreads + 1 ? nt : pool->nthreads + 1);
}

// ------------------------------------------------------------------ FFT butterflies

// a ^= lam * b; b ^= a   (forward)      |   b ^= a; a ^= lam * b   (inverse)
static void bfly(u64* a, u64* b, size_t len, u64 lam, bool inverse) {
    size_t j = 0;
#if TZ_VEC
    __m512i L = _mm512_set1_epi64((long long)lam);
    for (; j + 8 <= len; j += 8) {
        __m512i va = _mm512_loadu_si512(a + j), vb = _mm512_loadu_si512(b + j);
        if (!inverse) {
            va = _mm512_xor_si512(va, mul8(vb, L));
            vb = _mm512_xor_si512(vb, va);
        } else {
            vb = _mm512_xor_si512(vb, va);
            va = _mm512_xor_si512(va, mul8(vb, L));
        }
        _mm512_storeu_si512(a + j, va);
        _mm512_storeu_si512(b + j, vb);
    }
#endif
    for (; j < len; j++) {
        if (!inverse) {
            a[j] ^= gf_mul(b[j], lam);
            b[j] ^= a[j];
        } else {
            b[j] ^= a[j];
            a[j] ^= gf_mul(b[j], lam);
        }
    }
}

#if TZ_VEC
// Levels 2, 1, 0 on 16 elements held in two registers: pairs (j, j + 2^i) gathered with
// permutes, per-lane twiddles omega((e0 + block offset) >> i) = omega(e0 >> i) ^ omega(off >> i).
struct LowLevel {
    __m512i ia, ib, ix, iy, toff;
};
static LowLevel LOW[3];
static void init_low() {
    for (int i = 0; i < 3; i++) {
        long long pa[8], pb[8], px[8], py[8], tw[8];
        int h = 1 << i, k = 0;
        int pos_a[8], pos_b[8];
        for (int e = 0; e < 16; e++)
            if (!(e & h)) { pos_a[k] = e; pos_b[k] = e + h; k++; }
        for (k = 0; k < 8; k++) {
            pa[k] = pos_a[k];
            pb[k] = pos_b[k];
            tw[k] = (long long)omega((u64)(pos_a[k] & ~(2 * h - 1)) >> i);
        }
        // inverse map: element e comes from lane k of A (index k) or B (index 8 + k)
        long long src[16];
        for (k = 0; k < 8; k++) { src[pos_a[k]] = k; src[pos_b[k]] = 8 + k; }
        for (int e = 0; e < 8; e++) { px[e] = src[e]; py[e] = src[8 + e]; }
        LOW[i].ia = _mm512_loadu_si512(pa);
        LOW[i].ib = _mm512_loadu_si512(pb);
        LOW[i].ix = _mm512_loadu_si512(px);
        LOW[i].iy = _mm512_loadu_si512(py);
        LOW[i].toff = _mm512_loadu_si512(tw);
    }
}
#endif

// Levels i_hi .. i_lo (forward: descending; inverse: ascending) on one block of 2^(i_hi+1)
// elements at absolute offset base.
static void levels_block(u64* d, u64 base, int i_hi, int i_lo, bool inverse) {
    int nlev = i_hi - i_lo + 1;
    for (int q = 0; q < nlev; q++) {
        int i = inverse ? i_lo + q : i_hi - q;
        u64 h = (u64)1 << i, size = (u64)1 << (i_hi + 1);
#if TZ_VEC
        if (i < 3) {
            const LowLevel& L = LOW[i];
            for (u64 e = 0; e < size; e += 16) {
                u64 e0 = base + e;
                __m512i X = _mm512_loadu_si512(d + e0), Y = _mm512_loadu_si512(d + e0 + 8);
                __m512i A = _mm512_permutex2var_epi64(X, L.ia, Y), B = _mm512_permutex2var_epi64(X, L.ib, Y);
                __m512i lam = _mm512_xor_si512(L.toff, _mm512_set1_epi64((long long)omega(e0 >> i)));
                if (!inverse) {
                    A = _mm512_xor_si512(A, mul8(B, lam));
                    B = _mm512_xor_si512(B, A);
                } else {
                    B = _mm512_xor_si512(B, A);
                    A = _mm512_xor_si512(A, mul8(B, lam));
                }
                _mm512_storeu_si512(d + e0, _mm512_permutex2var_epi64(A, L.ix, B));
                _mm512_storeu_si512(d + e0 + 8, _mm512_permutex2var_epi64(A, L.iy, B));
            }
            continue;
        }
#endif
        for (u64 o = 0; o < size; o += 2 * h)
            bfly(d + base + o, d + base + o + h, h, omega((base + o) >> i), inverse);
    }
}

// One level i over the whole array of 2^K elements, pairs split over threads.
static void level_full(u64* d, int K, int i, bool inverse, int nt) {
    u64 h = (u64)1 << i, npairs = (u64)1 << (K - 1);
    size_t ngroups = npairs / 4096 ? npairs / 4096 : 1;
    par(nt, ngroups, [&](size_t g0, size_t g1) {
        u64 p = g0 * npairs / ngroups, pend = g1 * npairs / ngroups;
        while (p < pend) {
            u64 blk = p >> i, o = blk << (i + 1), j = p & (h - 1);
            u64 seg_end = ((blk + 1) << i) < pend ? ((blk + 1) << i) : pend;
            bfly(d + o + j, d + o + h + j, seg_end - p, omega(o >> i), inverse);
            p = seg_end;
        }
    });
}

// Levels i and i - 1 in one pass (radix 4: half the memory traffic of two passes).
static void bfly4(u64* p0, u64* p1, u64* p2, u64* p3, u64 len, u64 l1, u64 l2, u64 l3, bool inverse) {
    u64 j = 0;
#if TZ_VEC
    __m512i L1 = _mm512_set1_epi64((long long)l1), L2 = _mm512_set1_epi64((long long)l2),
            L3 = _mm512_set1_epi64((long long)l3);
    for (; j + 8 <= len; j += 8) {
        __m512i a0 = _mm512_loadu_si512(p0 + j), a1 = _mm512_loadu_si512(p1 + j),
                a2 = _mm512_loadu_si512(p2 + j), a3 = _mm512_loadu_si512(p3 + j);
        if (!inverse) {
            a0 = _mm512_xor_si512(a0, mul8(a2, L1)); a2 = _mm512_xor_si512(a2, a0);
            a1 = _mm512_xor_si512(a1, mul8(a3, L1)); a3 = _mm512_xor_si512(a3, a1);
            a0 = _mm512_xor_si512(a0, mul8(a1, L2)); a1 = _mm512_xor_si512(a1, a0);
            a2 = _mm512_xor_si512(a2, mul8(a3, L3)); a3 = _mm512_xor_si512(a3, a2);
        } else {
            a1 = _mm512_xor_si512(a1, a0); a0 = _mm512_xor_si512(a0, mul8(a1, L2));
            a3 = _mm512_xor_si512(a3, a2); a2 = _mm512_xor_si512(a2, mul8(a3, L3));
            a2 = _mm512_xor_si512(a2, a0); a0 = _mm512_xor_si512(a0, mul8(a2, L1));
            a3 = _mm512_xor_si512(a3, a1); a1 = _mm512_xor_si512(a1, mul8(a3, L1));
        }
        _mm512_storeu_si512(p0 + j, a0); _mm512_storeu_si512(p1 + j, a1);
        _mm512_storeu_si512(p2 + j, a2); _mm512_storeu_si512(p3 + j, a3);
    }
#endif
    if (j < len) {
        if (!inverse) {
            bfly(p0 + j, p2 + j, len - j, l1, false); bfly(p1 + j, p3 + j, len - j, l1, false);
            bfly(p0 + j, p1 + j, len - j, l2, false); bfly(p2 + j, p3 + j, len - j, l3, false);
        } else {
            bfly(p0 + j, p1 + j, len - j, l2, true); bfly(p2 + j, p3 + j, len - j, l3, true);
            bfly(p0 + j, p2 + j, len - j, l1, true); bfly(p1 + j, p3 + j, len - j, l1, true);
        }
    }
}

static void level_full2(u64* d, int K, int i, bool inverse, int nt) {
    u64 q = (u64)1 << (i - 1), nquads = (u64)1 << (K - 2);
    size_t ngroups = nquads / 4096 ? nquads / 4096 : 1;
    par(nt, ngroups, [&](size_t g0, size_t g1) {
        u64 p = g0 * nquads / ngroups, pend = g1 * nquads / ngroups;
        while (p < pend) {
            u64 blk = p >> (i - 1), o = blk << (i + 1), j = p & (q - 1);
            u64 seg_end = ((blk + 1) << (i - 1)) < pend ? ((blk + 1) << (i - 1)) : pend;
            u64* b = d + o + j;
            bfly4(b, b + q, b + 2 * q, b + 3 * q, seg_end - p, omega(o >> i), omega(o >> (i - 1)),
                  omega((o + 2 * q) >> (i - 1)), inverse);
            p = seg_end;
        }
    });
}

static void fft(u64* d, int K, bool inverse, int nt) {
    int bl = K < BL ? K : BL;             // depth-first block: 2^bl elements
    u64 nblk = (u64)1 << (K - bl);
    if (!inverse) {
        int i = K - 1;
        for (; i - 1 >= bl; i -= 2) level_full2(d, K, i, false, nt);
        if (i >= bl) level_full(d, K, i, false, nt);
    }
    par(nt, nblk, [&](size_t b0, size_t b1) {
        for (size_t b = b0; b < b1; b++) levels_block(d, (u64)b << bl, bl - 1, 0, inverse);
    });
    if (inverse) {
        int i = K - 1, ntop = K - bl;     // mirror the forward grouping, in reverse
        if (ntop % 2) level_full(d, K, bl, true, nt);
        for (i = bl + (ntop % 2) + 1; i <= K - 1; i += 2) level_full2(d, K, i, true, nt);
    }
}

// ------------------------------------------------------------------ basis change

// Division by s_i inside one block c[0 .. 2^(i+1)), h = 2^i: monomial -> novel basis
// (forward) or back (inverse). With delta_t = h - 2^t for the terms y^(2^t) of s_i (t a proper
// bit subset of i), long division is c[j - delta_t] ^= c[j] for j = 2h-1 down to h. Position
// q receives c[q + delta_t] when 2^t <= q < h + 2^t, so the updates of the upper half land in
// [h, h + 2^tmax) and read [2h - 2^tmax, 2h), disjoint because tmax < i: the division is two
// gathers with no dependency inside either (phase 1: the upper half, phase 2: the lower half),
// which vectorise and split over threads. The inverse runs phase 2, then phase 1.
// Only c[0 .. end) can be nonzero on entry (forward; end = 2h otherwise).
struct DivS {
    int nd;
    u64 h, end, delta[32], lo[2][32], hi[2][32];
    DivS(int i, u64 end_) : nd(0), h((u64)1 << i), end(end_ < 2 * h ? end_ : 2 * h) {
        u64 pw[32];
        for (int t = 0; t < i; t++)
            if ((t & i) == t) { delta[nd] = h - ((u64)1 << t); pw[nd] = (u64)1 << t; nd++; }
        for (int k = 0; k < nd; k++)
            for (int up = 0; up < 2; up++) {
                lo[up][k] = up ? h : pw[k];
                u64 lim = end > delta[k] ? end - delta[k] : 0;    // source q + delta < end
                u64 cap = up ? h + pw[k] : h;
                hi[up][k] = lim < cap ? lim : cap;
            }
    }
    u64 p1_end() const {              // phase 1 writes [h, p1_end)
        u64 e = nd ? h + (h - delta[nd - 1]) : h;
        return e < end ? e : (end > h ? end : h);
    }
    u64 p2_end() const { return end < h ? end : h; }
    // gather over [q0, q1) of phase 1 (upper) or phase 2 (lower)
    void gather(u64* c, u64 q0, u64 q1, bool upper) const {
        const u64* L = lo[upper];
        const u64* H = hi[upper];
        u64 q = q0;
#if TZ_VEC
        for (; q + 8 <= q1; q += 8) {
            __m512i acc = _mm512_loadu_si512(c + q);
            for (int k = 0; k < nd; k++) {
                if (q >= L[k] && q + 8 <= H[k]) {
                    acc = _mm512_xor_si512(acc, _mm512_loadu_si512(c + q + delta[k]));
                } else if (q + 8 > L[k] && q < H[k]) {
                    u64 a = L[k] > q ? L[k] - q : 0, b = H[k] < q + 8 ? H[k] - q : 8;
                    __mmask8 msk = (__mmask8)(((1u << b) - 1) & ~((1u << a) - 1));
                    acc = _mm512_xor_si512(acc, _mm512_maskz_loadu_epi64(msk, c + q + delta[k]));
                }
            }
            _mm512_storeu_si512(c + q, acc);
        }
#endif
        for (; q < q1; q++) {
            u64 acc = c[q];
            for (int k = 0; k < nd; k++)
                if (q >= L[k] && q < H[k]) acc ^= c[q + delta[k]];
            c[q] = acc;
        }
    }
    // the same phase as one streaming XOR per term (cache-resident blocks)
    void loops(u64* c, bool upper) const {
        for (int k = 0; k < nd; k++) {
            u64 q = lo[upper][k], e = hi[upper][k], d = delta[k];
#if TZ_VEC
            for (; q + 8 <= e; q += 8)
                _mm512_storeu_si512(c + q, _mm512_xor_si512(_mm512_loadu_si512(c + q), _mm512_loadu_si512(c + q + d)));
#endif
            for (; q < e; q++) c[q] ^= c[q + d];
        }
    }
    // c[q] ^= sum of c[q + delta_k], k in [k0, k1), for q in [q0, q1): one store per element
    static void gather_terms(u64* c, u64 q0, u64 q1, const u64* dl, int nk) {
        u64 q = q0;
#if TZ_VEC
        if (q1 >= q0 + 8) {
            // the ragged end as one group overlapping the previous one, computed before any
            // store (sources are never targets in a phase, so both writes agree)
            u64 ql = q1 - 8;
            __m512i last = _mm512_loadu_si512(c + ql);
            for (int k = 0; k < nk; k++) last = _mm512_xor_si512(last, _mm512_loadu_si512(c + ql + dl[k]));
            for (; q + 8 <= q1; q += 8) {
                __m512i acc = _mm512_loadu_si512(c + q);
                for (int k = 0; k < nk; k++) acc = _mm512_xor_si512(acc, _mm512_loadu_si512(c + q + dl[k]));
                _mm512_storeu_si512(c + q, acc);
            }
            _mm512_storeu_si512(c + ql, last);
            return;
        }
#endif
        for (; q < q1; q++) {
            u64 acc = c[q];
            for (int k = 0; k < nk; k++) acc ^= c[q + dl[k]];
            c[q] = acc;
        }
    }
    // a whole block (end = 2h): the terms active on a range of q change only at q = 2^t
    // (lower half) and q = h + 2^t (upper half), so each phase is a few fixed-width gathers
    void phase_full(u64* c, bool upper) const {
        u64 pw[32];
        for (int k = 0; k < nd; k++) pw[k] = h - delta[k];
        for (int k = 0; k < nd; k++) {
            if (upper) gather_terms(c, h + (k ? pw[k - 1] : 0), h + pw[k], delta + k, nd - k);
            else gather_terms(c, pw[k], k + 1 < nd ? pw[k + 1] : h, delta, k + 1);
        }
    }
    void run_loops(u64* c, bool inverse) const {
        if (nd == 0 || end <= h) return;
        if (end < 2 * h) {
            if (!inverse) loops(c, true);
            loops(c, false);
            if (inverse) loops(c, true);
            return;
        }
        if (!inverse) phase_full(c, true);
        phase_full(c, false);
        if (inverse) phase_full(c, true);
    }
    void run(u64* c, bool inverse) const {
        if (nd == 0 || end <= h) return;
        if (!inverse) gather(c, h, p1_end(), true);
        gather(c, 0, p2_end(), false);
        if (inverse) gather(c, h, p1_end(), true);
    }
};

static void div_s(u64* c, int i, u64 top, bool inverse) { DivS(i, top).run(c, inverse); }

#if TZ_VEC
// Levels 3, 2, 1 of the basis change on blocks of 16 elements in two registers: every
// (level, phase, term) is c[q] ^= c[q + delta] on a fixed set of q, one masked permute-XOR.
struct LowStep {
    __m512i ix, iy;
    __mmask8 mx, my;
};
static std::vector<LowStep> LOWCONV[2];          // [inverse]

static void init_lowconv() {
    for (int inv = 0; inv < 2; inv++) {
        for (int s = 0; s < 3; s++) {
            int i = inv ? 1 + s : 3 - s;
            DivS D(i, (u64)2 << i);
            for (int ph = 0; ph < 2; ph++) {
                int upper = inv ? ph : 1 - ph;           // forward: phase 1 (upper) first
                for (int k = 0; k < D.nd; k++) {
                    long long idx[16];
                    unsigned mask = 0;
                    for (int q = 0; q < 16; q++) {
                        u64 qq = (u64)q & ((2 * D.h) - 1);
                        idx[q] = q;
                        if (qq >= D.lo[upper][k] && qq < D.hi[upper][k]) {
                            idx[q] = q + (long long)D.delta[k];
                            mask |= 1u << q;
                        }
                    }
                    LowStep st;
                    st.ix = _mm512_loadu_si512(idx);
                    st.iy = _mm512_loadu_si512(idx + 8);
                    st.mx = (__mmask8)(mask & 0xFF);
                    st.my = (__mmask8)(mask >> 8);
                    LOWCONV[inv].push_back(st);
                }
            }
        }
    }
}

static void low_conv(u64* c, u64 count, bool inverse) {
    const std::vector<LowStep>& steps = LOWCONV[inverse];
    for (u64 e = 0; e < count; e += 16) {
        __m512i X = _mm512_loadu_si512(c + e), Y = _mm512_loadu_si512(c + e + 8);
        for (const LowStep& st : steps) {
            __m512i sx = _mm512_permutex2var_epi64(X, st.ix, Y), sy = _mm512_permutex2var_epi64(X, st.iy, Y);
            X = _mm512_mask_xor_epi64(X, st.mx, X, sx);
            Y = _mm512_mask_xor_epi64(Y, st.my, Y, sy);
        }
        _mm512_storeu_si512(c + e, X);
        _mm512_storeu_si512(c + e + 8, Y);
    }
}
#endif

// The same division on one block spread over threads (the top levels).
static void div_s_par(u64* c, int i, u64 top, bool inverse, int nt) {
    DivS D(i, top);
    if (D.nd == 0 || D.end <= D.h) return;
    auto phase = [&](bool upper) {
        u64 q0 = upper ? D.h : 0, q1 = upper ? D.p1_end() : D.p2_end();
        u64 len = q1 - q0, ng = len / 65536 + 1;
        par(nt, ng, [&](size_t g0, size_t g1) {
            D.gather(c, q0 + (g0 * len / ng & ~(u64)7), g1 == ng ? q1 : q0 + (g1 * len / ng & ~(u64)7), upper);
        });
    };
    if (!inverse) phase(true);
    phase(false);
    if (inverse) phase(true);
}

// Monomial <-> novel basis for 2^K coefficients; len = number of possibly nonzero leading
// coefficients (forward only; pass 2^K otherwise).
static void basis_change(u64* c, int K, u64 len, bool inverse, int nt) {
    int bl = K < BL ? K : BL;
    u64 nblk = (u64)1 << (K - bl);
    auto top_level = [&](int i) {
        u64 bsz = (u64)2 << i, nb = (u64)1 << (K - 1 - i);
        auto top_of = [&](u64 o) { return inverse ? bsz : (len > o ? (len - o < bsz ? len - o : bsz) : 0); };
        if (nb < (u64)nt) {
            for (u64 b = 0; b < nb; b++) div_s_par(c + b * bsz, i, top_of(b * bsz), inverse, nt);
            return;
        }
        par(nt, nb, [&](size_t b0, size_t b1) {
            for (size_t b = b0; b < b1; b++) div_s(c + (u64)b * bsz, i, top_of((u64)b * bsz), inverse);
        });
    };
    std::vector<DivS*> levels;
    for (int i = 0; i < bl; i++) levels.push_back(new DivS(i, (u64)2 << i));
    if (!inverse)
        for (int i = K - 1; i >= bl; i--) top_level(i);
    par(nt, nblk, [&](size_t b0, size_t b1) {
        for (size_t b = b0; b < b1; b++) {
            u64 o = (u64)b << bl;
            if (!inverse && o >= len) continue;          // all zero, stays zero
#if TZ_VEC
            if ((inverse || len - o >= ((u64)1 << bl)) && bl >= 4) {   // whole block: fast path
                // levels [4, l1) in L1-sized sub-blocks of 2^l1, levels [l1, bl) on the block
                u64 bs = (u64)1 << bl;
                int l1 = bl < L1B ? bl : L1B;
                auto run_levels = [&](u64 base, u64 size, int ilo, int ihi) {
                    for (int q = 0; q < ihi - ilo; q++) {
                        int i = inverse ? ilo + q : ihi - 1 - q;
                        u64 bsz = (u64)2 << i;
                        for (u64 s = 0; s < size; s += bsz) levels[i]->run_loops(c + base + s, inverse);
                    }
                };
                if (!inverse) run_levels(o, bs, l1, bl);
                for (u64 sb = 0; sb < bs; sb += (u64)1 << l1) {
                    if (inverse) low_conv(c + o + sb, (u64)1 << l1, true);
                    run_levels(o + sb, (u64)1 << l1, 4, l1);
                    if (!inverse) low_conv(c + o + sb, (u64)1 << l1, false);
                }
                if (inverse) run_levels(o, bs, l1, bl);
                continue;
            }
#endif
            for (int q = 0; q < bl; q++) {
                int i = inverse ? q : bl - 1 - q;
                u64 bsz = (u64)2 << i;
                const DivS& full = *levels[i];
                for (u64 s = 0; s < ((u64)1 << bl); s += bsz) {
                    u64 oo = o + s;
                    u64 top = inverse ? bsz : (len > oo ? (len - oo < bsz ? len - oo : bsz) : 0);
                    if (top == bsz) full.run(c + oo, inverse);
                    else div_s(c + oo, i, top, inverse);
                }
            }
        }
    });
    if (inverse)
        for (int i = bl; i <= K - 1; i++) top_level(i);
    for (auto* p : levels) delete p;
}

// ------------------------------------------------------------------ packing and the product

static u64 nchunks(u64 nbits) { return (nbits + 31) / 32; }

static int plan_k(u64 n, u64 m) {
    u64 L = nchunks(n + m - 1) + nchunks(n) - 1;
    int K = 4;
    while (K <= MAXK && ((u64)1 << K) < L) K++;
    return K <= MAXK ? K : -1;
}

// bits (packed words, nbits bits, unused high bits ignored) -> 32-bit chunks in c[0 .. 2^K)
static void load_chunks(u64* c, int K, const u64* w, u64 nbits, int nt) {
    u64 nc = nchunks(nbits), N = (u64)1 << K;
    par(nt, 64, [&](size_t g0, size_t g1) {
        u64 a = g0 * N / 64, b = g1 * N / 64;
        for (u64 k = a; k < b; k++) {
            if (k >= nc) { c[k] = 0; continue; }
            u64 v = (w[k >> 1] >> (32 * (k & 1))) & 0xFFFFFFFFull;
            u64 lastbit = nbits - 32 * k;                     // bits of this chunk in use
            if (lastbit < 32) v &= ((u64)1 << lastbit) - 1;
            c[k] = v;
        }
    });
}

// 0/1 bytes (nbits of them) -> 32-bit chunks; returns 0, or -4 if some byte is not 0 or 1.
static int load_chunks_bytes(u64* c, int K, const uint8_t* b, u64 nbits, int nt) {
    u64 nc = nchunks(nbits), N = (u64)1 << K;
    int bad[64] = {0};
    par(nt, 64, [&](size_t g0, size_t g1) {
        for (size_t g = g0; g < g1; g++) {
            u64 a = g * N / 64, e = (g + 1) * N / 64;
            uint8_t acc = 0;
            for (u64 k = a; k < e; k++) {
                if (k >= nc) { c[k] = 0; continue; }
                const uint8_t* p = b + 32 * k;
                u64 cnt = nbits - 32 * k < 32 ? nbits - 32 * k : 32;
                u64 v = 0;
#if defined(__AVX2__)
                if (cnt == 32) {
                    __m256i x = _mm256_loadu_si256((const __m256i*)p);
                    if (!_mm256_testz_si256(x, _mm256_set1_epi8((char)0xFE))) acc |= 2;   // a byte > 1
                    v = (uint32_t)_mm256_movemask_epi8(_mm256_slli_epi64(x, 7));
                    c[k] = v;
                    continue;
                }
#endif
                for (u64 l = 0; l < cnt; l++) {
                    acc |= p[l];
                    v |= (u64)(p[l] & 1) << l;
                }
                c[k] = v;
            }
            bad[g] = acc > 1;
        }
    });
    for (int g = 0; g < 64; g++)
        if (bad[g]) return -4;
    return 0;
}

static int transform_in(u64* c, int K, const void* src, int is_bytes, u64 nbits, int nt) {
    if (is_bytes) {
        int rc = load_chunks_bytes(c, K, (const uint8_t*)src, nbits, nt);
        if (rc) return rc;
    } else {
        load_chunks(c, K, (const u64*)src, nbits, nt);
    }
    basis_change(c, K, nchunks(nbits), false, nt);
    fft(c, K, false, nt);
    return 0;
}

static void pointwise(u64* a, const u64* b, u64 N, int nt) {
    par(nt, 64, [&](size_t g0, size_t g1) {
        u64 lo = g0 * N / 64, hi = g1 * N / 64;
        u64 j = lo;
#if TZ_VEC
        for (; j + 8 <= hi; j += 8)
            _mm512_storeu_si512(a + j, mul8(_mm512_loadu_si512(a + j), _mm512_loadu_si512(b + j)));
#endif
        for (; j < hi; j++) a[j] = gf_mul(a[j], b[j]);
    });
}

// Product chunks C_k (2^K of them) -> output bits [n - 1, n - 1 + m) of sum C_k z^(32k), as
// ceil(m/64) words (unused high bits zero) or, if out_bytes, as m bytes 0/1.
static void extract(const u64* C, u64 N, u64 n, u64 m, void* out, int out_bytes, int nt) {
    auto word = [&](u64 w) -> u64 {      // bits [64 w, 64 w + 64) of the product
        u64 k = 2 * w;
        u64 v = k < N ? C[k] : 0;
        if (k >= 1 && k - 1 < N) v ^= C[k - 1] >> 32;
        if (k + 1 < N) v ^= C[k + 1] << 32;
        return v;
    };
    u64 q = (n - 1) / 64, r = (n - 1) % 64, nw = (m + 63) / 64, ng = nw / 4096 + 1;
    par(nt, ng, [&](size_t g0, size_t g1) {
        u64 a = g0 * nw / ng, b = g1 * nw / ng;
        for (u64 v = a; v < b; v++) {
            u64 x = word(q + v) >> r;
            if (r) x |= word(q + v + 1) << (64 - r);
            u64 cnt = m - 64 * v < 64 ? m - 64 * v : 64;
            if (cnt < 64) x &= ((u64)1 << cnt) - 1;
            if (!out_bytes) {
                ((u64*)out)[v] = x;
                continue;
            }
            uint8_t* o = (uint8_t*)out + 64 * v;
#if defined(__AVX512BW__)
            if (cnt == 64) {
                _mm512_storeu_si512(o, _mm512_maskz_set1_epi8((__mmask64)x, 1));
                continue;
            }
#endif
            for (u64 l = 0; l < cnt; l++) o[l] = (uint8_t)((x >> l) & 1);
        }
    });
}

static int ready() {
    std::call_once(BASIS_ONCE, [] {
        init_basis();
#if TZ_VEC
        if (BASIS_OK) {
            init_low();
            init_lowconv();
        }
#endif
    });
    return BASIS_OK;
}

// ------------------------------------------------------------------ C interface

extern "C" {

// Transform length exponent K (2^K words of work memory per operand), or -1 if too large.
int tz_plan(u64 n, u64 m) { return plan_k(n, m); }

// 1 if compiled with AVX-512 + VPCLMULQDQ, 0 for the scalar (PCLMULQDQ or portable) path.
int tz_vector_path(void) { return TZ_VEC; }

// Spectrum of the seed (n + m - 1 bits: packed words, or 0/1 bytes if seed_bytes) into S
// (2^K words). Returns 0, -1 (too large), -2 (no Cantor basis), -4 (a seed byte not 0/1).
int tz_seed_spectrum(const void* seed, int seed_bytes, u64 n, u64 m, u64* S, int nt) {
    if (!ready()) return -2;
    int K = plan_k(n, m);
    if (K < 0) return -1;
    return transform_in(S, K, seed, seed_bytes, n + m - 1, nt);
}

// Hash of the key (n bits, words or bytes) with a seed spectrum S; work: 2^K words; out:
// ceil(m/64) words or m bytes. Returns 0, -1, -2, or -5 (a key byte not 0/1).
int tz_hash_spectrum(const void* key, int key_bytes, u64 n, u64 m, const u64* S, u64* work,
                     void* out, int out_bytes, int nt) {
    if (!ready()) return -2;
    int K = plan_k(n, m);
    if (K < 0) return -1;
    u64 N = (u64)1 << K;
    if (transform_in(work, K, key, key_bytes, n, nt)) return -5;
    pointwise(work, S, N, nt);
    fft(work, K, true, nt);
    basis_change(work, K, N, true, nt);
    extract(work, N, n, m, out, out_bytes, nt);
    return 0;
}

// One-shot hash with caller-provided work arrays S and W (2^K words each).
int tz_hash(const void* key, int key_bytes, const void* seed, int seed_bytes, u64 n, u64 m,
            u64* S, u64* W, void* out, int out_bytes, int nt) {
    int rc = tz_seed_spectrum(seed, seed_bytes, n, m, S, nt);
    if (rc) return rc;
    return tz_hash_spectrum(key, key_bytes, n, m, S, W, out, out_bytes, nt);
}

// Field product in GF(2^64) (for tests).
u64 tz_gf_mul(u64 a, u64 b) { return gf_mul(a, b); }

// Cantor basis element beta_i (for tests: beta_i^2 + beta_i = beta_(i-1)).
u64 tz_cantor(int i) { return (ready() && i >= 0 && i < MAXK) ? BETA[i] : 0; }

}  // extern "C"
