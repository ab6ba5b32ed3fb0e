// Layered ("turbo-decoding message passing") syndrome decoder for the quasi-cyclic LDPC codes of
// host/ldpc_codes.py. See host/ldpc_reconcile.py for where it is used. Written for qkdlink.
//
// Schedule. Mansour and Shanbhag, "High-throughput LDPC decoders", IEEE Trans. VLSI 11 (2003) 976
// (turbo-decoding message passing) and Hocevar, "A reduced complexity decoder architecture via
// layered decoding of LDPC codes", SiPS 2004: the checks are processed one base row (a *layer* of
// Z checks) at a time and every symbol's posterior L_v is updated right after each layer, so the
// next layer already sees the new information; this converges in about half the iterations of the
// flooding schedule. One base row's Z checks touch disjoint symbols (each block is a permutation),
// so a whole layer is processed as Z independent lanes: a block (i, j) with shift s connects check
// i Z + t to symbol j Z + (t + s) mod Z, i.e. two contiguous runs of L, and every loop below runs
// over t with unit stride (the compiler vectorises it with -O3 -march=native).
//
// Syndrome decoding: check c must satisfy sum_v e_v = s_c (mod 2); in the LLR domain the sign of
// every check-to-symbol message of c is flipped when s_c = 1 (Liveris, Xiong, Georghiades,
// "Compression of binary sources with side information at the decoder using LDPC codes", IEEE
// Comm. Letters 6 (2002) 440).
//
// Check-node rules, per layer lane t with inputs T_b = L - R_b over the blocks b of the layer:
//  * algo 0, normalised min-sum: R_b = alpha * sign * (min over b' != b of |T_b'|) (Chen, Fossorier,
//    "Near optimum universal belief propagation based decoding of LDPC codes", IEEE Trans. Comm. 50
//    (2002) 406), kept as min1, min2, the index of min1 and the sign product.
//  * algo 1, offset min-sum: R_b = sign * max(min - beta, 0) (same reference).
//  * algo 2, sum-product: R_b = sign * phi(sum_{b' != b} phi(|T_b'|)), phi(x) = -ln tanh(x/2) =
//    2 atanh(e^-x) (Gallager's form; e.g. Richardson, Urbanke, "Modern Coding Theory", 2008,
//    sec. 4.2). The sum without b is taken as (sum of all but the largest phi) + (largest, unless b
//    is the largest), so no catastrophic cancellation when one input is near 0 (punctured symbols).
//    phi is an exp2 and a log2 by exponent bits and short polynomials, in float, written so that
//    they vectorise (about 25 operations per 16 lanes).
//
//  * algo 3, sum-product in 16-bit fixed point (LLR step 1/32): the check update as a chain of
//    box-plus operations on magnitudes, a [+] b = min(a, b) + c(a + b) - c(|a - b|) with
//    c(x) = ln(1 + e^-x) (the Jacobian-logarithm form of the tanh rule; Hu, Eleftheriou, Arnold,
//    Dholakia, "Efficient implementations of the sum-product algorithm for decoding LDPC codes",
//    GLOBECOM 2001), c approximated by max(5/8 - x/4, 0) (error < 0.07; two shifts and a max), all
//    messages of a check by forward and backward partial results (3 (d - 2) box-plus per check of
//    degree d), signs as the product over the check as in min-sum. int16 lanes, twice as many per
//    vector as float, no exp/log/division; bounds |L|, |T| <= 16000 and |R| <= 2400 keep every
//    intermediate inside int16. The float state (warm start) is converted on entry and exit.
//
// Early stop: after each iteration the hard decision (L < 0) is checked against the syndrome; the
// decoder stops at the first iteration whose decision satisfies every check, and gives up on a frame
// whose count of unsatisfied checks has not reached a new low for `stall` iterations.
//
// Warm start (blind reconciliation): with a state row per frame the posteriors, channel LLRs and
// check messages survive the call; the next call on the same syndrome with new channel LLRs (symbols
// revealed since) continues from them, L_v += llr_new_v - llr_old_v.
//
// Float selects with compares must be if-converted for the loops over t to vectorise; no code here
// relies on floating-point exceptions.
#pragma GCC optimize("no-trapping-math")
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

