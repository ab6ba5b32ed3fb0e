// Native Cascade engine (Bob's state machine and Alice's parity answers) for host/cascade.py.
//
// Mirrors the numpy engine of cascade.py round for round ("Cascade opt. (8)" of Martinez-Mateo
// et al., QIC 15 (2015), with sub-block reuse; schedules parallel / chain / frame), so both send
// the same queries and produce the same corrected keys and leakage; only the data structures
// differ:
//  * every pass keeps, per frame and block, a heap-indexed binary tree of the known nodes
//    (1 byte per node: bit 0 = mismatch Bob xor Alice, valid at leaves; bit 1 = split, i.e.
//    its halves are known), allocated zeroed and touched lazily; the leaf holding a bit is
//    found in one load from a per-position map of leaf depths (blocks of 65-4096 bits) or by
//    walking down from the block's root (small trees fit a cache line; big blocks are rarely
//    split);
//  * both parties keep their key packed in the order of each pass, built with SIMD gathers
//    when the pass starts (passes of more than 8 blocks) or once the ranges asked in it add
//    up to n/2 bits (before that, ranges are gathered through the permutation); Bob updates
//    his copies on every flip, Alice keeps a prefix parity of the words, so a range parity
//    costs Bob a few words and Alice O(1);
//  * Bob's top-level block parities of a pass come from that copy when the pass starts
//    (AND + popcount with packed block masks for passes of at most 8 blocks);
//  * the frames of a batch are split over two sub-sessions run on two threads when a round is
//    big; their requests are merged back into the one-session order; Alice answers big
//    rounds on two threads too;
//  * the kernel counts the parities asked per frame and checks that every answer is a bit.
// The round trip itself stays in Python: prepare() emits the requests of one round,
// finish() takes Alice's answers, applies the flips (the cascade) and starts new passes.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <mutex>
#include <sys/mman.h>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif
#include <iterator>
#include <thread>
#include <vector>

typedef int64_t i64;
typedef uint64_t u64;
typedef int32_t i32;
typedef uint8_t u8;
typedef uint32_t u32_t;

namespace {

// parity of bits[perm[q]] for q in [s, e) on a packed key (bit x at word x >> 6, bit x & 63)
inline u8 parity_range_packed(const u64* w, const i32* perm, i64 s, i64 e) {
    u64 a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    i64 q = s;
    for (; q + 4 <= e; q += 4) {
        u32_t x0 = (u32_t)perm[q], x1 = (u32_t)perm[q + 1], x2 = (u32_t)perm[q + 2], x3 = (u32_t)perm[q + 3];
        a0 ^= w[x0 >> 6] >> (x0 & 63); a1 ^= w[x1 >> 6] >> (x1 & 63);
        a2 ^= w[x2 >> 6] >> (x2 & 63); a3 ^= w[x3 >> 6] >> (x3 & 63);
    }
    for (; q < e; ++q) { u32_t x = (u32_t)perm[q]; a0 ^= w[x >> 6] >> (x & 63); }
    return (u8)((a0 ^ a1 ^ a2 ^ a3) & 1);
}

// parity of bits [s, e) of a packed word array (s < e)
inline u8 parity_words(const u64* w, i64 s, i64 e) {
    i64 ws = s >> 6, we = (e - 1) >> 6;
    u64 lo = ~0ULL << (s & 63);
    u64 hi = ~0ULL >> (63 - ((e - 1) & 63));
    if (ws == we) return (u8)(__builtin_popcountll(w[ws] & lo & hi) & 1);
    u64 acc = (w[ws] & lo) ^ (w[we] & hi);
    for (i64 i = ws + 1; i < we; ++i) acc ^= w[i];
    return (u8)(__builtin_popcountll(acc) & 1);
}

// the same with a prefix parity of the words (pre[w] = parity of words [0, w)): O(1)
inline u8 parity_words_pre(const u64* w, const u8* pre, i64 s, i64 e) {
    i64 ws = s >> 6, we = (e - 1) >> 6;
    u64 lo = ~0ULL << (s & 63);
    u64 hi = ~0ULL >> (63 - ((e - 1) & 63));
    if (ws == we) return (u8)(__builtin_popcountll(w[ws] & lo & hi) & 1);
    return (u8)((__builtin_popcountll((w[ws] & lo) ^ (w[we] & hi)) ^ pre[we] ^ pre[ws + 1]) & 1);
}

// a key in the order of a pass, packed (out bit q = bytes[perm[q]]), from a 0/1 byte array
// readable for 3 bytes past bit n - 1 (the gathers load 4 bytes): 16 (AVX-512) or 8 (AVX2)
// positions per gather
inline void permute_bytes(const u8* bytes, const i32* perm, i64 n, u64* out) {
    i64 W = (n + 63) >> 6, full = n >> 6;
    i64 o = 0;
#if defined(__AVX512F__)
    const __m512i one = _mm512_set1_epi32(1);
    for (; o < full; ++o) {
        u64 x = 0;
        for (int t = 0; t < 4; ++t) {
            __m512i idx = _mm512_loadu_si512((const void*)(perm + (o << 6) + 16 * t));
            __m512i v = _mm512_i32gather_epi32(idx, (const void*)bytes, 1);
            x |= (u64)_mm512_test_epi32_mask(v, one) << (16 * t);
        }
        out[o] = x;
    }
#elif defined(__AVX2__)
    for (; o < full; ++o) {
        u64 x = 0;
        for (int t = 0; t < 8; ++t) {
            __m256i idx = _mm256_loadu_si256((const __m256i*)(perm + (o << 6) + 8 * t));
            __m256i v = _mm256_i32gather_epi32((const int*)bytes, idx, 1);
            x |= (u64)(u32_t)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v, 31))) << (8 * t);
        }
        out[o] = x;
    }
#endif
    for (; o < W; ++o) {
        i64 lo = o << 6, hi = std::min(n, lo + 64);
        u64 x = 0;
        for (i64 q = lo; q < hi; ++q) x |= (u64)(bytes[perm[q]] & 1) << (q - lo);
        out[o] = x;
    }
}

