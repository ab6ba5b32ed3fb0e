// Polynomial (Wegman-Carter) hash over GF(2^128) for host/auth.py: the same function as
// auth._PolyHash, h_k(S) = sum_i B_i k^(n+2-i) + (8 len S) k, S zero-padded to n 16-byte blocks
// B_i read big-endian, field GF(2)[x] / (x^128 + x^7 + x^2 + x + 1) in the polynomial basis
// (bit j of the 128-bit integer is the coefficient of x^j; GCM's field without GCM's bit
// reflection). Written for qkdlink, no code taken elsewhere.
//
// Method. Horner's rule aggregated over AGG = 8 blocks (Gueron, Kounavis, "Intel Carry-Less
// Multiplication Instruction and its Usage for Computing the GCM Mode", Intel white paper
// 323640 (2010/2014), Sec. "aggregated reduction"):
//     acc <- (acc + B_1) k^8 + B_2 k^7 + ... + B_8 k,
// the eight 256-bit carry-less products are XORed unreduced and reduced once. A 128 x 128-bit
// product is four 64 x 64 carry-less multiplications (PCLMULQDQ when the compiler targets it,
// else a portable shift-and-XOR loop: same results, slower). Reduction uses
// x^128 = x^7 + x^2 + x + 1; the at most 7 bits that spill past x^127 are folded once more.
// The key powers are precomputed by ph_init into a caller-owned table (the caller wipes it).
#include <cstdint>
#include <cstring>
#if defined(__PCLMUL__) && defined(__SSSE3__)
#include <immintrin.h>
#define PH_CLMUL 1
#else
#define PH_CLMUL 0
#endif

typedef uint64_t u64;

static const int AGG = 8;            // blocks per reduction
// Key table layout (u64, caller-owned): [2 j] = low 64 bits of k^(j+1), [2 j + 1] = high.
static const int TABLE_WORDS = 2 * AGG;

static inline u64 load_be64(const uint8_t* p) {
    u64 v;
    std::memcpy(&v, p, 8);
    return __builtin_bswap64(v);
}

// Portable 64 x 64 -> 128 carry-less product.
static inline void clmul64_sw(u64 a, u64 b, u64* lo, u64* hi) {
    u64 l = 0, h = 0;
    for (int k = 0; k < 64; k++) {
        u64 m = (u64)0 - ((b >> k) & 1);
        l ^= (a << k) & m;
        if (k) h ^= (a >> (64 - k)) & m;
    }
    *lo = l;
    *hi = h;
}

// (r1:r0) = (h1:h0) x^128 + (l1:l0) mod x^128 + x^7 + x^2 + x + 1.
static inline void reduce(u64 l0, u64 l1, u64 h0, u64 h1, u64* r0, u64* r1) {
    u64 over = (h1 >> 63) ^ (h1 >> 62) ^ (h1 >> 57);          // bits 128..134 of H (1 + x + x^2 + x^7)
    *r0 = l0 ^ h0 ^ (h0 << 1) ^ (h0 << 2) ^ (h0 << 7) ^ over ^ (over << 1) ^ (over << 2) ^ (over << 7);
    *r1 = l1 ^ h1 ^ ((h1 << 1) | (h0 >> 63)) ^ ((h1 << 2) | (h0 >> 62)) ^ ((h1 << 7) | (h0 >> 57));
}

// Unreduced 256-bit product accumulator: p0 = sum a0 b0, p1 = sum a1 b1, m = sum a0 b1 + a1 b0.
#if PH_CLMUL
struct Acc {
    __m128i p0, p1, m;
    Acc() : p0(_mm_setzero_si128()), p1(_mm_setzero_si128()), m(_mm_setzero_si128()) {}
    // a, b: lane 0 = low 64 bits, lane 1 = high 64 bits
    inline void mac(__m128i a, __m128i b) {
        p0 = _mm_xor_si128(p0, _mm_clmulepi64_si128(a, b, 0x00));
        p1 = _mm_xor_si128(p1, _mm_clmulepi64_si128(a, b, 0x11));
        m = _mm_xor_si128(m, _mm_xor_si128(_mm_clmulepi64_si128(a, b, 0x01), _mm_clmulepi64_si128(a, b, 0x10)));
    }
    inline void get(u64* r0, u64* r1) const {
        u64 lo0 = (u64)_mm_cvtsi128_si64(p0), lo1 = (u64)_mm_extract_epi64(p0, 1);
        u64 hi0 = (u64)_mm_cvtsi128_si64(p1), hi1 = (u64)_mm_extract_epi64(p1, 1);
        u64 m0 = (u64)_mm_cvtsi128_si64(m), m1 = (u64)_mm_extract_epi64(m, 1);
        reduce(lo0, lo1 ^ m0, hi0 ^ m1, hi1, r0, r1);
    }
};
static inline __m128i vec(u64 lo, u64 hi) { return _mm_set_epi64x((long long)hi, (long long)lo); }
static inline __m128i load_block(const uint8_t* p) {
    const __m128i rev = _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    return _mm_shuffle_epi8(_mm_loadu_si128((const __m128i*)p), rev);   // big-endian -> lanes
}
#else
struct Acc {
    u64 p00 = 0, p01 = 0, p10 = 0, p11 = 0, m0 = 0, m1 = 0;
    inline void mac(u64 a0, u64 a1, u64 b0, u64 b1) {
        u64 l, h;
        clmul64_sw(a0, b0, &l, &h); p00 ^= l; p01 ^= h;
        clmul64_sw(a1, b1, &l, &h); p10 ^= l; p11 ^= h;
        clmul64_sw(a0, b1, &l, &h); m0 ^= l; m1 ^= h;
        clmul64_sw(a1, b0, &l, &h); m0 ^= l; m1 ^= h;
    }
    inline void get(u64* r0, u64* r1) const { reduce(p00, p01 ^ m0, p10 ^ m1, p11, r0, r1); }
};
#endif

