// Spatial orderings: Morton and Hilbert keys on a grid quantised from the bounding box, radix sorted.
#include <algorithm>
#include <array>
#include <cmath>
#include <memory>
#include <numeric>
#include <utility>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "layout/detail.hpp"
#include "protattn/error.hpp"
#include "protattn/layout.hpp"
#include "protattn/structure.hpp"

namespace protattn {
namespace {

constexpr int kKeyBits = 21;                             // bits per axis: 63-bit keys
constexpr std::uint32_t kGridMax = (1u << kKeyBits) - 1;  // largest quantised coordinate

// Spreads the low 21 bits of v so that bit b moves to bit 3b.
std::uint64_t spread3(std::uint64_t v) {
  v &= 0x1fffff;
  v = (v | (v << 32)) & 0x1f00000000ffffULL;
  v = (v | (v << 16)) & 0x1f0000ff0000ffULL;
  v = (v | (v << 8)) & 0x100f00f00f00f00fULL;
  v = (v | (v << 4)) & 0x10c30c30c30c30c3ULL;
  v = (v | (v << 2)) & 0x1249249249249249ULL;
  return v;
}

// Hilbert curve as a state machine over octants, derived once from Skilling's transpose
// algorithm ("Programming the Hilbert curve", AIP Conf. Proc. 707, 2004). At each level, from
// the most significant, the three coordinate bits r (x in bit 0, y bit 1, z bit 2) pass through
// the transform that higher levels imposed on lower bits (a signed axis permutation, kept as an
// 8-entry map), which gives Skilling's transposed bits t. The level's own exchange/invert
// operations update the transform; the final Gray-code step is level-local except for a running
// parity of the top axis, kept as one more state bit. The 3-bit key digit is x-major.
class HilbertTable {
 public:
  HilbertTable() {
    std::vector<std::array<std::uint8_t, 8>> maps;
    std::vector<int> parity;
    auto intern = [&](const std::array<std::uint8_t, 8>& f, int p) {
      for (std::size_t s = 0; s < maps.size(); ++s)
        if (maps[s] == f && parity[s] == p) return static_cast<int>(s);
      if (maps.size() == kMaxStates) throw Error("internal error: Hilbert state table overflow");
      maps.push_back(f);
      parity.push_back(p);
      return static_cast<int>(maps.size() - 1);
    };
    std::array<std::uint8_t, 8> identity{};
    for (int r = 0; r < 8; ++r) identity[static_cast<std::size_t>(r)] = static_cast<std::uint8_t>(r);
    intern(identity, 0);
    for (std::size_t s = 0; s < maps.size(); ++s) {  // breadth-first over reachable states
      for (int r = 0; r < 8; ++r) {
        const int t = maps[s][static_cast<std::size_t>(r)];
        // Operations of this level on the bits of lower levels, as a map g on 3-bit triples.
        std::array<std::uint8_t, 8> g = identity;
        for (int i = 0; i < 3; ++i) {
          for (auto& v : g) {
            const int b0 = v & 1, bi = (v >> i) & 1;
            if ((t >> i) & 1) {
              v = static_cast<std::uint8_t>(v ^ 1);  // invert axis 0
            } else if (b0 != bi) {
              v = static_cast<std::uint8_t>(v ^ 1 ^ (1 << i));  // exchange axes 0 and i
            }
          }
        }
        std::array<std::uint8_t, 8> next{};
        for (int q = 0; q < 8; ++q) next[static_cast<std::size_t>(q)] = g[maps[s][static_cast<std::size_t>(q)]];
        const int u0 = t & 1, u1 = u0 ^ ((t >> 1) & 1), u2 = u1 ^ ((t >> 2) & 1);  // Gray step
        const int p = parity[s];
        const int digit = ((u0 ^ p) << 2) | ((u1 ^ p) << 1) | (u2 ^ p);
        const int ns = intern(next, p ^ u2);
        entry_[s][static_cast<std::size_t>(r)] = static_cast<std::uint16_t>((ns << 3) | digit);
      }
    }
    // Two levels per lookup (half the dependent chain of a key): entry2_[s][r_hi << 3 | r_lo]
    // holds the state after both and their two digits.
    for (std::size_t s = 0; s < maps.size(); ++s) {
      for (unsigned hi = 0; hi < 8; ++hi) {
        const unsigned e1 = entry_[s][hi];
        for (unsigned lo = 0; lo < 8; ++lo) {
          const unsigned e2 = entry_[e1 >> 3][lo];
          entry2_[s][(hi << 3) | lo] = static_cast<std::uint16_t>(((e2 >> 3) << 6) | ((e1 & 7) << 3) | (e2 & 7));
        }
      }
    }
    // The first three levels from the start state in one lookup: first3_[r1 << 6 | r2 << 3 | r3]
    // holds the state after them and their three digits.
    for (unsigned r1 = 0; r1 < 8; ++r1) {
      const unsigned e1 = entry_[0][r1];
      for (unsigned r23 = 0; r23 < 64; ++r23) {
        const unsigned e23 = entry2_[e1 >> 3][r23];
        first3_[(r1 << 6) | r23] = static_cast<std::uint16_t>(((e23 >> 6) << 9) | ((e1 & 7) << 6) | (e23 & 63));
      }
    }
  }
  // W shallow keys at once: the first L levels only (1 <= L <= 21), m holding the top L bits of
  // each coordinate interleaved as below (3L bits). The result is the top 3L bits of the full key
  // (the machine reads the levels from the top and emits one digit per level). An odd count
  // starts with three levels in one lookup (or the one level); L a constant, so the chain is
  // unrolled (7% faster on the served request than a loop over a run-time count).
  template <int W, int L>
  void shallow_keys(const std::uint64_t (&m)[W], std::uint64_t (&out)[W]) const {
    static_assert(L >= 1 && L <= kKeyBits);
    unsigned s[W];
    constexpr int first = L % 2 == 0 ? 0 : (L >= 3 ? 3 : 1);  // levels of the first lookup
    for (int j = 0; j < W; ++j) {
      if constexpr (first == 3) {
        const unsigned e = first3_[(m[j] >> (3 * (L - 3))) & 511];
        out[j] = e & 511;
        s[j] = e >> 9;
      } else if constexpr (first == 1) {
        const unsigned e = entry_[0][m[j] & 7];
        out[j] = e & 7;
        s[j] = e >> 3;
      } else {
        const unsigned e = entry2_[0][(m[j] >> (3 * (L - 2))) & 63];
        out[j] = e & 63;
        s[j] = e >> 6;
      }
    }
    constexpr int rest = L - (first == 0 ? 2 : first);
    [&]<int... P>(std::integer_sequence<int, P...>) {
      (([&] {
         constexpr int b = rest - 2 * P;  // levels still to read before this lookup
         for (int j = 0; j < W; ++j) {
           const unsigned e = entry2_[s[j]][(m[j] >> (3 * (b - 2))) & 63];
           out[j] = (out[j] << 6) | (e & 63);
           s[j] = e >> 6;
         }
       }()),
       ...);
    }(std::make_integer_sequence<int, rest / 2>{});
  }
  // W keys at once, two levels per lookup after the first: W independent chains of lookups
  // interleaved (one chain is a run of dependent loads; the processor overlaps them). Eight
  // measured 5% faster than four on the build machine (a served request's layout 114 -> 108 us),
  // sixteen no faster.
  // m: the quantised coordinates' bits interleaved, x in the low bit of each triple
  // (interleave_xyz), so a step of the chain is a shift, a mask and the lookup.
  template <int W>
  void keys(const std::uint64_t (&m)[W], std::uint64_t (&out)[W]) const {
    static_assert(kKeyBits % 2 == 1, "one single level, then pairs");
    unsigned s[W];
    for (int j = 0; j < W; ++j) {
      const unsigned e0 = entry_[0][(m[j] >> (3 * (kKeyBits - 1))) & 7];
      out[j] = e0 & 7;
      s[j] = e0 >> 3;
    }
    for (int b = kKeyBits - 2; b > 0; b -= 2) {
      for (int j = 0; j < W; ++j) {
        const unsigned e = entry2_[s[j]][(m[j] >> (3 * (b - 1))) & 63];
        out[j] = (out[j] << 6) | (e & 63);
        s[j] = e >> 6;
      }
    }
  }