// the same from the packed key w (bit x at 32-bit word x >> 5, bit x & 31): more work per
// position, but the key is 8x smaller than the bytes, which matters once they outgrow the cache
inline void permute_packed(const u64* w, const i32* perm, i64 n, u64* out) {
    const u32_t* w32 = (const u32_t*)w;
    i64 W = (n + 63) >> 6, full = n >> 6;
    i64 o = 0;
#if defined(__AVX512F__)
    const __m512i one = _mm512_set1_epi32(1), low5 = _mm512_set1_epi32(31);
    for (; o < full; ++o) {
        u64 x = 0;
        for (int t = 0; t < 4; ++t) {
            __m512i idx = _mm512_loadu_si512((const void*)(perm + (o << 6) + 16 * t));
            __m512i v = _mm512_i32gather_epi32(_mm512_srli_epi32(idx, 5), (const void*)w32, 4);
            v = _mm512_srlv_epi32(v, _mm512_and_si512(idx, low5));
            x |= (u64)_mm512_test_epi32_mask(v, one) << (16 * t);
        }
        out[o] = x;
    }
#elif defined(__AVX2__)
    const __m256i low5 = _mm256_set1_epi32(31);
    for (; o < full; ++o) {
        u64 x = 0;
        for (int t = 0; t < 8; ++t) {
            __m256i idx = _mm256_loadu_si256((const __m256i*)(perm + (o << 6) + 8 * t));
            __m256i v = _mm256_i32gather_epi32((const int*)w32, _mm256_srli_epi32(idx, 5), 4);
            v = _mm256_srlv_epi32(v, _mm256_and_si256(idx, low5));
            x |= (u64)(u32_t)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v, 31))) << (8 * t);
        }
        out[o] = x;
    }
#endif
    for (; o < W; ++o) {
        i64 lo = o << 6, hi = std::min(n, lo + 64);
        u64 x = 0;
        for (i64 q = lo; q < hi; ++q) {
            u32_t y = (u32_t)perm[q];
            x |= ((w[y >> 6] >> (y & 63)) & 1) << (q - lo);
        }
        out[o] = x;
    }
}

// a key in the order of a pass: from the bytes while they fit the cache, else from the packed key
inline void permute_key(const u8* bytes, const u64* w, const i32* perm, i64 n, u64* out) {
    if (n >= (i64(1) << 18)) permute_packed(w, perm, n, out);
    else permute_bytes(bytes, perm, n, out);
}

inline void prefix_parity(const u64* w, i64 W, u8* pre) {
    u8 acc = 0;
    pre[0] = 0;
    for (i64 i = 0; i < W; ++i) { acc ^= (u8)(__builtin_popcountll(w[i]) & 1); pre[i + 1] = acc; }
}

inline void pack_bits(const u8* bits, i64 n, u64* out) {
    i64 W = (n + 63) >> 6;
    for (i64 w = 0; w < W; ++w) {
        i64 lo = w << 6, hi = std::min(n, lo + 64);
        u64 x = 0;
        if (hi - lo == 64) {
            for (int t = 0; t < 8; ++t) {
                u64 b;
                memcpy(&b, bits + lo + 8 * t, 8);
                // gather bit 0 of each byte into 8 bits (bytes are 0/1)
                x |= ((b * 0x0102040810204080ULL) >> 56) << (8 * t);
            }
        } else {
            for (i64 i = lo; i < hi; ++i) x |= (u64)(bits[i] & 1) << (i - lo);
        }
        out[w] = x;
    }
}

struct PassGeo {
    i64 row;    // row of the (P, n) permutation arrays (the pass index)
    i64 k, nb, last, K, m, V;
    i64 base;   // virtual address of the pass (dense passes first, as the numpy engine)
    i64 toff;   // offset of the pass in the top-level tables (= its first chain group)
    i64 shift;  // log2 k if k is a power of 2, else -1
    u8* tree;   // Bob's trees of the pass (Session::tree)
    i64 plane;  // F nb: blocks of the pass in the session (level planes of big trees)
};

PassGeo make_geo(i64 row, i64 n, i64 k, i64 toff) {
    PassGeo p;
    p.row = row;
    p.k = k;
    p.nb = (n + k - 1) / k;
    p.last = n - (p.nb - 1) * k;
    p.m = 0;
    while ((i64(1) << p.m) < k) ++p.m;
    p.K = i64(1) << p.m;
    p.V = p.nb * p.K;
    p.base = 0;
    p.toff = toff;
    p.shift = (p.K == k) ? p.m : -1;
    p.tree = nullptr;
    p.plane = 0;
    return p;
}

// (32 bytes; a batch holds fewer than 2^31 bits, so blocks, nodes, groups and frames fit i32)
struct Open {
    i64 g;    // virtual address of the leaf start (orders the searches as the numpy engine)
    i32 b;    // block within the frame
    i32 h;    // heap index of the leaf in its block's tree
    i32 grp;  // chain group
    i32 f;    // frame
    int16_t j, d;  // pass, level of the leaf
};

struct Flip {
    i64 key;  // f (n + 1) + x
    i64 grp;
    i64 seq;
    i32 f, x; // frame, key bit
};

struct Hit {
    Open o;   // the leaf a flip toggles
    i64 seq;
};

struct Session {
    i64 F = 0, n = 0;
    int P = 0, sched = 1, threads = 1;
    std::vector<PassGeo> geo;
    const i32* perm = nullptr;
    const i32* inv = nullptr;
    std::vector<u8> bits, topA, topB;
    std::vector<u64> pk;    // Bob's key packed, Wn words per frame
    // Bob's key in the order of pass j >= 1, packed (F * Wn words, allocated when first used),
    // per frame built when its pass starts (passes scattered through the permutation) or once
    // the ranges gathered in it add up to n/2 bits; kept up to date by the flips
    std::vector<std::vector<u64>> pc;
    std::vector<u8> pcb;       // P * F: copy of (pass, frame) built
    std::vector<i64> demand;   // P * F: bits gathered without a copy
    i64 Wn = 0;
    std::vector<u8*> tree;  // per pass: F * nb * 2K bytes
    // per pass with blocks of 64 < K <= 4096: the depth (below the block's root) of the leaf
    // that holds each position, F * nb * K bytes, so a flip finds its leaf in one load (else
    // null: small trees fit a cache line, big blocks are rarely split)
    std::vector<u8*> dep;
    std::vector<size_t> tree_bytes, dep_bytes;
    std::vector<i64> cur, corr, leak;   // per frame: pass, corrections, parities asked in rounds
    std::vector<Open> W, found, rest, tog;
    std::vector<i64> run_idx;
    const u64* masks = nullptr;
    std::vector<i64> mask_off;
    std::vector<Flip> flips;
    std::vector<Hit> hits;
    std::vector<i64> qs;      // scratch of the flips: position in a pass order, -1 = not started
    std::vector<u32_t> lowF, lowG;  // scratch of the schedule: round stamp << 8 | lowest level
    u32_t stamp = 0;
};

