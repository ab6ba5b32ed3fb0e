// Native Cascade engine (Bob's state machine and Alice's parity answers) for host/cascade.py.
//
// Mirrors the numpy engine of cascade.py round for round ("Cascade opt. (8)" of Martinez-Mateo
// et al., QIC 15 (2015), with sub-block reuse; schedules parallel / chain / frame), so both send
// the same queries and produce the same corrected keys and leakage; only the data structures
// differ:
//  * every pass keeps, per frame and block, a heap-indexed binary tree of the known nodes
//    (1 byte per node: bit 0 = mismatch Bob xor Alice, valid at leaves; bit 1 = split, i.e.
//    its halves are known), allocated zeroed and touched lazily; the leaf holding a bit is
//    found by walking down from the block's root;
//  * Bob's top-level block parities of a pass are computed when the pass starts: AND +
//    popcount with packed block masks for passes of a few blocks, one XOR per bit through the
//    inverse permutation otherwise;
//  * parities of ranges of a pass order are gathered on the packed key through the
//    permutation (no permuted copies of the key);
//  * the frames of a batch are split over two sub-sessions run on two threads when a round is
//    big; their requests are merged back into the one-session order.
// The round trip itself stays in Python: prepare() emits the requests of one round,
// finish() takes Alice's answers, applies the flips (the cascade) and starts new passes.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <mutex>
#include <iterator>
#include <thread>
#include <vector>

typedef int64_t i64;
typedef uint64_t u64;
typedef int32_t i32;
typedef uint8_t u8;
typedef uint32_t u32_t;