 private:
  static constexpr std::size_t kMaxStates = 96;  // 48 signed permutations x 2 parities
  std::array<std::array<std::uint16_t, 8>, kMaxStates> entry_{};
  std::array<std::array<std::uint16_t, 64>, kMaxStates> entry2_{};
  std::array<std::uint16_t, 512> first3_{};
};

// Up to kSmallSortAtoms sort_small; then, below
// kBucketSortMinAtoms, where the keys fit in cache, a plain stable LSD radix sort (11-bit digits,
// passes whose digit is constant skipped); above, sort_keys_bucketed. All give the same order. The pairs start in (keys, idx) and move between them and (keys2,
// idx2) each pass; returns whether they end in the second pair. One thread: all digits are
// counted in one read.
constexpr std::size_t kBucketSortMinAtoms = std::size_t{1} << 18;
// Up to this many atoms sort_small (one counting pass on the keys' top bits, then each small
// bucket sorted) is faster than the radix sort (build machine, spatial order of a globule on one
// thread, keys included: 4,096 atoms 63 us against 90 us for the comparison sort used before,
// 20,000 atoms 316 against 438 us radix; at 65,536 atoms the radix sort is ahead, 1,589 vs 1,671).
constexpr std::size_t kSmallSortAtoms = std::size_t{1} << 15;
constexpr int kRadixBits = 11;
constexpr std::size_t kRadixBuckets = std::size_t{1} << kRadixBits;
constexpr int kRadixPasses = (3 * kKeyBits + kRadixBits - 1) / kRadixBits;

// One stable counting pass on the digit at `shift` (B buckets), h holding the digit counts of
// (keys, idx)[0, n): false, and nothing moved, when every key has the same digit; else the pairs
// are scattered into (keys2, idx2) in digit order.
template <std::size_t B>
bool scatter_pass(std::array<std::uint32_t, B>& h, int shift, const std::uint64_t* keys, const std::int32_t* idx,
                  std::uint64_t* keys2, std::int32_t* idx2, std::size_t n) {
  if (std::any_of(h.begin(), h.end(), [n](std::uint32_t c) { return c == n; })) return false;
  std::uint32_t sum = 0;
  for (auto& c : h) {
    const std::uint32_t v = c;
    c = sum;
    sum += v;
  }
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t pos = h[(keys[i] >> shift) & (B - 1)]++;
    keys2[pos] = keys[i];
    idx2[pos] = idx[i];
  }
  return true;
}

bool radix_sort(std::uint64_t* keys, std::int32_t* idx, std::uint64_t* keys2, std::int32_t* idx2, std::size_t n) {
  std::vector<std::array<std::uint32_t, kRadixBuckets>> hist(kRadixPasses);
  for (auto& h : hist) h.fill(0);
  for (std::size_t i = 0; i < n; ++i)
    for (int p = 0; p < kRadixPasses; ++p) ++hist[p][(keys[i] >> (p * kRadixBits)) & (kRadixBuckets - 1)];
  bool swapped = false;
  for (int p = 0; p < kRadixPasses; ++p) {
    if (!scatter_pass(hist[p], p * kRadixBits, keys, idx, keys2, idx2, n)) continue;
    std::swap(keys, keys2);
    std::swap(idx, idx2);
    swapped = !swapped;
  }
  return swapped;
}

// The stable order by key of keys[0, n) into perm, for small n: a counting pass on the top
// kTopBits bits of the key (a cell of the curve's fourth level), atoms entering their bucket in
// index order, then each bucket sorted by key alone with a stable insertion sort, or, past
// kInsertionMax atoms (a crowded cell: say one far atom stretching the box), a comparison sort
// of (key, index) pairs. The same order as the radix sorts give.
void sort_small(const std::uint64_t* keys, std::int32_t* perm, std::size_t n) {
  constexpr int kTopBits = 12;
  constexpr int kShift = 3 * kKeyBits - kTopBits;
  constexpr std::size_t kInsertionMax = 32;
  std::array<std::uint32_t, (1u << kTopBits) + 1> start{};
  for (std::size_t i = 0; i < n; ++i) ++start[(keys[i] >> kShift) + 1];
  for (std::size_t b = 1; b < start.size(); ++b) start[b] += start[b - 1];
  std::unique_ptr<std::uint64_t[]> k(new std::uint64_t[n]);
  std::array<std::uint32_t, (1u << kTopBits)> cursor;
  std::copy(start.begin(), start.end() - 1, cursor.begin());
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t j = cursor[keys[i] >> kShift]++;
    k[j] = keys[i];
    perm[j] = static_cast<std::int32_t>(i);
  }
  std::vector<std::pair<std::uint64_t, std::int32_t>> kv;
  for (std::size_t b = 0; b + 1 < start.size(); ++b) {
    const std::size_t s = start[b], e = start[b + 1];
    if (e - s < 2) continue;
    if (e - s <= kInsertionMax) {
      for (std::size_t j = s + 1; j < e; ++j) {
        const std::uint64_t key = k[j];
        const std::int32_t id = perm[j];
        std::size_t m = j;
        for (; m > s && k[m - 1] > key; --m) {
          k[m] = k[m - 1];
          perm[m] = perm[m - 1];
        }
        k[m] = key;
        perm[m] = id;
      }
      continue;
    }
    kv.clear();
    for (std::size_t j = s; j < e; ++j) kv.emplace_back(k[j], perm[j]);
    std::sort(kv.begin(), kv.end());
    for (std::size_t j = s; j < e; ++j) perm[j] = kv[j - s].second;
  }
}