namespace {

struct Code {
    int mb, nb, z, n, m;
    std::vector<int> layer_start;   // blocks of layer i: [layer_start[i], layer_start[i+1])
    std::vector<int> col, shift;    // per block
    int max_row_blocks;
};

constexpr float LLR_MAX = 1.0e4f;

static inline uint32_t fbits(float x) { uint32_t u; std::memcpy(&u, &x, 4); return u; }
static inline float bitsf(uint32_t u) { float x; std::memcpy(&x, &u, 4); return x; }

// 2^-y for y >= 0 (clamped at 125): 2^-y = 2^-(k+1) * 2^g with k = floor(y), g = 1 - (y - k) in
// (0, 1], 2^g by a degree-4 polynomial (relative error < 6e-6), the power of two by exponent bits.
static inline float exp2_neg(float y) {
    int k = (int)y;                                         // floor: y >= 0
    float g = 1.0f - (y - (float)k);
    k = k < 125 ? k : 125;
    float p = 1.3511545e-2f;                                // least-squares fit of 2^g on [0, 1]
    p = p * g + 5.1989600e-2f;
    p = p * g + 2.4150880e-1f;
    p = p * g + 6.9297427e-1f;
    p = p * g + 1.0000052f;
    return bitsf((uint32_t)(126 - k) << 23) * p;
}

// ln y for y >= 1 (finite): y = 2^e m, m in [1, 2); ln m by a degree-6 polynomial in m - 1 that
// vanishes at m = 1 (absolute error < 5e-6).
static inline float ln_ge1(float y) {
    uint32_t u = fbits(y);
    float e = (float)((int)(u >> 23) - 127);
    float r = bitsf((u & 0x007fffffu) | 0x3f800000u) - 1.0f;  // [0, 1)
    float p = -2.6066301e-2f;                               // least-squares fit of log2(1 + r) / r
    p = p * r + 1.2191414e-1f;
    p = p * r - 2.7736506e-1f;
    p = p * r + 4.5689416e-1f;
    p = p * r - 7.1789837e-1f;
    p = p * r + 1.4425170f;
    return (p * r + e) * 0.69314718f;                        // p approximates log2(1 + r) / r
}

// phi(x) = -ln tanh(x/2) = ln((1 + u)/(1 - u)), u = e^-x, for x >= 0; x is clamped to
// [PHI_MIN, ...) so phi stays finite (phi(PHI_MIN) = 12.2). Above x ~ 16, 1 + u rounds to 1 and phi
// to 0 (true value < 2e-7): such inputs add nothing to a check's sum either way.
constexpr float PHI_MIN = 1.0e-5f;
static inline float phi(float x) {
    x = x < PHI_MIN ? PHI_MIN : x;
    float u = exp2_neg(x * 1.44269504f);
    return ln_ge1((1.0f + u) / (1.0f - u));
}

struct Work {
    std::vector<float> L, R, T, P, min1, min2, sum_wo, pmax;
    std::vector<uint32_t> sgn;
    std::vector<int32_t> idx;
    std::vector<uint8_t> hard, par;
    explicit Work(const Code& c) {
        size_t edges = (size_t)c.layer_start.back() * c.z;
        L.resize(c.n); R.resize(edges);
        T.resize((size_t)c.max_row_blocks * c.z); P.resize((size_t)c.max_row_blocks * c.z);
        min1.resize(c.z); min2.resize(c.z); sum_wo.resize(c.z); pmax.resize(c.z);
        sgn.resize(c.z); idx.resize(c.z); hard.resize(c.n); par.resize(c.z);
    }
};

// number of checks whose hard decisions miss their syndrome bit
static int unsatisfied(const Code& c, const uint8_t* hard, const uint8_t* syn, uint8_t* par) {
    const int z = c.z;
    int bad = 0;
    for (int i = 0; i < c.mb; i++) {
        for (int t = 0; t < z; t++) par[t] = syn[(size_t)i * z + t];
        for (int b = c.layer_start[i]; b < c.layer_start[i + 1]; b++) {
            const uint8_t* h = hard + (size_t)c.col[b] * z;
            int s = c.shift[b];
            for (int t = 0; t < z - s; t++) par[t] ^= h[s + t];
            for (int t = z - s; t < z; t++) par[t] ^= h[t - (z - s)];
        }
        int cnt = 0;
        for (int t = 0; t < z; t++) cnt += par[t] & 1;
        bad += cnt;
    }
    return bad;
}

// pass 1 of a block, sum-product: sign product, phi of the magnitudes, their sum without the largest
static void spa_gather(const float* __restrict Tb, float* __restrict Pb, uint32_t* __restrict sg,
                       float* __restrict swo, float* __restrict pmx, int32_t* __restrict ix, int bb, int z) {
    for (int t = 0; t < z; t++) {
        float x = Tb[t];
        sg[t] ^= fbits(x) & 0x80000000u;
        float p = phi(std::fabs(x));
        Pb[t] = p;
        bool top = p > pmx[t];
        swo[t] += top ? pmx[t] : p;
        pmx[t] = top ? p : pmx[t];
        ix[t] = top ? bb : ix[t];
    }
}

// pass 1 of a block, min-sum: sign product, the two smallest magnitudes and where the smallest is
static void ms_gather(const float* __restrict Tb, uint32_t* __restrict sg, float* __restrict m1,
                      float* __restrict m2, int32_t* __restrict ix, int bb, int z) {
    for (int t = 0; t < z; t++) {
        float x = Tb[t];
        sg[t] ^= fbits(x) & 0x80000000u;
        float a = std::fabs(x);
        bool lt1 = a < m1[t];
        bool lt2 = a < m2[t];
        m2[t] = lt1 ? m1[t] : (lt2 ? a : m2[t]);
        m1[t] = lt1 ? a : m1[t];
        ix[t] = lt1 ? bb : ix[t];
    }
}

template <int ALGO>
static int decode_one(const Code& c, Work& w, const float* llr, const uint8_t* syn, int max_iter,
                      float param, int stall, float* state, bool resume, bool* converged) {
    const int z = c.z;
    float* L = state ? state : w.L.data();
    float* R = state ? state + 2 * (size_t)c.n : w.R.data();
    if (state && resume) {
        // warm start: the messages of the previous attempt stay, the channel LLRs change (symbols
        // revealed since then); L = channel + sum of check messages
        float* prev = state + c.n;
        for (int v = 0; v < c.n; v++) {
            float x = std::min(std::max(llr[v], -LLR_MAX), LLR_MAX);
            L[v] = std::min(std::max(L[v] + x - prev[v], -LLR_MAX), LLR_MAX);
            prev[v] = x;
        }
    } else {
        for (int v = 0; v < c.n; v++) L[v] = std::min(std::max(llr[v], -LLR_MAX), LLR_MAX);
        if (state) std::memcpy(state + c.n, L, sizeof(float) * c.n);
        std::fill(R, R + (size_t)c.layer_start.back() * z, 0.0f);
    }
    for (int v = 0; v < c.n; v++) w.hard[v] = L[v] < 0.0f;
    int best = unsatisfied(c, w.hard.data(), syn, w.par.data()), since = 0;
    if (best == 0) { *converged = true; return 0; }
    float* __restrict T = w.T.data();
    float* __restrict P = w.P.data();
    float* __restrict m1 = w.min1.data();
    float* __restrict m2 = w.min2.data();
    float* __restrict swo = w.sum_wo.data();
    float* __restrict pmx = w.pmax.data();
    uint32_t* __restrict sg = w.sgn.data();
    int32_t* __restrict ix = w.idx.data();
    for (int it = 1; it <= max_iter; it++) {
        for (int i = 0; i < c.mb; i++) {
            const int b0 = c.layer_start[i], b1 = c.layer_start[i + 1];
            const uint8_t* sy = syn + (size_t)i * z;
            for (int t = 0; t < z; t++) {
                sg[t] = (uint32_t)sy[t] << 31;
                m1[t] = 3.0e38f; m2[t] = 3.0e38f; ix[t] = -1;
                swo[t] = 0.0f; pmx[t] = 0.0f;
            }
            // pass 1: T = L - R (gathered through the shift), sign product, and the two minima or
            // the phi sums
            for (int b = b0; b < b1; b++) {
                const float* __restrict Lb = L + (size_t)c.col[b] * z;
                const float* __restrict Rb = R + (size_t)b * z;
                float* __restrict Tb = T + (size_t)(b - b0) * z;
                float* __restrict Pb = P + (size_t)(b - b0) * z;
                const int s = c.shift[b];
                for (int t = 0; t < z - s; t++) Tb[t] = Lb[s + t] - Rb[t];
                for (int t = z - s; t < z; t++) Tb[t] = Lb[t - (z - s)] - Rb[t];
                const int bb = b - b0;
                if (ALGO == 2) spa_gather(Tb, Pb, sg, swo, pmx, ix, bb, z);
                else ms_gather(Tb, sg, m1, m2, ix, bb, z);
            }
            if (ALGO == 0) {
                for (int t = 0; t < z; t++) { m1[t] *= param; m2[t] *= param; }
            } else if (ALGO == 1) {
                for (int t = 0; t < z; t++) {
                    m1[t] = std::max(m1[t] - param, 0.0f);
                    m2[t] = std::max(m2[t] - param, 0.0f);
                }
            }
            // pass 2: new messages and posteriors, scattered back through the shift
            for (int b = b0; b < b1; b++) {
                float* __restrict Lb = L + (size_t)c.col[b] * z;
                float* __restrict Rb = R + (size_t)b * z;
                const float* __restrict Tb = T + (size_t)(b - b0) * z;
                const float* __restrict Pb = P + (size_t)(b - b0) * z;
                const int bb = b - b0;
                for (int t = 0; t < z; t++) {
                    float mag;
                    if (ALGO == 2) {
                        float excl = ix[t] == bb ? swo[t] : swo[t] + pmx[t] - Pb[t];
                        mag = phi(excl);
                    } else {
                        mag = ix[t] == bb ? m2[t] : m1[t];
                    }
                    mag = std::min(mag, LLR_MAX);
                    uint32_t sign = (sg[t] ^ fbits(Tb[t])) & 0x80000000u;
                    Rb[t] = bitsf(fbits(mag) | sign);
                }
                const int s = c.shift[b];
                for (int t = 0; t < z - s; t++) {
                    float v = Tb[t] + Rb[t];
                    Lb[s + t] = std::min(std::max(v, -LLR_MAX), LLR_MAX);
                }
                for (int t = z - s; t < z; t++) {
                    float v = Tb[t] + Rb[t];
                    Lb[t - (z - s)] = std::min(std::max(v, -LLR_MAX), LLR_MAX);
                }
            }
        }
        for (int v = 0; v < c.n; v++) w.hard[v] = L[v] < 0.0f;
        int bad = unsatisfied(c, w.hard.data(), syn, w.par.data());
        if (bad == 0) { *converged = true; return it; }
        // give up when the number of unsatisfied checks has not reached a new low for `stall`
        // iterations (a frame that will not converge stalls; the blind protocol retries it)
        if (bad < best) { best = bad; since = 0; }
        else if (stall > 0 && ++since >= stall) { *converged = false; return it; }
    }
    *converged = false;
    return max_iter;
}

// ---- algo 3: 16-bit fixed point ---------------------------------------------------------------

constexpr float FX_SCALE = 32.0f;          // integer steps per LLR unit
constexpr int FX_LMAX = 16000;             // |L| and |T| (500 in LLR units)
constexpr int FX_RMAX = 2400;              // |R| (75)
constexpr int FX_C = 20;                   // 5/8 in steps

struct WorkFx {
    std::vector<int16_t> L, R, T, F, mag, msg;
    std::vector<int16_t> sgn;
    explicit WorkFx(const Code& c) {
        size_t edges = (size_t)c.layer_start.back() * c.z;
        L.resize(c.n); R.resize(edges);
        T.resize((size_t)c.max_row_blocks * c.z); F.resize((size_t)c.max_row_blocks * c.z);
        mag.resize(c.z); msg.resize(c.z); sgn.resize(c.z);
    }
};

static inline int16_t fx_quant(float x, int lim) {
    float y = x * FX_SCALE;
    y = y > (float)lim ? (float)lim : (y < -(float)lim ? -(float)lim : y);
    return (int16_t)std::lrint(y);
}

// a [+] b on magnitudes 0 <= a, b <= FX_LMAX: min + c(a + b) - c(|a - b|), >= 0 since c has slope -1/4
static inline int16_t fx_box(int16_t a, int16_t b) {
    int16_t m = a < b ? a : b;
    int16_t d = a > b ? (int16_t)(a - b) : (int16_t)(b - a);
    int16_t cs = (int16_t)(FX_C - ((int16_t)(a + b) >> 2));
    int16_t cd = (int16_t)(FX_C - (d >> 2));
    cs = cs > 0 ? cs : 0;
    cd = cd > 0 ? cd : 0;
    return (int16_t)(m + cs - cd);
}

static int decode_one_fx(const Code& c, Work& w, WorkFx& x, const float* llr, const uint8_t* syn,
                         int max_iter, int stall, float* state, bool resume, bool* converged) {
    const int z = c.z;
    const size_t edges = (size_t)c.layer_start.back() * z;
    int16_t* __restrict L = x.L.data();
    int16_t* __restrict R = x.R.data();
    if (state && resume) {
        float* Lf = state;
        float* prev = state + c.n;
        const float* Rf = state + 2 * (size_t)c.n;
        for (int v = 0; v < c.n; v++) {
            float y = std::min(std::max(llr[v], -LLR_MAX), LLR_MAX);
            Lf[v] = std::min(std::max(Lf[v] + y - prev[v], -LLR_MAX), LLR_MAX);
            prev[v] = y;
            L[v] = fx_quant(Lf[v], FX_LMAX);
        }
        for (size_t e = 0; e < edges; e++) R[e] = fx_quant(Rf[e], FX_RMAX);
    } else {
        for (int v = 0; v < c.n; v++) L[v] = fx_quant(llr[v], FX_LMAX);
        if (state) {
            for (int v = 0; v < c.n; v++) state[c.n + v] = std::min(std::max(llr[v], -LLR_MAX), LLR_MAX);
        }
        std::fill(R, R + edges, (int16_t)0);
    }
    auto finish = [&](int it, bool ok) {
        if (state) {
            for (int v = 0; v < c.n; v++) state[v] = (float)L[v] / FX_SCALE;
            float* Rf = state + 2 * (size_t)c.n;
            for (size_t e = 0; e < edges; e++) Rf[e] = (float)R[e] / FX_SCALE;
        }
        *converged = ok;
        return it;
    };
    for (int v = 0; v < c.n; v++) w.hard[v] = L[v] < 0;
    int best = unsatisfied(c, w.hard.data(), syn, w.par.data()), since = 0;
    if (best == 0) return finish(0, true);
    int16_t* __restrict T = x.T.data();
    int16_t* __restrict F = x.F.data();
    int16_t* __restrict sg = x.sgn.data();
    int16_t* __restrict mg = x.mag.data();
    int16_t* __restrict M = x.msg.data();
    for (int it = 1; it <= max_iter; it++) {
        for (int i = 0; i < c.mb; i++) {
            const int b0 = c.layer_start[i], b1 = c.layer_start[i + 1], d = b1 - b0;
            const uint8_t* sy = syn + (size_t)i * z;
            for (int t = 0; t < z; t++) sg[t] = (int16_t)(-(int16_t)sy[t]);      // 0 or -1
            // pass 1: T = L - R through the shift, sign product; F_k = |T_0| [+] ... [+] |T_k|
            for (int b = b0; b < b1; b++) {
                const int16_t* __restrict Lb = L + (size_t)c.col[b] * z;
                const int16_t* __restrict Rb = R + (size_t)b * z;
                int16_t* __restrict Tb = T + (size_t)(b - b0) * z;
                const int s = c.shift[b];
                for (int t = 0; t < z - s; t++) Tb[t] = (int16_t)(Lb[s + t] - Rb[t]);
                for (int t = z - s; t < z; t++) Tb[t] = (int16_t)(Lb[t - (z - s)] - Rb[t]);
                int16_t* __restrict Fb = F + (size_t)(b - b0) * z;
                const int16_t* __restrict Fp = Fb - z;
                const bool first = b == b0;
                for (int t = 0; t < z; t++) {
                    int16_t v = Tb[t];
                    v = v > FX_LMAX ? (int16_t)FX_LMAX : (v < -FX_LMAX ? (int16_t)-FX_LMAX : v);
                    Tb[t] = v;
                    sg[t] ^= (int16_t)(v >> 15);
                    int16_t a = v < 0 ? (int16_t)-v : v;
                    Fb[t] = first ? a : fx_box(Fp[t], a);
                }
            }
            // pass 2, last block first: R_k = F_{k-1} [+] B_{k+1}, B_k = B_{k+1} [+] |T_k|
            for (int k = d - 1; k >= 0; k--) {
                const int b = b0 + k;
                int16_t* __restrict Lb = L + (size_t)c.col[b] * z;
                int16_t* __restrict Rb = R + (size_t)b * z;
                const int16_t* __restrict Tb = T + (size_t)k * z;
                const int16_t* __restrict Fp = F + (size_t)(k > 0 ? k - 1 : 0) * z;
                if (d == 1) {
                    for (int t = 0; t < z; t++) M[t] = (int16_t)FX_RMAX;
                } else if (k == d - 1) {
                    for (int t = 0; t < z; t++) {
                        int16_t v = Tb[t];
                        M[t] = Fp[t];
                        mg[t] = v < 0 ? (int16_t)-v : v;
                    }
                } else if (k == 0) {
                    for (int t = 0; t < z; t++) M[t] = mg[t];
                } else {
                    for (int t = 0; t < z; t++) {
                        int16_t v = Tb[t];
                        int16_t a = v < 0 ? (int16_t)-v : v;
                        M[t] = fx_box(Fp[t], mg[t]);
                        mg[t] = fx_box(mg[t], a);
                    }
                }
                for (int t = 0; t < z; t++) {
                    int16_t m = M[t] > FX_RMAX ? (int16_t)FX_RMAX : M[t];
                    int16_t neg = (int16_t)(sg[t] ^ (Tb[t] >> 15));             // 0 or -1
                    Rb[t] = (int16_t)((m ^ neg) - neg);
                }
                const int s = c.shift[b];
                for (int t = 0; t < z - s; t++) {
                    int16_t v = (int16_t)(Tb[t] + Rb[t]);
                    Lb[s + t] = v > FX_LMAX ? (int16_t)FX_LMAX : (v < -FX_LMAX ? (int16_t)-FX_LMAX : v);
                }
                for (int t = z - s; t < z; t++) {
                    int16_t v = (int16_t)(Tb[t] + Rb[t]);
                    Lb[t - (z - s)] = v > FX_LMAX ? (int16_t)FX_LMAX : (v < -FX_LMAX ? (int16_t)-FX_LMAX : v);
                }
            }
        }
        for (int v = 0; v < c.n; v++) w.hard[v] = L[v] < 0;
        int bad = unsatisfied(c, w.hard.data(), syn, w.par.data());
        if (bad == 0) return finish(it, true);
        if (bad < best) { best = bad; since = 0; }
        else if (stall > 0 && ++since >= stall) return finish(it, false);
    }
    return finish(max_iter, false);
}

}  // namespace