// Node h (heap index: root 1, children 2h and 2h + 1) of block b of frame f in pass p. Blocks
// of up to 4096 bits keep their trees whole (a block's nodes share cache lines); bigger
// blocks (the few of the late passes) store the trees level by level across all blocks, so
// their roots and top levels are dense and an untouched subtree costs no page.
inline u8* node(Session&, const PassGeo& p, i64 f, i64 b, i64 h) {
    i64 B = f * p.nb + b;
    if (p.K <= 4096) return p.tree + ((B * p.K) << 1) + h;
    i64 lv = i64(1) << (63 - __builtin_clzll((u64)h));
    return p.tree + p.plane * (lv - 1) + (B - 1) * lv + h;
}

inline i64 leaf_off(const PassGeo& p, const Open& e) { return (e.h - (p.K >> e.d)) << e.d; }

// leaf e (before its level drops) is split: its positions now lie in leaves one level deeper
inline void mark_split(Session& s, const PassGeo& p, const Open& e) {
    u8* d = s.dep[e.j];
    if (!d) return;
    u8* at = d + (e.f * p.nb + e.b) * p.K + leaf_off(p, e);
    const u8 v = (u8)(p.m - e.d + 1);
    const size_t len = (size_t)1 << e.d;
    if (len >= 16) memset(at, v, len);
    else for (size_t i = 0; i < len; ++i) at[i] = v;
}

u64* bob_copy(Session& s, int j, i64 f) {
    std::vector<u64>& c = s.pc[j];
    if (c.empty()) c.assign((size_t)(s.F * s.Wn), 0);
    u64* out = c.data() + f * s.Wn;
    if (!s.pcb[j * s.F + f]) {
        permute_key(s.bits.data() + f * s.n, s.pk.data() + f * s.Wn, s.perm + s.geo[j].row * s.n, s.n, out);
        s.pcb[j * s.F + f] = 1;
    }
    return out;
}

// Bob's current parity of positions [q0, q1) of the order of pass j in frame f
inline u8 bob_range(Session& s, const PassGeo& p, int j, i64 f, i64 q0, i64 q1) {
    if (p.row == 0) return parity_words(s.pk.data() + f * s.Wn, q0, q1);
    if (s.pcb[j * s.F + f]) return parity_words(s.pc[j].data() + f * s.Wn, q0, q1);
    i64& dm = s.demand[j * s.F + f];
    dm += q1 - q0;
    if (2 * dm >= s.n) return parity_words(bob_copy(s, j, f), q0, q1);
    return parity_range_packed(s.pk.data() + f * s.Wn, s.perm + p.row * s.n, q0, q1);
}

// Bob's top-level block parities of pass j, frame f, from his current key (into topB).
void pass_parities(Session& s, int j, i64 f) {
    const PassGeo& p = s.geo[j];
    const i64 n = s.n;
    u8* t = s.topB.data() + p.toff + f * p.nb;
    const u64* pk = s.pk.data() + f * s.Wn;
    if (s.mask_off[j] >= 0) {
        const i64 W = s.Wn;
        const u64* mk = s.masks + s.mask_off[j];
        for (i64 bl = 0; bl < p.nb; ++bl) {
            u64 acc = 0;
            const u64* row = mk + bl * W;
            for (i64 w = 0; w < W; ++w) acc ^= pk[w] & row[w];
            t[bl] = (u8)(__builtin_popcountll(acc) & 1);
        }
    } else {
        // pass 0: the packed key itself; other passes: Bob's copy in the pass order
        const u64* src = p.row == 0 ? pk : bob_copy(s, j, f);
        for (i64 bl = 0; bl < p.nb; ++bl) t[bl] = parity_words(src, bl * p.k, std::min(n, (bl + 1) * p.k));
    }
}

// Frames with no open search start their next pass (repeatedly: a pass whose blocks all agree
// needs no round).
void advance(Session& s) {
    std::vector<u8> busy(s.F, 0);
    for (const Open& e : s.W) busy[e.f] = 1;
    bool added = false;
    const size_t old = s.W.size();
    for (i64 f = 0; f < s.F; ++f) {
        if (busy[f]) continue;
        while (s.cur[f] < s.P - 1) {
            int j = (int)++s.cur[f];
            const PassGeo& p = s.geo[j];
            pass_parities(s, j, f);
            bool any = false;
            for (i64 b = 0; b < p.nb; ++b) {
                i64 t = p.toff + f * p.nb + b;
                u8 mis = (s.topA[t] ^ s.topB[t]) & 1;
                *node(s, p, f, b, 1) = mis;
                if (mis) {
                    Open e;
                    e.g = p.base + f * p.V + b * p.K;
                    e.b = (i32)b; e.h = 1; e.grp = (i32)t;
                    e.j = (int16_t)j; e.f = (i32)f; e.d = (int16_t)p.m;
                    s.W.push_back(e);
                    any = true;
                }
            }
            if (any) { added = true; break; }
        }
    }
    if (added) {
        auto lt = [](const Open& a, const Open& b) { return a.g < b.g; };
        std::sort(s.W.begin() + old, s.W.end(), lt);
        std::inplace_merge(s.W.begin(), s.W.begin() + old, s.W.end(), lt);
    }
}