const HilbertTable& hilbert_table() {
  static const HilbertTable table;
  return table;
}

// Quantised coordinate of an atom: the cube of the largest bounding-box side on kGridMax steps.
// q is in [0, kGridMax] (x >= lo), so the conversion through int32 is exact.
inline std::uint32_t quantise(float x, float lo, double scale) {
  const double q = (double{x} - lo) * scale;
  return static_cast<std::uint32_t>(static_cast<std::int32_t>(std::min<double>(q, kGridMax)));
}

// The key machine's input for atom i: its quantised coordinates' bits interleaved, x in the low
// bit of each triple (HilbertTable::keys).
inline std::uint64_t interleaved_bits(const float* xyz, std::size_t i, const float lo[3], double scale) {
  return spread3(quantise(xyz[3 * i], lo[0], scale)) | (spread3(quantise(xyz[3 * i + 1], lo[1], scale)) << 1) |
         (spread3(quantise(xyz[3 * i + 2], lo[2], scale)) << 2);
}

// Hilbert order of up to kSmallSortAtoms atoms, shallow keys first.
//
// Why it is the same order as the stable sort by the full key. The key machine reads the levels
// of the quantised coordinates from the most significant and emits one 3-bit digit per level,
// so the key of the first L levels (the shallow key S, 3L bits) is exactly the top 3L bits of
// the full 63-bit key K, and K = S * 2^(3 (21 - L)) + R with R < 2^(3 (21 - L)). Ordering by
// (K, index) is therefore ordering by (S, R, index): sort by (S, index) first, then every run of
// atoms with equal S (atoms sharing a cell at depth L) by (K, index), and the result is the
// order by (K, index), which is the stable sort by K. Atoms of a molecule are about 1 A apart or
// more, so with cells of at most kShallowCell they rarely share one and the full keys are rarely
// needed; when they are (duplicate atoms, a far outlier stretching the box) the order is the same,
// only slower.
//
// The pairs (S, index) are sorted as one word, S above kIndexBits index bits (distinct words, so
// any sort gives the same order): a counting pass on the word's top bits (cells of level four at
// most), then insertion sort within the buckets.
constexpr int kIndexBits = 15;
static_assert(kSmallSortAtoms <= (std::size_t{1} << kIndexBits), "indices fit the word");
constexpr int kShallowMaxLevels = (64 - kIndexBits) / 3;  // 16
constexpr int kBucketBits = 12;  // counting pass on the top bits of the shallow key: cells of level 4
constexpr double kShallowCell = 0.5;  // Angstrom: cells of the shallow keys at most this side