static inline void mul(u64 a0, u64 a1, u64 b0, u64 b1, u64* r0, u64* r1) {
    Acc acc;
#if PH_CLMUL
    acc.mac(vec(a0, a1), vec(b0, b1));
#else
    acc.mac(a0, a1, b0, b1);
#endif
    acc.get(r0, r1);
}

struct State {
    const u64* k;                    // key table
    u64 a0, a1;                      // Horner accumulator
    uint8_t buf[16];                 // partial block carried between parts
    int nbuf;
};

// acc <- (acc + B) k for one block given as two words.
static inline void step1(State* s, u64 b0, u64 b1) {
    mul(s->a0 ^ b0, s->a1 ^ b1, s->k[0], s->k[1], &s->a0, &s->a1);
}

// Full blocks at p (n_blocks of them), aggregated by AGG.
static void blocks(State* s, const uint8_t* p, u64 n_blocks) {
    const u64* k = s->k;
    u64 i = 0;
#if PH_CLMUL
    if (n_blocks >= (u64)AGG) {
        __m128i kp[AGG];
        for (int j = 0; j < AGG; j++) kp[j] = vec(k[2 * j], k[2 * j + 1]);
        __m128i a = vec(s->a0, s->a1);
        for (; i + AGG <= n_blocks; i += AGG) {
            const uint8_t* q = p + 16 * i;
            Acc acc;
            acc.mac(_mm_xor_si128(a, load_block(q)), kp[AGG - 1]);
            for (int j = 1; j < AGG; j++) acc.mac(load_block(q + 16 * j), kp[AGG - 1 - j]);
            u64 r0, r1;
            acc.get(&r0, &r1);
            a = vec(r0, r1);
        }
        s->a0 = (u64)_mm_cvtsi128_si64(a);
        s->a1 = (u64)_mm_extract_epi64(a, 1);
    }
#else
    for (; i + AGG <= n_blocks; i += AGG) {
        const uint8_t* q = p + 16 * i;
        Acc acc;
        acc.mac(s->a0 ^ load_be64(q + 8), s->a1 ^ load_be64(q), k[2 * (AGG - 1)], k[2 * (AGG - 1) + 1]);
        for (int j = 1; j < AGG; j++)
            acc.mac(load_be64(q + 16 * j + 8), load_be64(q + 16 * j), k[2 * (AGG - 1 - j)], k[2 * (AGG - 1 - j) + 1]);
        acc.get(&s->a0, &s->a1);
    }
#endif
    for (; i < n_blocks; i++) step1(s, load_be64(p + 16 * i + 8), load_be64(p + 16 * i));
}

static void update(State* s, const uint8_t* p, u64 n) {
    if (s->nbuf) {
        u64 fill = 16 - (u64)s->nbuf < n ? 16 - (u64)s->nbuf : n;
        std::memcpy(s->buf + s->nbuf, p, fill);
        s->nbuf += (int)fill;
        p += fill;
        n -= fill;
        if (s->nbuf < 16) return;
        step1(s, load_be64(s->buf + 8), load_be64(s->buf));
        s->nbuf = 0;
    }
    blocks(s, p, n / 16);
    u64 rest = n % 16;
    if (rest) {
        std::memcpy(s->buf, p + n - rest, rest);
        s->nbuf = (int)rest;
    }
}

// Pads and hashes the carried partial block, then the length block; wipes the carry.
static void finish(State& s, u64 total, u64* out) {
    if (s.nbuf) {
        std::memset(s.buf + s.nbuf, 0, 16 - (size_t)s.nbuf);
        step1(&s, load_be64(s.buf + 8), load_be64(s.buf));
    }
    // length block: the bit length of S (8 len, < 2^67 for any realistic input; taken mod 2^128)
    step1(&s, total << 3, total >> 61);
    out[0] = s.a0;
    out[1] = s.a1;
    std::memset(s.buf, 0, sizeof s.buf);
}

extern "C" {

// 1 if this build uses PCLMULQDQ, 0 if the portable carry-less multiply.
int ph_clmul(void) { return PH_CLMUL; }

// Words of the key table ph_init fills.
int ph_table_words(void) { return TABLE_WORDS; }

// table[2 j], table[2 j + 1] = low, high 64 bits of k^(j + 1), j < AGG.
void ph_init(u64 key_lo, u64 key_hi, u64* table) {
    u64 p0 = key_lo, p1 = key_hi;
    for (int j = 0; j < AGG; j++) {
        table[2 * j] = p0;
        table[2 * j + 1] = p1;
        mul(p0, p1, key_lo, key_hi, &p0, &p1);
    }
    p0 = p1 = 0;
}

// out[0], out[1] = low, high 64 bits of h_k(part_0 || ... || part_{n_parts-1}).
void ph_digest(const u64* table, int n_parts, const uint8_t* const* parts, const u64* lens, u64* out) {
    State s;
    s.k = table;
    s.a0 = s.a1 = 0;
    s.nbuf = 0;
    u64 total = 0;
    for (int i = 0; i < n_parts; i++) {
        if (lens[i]) update(&s, parts[i], lens[i]);
        total += lens[i];
    }
    finish(s, total, out);
}

// The same for two parts (a frame's header and payload) without the pointer arrays.
void ph_digest2(const u64* table, const uint8_t* p0, u64 n0, const uint8_t* p1, u64 n1, u64* out) {
    State s;
    s.k = table;
    s.a0 = s.a1 = 0;
    s.nbuf = 0;
    if (n0) update(&s, p0, n0);
    if (n1) update(&s, p1, n1);
    finish(s, n0 + n1, out);
}

}  // extern "C"