i64 prepare(Session& s, i64* oj, i64* of, i64* os, i64* oe) {
    s.found.clear(); s.run_idx.clear();
    s.rest.swap(s.W);                  // (W is rebuilt by finish)
    {
        size_t w = 0;
        for (size_t i = 0; i < s.rest.size(); ++i) {
            const Open& e = s.rest[i];
            if (e.d == 0) s.found.push_back(e);
            else s.rest[w++] = e;
        }
        s.rest.resize(w);
    }
    // descend without asking while the right half holds only padding
    for (;;) {
        bool any = false;
        for (Open& e : s.rest) {
            const PassGeo& p = s.geo[e.j];
            if (p.k == p.K && (e.b != p.nb - 1 || p.last == p.K)) continue;   // no padding
            i64 off = leaf_off(p, e);
            i64 blen = (e.b == p.nb - 1) ? p.last : p.k;
            if (off + (i64(1) << (e.d - 1)) >= blen) {
                u8* t = node(s, p, e.f, e.b, e.h);
                mark_split(s, p, e);
                *t |= 2;
                *node(s, p, e.f, e.b, 2 * e.h) = *t & 1;
                *node(s, p, e.f, e.b, 2 * e.h + 1) = 0;
                e.h *= 2;
                e.d -= 1;
                any = true;
            }
        }
        if (!any) break;
        size_t w = 0;
        for (size_t i = 0; i < s.rest.size(); ++i) {
            if (s.rest[i].d == 0) s.found.push_back(s.rest[i]);
            else s.rest[w++] = s.rest[i];
        }
        s.rest.resize(w);
    }
    if (s.sched != 0 && !s.rest.empty()) {
        // only the smallest open leaves of each chain (or frame) are searched this round; the
        // lowest level per key is valid in the round it was stamped with (no reset pass)
        std::vector<u32_t>& low = s.sched == 2 ? s.lowF : s.lowG;
        const u32_t stamp = ++s.stamp << 8;
        const bool byf = s.sched == 2;
        for (const Open& e : s.rest) {
            u32_t& l = low[byf ? e.f : e.grp];
            if ((l & ~0xFFu) != stamp || (u32_t)e.d < (l & 0xFFu)) l = stamp | (u32_t)e.d;
        }
        const size_t nr = s.rest.size();
        s.run_idx.resize(nr);
        size_t k = 0;
        for (size_t i = 0; i < nr; ++i) {
            const Open& e = s.rest[i];
            s.run_idx[k] = (i64)i;
            k += (u32_t)e.d <= (low[byf ? e.f : e.grp] & 0xFFu);
        }
        s.run_idx.resize(k);
    } else {
        for (size_t i = 0; i < s.rest.size(); ++i) s.run_idx.push_back((i64)i);
    }
    for (size_t i = 0; i < s.run_idx.size(); ++i) {
        const Open& e = s.rest[s.run_idx[i]];
        const PassGeo& p = s.geo[e.j];
        i64 q0 = e.b * p.k + leaf_off(p, e);
        oj[i] = e.j; of[i] = e.f; os[i] = q0; oe[i] = q0 + (i64(1) << (e.d - 1));
        s.leak[e.f] += 1;               // (a request Bob makes is a parity Alice discloses)
    }
    return (i64)s.run_idx.size();
}

// where the step of a search reads and writes: its tree node, its first position in the pass
// order and, if Bob has a copy of the key in that order (or the pass is pass 0), its words
struct Step {
    u8* nd;
    const u64* w;
    i64 q0;
};