// Levels of the shallow keys: cells of at most kShallowCell, and at least eight cells per atom.
int shallow_levels(double extent, std::size_t n) {
  int levels = 1;
  while (levels < kShallowMaxLevels &&
         (extent > kShallowCell * static_cast<double>(std::uint64_t{1} << levels) ||
          (std::uint64_t{1} << (3 * levels)) < 8 * n))
    ++levels;
  return levels;
}

// Bit b of an 8-bit value moved to bit 3b (spread3 by table).
constexpr std::array<std::uint32_t, 256> kSpread8 = [] {
  std::array<std::uint32_t, 256> t{};
  for (std::uint32_t v = 0; v < 256; ++v)
    for (int b = 0; b < 8; ++b) t[v] |= ((v >> b) & 1u) << (3 * b);
  return t;
}();

// spread3 of a value below 2^16.
inline std::uint64_t spread16(std::uint32_t v) {
  return kSpread8[v & 255] | (std::uint64_t{kSpread8[(v >> 8) & 255]} << 24);
}

// quantise() of the 3 coordinates of 4 atoms, each shifted right by `drop`, into q[12]: the same
// double arithmetic two coordinates at a time (min(q, kGridMax) as minpd: equal values either
// way; no NaN here).
struct Quantiser {
  const float* lo;
  double scale;
  int drop;
#if defined(__SSE2__)
  __m128d lo_a, lo_b, lo_c, sc, grid_max;
  __m128i count;
  Quantiser(const float lo_[3], double scale_, int drop_) : lo(lo_), scale(scale_), drop(drop_) {
    // Atoms 3 floats each: the pairs of 4 atoms are (x y) (z x) (y z) (x y) (z x) (y z).
    lo_a = _mm_set_pd(lo[1], lo[0]);
    lo_b = _mm_set_pd(lo[0], lo[2]);
    lo_c = _mm_set_pd(lo[2], lo[1]);
    sc = _mm_set1_pd(scale);
    grid_max = _mm_set1_pd(kGridMax);
    count = _mm_cvtsi32_si128(drop);
  }
  __m128i two(__m128 f, __m128d l) const {  // the two low floats of f; result in the low half
    return _mm_cvttpd_epi32(_mm_min_pd(_mm_mul_pd(_mm_sub_pd(_mm_cvtps_pd(f), l), sc), grid_max));
  }
  void four(const float* p, std::uint32_t* q) const {
    const __m128 a = _mm_loadu_ps(p), b = _mm_loadu_ps(p + 4), c = _mm_loadu_ps(p + 8);
    const __m128i r0 = _mm_unpacklo_epi64(two(a, lo_a), two(_mm_movehl_ps(a, a), lo_b));
    const __m128i r1 = _mm_unpacklo_epi64(two(b, lo_c), two(_mm_movehl_ps(b, b), lo_a));
    const __m128i r2 = _mm_unpacklo_epi64(two(c, lo_b), two(_mm_movehl_ps(c, c), lo_c));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q), _mm_srl_epi32(r0, count));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 4), _mm_srl_epi32(r1, count));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 8), _mm_srl_epi32(r2, count));
  }