extern "C" {

// shifts: mb x nb, -1 = zero block. Returns a handle or nullptr on bad input.
void* ldpc_code_new(int mb, int nb, int z, const int32_t* shifts) {
    if (mb <= 0 || nb <= 0 || z <= 0) return nullptr;
    Code* c = new Code();
    c->mb = mb; c->nb = nb; c->z = z; c->n = nb * z; c->m = mb * z;
    c->layer_start.push_back(0);
    c->max_row_blocks = 1;
    for (int i = 0; i < mb; i++) {
        int cnt = 0;
        for (int j = 0; j < nb; j++) {
            int s = shifts[(size_t)i * nb + j];
            if (s < 0) continue;
            if (s >= z) { delete c; return nullptr; }
            c->col.push_back(j); c->shift.push_back(s); cnt++;
        }
        c->layer_start.push_back((int)c->col.size());
        c->max_row_blocks = std::max(c->max_row_blocks, cnt);
    }
    return c;
}

void ldpc_code_free(void* h) { delete static_cast<Code*>(h); }

// Decode `frames` syndromes (frames x m bytes, 0/1) with channel LLRs (frames x n floats, row stride
// llr_stride floats: 0 shares one row). Writes hard decisions (frames x n bytes), iterations and
// converged flags. algo: 0 normalised min-sum (param = alpha), 1 offset min-sum (param = beta),
// 2 sum-product, 3 sum-product in 16-bit fixed point. stall > 0: stop a frame after that many iterations without a new lowest count of
// unsatisfied checks. state (optional): rows of ldpc_state_floats() floats (L, channel LLRs, check
// messages), frame f using row state_rows[f]; with resume != 0 a frame continues from its row (warm
// start after the channel LLRs changed), else the row is initialised; it is left holding the final
// messages either way. Frames are spread over `threads` threads. Returns 0, or -1 on bad arguments.
int64_t ldpc_state_floats(void* h) {
    const Code* c = static_cast<const Code*>(h);
    return 2 * (int64_t)c->n + (int64_t)c->layer_start.back() * c->z;
}

int ldpc_decode(void* h, int frames, const float* llr, int64_t llr_stride, const uint8_t* syn,
                uint8_t* out, int32_t* iters, uint8_t* conv, int max_iter, int algo, float param,
                int stall, int threads, float* state, const int32_t* state_rows, int resume) {
    const Code* c = static_cast<const Code*>(h);
    if (!c || frames < 0 || max_iter < 0 || algo < 0 || algo > 3) return -1;
    threads = std::max(1, std::min(threads, frames));
    std::atomic<int> next(0);
    auto worker = [&]() {
        Work w(*c);
        std::unique_ptr<WorkFx> wx;
        if (algo == 3) wx.reset(new WorkFx(*c));
        for (;;) {
            int f = next.fetch_add(1);
            if (f >= frames) break;
            const float* l = llr + (size_t)f * llr_stride;
            const uint8_t* s = syn + (size_t)f * c->m;
            bool ok = false;
            int it;
            float* st = state ? state + (size_t)state_rows[f] * ldpc_state_floats(h) : nullptr;
            bool rs = resume != 0;
            if (algo == 0) it = decode_one<0>(*c, w, l, s, max_iter, param, stall, st, rs, &ok);
            else if (algo == 1) it = decode_one<1>(*c, w, l, s, max_iter, param, stall, st, rs, &ok);
            else if (algo == 2) it = decode_one<2>(*c, w, l, s, max_iter, param, stall, st, rs, &ok);
            else it = decode_one_fx(*c, w, *wx, l, s, max_iter, stall, st, rs, &ok);
            std::memcpy(out + (size_t)f * c->n, w.hard.data(), c->n);
            iters[f] = it;
            conv[f] = ok;
        }
    };
    if (threads == 1) {
        worker();
    } else {
        std::vector<std::thread> pool;
        for (int k = 0; k < threads; k++) pool.emplace_back(worker);
        for (auto& t : pool) t.join();
    }
    return 0;
}

// Syndromes of `frames` words (frames x n bytes, 0/1) -> frames x m bytes.
void ldpc_syndrome(void* h, int frames, const uint8_t* words, uint8_t* syn) {
    const Code* c = static_cast<const Code*>(h);
    const int z = c->z;
    for (int f = 0; f < frames; f++) {
        const uint8_t* wd = words + (size_t)f * c->n;
        uint8_t* sy = syn + (size_t)f * c->m;
        for (int i = 0; i < c->mb; i++) {
            uint8_t* p = sy + (size_t)i * z;
            std::memset(p, 0, z);
            for (int b = c->layer_start[i]; b < c->layer_start[i + 1]; b++) {
                const uint8_t* x = wd + (size_t)c->col[b] * z;
                int s = c->shift[b];
                for (int t = 0; t < z - s; t++) p[t] ^= x[s + t];
                for (int t = z - s; t < z; t++) p[t] ^= x[t - (z - s)];
            }
            for (int t = 0; t < z; t++) p[t] &= 1;
        }
    }
}

}  // extern "C"