void finish(Session& s, const u8* ans) {
    const i64 n = s.n;
    const size_t nrun = s.run_idx.size();
    // software pipeline: the addresses of step i + 8 are computed (and prefetched) once, 8
    // steps ahead (the tree nodes, the leaf-depth maps and the key words are cache misses)
    const size_t kAhead = 8;
    Step ring[kAhead];
    auto plan = [&](size_t i) {
        const Open& a = s.rest[s.run_idx[i]];
        const PassGeo& pa = s.geo[a.j];
        Step& st = ring[i % kAhead];
        i64 off = leaf_off(pa, a);
        st.nd = node(s, pa, a.f, a.b, a.h);
        st.q0 = a.b * pa.k + off;
        __builtin_prefetch(st.nd, 1);
        if (s.dep[a.j]) __builtin_prefetch(s.dep[a.j] + (a.f * pa.nb + a.b) * pa.K + off, 1);
        if (pa.row == 0) st.w = s.pk.data() + a.f * s.Wn;
        else if (s.pcb[a.j * s.F + a.f]) st.w = s.pc[a.j].data() + a.f * s.Wn;
        else st.w = nullptr;
        if (st.w) __builtin_prefetch(st.w + (st.q0 >> 6));
        else __builtin_prefetch(s.perm + pa.row * n + st.q0);
    };
    for (size_t i = 0; i < std::min(nrun, kAhead); ++i) plan(i);
    for (size_t i = 0; i < nrun; ++i) {
        const Step st = ring[i % kAhead];
        if (i + kAhead < nrun) plan(i + kAhead);
        Open& e = s.rest[s.run_idx[i]];
        const PassGeo& p = s.geo[e.j];
        i64 half = i64(1) << (e.d - 1);
        i64 q0 = st.q0;
        // (a copy built by an earlier step of this round is found by bob_range)
        u8 bob = st.w ? parity_words(st.w, q0, q0 + half) : bob_range(s, p, e.j, e.f, q0, q0 + half);
        u8 ml = (ans[i] ^ bob) & 1;
        mark_split(s, p, e);
        u8* nd = st.nd;
        *nd |= 2;
        u8* kid = p.K <= 4096 ? nd + e.h : node(s, p, e.f, e.b, 2 * e.h);   // (siblings are adjacent)
        kid[0] = ml;
        kid[1] = ml ^ 1;
        e.h = 2 * e.h + (ml ^ 1);
        e.g += (i64)(ml ^ 1) * half;
        e.d -= 1;
        if (e.d == 0) {
            s.found.push_back(e);
            e.d = -1;                       // done: leaves the open list
        }
    }
    // s.rest: the open searches that go on and the held ones, in address order, and the
    // finished ones (d = -1, skipped by the merge below)
    // the flips (one error may be found twice: once per pass)
    std::vector<Flip>& fl = s.flips;
    fl.clear();
    for (size_t i = 0; i < s.found.size(); ++i) {
        if (i + 8 < s.found.size()) {
            const Open& a = s.found[i + 8];
            const PassGeo& pa = s.geo[a.j];
            __builtin_prefetch(s.perm + pa.row * n + a.b * pa.k + leaf_off(pa, a));
        }
        const Open& e = s.found[i];
        const PassGeo& p = s.geo[e.j];
        i64 x = s.perm[p.row * n + e.b * p.k + leaf_off(p, e)];
        fl.push_back(Flip{e.f * (n + 1) + x, e.grp, (i64)i, e.f, (i32)x});
    }
    std::sort(fl.begin(), fl.end(), [](const Flip& a, const Flip& b) {
        return a.key < b.key || (a.key == b.key && a.seq < b.seq);   // (stable: by search order)
    });
    size_t nf = 0;
    for (size_t i = 0; i < fl.size(); ++i)
        if (nf == 0 || fl[i].key != fl[nf - 1].key) fl[nf++] = fl[i];
    fl.resize(nf);
    i64 maxcur = -1;
    for (size_t i = 0; i < nf; ++i) {
        if (i + 8 < nf) {
            i64 f8 = fl[i + 8].f, x8 = fl[i + 8].x;
            __builtin_prefetch(s.bits.data() + f8 * n + x8, 1);
            __builtin_prefetch(s.pk.data() + f8 * s.Wn + (x8 >> 6), 1);
        }
        const Flip& fp = fl[i];
        i64 f = fp.f, x = fp.x;
        s.bits[f * n + x] ^= 1;
        s.pk[f * s.Wn + (x >> 6)] ^= u64(1) << (x & 63);
        s.corr[f] += 1;
        maxcur = std::max(maxcur, s.cur[f]);
    }
    // toggle the leaf holding each flipped bit in every pass the frame has started
    std::vector<Hit>& hits = s.hits;
    hits.clear();
    std::vector<i64>& qs = s.qs;
    qs.resize(nf);
    for (i64 j = 0; j <= maxcur; ++j) {
        const PassGeo& p = s.geo[j];
        const i32* iv = s.inv + p.row * n;
        for (size_t i = 0; i < nf; ++i) {       // positions in the pass order (cache misses)
            if (i + 16 < nf) __builtin_prefetch(iv + fl[i + 16].x);
            i64 f = fl[i].f, x = fl[i].x;
            qs[i] = j > s.cur[f] ? -1 : (i64)iv[x];
        }
        u8* dp = s.dep[j];
        for (size_t i = 0; i < nf; ++i) {
            // two stages ahead: the leaf depth (16 flips on), then the leaf itself (8 on)
            if (dp && i + 16 < nf && qs[i + 16] >= 0) {
                i64 f8 = fl[i + 16].f, q8 = qs[i + 16];
                i64 b8 = p.shift >= 0 ? q8 >> p.shift : q8 / p.k;
                __builtin_prefetch(dp + (f8 * p.nb + b8) * p.K + (q8 - b8 * p.k));
            }
            if (i + 8 < nf && qs[i + 8] >= 0) {
                i64 f8 = fl[i + 8].f, q8 = qs[i + 8];
                i64 b8 = p.shift >= 0 ? q8 >> p.shift : q8 / p.k, o8 = q8 - b8 * p.k;
                if (dp) {
                    i64 d8 = p.m - dp[(f8 * p.nb + b8) * p.K + o8];
                    __builtin_prefetch(node(s, p, f8, b8, (p.K + o8) >> d8), 1);
                } else {
                    __builtin_prefetch(node(s, p, f8, b8, 1));
                }
                if (j > 0 && s.pcb[j * s.F + f8]) __builtin_prefetch(s.pc[j].data() + f8 * s.Wn + (q8 >> 6), 1);
            }
            i64 q = qs[i];
            if (q < 0) continue;
            i64 f = fl[i].f;
            if (j > 0 && s.pcb[j * s.F + f]) s.pc[j][f * s.Wn + (q >> 6)] ^= u64(1) << (q & 63);
            i64 b = p.shift >= 0 ? q >> p.shift : q / p.k, off = q - b * p.k;
            i64 h, d;
            if (dp) {
                d = p.m - dp[(f * p.nb + b) * p.K + off];
                h = (p.K + off) >> d;
            } else {
                h = 1;
                d = p.m;
                while (*node(s, p, f, b, h) & 2) { --d; h = 2 * h + ((off >> d) & 1); }
            }
            *node(s, p, f, b, h) ^= 1;
            Hit hh;
            hh.o.g = p.base + f * p.V + b * p.K + ((off >> d) << d);
            hh.seq = j * (i64)nf + (i64)i;
            hh.o.b = (i32)b; hh.o.h = (i32)h; hh.o.grp = (i32)fl[i].grp;
            hh.o.j = (int16_t)j; hh.o.f = (i32)f; hh.o.d = (int16_t)d;
            hits.push_back(hh);
        }
    }
    std::sort(hits.begin(), hits.end(), [](const Hit& a, const Hit& b) {
        return a.o.g < b.o.g || (a.o.g == b.o.g && a.seq < b.seq);
    });
    s.tog.clear();
    for (size_t i = 0; i < hits.size();) {
        size_t e = i;
        while (e < hits.size() && hits[e].o.g == hits[i].o.g) ++e;
        if ((e - i) & 1) s.tog.push_back(hits[i].o);
        i = e;
    }
    // new open list: merge the continuing searches and the toggled leaves by address, keep the
    // odd leaves. A continuing search sits on a leaf of mismatch 1 (the odd half, or a held
    // search) unless a flip toggled it, so only leaves that were toggled are read.
    std::vector<Open>& W = s.W;
    const std::vector<Open>& C = s.rest;
    const std::vector<Open>& T = s.tog;
    W.resize(C.size() + T.size());
    size_t i = 0, k = 0, w = 0;
    while (i < C.size() || k < T.size()) {
        if (i < C.size() && C[i].d < 0) { ++i; continue; }
        if (k < T.size() && k + 8 < T.size()) {
            const Open& a = T[k + 8];
            __builtin_prefetch(node(s, s.geo[a.j], a.f, a.b, a.h));
        }
        if (k >= T.size() || (i < C.size() && C[i].g < T[k].g)) {
            W[w++] = C[i++];
        } else if (i >= C.size() || T[k].g < C[i].g) {
            const Open& e = T[k++];
            if (*node(s, s.geo[e.j], e.f, e.b, e.h) & 1) W[w++] = e;
        } else {                            // the same leaf: the continuing search, if still odd
            const Open& e = C[i++];
            ++k;
            if (*node(s, s.geo[e.j], e.f, e.b, e.h) & 1) W[w++] = e;
        }
    }
    W.resize(w);
    advance(s);
}

// Zeroed tables. Sparse ones (the trees of the big blocks, mostly untouched) come straight
// from the kernel, where untouched pages cost nothing (calloc would memset them once malloc's
// dynamic mmap threshold has grown); dense ones from calloc (cheaper than a page fault per page).
// Blocks from this size on (the halves of the late passes) have sparse trees: they are rarely
// searched. (Measured: making the trees of 4096-bit blocks sparse too costs ~10 % at n = 10^4,
// where every frame searches them.)
const i64 kSparseK = 8192;

u8* zeroed(size_t bytes, bool sparse) {
    if (!sparse) return (u8*)calloc(bytes, 1);
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? nullptr : (u8*)p;
}

void unzeroed(u8* p, size_t bytes, bool sparse) {
    if (!p) return;
    if (sparse) munmap(p, bytes); else free(p);
}

void session_free(Session* s) {
    for (size_t j = 0; j < s->tree.size(); ++j) {
        unzeroed(s->tree[j], s->tree_bytes[j], s->geo[j].K >= kSparseK);
        unzeroed(s->dep[j], s->dep_bytes[j], s->geo[j].K >= kSparseK);
    }
    delete s;
}