#else
  Quantiser(const float lo_[3], double scale_, int drop_) : lo(lo_), scale(scale_), drop(drop_) {}
  void four(const float* p, std::uint32_t* q) const {
    for (int k = 0; k < 12; ++k) q[k] = quantise(p[k], lo[k % 3], scale) >> drop;
  }
#endif
  void one(const float* p, std::uint32_t* q) const {
    for (int c = 0; c < 3; ++c) q[c] = quantise(p[c], lo[c], scale) >> drop;
  }
};

// The words (shallow key << kIndexBits | index) of atoms [0, n), keys of L levels, each counted
// in count[] by its bucket (the key's top min(kBucketBits, 3L) bits; counted here, where the
// increments overlap the key work, rather than in a pass of their own: 1 us less a request).
template <int L>
void shallow_words(const float* xyz, std::size_t n, const float lo[3], double scale, std::uint64_t* words,
                   std::uint32_t* count) {
  constexpr int kTop = std::min(kBucketBits, 3 * L);
  const HilbertTable& table = hilbert_table();
  const Quantiser quant(lo, scale, kKeyBits - L);
  auto spread = [](std::uint32_t v) -> std::uint64_t {
    if constexpr (L <= 8) return kSpread8[v];
    else return spread16(v);
  };
  constexpr std::size_t kW = 8;
  for (std::size_t i = 0; i < n; i += kW) {
    std::uint32_t q[3 * kW];
    if (i + kW <= n) {
      for (std::size_t j = 0; j < kW; j += 4) quant.four(xyz + 3 * (i + j), q + 3 * j);
    } else {  // the last group repeats its last atom
      for (std::size_t j = 0; j < kW; ++j) quant.one(xyz + 3 * std::min(i + j, n - 1), q + 3 * j);
    }
    std::uint64_t m[kW], k[kW];
    for (std::size_t j = 0; j < kW; ++j) m[j] = spread(q[3 * j]) | (spread(q[3 * j + 1]) << 1) | (spread(q[3 * j + 2]) << 2);
    table.shallow_keys<kW, L>(m, k);
    for (std::size_t j = 0; j < kW && i + j < n; ++j) {
      words[i + j] = (k[j] << kIndexBits) | (i + j);
      ++count[k[j] >> (3 * L - kTop)];
    }
  }
}

template <int... L>
constexpr auto shallow_words_table(std::integer_sequence<int, L...>) {
  return std::array<void (*)(const float*, std::size_t, const float*, double, std::uint64_t*, std::uint32_t*),
                    sizeof...(L)>{
      &shallow_words<L + 1>...};
}