namespace {

inline u8 parity_contig(const u8* p, i64 len) {
    u64 acc = 0;
    i64 i = 0;
    for (; i + 32 <= len; i += 32) {
        u64 w0, w1, w2, w3;
        memcpy(&w0, p + i, 8); memcpy(&w1, p + i + 8, 8);
        memcpy(&w2, p + i + 16, 8); memcpy(&w3, p + i + 24, 8);
        acc ^= w0 ^ w1 ^ w2 ^ w3;
    }
    for (; i + 8 <= len; i += 8) { u64 w; memcpy(&w, p + i, 8); acc ^= w; }
    for (; i < len; ++i) acc ^= p[i];
    return (u8)(__builtin_popcountll(acc) & 1);
}

// parity of bits[perm[q]] for q in [s, e) on a packed key (bit x at word x >> 6, bit x & 63);
// pass 0 (the identity order) is a contiguous run of words
inline u8 parity_range_packed(const u64* w, const i32* perm, int j, i64 s, i64 e) {
    if (e <= s) return 0;
    if (j == 0) {
        i64 ws = s >> 6, we = (e - 1) >> 6;
        u64 lo = ~0ULL << (s & 63);
        u64 hi = ~0ULL >> (63 - ((e - 1) & 63));
        if (ws == we) return (u8)(__builtin_popcountll(w[ws] & lo & hi) & 1);
        u64 acc = (w[ws] & lo) ^ (w[we] & hi);
        for (i64 i = ws + 1; i < we; ++i) acc ^= w[i];
        return (u8)(__builtin_popcountll(acc) & 1);
    }
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
    return p;
}

// Top-level block parities of frames [f0, f1) for every pass: out[toff_j + f nb_j + b].
// Passes with a mask (mask_off >= 0: nb packed masks of W words) use AND + popcount on the
// packed key, the others one XOR per bit through the inverse permutation.
void top_parities_range(const u8* bits, i64 n, i64 f0, i64 f1, int P, const PassGeo* g,
                        const i32* inv, const u64* masks, const i64* mask_off, u8* out) {
    i64 W = (n + 63) >> 6;
    bool any_mask = false;
    for (int j = 0; j < P; ++j) any_mask |= mask_off[j] >= 0;
    std::vector<u64> packed(any_mask ? W : 0);
    for (i64 f = f0; f < f1; ++f) {
        const u8* b = bits + f * n;
        if (any_mask) pack_bits(b, n, packed.data());
        for (int j = 0; j < P; ++j) {
            const PassGeo& p = g[j];
            u8* t = out + p.toff + f * p.nb;
            if (mask_off[j] >= 0) {
                const u64* mk = masks + mask_off[j];
                for (i64 bl = 0; bl < p.nb; ++bl) {
                    u64 acc = 0;
                    const u64* row = mk + bl * W;
                    for (i64 w = 0; w < W; ++w) acc ^= packed[w] & row[w];
                    t[bl] = (u8)(__builtin_popcountll(acc) & 1);
                }
            } else if (p.row == 0) {
                for (i64 bl = 0; bl < p.nb; ++bl) {
                    i64 s = bl * p.k, e = std::min(n, s + p.k);
                    t[bl] = parity_contig(b + s, e - s);
                }
            } else {
                memset(t, 0, p.nb);
                const i32* iv = inv + p.row * n;
                if (p.shift >= 0) {
                    int sh = (int)p.shift;
                    for (i64 x = 0; x < n; ++x) t[iv[x] >> sh] ^= b[x];
                } else {
                    i64 k = p.k;
                    for (i64 x = 0; x < n; ++x) t[iv[x] / k] ^= b[x];
                }
            }
        }
    }
}

void top_parities(const u8* bits, i64 n, i64 F, int P, const PassGeo* g, const i32* inv,
                  const u64* masks, const i64* mask_off, u8* out, int threads) {
    if (threads > 1 && F >= 2 && F * n >= 200000) {
        i64 mid = F / 2;
        std::thread t(top_parities_range, bits, n, (i64)0, mid, P, g, inv, masks, mask_off, out);
        top_parities_range(bits, n, mid, F, P, g, inv, masks, mask_off, out);
        t.join();
    } else {
        top_parities_range(bits, n, 0, F, P, g, inv, masks, mask_off, out);
    }
}

struct Open {
    i64 g;    // virtual address of the leaf start (orders the searches as the numpy engine)
    i64 b;    // block within the frame
    i64 h;    // heap index of the leaf in its block's tree
    i64 grp;  // chain group
    i32 j, f, d, pad;
};

struct Flip {
    i64 key;  // f (n + 1) + x
    i64 grp;
    i64 seq;
};

struct Hit {
    i64 g;
    i64 seq;
    i64 b, h, grp;
    i32 j, f, d, pad;
};

struct Session {
    i64 F = 0, n = 0;
    int P = 0, sched = 1, threads = 1;
    std::vector<PassGeo> geo;
    const i32* perm = nullptr;
    const i32* inv = nullptr;
    std::vector<u8> bits, topA, topB;
    std::vector<u64> pk;    // Bob's key packed, Wn words per frame
    i64 Wn = 0;
    std::vector<u8*> tree;  // per pass: F * nb * 2K bytes (calloc: pages appear when touched)
    std::vector<i64> cur, corr;
    std::vector<Open> W, cont, found, rest, tog;
    std::vector<i64> run_idx;
    const u64* masks = nullptr;
    std::vector<i64> mask_off;
    std::vector<u64> packed;   // scratch: one frame, packed
    std::vector<Flip> flips;
    std::vector<Hit> hits;
    std::vector<signed char> lowF, lowG;  // scratch of the schedule, 127 = unset
};

// Node h (heap index: root 1, children 2h and 2h + 1) of block b of frame f in pass p. Blocks
// of up to 4096 bits keep their trees whole (a block's nodes share cache lines); bigger
// blocks (the few of the late passes) store the trees level by level across all blocks, so
// their roots and top levels are dense and an untouched subtree costs no page.
inline u8* node(Session& s, const PassGeo& p, i64 f, i64 b, i64 h) {
    i64 B = f * p.nb + b;
    if (p.K <= 4096) return s.tree[p.row] + B * 2 * p.K + h;
    i64 lv = i64(1) << (63 - __builtin_clzll((u64)h));
    return s.tree[p.row] + s.F * p.nb * (lv - 1) + (B - 1) * lv + h;
}

inline i64 leaf_off(const PassGeo& p, const Open& e) { return (e.h - (p.K >> e.d)) << e.d; }

// Bob's top-level block parities of pass j, frame f, from his current key (into topB).
void pass_parities(Session& s, int j, i64 f) {
    const PassGeo& p = s.geo[j];
    const i64 n = s.n;
    const u8* b = s.bits.data() + f * n;
    u8* t = s.topB.data() + p.toff + f * p.nb;
    if (s.mask_off[j] >= 0) {
        i64 W = (n + 63) >> 6;
        s.packed.resize(W);
        pack_bits(b, n, s.packed.data());
        const u64* mk = s.masks + s.mask_off[j];
        for (i64 bl = 0; bl < p.nb; ++bl) {
            u64 acc = 0;
            const u64* row = mk + bl * W;
            for (i64 w = 0; w < W; ++w) acc ^= s.packed[w] & row[w];
            t[bl] = (u8)(__builtin_popcountll(acc) & 1);
        }
    } else if (p.row == 0) {
        for (i64 bl = 0; bl < p.nb; ++bl) {
            i64 st = bl * p.k, e = std::min(n, st + p.k);
            t[bl] = parity_contig(b + st, e - st);
        }
    } else {
        memset(t, 0, p.nb);
        const i32* iv = s.inv + p.row * n;
        if (p.shift >= 0) {
            int sh = (int)p.shift;
            for (i64 x = 0; x < n; ++x) t[iv[x] >> sh] ^= b[x];
        } else {
            for (i64 x = 0; x < n; ++x) t[iv[x] / p.k] ^= b[x];
        }
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
                    e.b = b; e.h = 1; e.grp = t;
                    e.j = j; e.f = (i32)f; e.d = (i32)p.m; e.pad = 0;
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
    s.found.clear(); s.rest.clear(); s.run_idx.clear();
    for (const Open& e : s.W) (e.d == 0 ? s.found : s.rest).push_back(e);
    // descend without asking while the right half holds only padding
    for (;;) {
        bool any = false;
        for (Open& e : s.rest) {
            const PassGeo& p = s.geo[e.j];
            i64 off = leaf_off(p, e);
            i64 blen = (e.b == p.nb - 1) ? p.last : p.k;
            if (off + (i64(1) << (e.d - 1)) >= blen) {
                u8* t = node(s, p, e.f, e.b, e.h);
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
        // only the smallest open leaves of each chain (or frame) are searched this round
        std::vector<signed char>& low = s.sched == 2 ? s.lowF : s.lowG;
        for (const Open& e : s.rest) {
            i64 key = s.sched == 2 ? e.f : e.grp;
            if (e.d < low[key]) low[key] = (signed char)e.d;
        }
        for (size_t i = 0; i < s.rest.size(); ++i) {
            const Open& e = s.rest[i];
            if (e.d <= low[s.sched == 2 ? e.f : e.grp]) s.run_idx.push_back((i64)i);
        }
        for (const Open& e : s.rest) low[s.sched == 2 ? e.f : e.grp] = 127;
    } else {
        for (size_t i = 0; i < s.rest.size(); ++i) s.run_idx.push_back((i64)i);
    }
    for (size_t i = 0; i < s.run_idx.size(); ++i) {
        const Open& e = s.rest[s.run_idx[i]];
        const PassGeo& p = s.geo[e.j];
        i64 q0 = e.b * p.k + leaf_off(p, e);
        oj[i] = e.j; of[i] = e.f; os[i] = q0; oe[i] = q0 + (i64(1) << (e.d - 1));
    }
    return (i64)s.run_idx.size();
}

void finish(Session& s, const u8* ans) {
    const i64 n = s.n;
    const size_t nrun = s.run_idx.size();
    for (size_t i = 0; i < nrun; ++i) {
        if (i + 8 < nrun) {             // the tree nodes and the permutation are cache misses
            const Open& a = s.rest[s.run_idx[i + 8]];
            const PassGeo& pa = s.geo[a.j];
            __builtin_prefetch(node(s, pa, a.f, a.b, a.h), 1);
            __builtin_prefetch(s.perm + pa.row * n + a.b * pa.k + leaf_off(pa, a));
        }
        Open& e = s.rest[s.run_idx[i]];
        const PassGeo& p = s.geo[e.j];
        i64 half = i64(1) << (e.d - 1);
        i64 q0 = e.b * p.k + leaf_off(p, e);
        u8 bob = parity_range_packed(s.pk.data() + e.f * s.Wn, s.perm + p.row * n, (int)p.row, q0,
                                     q0 + half);
        u8 ml = (ans[i] ^ bob) & 1;
        *node(s, p, e.f, e.b, e.h) |= 2;
        *node(s, p, e.f, e.b, 2 * e.h) = ml;
        *node(s, p, e.f, e.b, 2 * e.h + 1) = ml ^ 1;
        e.h = 2 * e.h + (ml ^ 1);
        e.g += (i64)(ml ^ 1) * half;
        e.d -= 1;
        if (e.d == 0) {
            s.found.push_back(e);
            e.d = -1;                       // done: leaves the open list
        }
    }
    // the open searches that go on and the held ones, still in address order
    s.cont.clear();
    for (const Open& e : s.rest) if (e.d >= 0) s.cont.push_back(e);
    // the flips (one error may be found twice: once per pass)
    std::vector<Flip>& fl = s.flips;
    fl.clear();
    for (size_t i = 0; i < s.found.size(); ++i) {
        const Open& e = s.found[i];
        const PassGeo& p = s.geo[e.j];
        i64 x = s.perm[p.row * n + e.b * p.k + leaf_off(p, e)];
        fl.push_back(Flip{e.f * (n + 1) + x, e.grp, (i64)i});
    }
    std::stable_sort(fl.begin(), fl.end(), [](const Flip& a, const Flip& b) { return a.key < b.key; });
    size_t nf = 0;
    for (size_t i = 0; i < fl.size(); ++i)
        if (nf == 0 || fl[i].key != fl[nf - 1].key) fl[nf++] = fl[i];
    fl.resize(nf);
    i64 maxcur = -1;
    for (const Flip& fp : fl) {
        i64 f = fp.key / (n + 1), x = fp.key % (n + 1);
        s.bits[f * n + x] ^= 1;
        s.pk[f * s.Wn + (x >> 6)] ^= u64(1) << (x & 63);
        s.corr[f] += 1;
        maxcur = std::max(maxcur, s.cur[f]);
    }
    // toggle the leaf holding each flipped bit in every pass the frame has started
    std::vector<Hit>& hits = s.hits;
    hits.clear();
    for (i64 j = 0; j <= maxcur; ++j) {
        const PassGeo& p = s.geo[j];
        for (size_t i = 0; i < nf; ++i) {
            i64 f = fl[i].key / (n + 1), x = fl[i].key % (n + 1);
            if (j > s.cur[f]) continue;
            i64 q = s.inv[p.row * n + x];
            i64 b = p.shift >= 0 ? q >> p.shift : q / p.k, off = q - b * p.k;
            i64 h = 1;
            i64 d = p.m;
            while (*node(s, p, f, b, h) & 2) { --d; h = 2 * h + ((off >> d) & 1); }
            *node(s, p, f, b, h) ^= 1;
            Hit hh;
            hh.g = p.base + f * p.V + b * p.K + ((off >> d) << d);
            hh.seq = j * (i64)nf + (i64)i;
            hh.b = b; hh.h = h; hh.grp = fl[i].grp;
            hh.j = (i32)j; hh.f = (i32)f; hh.d = (i32)d; hh.pad = 0;
            hits.push_back(hh);
        }
    }
    std::sort(hits.begin(), hits.end(), [](const Hit& a, const Hit& b) {
        return a.g < b.g || (a.g == b.g && a.seq < b.seq);
    });
    s.tog.clear();
    for (size_t i = 0; i < hits.size();) {
        size_t e = i;
        while (e < hits.size() && hits[e].g == hits[i].g) ++e;
        if ((e - i) & 1) {
            const Hit& hh = hits[i];
            Open o;
            o.g = hh.g; o.b = hh.b; o.h = hh.h; o.grp = hh.grp;
            o.j = hh.j; o.f = hh.f; o.d = hh.d; o.pad = 0;
            s.tog.push_back(o);
        }
        i = e;
    }
    // new open list: merge (continuing first on equal addresses), keep the odd leaves
    s.rest.clear();
    std::merge(s.cont.begin(), s.cont.end(), s.tog.begin(), s.tog.end(), std::back_inserter(s.rest),
               [](const Open& a, const Open& b) { return a.g < b.g; });
    s.W.clear();
    for (size_t i = 0; i < s.rest.size(); ++i) {
        if (i + 16 < s.rest.size()) {
            const Open& a = s.rest[i + 16];
            __builtin_prefetch(node(s, s.geo[a.j], a.f, a.b, a.h));
        }
        const Open& e = s.rest[i];
        if (i > 0 && s.rest[i - 1].g == e.g) continue;
        if (*node(s, s.geo[e.j], e.f, e.b, e.h) & 1) s.W.push_back(e);
    }
    advance(s);
}

void session_free(Session* s) {
    for (u8* t : s->tree) free(t);
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
    s->bits.assign(bits, bits + F * n);
    s->Wn = (n + 63) >> 6;
    s->pk.assign(F * s->Wn, 0);
    for (i64 f = 0; f < F; ++f) pack_bits(bits + f * n, n, s->pk.data() + f * s->Wn);
    s->topA.assign(toff, 0);
    s->topB.assign(toff, 0);
    s->masks = masks;
    s->mask_off.assign(mask_off, mask_off + P);
    for (int j = 0; j < P; ++j) {
        const PassGeo& p = s->geo[j];
        u8* t = (u8*)calloc((size_t)(F * p.nb * 2 * p.K), 1);
        s->tree.push_back(t);
        if (!t) { session_free(s); return nullptr; }
    }
    s->cur.assign(F, -1);
    s->corr.assign(F, 0);
    s->lowF.assign(F, 127);
    s->lowG.assign(toff, 127);
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
    std::vector<int> src;              // sub-session of each merged request
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
        g->cnt[t] = prepare(s, r.data(), r.data() + w, r.data() + 2 * w, r.data() + 3 * w);
    }, big);
    // merge by (pass rank, frame, start): the order of one session over all frames
    i64 n0 = g->cnt[0], n1 = g->cnt[1];
    i64 w0 = (i64)g->rq[0].size() / 4, w1 = (i64)g->rq[1].size() / 4;
    const i64* A = g->rq[0].data();
    const i64* B = g->rq[1].data();
    i64 fo1 = g->fo[1];
    g->src.resize(n0 + n1);
    i64 a = 0, b = 0, o = 0;
    while (a < n0 || b < n1) {
        bool takeA;
        if (b >= n1) takeA = true;
        else if (a >= n0) takeA = false;
        else {
            int ra = g->rank[A[a]], rb = g->rank[B[b]];
            takeA = ra < rb || (ra == rb && A[w0 + a] < B[w1 + b] + fo1);
        }
        if (takeA) {
            oj[o] = A[a]; of[o] = A[w0 + a]; os[o] = A[2 * w0 + a]; oe[o] = A[3 * w0 + a];
            g->src[o++] = 0; ++a;
        } else {
            oj[o] = B[b]; of[o] = B[w1 + b] + fo1; os[o] = B[2 * w1 + b]; oe[o] = B[3 * w1 + b];
            g->src[o++] = 1; ++b;
        }
    }
    return o;
}

void cas_bob_finish(void* h, const u8* ans) {
    Group* g = (Group*)h;
    if (g->ss.size() == 1) { finish(*g->ss[0], ans); return; }
    for (size_t t = 0; t < 2; ++t) g->ans[t].assign(std::max<i64>(g->cnt[t], 1), 0);
    i64 k[2] = {0, 0};
    for (size_t i = 0; i < g->src.size(); ++i) { int t = g->src[i]; g->ans[t][k[t]++] = ans[i]; }
    bool big = g->open() >= kParallelMin;
    g->each([&](size_t t) { finish(*g->ss[t], g->ans[t].data()); }, big);
}

void cas_bob_result(void* h, u8* bits_out, i64* corr_out) {
    Group* g = (Group*)h;
    for (size_t t = 0; t < g->ss.size(); ++t) {
        Session* s = g->ss[t];
        std::copy(s->bits.begin(), s->bits.end(), bits_out + g->fo[t] * g->n);
        std::copy(s->corr.begin(), s->corr.end(), corr_out + g->fo[t]);
    }
}

// Alice (or anyone): top-level parities of the passes with rows ``rows`` and block sizes ``ks``
// of F frames of n bits; out holds, pass after pass, an (F, nb) table.
void cas_top_parities(const u8* bits, i64 F, i64 n, int P, const i64* rows, const i64* ks,
                      const i32* inv, const u64* masks, const i64* mask_off, u8* out, int threads) {
    std::vector<PassGeo> g;
    i64 toff = 0;
    for (int j = 0; j < P; ++j) {
        g.push_back(make_geo(rows[j], n, ks[j], toff));
        toff += F * g.back().nb;
    }
    top_parities(bits, n, F, P, g.data(), inv, masks, mask_off, out, threads);
}

// Parity of bits[f, perm[j][start:stop]] for each request (pass rows j of a (P, n) array).
// Parity of bits[f, perm[j][start:stop]] for each request; packed: F frames of W words, as
// numpy's little-endian packbits viewed as uint64; perm: P rows of n. Checks every request
// first: returns -1, or 4 i + what is wrong with request i (0: frame, 1: start/stop, 2: pass
// negative, 3: pass >= P, i.e. not supplied) and computes nothing.
i64 cas_ranges(const u64* packed, i64 W, i64 F, i64 n, const i32* perm, i64 P, i64 count,
               const i64* j, const i64* f, const i64* start, const i64* stop, u8* out, int threads) {
    for (i64 i = 0; i < count; ++i) {
        if (f[i] < 0 || f[i] >= F) return 4 * i;
        if (start[i] < 0 || stop[i] > n || stop[i] <= start[i]) return 4 * i + 1;
        if (j[i] < 0) return 4 * i + 2;
        if (j[i] >= P) return 4 * i + 3;
    }
    auto part = [=](i64 lo, i64 hi) {
        for (i64 i = lo; i < hi; ++i)
            out[i] = parity_range_packed(packed + f[i] * W, perm + j[i] * n, (int)j[i], start[i], stop[i]);
    };
    if (threads > 1 && count >= 4096) {
        std::thread t(part, count / 2, count);
        part(0, count / 2);
        t.join();
    } else {
        part(0, count);
    }
    return -1;
}

}  // extern "C"