Session* session_new(i64 F, i64 n, int P, const i64* ks, const i32* perm, const i32* inv,
                     const u8* bits, const u64* masks, const i64* mask_off, int sched) {
    Session* s = new Session();
    s->F = F; s->n = n; s->P = P; s->sched = sched;
    s->perm = perm; s->inv = inv;
    i64 toff = 0;
    for (int j = 0; j < P; ++j) {
        s->geo.push_back(make_geo(j, n, ks[j], toff));
        toff += F * s->geo.back().nb;
    }
    // virtual addresses as the numpy engine: dense passes first, then the sparse ones
    i64 addr = 0;
    for (int pass = 0; pass < 2; ++pass) {
        for (int j = 0; j < P; ++j) {
            PassGeo& p = s->geo[j];
            bool dense = p.nb >= 4 || p.K <= 4096;
            if (dense != (pass == 0)) continue;
            addr = (addr + p.K - 1) / p.K * p.K;
            p.base = addr;
            addr += F * p.V;
        }
    }
    s->bits.assign((size_t)(F * n + 4), 0);    // (+4: the gathers of permute_bytes)
    std::copy(bits, bits + F * n, s->bits.begin());
    s->Wn = (n + 63) >> 6;
    s->pk.assign(F * s->Wn, 0);
    for (i64 f = 0; f < F; ++f) pack_bits(bits + f * n, n, s->pk.data() + f * s->Wn);
    s->pc.resize(P);
    s->pcb.assign((size_t)(P * F), 0);
    s->demand.assign((size_t)(P * F), 0);
    s->topA.assign(toff, 0);
    s->topB.assign(toff, 0);
    s->masks = masks;
    s->mask_off.assign(mask_off, mask_off + P);
    for (int j = 0; j < P; ++j) {
        const PassGeo& p = s->geo[j];
        size_t tb = (size_t)(F * p.nb * 2 * p.K), db = p.K <= 4096 && p.K > 64 ? (size_t)(F * p.nb * p.K) : 0;
        u8* t = zeroed(tb, p.K >= kSparseK);
        u8* d = db ? zeroed(db, p.K >= kSparseK) : nullptr;
        s->tree.push_back(t);
        s->dep.push_back(d);
        s->geo[j].tree = t;
        s->geo[j].plane = F * p.nb;
        s->tree_bytes.push_back(tb);
        s->dep_bytes.push_back(db);
        if (!t || (db && !d)) { session_free(s); return nullptr; }
    }
    s->cur.assign(F, -1);
    s->corr.assign(F, 0);
    s->leak.assign(F, 0);
    s->lowF.assign(F, 0);
    s->lowG.assign(toff, 0);
    return s;
}


// A second thread that runs one task at a time for the group (persistent: a round is short).
struct Worker {
    std::mutex m;
    std::condition_variable cv;
    std::function<void()> task;
    bool has = false, done = true, quit = false;
    std::thread th;   // last: starts after the members it uses exist
    Worker() : th([this] { loop(); }) {}
    ~Worker() {
        { std::lock_guard<std::mutex> l(m); quit = true; }
        cv.notify_all();
        th.join();
    }
    void loop() {
        for (;;) {
            std::unique_lock<std::mutex> l(m);
            cv.wait(l, [this] { return has || quit; });
            if (quit) return;
            std::function<void()> t = task;
            has = false;
            l.unlock();
            t();
            l.lock();
            done = true;
            cv.notify_all();
        }
    }
    void start(std::function<void()> t) {
        { std::lock_guard<std::mutex> l(m); task = std::move(t); has = true; done = false; }
        cv.notify_all();
    }
    void wait() {
        std::unique_lock<std::mutex> l(m);
        cv.wait(l, [this] { return done; });
    }
};

// a run of requests of one sub-session (t) within a round: its [lo, lo + len) at merged index at
struct Chunk {
    int t;
    i64 lo, len, at;
};

// The frames split into sub-sessions (one per thread); every frame's exchange is its own, so
// the requests of a round are the union of theirs, merged into the single-session order.
struct Group {
    i64 F, n;
    int P;
    std::vector<Session*> ss;
    std::vector<i64> fo;               // first frame of each sub-session
    std::vector<int> rank;             // order of the passes in the address space
    std::vector<std::vector<i64>> rq;  // per sub-session: j, f, start, stop (4 per request)
    std::vector<std::vector<u8>> ans;
    std::vector<i64> cnt;
    std::vector<std::vector<std::pair<int, i64>>> runs = std::vector<std::vector<std::pair<int, i64>>>(2);
    std::vector<Chunk> chunks;         // where the merged requests of a round came from
    Worker* worker = nullptr;
    ~Group() {
        delete worker;
        for (Session* s : ss) session_free(s);
    }
    i64 open() const {
        i64 c = 0;
        for (Session* s : ss) c += (i64)s->W.size();
        return c;
    }
    // run f(i) for every sub-session, on two threads when the round is big enough to pay
    template <class Fn> void each(Fn fn, bool big) {
        if (ss.size() == 2 && worker && big) {
            worker->start([&] { fn(1); });
            fn(0);
            worker->wait();
        } else {
            for (size_t i = 0; i < ss.size(); ++i) fn(i);
        }
    }
};

const i64 kParallelMin = 2048;   // open searches below which a round runs on one thread

// Alice: her key packed with a prefix parity of its words, and, per pass row j >= 1 and frame,
// her key in the pass order (packed, with its prefix parity), built when the top-level
// parities of the pass are computed (passes without masks) or once the ranges asked in it add
// up to n/2 bits; then every range parity costs O(1).
struct Alice {
    i64 F = 0, n = 0, W = 0;
    std::vector<u8> bytes;               // F * n + 4 (the gathers of permute_bytes)
    std::vector<u64> pk;
    std::vector<u8> pre0;
    std::vector<std::vector<u64>> pc;    // per row: F * W words
    std::vector<std::vector<u8>> pre;    // per row: F * (W + 1)
    std::vector<std::vector<u8>> built;  // per row: F flags
    std::vector<std::vector<i64>> demand;
    Worker* worker = nullptr;            // second thread, made on first use
    ~Alice() { delete worker; }
    void rows(i64 P) {
        if ((i64)pc.size() >= P) return;
        pc.resize(P); pre.resize(P); built.resize(P); demand.resize(P);
    }
    void alloc(i64 j) {
        if (pc[j].empty()) {
            pc[j].assign((size_t)(F * W), 0);
            pre[j].assign((size_t)(F * (W + 1)), 0);
        }
    }
    void build(i64 j, i64 f, const i32* perm) {   // (alloc(j) first)
        permute_key(bytes.data() + f * n, pk.data() + f * W, perm + j * n, n, pc[j].data() + f * W);
        prefix_parity(pc[j].data() + f * W, W, pre[j].data() + f * (W + 1));
        built[j][f] = 1;
    }
    void need(i64 j) {
        if (built[j].empty()) { built[j].assign(F, 0); demand[j].assign(F, 0); }
    }
    u8 range(i64 j, i64 f, i64 s, i64 e, const i32* perm) const {
        if (j == 0) return parity_words_pre(pk.data() + f * W, pre0.data() + f * (W + 1), s, e);
        if (built[j][f]) return parity_words_pre(pc[j].data() + f * W, pre[j].data() + f * (W + 1), s, e);
        return parity_range_packed(pk.data() + f * W, perm + j * n, s, e);
    }
};