void hilbert_order_small(const float* xyz, std::size_t n, const float lo[3], double scale, double extent,
                         std::int32_t* perm) {
  const HilbertTable& table = hilbert_table();
  const int levels = shallow_levels(extent, n);
  std::unique_ptr<std::uint64_t[]> buf(new std::uint64_t[2 * n]);
  std::uint64_t* words = buf.get();
  std::uint64_t* sorted = buf.get() + n;
  static_assert(kShallowMaxLevels <= 16, "shallow coordinates below 2^16");
  static constexpr auto kPasses = shallow_words_table(std::make_integer_sequence<int, kShallowMaxLevels>{});
  // The words, and the count of each bucket (the top `top` bits of the shallow key).
  const int top = std::min(kBucketBits, 3 * levels);
  const std::size_t buckets = std::size_t{1} << top;  // 8 or more
  std::array<std::uint32_t, std::size_t{1} << kBucketBits> bucket;
  std::fill(bucket.begin(), bucket.begin() + static_cast<std::ptrdiff_t>(buckets), 0u);
  kPasses[static_cast<std::size_t>(levels - 1)](xyz, n, lo, scale, words, bucket.data());
  // Counts to first positions (exclusive prefix sum), noting whether a bucket holds more than
  // kInsertionMax words; then the words scattered, bucket[b] ending as the end of bucket b.
  constexpr std::uint32_t kInsertionMax = 32;
  bool crowded = false;
  std::size_t b = 0;
  std::uint32_t sum = 0;
#if defined(__SSE2__)
  {
    __m128i carry = _mm_setzero_si128(), over = _mm_setzero_si128();
    const __m128i limit = _mm_set1_epi32(static_cast<int>(kInsertionMax));
    for (; b + 4 <= buckets; b += 4) {
      __m128i* p = reinterpret_cast<__m128i*>(bucket.data() + b);
      const __m128i x = _mm_loadu_si128(p);
      over = _mm_or_si128(over, _mm_cmpgt_epi32(x, limit));  // counts <= 2^15: no sign trouble
      __m128i inclusive = _mm_add_epi32(x, _mm_slli_si128(x, 4));
      inclusive = _mm_add_epi32(inclusive, _mm_slli_si128(inclusive, 8));
      _mm_storeu_si128(p, _mm_add_epi32(_mm_sub_epi32(inclusive, x), carry));
      carry = _mm_shuffle_epi32(_mm_add_epi32(inclusive, carry), 0xFF);
    }
    crowded = _mm_movemask_epi8(over) != 0;
    sum = static_cast<std::uint32_t>(_mm_cvtsi128_si32(carry));
  }
#endif
  for (; b < buckets; ++b) {
    const std::uint32_t v = bucket[b];
    crowded = crowded || v > kInsertionMax;
    bucket[b] = sum;
    sum += v;
  }
  const int shift = kIndexBits + 3 * levels - top;
  for (std::size_t i = 0; i < n; ++i) sorted[bucket[words[i] >> shift]++] = words[i];
  auto insertion_sort = [](std::uint64_t* w, std::size_t count) {
    for (std::size_t j = 1; j < count; ++j) {
      const std::uint64_t v = w[j];
      std::size_t m = j;
      for (; m > 0 && w[m - 1] > v; --m) w[m] = w[m - 1];
      w[m] = v;
    }
  };
  if (!crowded) {
    // One insertion sort over all: a word never moves past the smaller words of earlier buckets.
    insertion_sort(sorted, n);
  } else {
    for (std::size_t d = 0; d < buckets; ++d) {
      const std::uint32_t s0 = d == 0 ? 0 : bucket[d - 1], count = bucket[d] - s0;
      if (count <= kInsertionMax) insertion_sort(sorted + s0, count);
      else std::sort(sorted + s0, sorted + s0 + count);
    }
  }
  constexpr std::uint64_t kIndexMask = (std::uint64_t{1} << kIndexBits) - 1;
  bool shared = false;  // some atoms share a cell at this depth
  perm[0] = static_cast<std::int32_t>(sorted[0] & kIndexMask);
  for (std::size_t p = 1; p < n; ++p) {
    perm[p] = static_cast<std::int32_t>(sorted[p] & kIndexMask);
    shared |= ((sorted[p] ^ sorted[p - 1]) >> kIndexBits) == 0;
  }
  if (!shared) return;
  // Runs of equal shallow keys, by (full key, index).
  std::vector<std::pair<std::uint64_t, std::int32_t>> run;
  for (std::size_t a = 0; a < n;) {
    std::size_t e = a + 1;
    while (e < n && ((sorted[e] ^ sorted[a]) >> kIndexBits) == 0) ++e;
    if (e - a > 1) {
      run.clear();
      for (std::size_t p = a; p < e; ++p) {
        const std::size_t i = static_cast<std::size_t>(perm[p]);
        const std::uint64_t m[1] = {interleaved_bits(xyz, i, lo, scale)};
        std::uint64_t key[1];
        table.keys<1>(m, key);
        run.emplace_back(key[0], perm[p]);
      }
      std::sort(run.begin(), run.end());
      for (std::size_t p = a; p < e; ++p) perm[p] = run[p - a].second;
    }
    a = e;
  }
}

// The same LSD sort on `parts` threads: per pass, each thread counts the digits of its chunk,
// the offsets run bucket by bucket and, within a bucket, thread by thread (so equal digits keep
// their order), and each thread scatters its chunk.
bool radix_sort_parallel(std::uint64_t* keys, std::int32_t* idx, std::uint64_t* keys2, std::int32_t* idx2, std::size_t n,
                         int parts) {
  std::vector<std::array<std::uint32_t, kRadixBuckets>> count(static_cast<std::size_t>(parts));
  bool swapped = false;
  for (int p = 0; p < kRadixPasses; ++p) {
    const int shift = p * kRadixBits;
    detail::parallel_chunks(n, parts, [&](int t, std::size_t b, std::size_t e) {
      auto& c = count[static_cast<std::size_t>(t)];
      c.fill(0);
      for (std::size_t i = b; i < e; ++i) ++c[(keys[i] >> shift) & (kRadixBuckets - 1)];
    });
    bool one_bucket = false;
    std::uint32_t sum = 0;
    for (std::size_t d = 0; d < kRadixBuckets; ++d) {
      std::uint32_t in_bucket = 0;
      for (auto& c : count) {
        const std::uint32_t v = c[d];
        c[d] = sum;
        sum += v;
        in_bucket += v;
      }
      one_bucket = one_bucket || in_bucket == n;
    }
    if (one_bucket) continue;  // every key has this digit: the pass would change nothing
    detail::parallel_chunks(n, parts, [&](int t, std::size_t b, std::size_t e) {
      auto& c = count[static_cast<std::size_t>(t)];
      for (std::size_t i = b; i < e; ++i) {
        const std::uint32_t pos = c[(keys[i] >> shift) & (kRadixBuckets - 1)]++;
        keys2[pos] = keys[i];
        idx2[pos] = idx[i];
      }
    });
    std::swap(keys, keys2);
    std::swap(idx, idx2);
    swapped = !swapped;
  }
  return swapped;
}

// The large sort: stable by key (equal keys keep file order), in two steps that keep the work in
// cache. One pass scatters the pairs into buckets by the key's top kTopBits bits (per thread:
// count, offsets bucket by bucket then thread by thread, scatter); then each bucket is sorted on
// its own by the remaining bits (insertion sort when short, else LSD with 8-bit digits, passes
// whose digit is constant in the bucket skipped), the buckets shared out among the threads.
// The result is the same for any thread count, and the same as the LSD sort's.
constexpr int kTopBits = 11;  // 2,048 buckets: about 500 atoms each at a million
constexpr std::size_t kTopBuckets = std::size_t{1} << kTopBits;
constexpr int kLowBits = 8;
constexpr std::size_t kLowBuckets = std::size_t{1} << kLowBits;
constexpr std::size_t kInsertionMax = 192;  // buckets up to this size: insertion sort

// Sorts (keys, idx)[0, n) stably by their low `bits` bits, using (keys2, idx2) as scratch;
// writes the sorted indices to out.
void sort_bucket(std::uint64_t* keys, std::int32_t* idx, std::uint64_t* keys2, std::int32_t* idx2, std::size_t n,
                 int bits, std::int32_t* out) {
  if (n <= kInsertionMax) {
    for (std::size_t i = 1; i < n; ++i) {
      const std::uint64_t k = keys[i];
      const std::int32_t v = idx[i];
      std::size_t j = i;
      for (; j > 0 && keys[j - 1] > k; --j) {  // strictly greater: stable
        keys[j] = keys[j - 1];
        idx[j] = idx[j - 1];
      }
      keys[j] = k;
      idx[j] = v;
    }
    std::copy(idx, idx + n, out);
    return;
  }
  std::array<std::uint32_t, kLowBuckets> h;
  for (int p = 0; p * kLowBits < bits; ++p) {
    const int shift = p * kLowBits;
    h.fill(0);
    for (std::size_t i = 0; i < n; ++i) ++h[(keys[i] >> shift) & (kLowBuckets - 1)];
    if (!scatter_pass(h, shift, keys, idx, keys2, idx2, n)) continue;
    std::swap(keys, keys2);
    std::swap(idx, idx2);
  }
  if (idx != out) std::copy(idx, idx + n, out);
}

// Sorts n (key, index) pairs, the keys in keys and the indices 0..n-1 in perm, on `parts` threads;
// perm ends sorted. keys2 and idx2 are scratch of n each; keys is overwritten.
void sort_keys_bucketed(std::uint64_t* keys, std::int32_t* perm, std::uint64_t* keys2, std::int32_t* idx2, std::size_t n,
                        int parts) {
  constexpr int shift = 3 * kKeyBits - kTopBits;
  constexpr std::size_t buckets = kTopBuckets;
  std::vector<std::array<std::uint32_t, kTopBuckets>> count(static_cast<std::size_t>(parts));
  detail::parallel_chunks(n, parts, [&](int t, std::size_t b, std::size_t e) {
    auto& c = count[static_cast<std::size_t>(t)];
    c.fill(0);
    for (std::size_t i = b; i < e; ++i) ++c[keys[i] >> shift];
  });
  std::vector<std::uint32_t> bucket_begin(buckets + 1);
  std::uint32_t sum = 0;
  for (std::size_t d = 0; d < buckets; ++d) {
    bucket_begin[d] = sum;
    for (auto& c : count) {
      const std::uint32_t v = c[d];
      c[d] = sum;
      sum += v;
    }
  }
  bucket_begin[buckets] = sum;
  detail::parallel_chunks(n, parts, [&](int t, std::size_t b, std::size_t e) {
    auto& c = count[static_cast<std::size_t>(t)];
    for (std::size_t i = b; i < e; ++i) {
      const std::uint32_t pos = c[keys[i] >> shift]++;
      keys2[pos] = keys[i];
      idx2[pos] = perm[i];
    }
  });
  // Buckets to threads: contiguous bucket ranges of about n / parts atoms each.
  const std::vector<std::size_t> first = detail::weighted_ranges(bucket_begin.data(), buckets, parts);
  detail::parallel_ranges(first, [&](int, std::size_t begin, std::size_t end) {
    for (std::size_t d = begin; d < end; ++d) {
      const std::size_t b = bucket_begin[d], e = bucket_begin[d + 1];
      sort_bucket(keys2 + b, idx2 + b, keys + b, perm + b, e - b, shift, perm + b);
    }
  });
}

}  // namespace

const char* to_string(Order o) {
  switch (o) {
    case Order::file: return "file";
    case Order::morton: return "morton";
    case Order::hilbert: return "hilbert";
  }
  throw Error("unknown Order value " + std::to_string(static_cast<int>(o)));
}