// fn(lo, hi) over [0, count), split in two halves on Alice's second thread when big
template <class Fn> void split2(Alice& a, int threads, bool big, i64 count, Fn fn) {
    if (threads > 1 && big && count >= 2) {
        if (!a.worker) a.worker = new Worker();
        a.worker->start([&] { fn(count / 2, count); });
        fn((i64)0, count / 2);
        a.worker->wait();
    } else {
        fn((i64)0, count);
    }
}


}  // namespace

extern "C" {

void* cas_bob_new(i64 F, i64 n, int P, const i64* ks, const i32* perm, const i32* inv,
                  const u8* bits, const u64* masks, const i64* mask_off, int sched, int threads) {
    Group* g = new Group();
    g->F = F; g->n = n; g->P = P;
    int T = (threads > 1 && F >= 2) ? 2 : 1;
    i64 at = 0;
    for (int t = 0; t < T; ++t) {
        i64 Ft = (F - at) / (T - t);
        g->fo.push_back(at);
        Session* s = session_new(Ft, n, P, ks, perm, inv, bits + at * n, masks, mask_off, sched);
        if (!s) { delete g; return nullptr; }   // out of memory
        g->ss.push_back(s);
        at += Ft;
    }
    g->rq.resize(T);
    g->ans.resize(T);
    g->cnt.assign(T, 0);
    std::vector<std::pair<i64, int>> order;
    for (int j = 0; j < P; ++j) order.push_back({g->ss[0]->geo[j].base, j});
    std::sort(order.begin(), order.end());
    g->rank.assign(P, 0);
    for (int r = 0; r < P; ++r) g->rank[order[r].second] = r;
    if (T == 2) g->worker = new Worker();
    return g;
}

void cas_bob_free(void* h) { delete (Group*)h; }

// Alice's top-level parities (the layout of cas_top_parities for all P passes) -> start passes
void cas_bob_start(void* h, const u8* topA) {
    Group* g = (Group*)h;
    i64 toff = 0;
    for (int j = 0; j < g->P; ++j) {
        i64 nb = g->ss[0]->geo[j].nb;
        for (size_t t = 0; t < g->ss.size(); ++t) {
            Session* s = g->ss[t];
            const u8* src = topA + toff + g->fo[t] * nb;
            std::copy(src, src + s->F * nb, s->topA.begin() + s->geo[j].toff);
        }
        toff += g->F * nb;
    }
    g->each([&](size_t t) { advance(*g->ss[t]); }, g->F * g->n >= 1000000);
}

i64 cas_bob_open(void* h) { return ((Group*)h)->open(); }

i64 cas_bob_prepare(void* h, i64* oj, i64* of, i64* os, i64* oe) {
    Group* g = (Group*)h;
    if (g->ss.size() == 1) return prepare(*g->ss[0], oj, of, os, oe);
    bool big = g->open() >= kParallelMin;
    g->each([&](size_t t) {
        Session& s = *g->ss[t];
        std::vector<i64>& r = g->rq[t];
        i64 w = (i64)s.W.size();
        r.resize(4 * (size_t)std::max<i64>(w, 1));
        i64 c = prepare(s, r.data(), r.data() + w, r.data() + 2 * w, r.data() + 3 * w);
        g->cnt[t] = c;
        // the requests come sorted by (pass rank, frame, start): cut them into runs of a pass
        std::vector<std::pair<int, i64>>& runs = g->runs[t];
        runs.clear();
        for (i64 i = 0; i < c; ++i)
            if (i == 0 || r[i] != r[i - 1]) runs.push_back({g->rank[r[i]], i});
        runs.push_back({INT32_MAX, c});
    }, big);
    // merge into the order of one session over all frames: per pass rank, the frames of the
    // first sub-session come before those of the second
    const i64 w0 = (i64)g->rq[0].size() / 4, w1 = (i64)g->rq[1].size() / 4;
    const i64* A = g->rq[0].data();
    const i64* B = g->rq[1].data();
    const i64 fo1 = g->fo[1];
    const std::vector<std::pair<int, i64>>& ra = g->runs[0];
    const std::vector<std::pair<int, i64>>& rb = g->runs[1];
    g->chunks.clear();
    size_t x = 0, y = 0;
    i64 o = 0;
    auto put = [&](int t, const i64* S, i64 w, i64 lo, i64 hi, i64 fo) {
        i64 len = hi - lo;
        memcpy(oj + o, S + lo, len * sizeof(i64));
        for (i64 i = 0; i < len; ++i) of[o + i] = S[w + lo + i] + fo;
        memcpy(os + o, S + 2 * w + lo, len * sizeof(i64));
        memcpy(oe + o, S + 3 * w + lo, len * sizeof(i64));
        g->chunks.push_back({t, lo, len, o});
        o += len;
    };
    while (x + 1 < ra.size() || y + 1 < rb.size()) {
        int r = std::min(ra[x].first, rb[y].first);
        if (ra[x].first == r) { put(0, A, w0, ra[x].second, ra[x + 1].second, 0); ++x; }
        if (rb[y].first == r) { put(1, B, w1, rb[y].second, rb[y + 1].second, fo1); ++y; }
    }
    return o;
}

// Alice's answers to the requests of the round (count of them); -1 (and nothing done) if one
// is not 0 or 1
i64 cas_bob_finish(void* h, const u8* ans, i64 count) {
    Group* g = (Group*)h;
    for (i64 i = 0; i < count; ++i)
        if (ans[i] > 1) return -1;
    static const u8 none = 0;
    if (!count) ans = &none;
    if (g->ss.size() == 1) { finish(*g->ss[0], ans); return 0; }
    for (size_t t = 0; t < 2; ++t) g->ans[t].resize(std::max<i64>(g->cnt[t], 1));
    for (const Chunk& c : g->chunks) memcpy(g->ans[c.t].data() + c.lo, ans + c.at, (size_t)c.len);
    bool big = g->open() >= kParallelMin;
    g->each([&](size_t t) { finish(*g->ss[t], g->ans[t].data()); }, big);
    return 0;
}

// Bob's corrected key, the corrections and the parities asked in the rounds, per frame
void cas_bob_result(void* h, u8* bits_out, i64* corr_out, i64* leak_out) {
    Group* g = (Group*)h;

    for (size_t t = 0; t < g->ss.size(); ++t) {
        Session* s = g->ss[t];
        std::copy(s->bits.begin(), s->bits.begin() + s->F * s->n, bits_out + g->fo[t] * g->n);
        std::copy(s->corr.begin(), s->corr.end(), corr_out + g->fo[t]);
        std::copy(s->leak.begin(), s->leak.end(), leak_out + g->fo[t]);
    }
}

void* cas_alice_new(const u8* bits, i64 F, i64 n) {
    Alice* a = new Alice();
    a->F = F; a->n = n; a->W = (n + 63) >> 6;
    a->bytes.assign((size_t)(F * n + 4), 0);
    u8* by = a->bytes.data();
    for (i64 i = 0; i < F * n; ++i) by[i] = bits[i] & 1;
    a->pk.assign((size_t)(F * a->W), 0);
    a->pre0.assign((size_t)(F * (a->W + 1)), 0);
    for (i64 f = 0; f < F; ++f) {
        pack_bits(bits + f * n, n, a->pk.data() + f * a->W);
        prefix_parity(a->pk.data() + f * a->W, a->W, a->pre0.data() + f * (a->W + 1));
    }
    return a;
}

void cas_alice_free(void* h) { delete (Alice*)h; }

// Top-level parities of the passes with rows ``rows`` (permutations ``perm``: at least
// max(rows) + 1 rows of n) and block sizes ``ks``; out holds, pass after pass, an (F, nb) table.
void cas_alice_tables(void* h, int P, const i64* rows, const i64* ks, const i32* perm,
                      const u64* masks, const i64* mask_off, u8* out, int threads) {
    Alice& a = *(Alice*)h;
    i64 maxrow = 0;
    for (int j = 0; j < P; ++j) maxrow = std::max(maxrow, rows[j]);
    a.rows(maxrow + 1);
    std::vector<PassGeo> g;
    i64 toff = 0;
    for (int j = 0; j < P; ++j) {
        g.push_back(make_geo(rows[j], a.n, ks[j], toff));
        toff += a.F * g.back().nb;
        if (rows[j] > 0 && mask_off[j] < 0) {
            a.need(rows[j]);
            a.alloc(rows[j]);   // before the threads write to it
        }
    }
    auto part = [&](i64 f0, i64 f1) {
        for (i64 f = f0; f < f1; ++f) {
            const u64* pk = a.pk.data() + f * a.W;
            for (int j = 0; j < P; ++j) {
                const PassGeo& p = g[j];
                u8* t = out + p.toff + f * p.nb;
                if (mask_off[j] >= 0) {
                    const u64* mk = masks + mask_off[j];
                    for (i64 bl = 0; bl < p.nb; ++bl) {
                        u64 acc = 0;
                        const u64* row = mk + bl * a.W;
                        for (i64 w = 0; w < a.W; ++w) acc ^= pk[w] & row[w];
                        t[bl] = (u8)(__builtin_popcountll(acc) & 1);
                    }
                    continue;
                }
                i64 r = p.row;
                if (r > 0 && !a.built[r][f]) a.build(r, f, perm);
                for (i64 bl = 0; bl < p.nb; ++bl)
                    t[bl] = a.range(r, f, bl * p.k, std::min(a.n, (bl + 1) * p.k), perm);
            }
        }
    };
    split2(a, threads, a.F * a.n >= 200000, a.F, part);
}

// Parity of Alice's bits[f, perm[j][start:stop]] for each request; perm: P rows of n. Checks
// every request first: returns -1, or 4 i + what is wrong with request i (0: frame,
// 1: start/stop, 2: pass negative, 3: pass >= P, i.e. not supplied) and computes nothing.
i64 cas_alice_ranges(void* h, const i32* perm, i64 P, i64 count, const i64* j, const i64* f,
                     const i64* start, const i64* stop, u8* out, int threads) {
    Alice& a = *(Alice*)h;
    const i64 F = a.F, n = a.n;
    for (i64 i = 0; i < count; ++i) {
        if ((u64)f[i] >= (u64)F) return 4 * i;
        if (start[i] < 0 || stop[i] > n || stop[i] <= start[i]) return 4 * i + 1;
        if ((u64)j[i] >= (u64)P) return 4 * i + (j[i] < 0 ? 2 : 3);
    }
    a.rows(P);
    // copies worth building: the ranges asked in (pass, frame) reach n/2 bits
    std::vector<std::pair<i64, i64>> todo;
    for (i64 i = 0; i < count; ++i) {
        i64 r = j[i];
        if (r == 0) continue;
        i64 fr = f[i];
        std::vector<u8>& bt = a.built[r];
        if (bt.empty()) a.need(r);
        if (bt[fr]) continue;
        i64& d = a.demand[r][fr];
        i64 before = d;
        d += stop[i] - start[i];
        if (2 * d >= n && 2 * before < n) todo.push_back({r, fr});
    }
    for (auto& t : todo) a.alloc(t.first);
    split2(a, threads, (i64)todo.size() * n >= 200000, (i64)todo.size(), [&](i64 lo, i64 hi) {
        for (i64 i = lo; i < hi; ++i) a.build(todo[i].first, todo[i].second, perm);
    });
    // per row: the copies, their prefix parities and built flags (row 0: the key itself)
    std::vector<const u64*> wb(P, nullptr);
    std::vector<const u8*> pb(P, nullptr), bb(P, nullptr);
    wb[0] = a.pk.data();
    pb[0] = a.pre0.data();
    for (i64 r = 1; r < P; ++r)
        if (!a.pc[r].empty()) { wb[r] = a.pc[r].data(); pb[r] = a.pre[r].data(); bb[r] = a.built[r].data(); }
    const i64 W = a.W;
    split2(a, threads, count >= kParallelMin, count, [&](i64 lo, i64 hi) {
        for (i64 i = lo; i < hi; ++i) {
            if (i + 8 < hi) {
                i64 r = j[i + 8], fr = f[i + 8];
                if (r == 0 || (bb[r] && bb[r][fr])) {
                    __builtin_prefetch(wb[r] + fr * W + (start[i + 8] >> 6));
                    __builtin_prefetch(pb[r] + fr * (W + 1) + (start[i + 8] >> 6));
                }
            }
            i64 r = j[i], fr = f[i];
            if (r == 0 || (bb[r] && bb[r][fr]))
                out[i] = parity_words_pre(wb[r] + fr * W, pb[r] + fr * (W + 1), start[i], stop[i]);
            else
                out[i] = parity_range_packed(a.pk.data() + fr * W, perm + r * n, start[i], stop[i]);
        }
    });
    return -1;
}

}  // extern "C"