const char* to_string(MaskMode m) {
  switch (m) {
    case MaskMode::tiles: return "tiles";
    case MaskMode::atoms: return "atoms";
    case MaskMode::windows: return "windows";
  }
  throw Error("unknown MaskMode value " + std::to_string(static_cast<int>(m)));
}

Order parse_order(const std::string& s) {
  for (Order o : {Order::file, Order::morton, Order::hilbert})
    if (s == to_string(o)) return o;
  throw Error("unknown order '" + s + "' (valid: file, morton, hilbert)");
}

MaskMode parse_mask(const std::string& s) {
  for (MaskMode m : {MaskMode::tiles, MaskMode::atoms, MaskMode::windows})
    if (s == to_string(m)) return m;
  throw Error("unknown mask mode '" + s + "' (valid: tiles, atoms, windows)");
}

// Keys on a cubic grid: the largest bounding-box side maps to 2^21 - 1 cells, so near atoms get
// near keys whatever the shape; equal keys keep file order (the sort is stable).
std::vector<std::int32_t> spatial_order(const float* xyz, std::size_t n, Order order, int threads) {
  if (n > kMaxAtoms)
    throw Error("spatial_order: " + std::to_string(n) + " atoms, more than the limit of " +
                std::to_string(kMaxAtoms));
  if (order != Order::file && n >= 2)  // keys need finite coordinates
    detail::validate_coords_parallel(xyz, n, "spatial_order",
                                     detail::resolve_threads(threads, n, detail::kLayoutAtomsPerThread));
  return detail::spatial_order_unchecked(xyz, n, order, threads);
}

std::vector<std::int32_t> detail::spatial_order_unchecked(const float* xyz, std::size_t n, Order order, int threads) {
  const int parts = detail::resolve_threads(threads, n, detail::kLayoutAtomsPerThread);
  std::vector<std::int32_t> perm(n);
  if (order == Order::file || n < 2) {
    std::iota(perm.begin(), perm.end(), 0);
    return perm;
  }
  float lo[3], hi[3];
  detail::bounding_box_parallel(xyz, n, lo, hi, parts);
  const double extent = std::max({double{hi[0]} - lo[0], double{hi[1]} - lo[1], double{hi[2]} - lo[2]});
  const double scale = extent > 0 ? kGridMax / extent : 0.0;
  if (order == Order::hilbert && n <= kSmallSortAtoms) {
    if (extent > 0) hilbert_order_small(xyz, n, lo, scale, extent, perm.data());
    else std::iota(perm.begin(), perm.end(), 0);  // one point: every key 0, file order
    return perm;
  }
  auto quant = [&](std::size_t i, int c) { return quantise(xyz[3 * i + c], lo[c], scale); };
  // Sort buffers left uninitialised: the key pass and the sort's scatters write them on the
  // threads, not one thread zero-filling 20 bytes per atom first.
  std::unique_ptr<std::uint64_t[]> keys(new std::uint64_t[n]);
  const HilbertTable& table = hilbert_table();
  detail::parallel_chunks(n, parts, [&](int, std::size_t b, std::size_t e) {
    for (std::size_t i = b; i < e; ++i) perm[i] = static_cast<std::int32_t>(i);
    if (order == Order::morton) {
      for (std::size_t i = b; i < e; ++i)
        keys[i] = (spread3(quant(i, 0)) << 2) | (spread3(quant(i, 1)) << 1) | spread3(quant(i, 2));
    } else {
      // First every atom's interleaved bits (a plain loop, vectorised), then the state machine
      // over them kW atoms at a time; the last group of a chunk repeats its last atom.
      for (std::size_t i = b; i < e; ++i) keys[i] = interleaved_bits(xyz, i, lo, scale);
      constexpr std::size_t kW = 8;
      for (std::size_t i = b; i < e; i += kW) {
        std::uint64_t m[kW], k[kW];
        for (std::size_t j = 0; j < kW; ++j) m[j] = keys[std::min(i + j, e - 1)];
        table.keys<kW>(m, k);
        for (std::size_t j = 0; j < kW && i + j < e; ++j) keys[i + j] = k[j];
      }
    }
  });
  if (n <= kSmallSortAtoms) {
    sort_small(keys.get(), perm.data(), n);
    return perm;
  }
  std::unique_ptr<std::uint64_t[]> keys2(new std::uint64_t[n]);  // scratch of the radix sorts
  std::unique_ptr<std::int32_t[]> idx2(new std::int32_t[n]);
  if (n >= kBucketSortMinAtoms) {
    sort_keys_bucketed(keys.get(), perm.data(), keys2.get(), idx2.get(), n, parts);
    return perm;
  }
  const bool in_second = parts > 1 ? radix_sort_parallel(keys.get(), perm.data(), keys2.get(), idx2.get(), n, parts)
                                   : radix_sort(keys.get(), perm.data(), keys2.get(), idx2.get(), n);
  if (in_second) std::copy(idx2.get(), idx2.get() + n, perm.begin());
  return perm;
}

}  // namespace protattn
