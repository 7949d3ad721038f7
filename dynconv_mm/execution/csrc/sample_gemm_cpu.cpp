// tiled_gemm's per-sample GEMMs on a CPU, with each sample's kernel mixed
// from the bank inside the GEMM's own tiles (per group g, dropped below):
//
//   forward      y[b, o, p]  = sum_j W_b[o, j] cols[b, j, p]
//   input grad   dcols[b, p, j] = sum_o gy[b, o, p] W_b[o, j]  (transposed)
//   weight grads dW[k, o, j] = sum_b m[b, k] G_b[o, j]
//                dm[b, k]    = sum_{o,j} G_b[o, j] W[k, o, j]  (DyNet: per o)
//   with W_b = sum_k m[b, k] W[k]  (DyNet: m[b, o, k]),
//        G_b[o, j] = sum_p gy[b, o, p] cols[b, j, p].
//
// PyTorch runs them as batched products (MKL) around passes that form a
// tile of kernels W_b (B times its share of the bank, written and read
// back), and on the weight side G_b, written and read twice by products
// of shapes the BLAS runs poorly ([B, J] x [J, K] per row). Here the few
// rows of W_b a tile needs are mixed into a small panel in cache, and
// each tile of G_b is reduced into both gradients while in cache: on a
// 512-channel 3x3 layer at 7x7, batch 8, four kernels, those passes took
// as long as the products themselves. The backward op can compute the
// input gradient in the weight gradients' pass, from the bank rows that
// pass reads (backward_fuses).
//
// One register tile does all three: R rows of A times a panel of 16
// columns, summed over an inner dimension (AVX2 + FMA): the forward with
// one kernel, 512-channel 3x3 at 7x7, batch 1, 1.57 ms against MKL's 1.43
// for the same product (the slower Xeon VM, both held to AVX2). On CPUs
// with AVX-512 the gradients' tiles can be sample_conv_cpu.cpp's, 64
// columns wide (`wide`, the caller's choice). Without AVX2 the ops are
// not offered (`avx2_fma_supported`) and PyTorch runs them.
#include "cpu_ops.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <iterator>
#include <mutex>
#include <utility>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define DYNCONV_MM_SAMPLE_GEMM 1
#endif
#ifdef __linux__
#include <sys/mman.h>
#endif

namespace dynconv_mm {

#ifdef DYNCONV_MM_SAMPLE_GEMM
#define DYNCONV_MM_AVX2 __attribute__((target("avx2,fma")))

// dst[0:n] = sum_k c[k] * src[k * src_stride + 0:n]: n columns of a row
// of W_b from its K bank rows (`src_stride` apart) and coefficients `c`,
// the K rows read side by side, 32 columns at a time: four chains of
// multiply-adds and four loads in flight, not one chain waiting on each
// load (8 columns at a time, `perf annotate` found the forward's mixing
// stalled on its loads). With forward_unit's stream, on the slower Xeon
// VM, 512-channel 3x3 at 7x7, the forward op alone: batch 1, four
// kernels 2.54 -> 2.14 ms, DyNet's six per row 3.02 -> 2.58; batch 8
// 15.1 -> 14.2 and 17.3 -> 16.0 (the stream's share below).
DYNCONV_MM_AVX2 void mix_row(const float* src, int64_t src_stride,
                             const float* c, int64_t num_kernels, int64_t n,
                             float* dst) {
  int64_t j = 0;
  for (; j + 32 <= n; j += 32) {
    __m256 sum[4];
    for (int v = 0; v < 4; ++v) sum[v] = _mm256_setzero_ps();
    for (int64_t k = 0; k < num_kernels; ++k) {
      const __m256 ck = _mm256_broadcast_ss(c + k);
      const float* row = src + k * src_stride + j;
      for (int v = 0; v < 4; ++v)
        sum[v] = _mm256_fmadd_ps(ck, _mm256_loadu_ps(row + 8 * v), sum[v]);
    }
    for (int v = 0; v < 4; ++v) _mm256_storeu_ps(dst + j + 8 * v, sum[v]);
  }
  for (; j + 8 <= n; j += 8) {
    __m256 sum = _mm256_setzero_ps();
    for (int64_t k = 0; k < num_kernels; ++k)
      sum = _mm256_fmadd_ps(_mm256_broadcast_ss(c + k),
                            _mm256_loadu_ps(src + k * src_stride + j), sum);
    _mm256_storeu_ps(dst + j, sum);
  }
  for (; j < n; ++j) {
    float sum = 0.f;
    for (int64_t k = 0; k < num_kernels; ++k)
      sum += c[k] * src[k * src_stride + j];
    dst[j] = sum;
  }
}

namespace {

constexpr int kLanes = 16;  // columns of a register tile: two registers
constexpr int kRows = 6;    // rows of a register tile

// A huge page (x86-64 Linux), and an address rounded up to one's start.
constexpr int64_t kHugePage = int64_t{2} << 20;
inline uintptr_t huge_page_above(uintptr_t address) {
  return (address + kHugePage - 1) & ~uintptr_t(kHugePage - 1);
}

// Asks Linux to back the 2 MB pages lying wholly inside [data, data +
// bytes) with huge pages: those present now (MADV_COLLAPSE, Linux 6.1+),
// and those first touched later as they fault in (MADV_HUGEPAGE). The
// gradients' units walk the bank, and write
// its gradient, a few hundred bytes from each of thousands of rows 4-18 KB
// apart, and with 4 KB pages nearly every piece missed the TLB.
// 512-channel 3x3 at 7x7, batch 8, forward + backward on the Emerald
// Rapids VM: DyNet 28.9-29.6 -> 26.7-27.2 ms, four kernels 25.6 -> 23.7
// (a static convolution 14). Only a hint: the contents stay; refused
// (older kernels, THP off, a file mapping) it changes nothing; on pages
// already huge it returns at once (~20 us for 56 MB; the first time it
// copies them, ~15-20 ms).
void ask_for_huge_pages(const void* data, int64_t bytes) {
#if defined(__linux__)
  constexpr int kCollapse = 25;  // MADV_COLLAPSE (glibc < 2.37 lacks it)
  const uintptr_t begin = huge_page_above(reinterpret_cast<uintptr_t>(data));
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) &
                        ~uintptr_t(kHugePage - 1);
  if (end <= begin) return;
  madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
  madvise(reinterpret_cast<void*>(begin), end - begin, kCollapse);
#else
  (void)data;
  (void)bytes;
#endif
}

// The bank's gradient where huge pages are asked for: whole 2 MB pages of
// memory mapped for it (MADV_HUGEPAGE before the first touch), and once
// the gradient is freed its block is kept for the next gradient of its
// size, up to kKeptBytes of blocks in all. From the heap, a 56 MB gradient
// (six kernels at 512 channels, 3x3) lands a few MB from the last one as
// other tensors take the space before it, and the call faulted in, zeroed
// and collapsed the huge pages it had not covered before: on the slower
// Xeon VM, a DyNet layer's forward + backward in a loop spent 3-14 ms a
// step in the kernel on average (0.03 in other processes, where the
// gradient happened to land in the same place), its slowest steps 70-150
// ms against a median of 40-46; from kept blocks, 0.03-1 ms and at most
// 49 ms (in one process switching: the mean step 48.2 -> 43.8 ms).
// Smaller gradients, and systems without mmap, take the heap.
class GradientBlocks {
 public:
  at::Tensor empty_like(const at::Tensor& bank) {
    const int64_t bytes = ceil_to_pages(bank.numel() * 4);
#ifdef __linux__
    if (bytes >= kHugePage) {
      void* block = take(bytes);
      if (block == nullptr) block = map(bytes);
      if (block != nullptr)
        return at::from_blob(
            block, bank.sizes(), [this, bytes](void* b) { keep(b, bytes); },
            bank.options());
    }
#endif
    return at::empty_like(bank);
  }

 private:
  static constexpr int64_t kKeptBytes = int64_t{1} << 30;

  static int64_t ceil_to_pages(int64_t bytes) {
    return static_cast<int64_t>(huge_page_above(bytes));
  }

  // The block of `bytes` kept last, or null.
  void* take(int64_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = kept_.rbegin(); it != kept_.rend(); ++it)
      if (it->second == bytes) {
        void* block = it->first;
        kept_.erase(std::next(it).base());
        kept_bytes_ -= bytes;
        return block;
      }
    return nullptr;
  }

#ifdef __linux__
  // `bytes` at a 2 MB boundary, or null: a larger mapping, trimmed.
  static void* map(int64_t bytes) {
    void* m = mmap(nullptr, bytes + kHugePage, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    char* const start = static_cast<char*>(m);
    char* const block = reinterpret_cast<char*>(
        huge_page_above(reinterpret_cast<uintptr_t>(start)));
    if (block > start) munmap(start, block - start);
    munmap(block + bytes, kHugePage - (block - start));  // never empty
    madvise(block, bytes, MADV_HUGEPAGE);
    return block;
  }

  void keep(void* block, int64_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (kept_bytes_ + bytes <= kKeptBytes) {
        kept_.emplace_back(block, bytes);
        kept_bytes_ += bytes;
        return;
      }
    }
    munmap(block, bytes);
  }
#endif

  std::mutex mutex_;
  std::vector<std::pair<void*, int64_t>> kept_;
  int64_t kept_bytes_ = 0;
};

// One for the process, never destroyed: gradients may outlive static
// destruction at exit.
GradientBlocks& gradient_blocks() {
  static GradientBlocks* const blocks = new GradientBlocks;
  return *blocks;
}

// Shapes and data of one call (per group g; the bank is [K, G, O, J]).
struct Layout {
  int64_t batch, groups, group_out, pixels, row, num_kernels;
  const float* bank;
  const float* m;  // [B, K], or DyNet's [B, G, O, K]
  bool per_row;
  // the backward's copy of m with the samples last, [K, B] or [G, O, K, B]
  const float* m_t = nullptr;
  // whether the backward writes the bank's gradient past the caches
  // (GradientStore::kStream; sample_gemm_backward says when)
  bool stream_gradient = false;

  // Row o's coefficients c[k * B + b] = mixing(b, g, o, k) (backward).
  const float* row_coefficients(int64_t g, int64_t o) const {
    return per_row ? m_t + (g * group_out + o) * num_kernels * batch : m_t;
  }

  float mixing(int64_t b, int64_t g, int64_t o, int64_t k) const {
    return per_row ? m[((b * groups + g) * group_out + o) * num_kernels + k]
                   : m[b * num_kernels + k];
  }
  int64_t mixing_index(int64_t b, int64_t g, int64_t o, int64_t k) const {
    return per_row ? ((b * groups + g) * group_out + o) * num_kernels + k
                   : b * num_kernels + k;
  }
  const float* bank_row(int64_t k, int64_t g, int64_t o) const {
    return bank + ((k * groups + g) * group_out + o) * row;
  }
};

DYNCONV_MM_AVX2 inline float lane_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v),
                        _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// The sum of 8 or 16 lanes at d.
DYNCONV_MM_AVX2 inline float sum_of(const float* d, int64_t lanes) {
  __m256 v = _mm256_loadu_ps(d);
  if (lanes == 16) v = _mm256_add_ps(v, _mm256_loadu_ps(d + 8));
  return lane_sum(v);
}

// The permutations of avx512_lane_sums: at each level, the first and
// second halves of each group of lanes of two registers (`gs`-lane groups,
// a's then b's: lane indices 0-15 a's, 16-31 b's) side by side.
struct LaneSumIndices {
  alignas(64) int32_t first[4][16], second[4][16];
  LaneSumIndices() {
    for (int level = 0, gs = 16; gs > 1; ++level, gs /= 2)
      for (int p = 0; p < 16; ++p) {
        const int half = gs / 2, q = p / half, groups = 16 / gs;
        const int src = (q < groups ? q * gs : 16 + (q - groups) * gs) +
                        p % half;
        first[level][p] = src;
        second[level][p] = src + half;
      }
  }
};

// out[e] = the sum of the 16 floats at v + 16 e, for e < count: sixteen
// entries at a time, by four levels of permutations and adds (each halves
// the lanes an entry still spans); one by one they took a third of
// DyNet's per-row bookkeeping in the weight gradients.
DYNCONV_MM_AVX512 void avx512_lane_sums(const float* v, int64_t count,
                                        float* out) {
  static const LaneSumIndices indices;
  int64_t e = 0;
  for (; e + 16 <= count; e += 16) {
    __m512 x[16];
    for (int i = 0; i < 16; ++i) x[i] = _mm512_loadu_ps(v + (e + i) * 16);
    for (int level = 0, outputs = 8; outputs >= 1; ++level, outputs /= 2) {
      const __m512i first = _mm512_load_si512(indices.first[level]);
      const __m512i second = _mm512_load_si512(indices.second[level]);
      for (int j = 0; j < outputs; ++j)
        x[j] = _mm512_add_ps(
            _mm512_permutex2var_ps(x[2 * j], first, x[2 * j + 1]),
            _mm512_permutex2var_ps(x[2 * j], second, x[2 * j + 1]));
    }
    _mm512_storeu_ps(out + e, x[0]);
  }
  for (; e < count; ++e) out[e] = sum_of(v + e * 16, 16);
}

// out[e] = the sum of the `lanes` floats at v + lanes e, for e < count.
DYNCONV_MM_AVX2 void lane_sums(const float* v, int64_t count, int64_t lanes,
                               float* out) {
  if (lanes == 16) return avx512_lane_sums(v, count, out);
  for (int64_t e = 0; e < count; ++e) out[e] = sum_of(v + e * lanes, lanes);
}

// out[r, 0:16] (+)= sum_i a[r, i] * panel[i, 0:16] for R rows, in 2R
// registers (a's rows `a_stride` apart, or with `Transposed` its columns:
// a[r, i] at a[i * a_stride + r]; the panel's rows `panel_stride` apart,
// out's `out_stride`); `add` adds to out instead of writing it. Asks for
// `stream`'s lines a few per step, all of them by the tile's end.
template <int R, bool Transposed>
DYNCONV_MM_AVX2 inline __attribute__((always_inline)) void register_tile(
    const float* a, int64_t a_stride, int64_t inner, const float* panel,
    int64_t panel_stride, float* out, int64_t out_stride, bool add,
    const PrefetchStream& stream) {
  auto a_at = [&](int r, int64_t i) {
    return Transposed ? a + i * a_stride + r : a + r * a_stride + i;
  };
  if (inner <= 0) {  // nothing to sum: zeros written, or nothing added
    if (!add)
      for (int r = 0; r < R; ++r)
        std::fill_n(out + r * out_stride, 2 * 8, 0.0f);
    return;
  }
  // Told that the loops run (inner >= 1), GCC 12 keeps the accumulators in
  // registers; otherwise it stores all of them to the stack on every step
  // (as sample_conv_cpu.cpp's tiles did).
  __m256 acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  PrefetchCursor cursor(stream, inner);
  int64_t i = 0;
  if constexpr (R <= 2) {
    // Too few chains for the FMAs' latency: a second set of accumulators
    // over every other step.
    __m256 odd[R][2];
    for (int r = 0; r < R; ++r) odd[r][0] = odd[r][1] = _mm256_setzero_ps();
    // (each set named, not picked by a reference: that put both on the
    // stack)
    for (; i + 2 <= inner; i += 2) {
      const float* row = panel + i * panel_stride;
      const __m256 c0 = _mm256_loadu_ps(row), c1 = _mm256_loadu_ps(row + 8);
      const __m256 d0 = _mm256_loadu_ps(row + panel_stride),
                   d1 = _mm256_loadu_ps(row + panel_stride + 8);
      for (int r = 0; r < R; ++r) {
        const __m256 x = _mm256_broadcast_ss(a_at(r, i));
        acc[r][0] = _mm256_fmadd_ps(x, c0, acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(x, c1, acc[r][1]);
        const __m256 z = _mm256_broadcast_ss(a_at(r, i + 1));
        odd[r][0] = _mm256_fmadd_ps(z, d0, odd[r][0]);
        odd[r][1] = _mm256_fmadd_ps(z, d1, odd[r][1]);
      }
      cursor.ask();
      cursor.ask();
    }
    for (int r = 0; r < R; ++r)
      for (int h = 0; h < 2; ++h)
        acc[r][h] = _mm256_add_ps(acc[r][h], odd[r][h]);
  }
  for (; i < inner; ++i) {
    const __m256 c0 = _mm256_loadu_ps(panel + i * panel_stride);
    const __m256 c1 = _mm256_loadu_ps(panel + i * panel_stride + 8);
    for (int r = 0; r < R; ++r) {
      const __m256 x = _mm256_broadcast_ss(a_at(r, i));
      acc[r][0] = _mm256_fmadd_ps(x, c0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(x, c1, acc[r][1]);
    }
    cursor.ask();
  }
  for (int r = 0; r < R; ++r)
    for (int h = 0; h < 2; ++h) {
      float* o = out + r * out_stride + 8 * h;
      _mm256_storeu_ps(o, add ? _mm256_add_ps(_mm256_loadu_ps(o), acc[r][h])
                              : acc[r][h]);
    }
}

constexpr PrefetchStream kNoStream{nullptr, 0, 0};

// register_tile over `rows` rows (any count), kRows at a time, `stream`
// shared out among them.
DYNCONV_MM_AVX2 void rows_of_tiles(int64_t rows, const float* a,
                                   int64_t a_stride, int64_t inner,
                                   const float* panel, int64_t panel_stride,
                                   float* out, int64_t out_stride,
                                   bool add = false,
                                   bool a_transposed = false,
                                   const PrefetchStream& stream = kNoStream) {
  const int64_t row_tiles = (rows + kRows - 1) / kRows;
  for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
    const float* a0 = a_transposed ? a + r0 : a + r0 * a_stride;
    float* out0 = out + r0 * out_stride;
    const PrefetchStream part = stream.share(r0 / kRows, row_tiles);
    switch (std::min<int64_t>(kRows, rows - r0)) {
#define DYNCONV_MM_ROWS(R)                                                 \
  case R:                                                                  \
    (a_transposed ? register_tile<R, true> : register_tile<R, false>)(     \
        a0, a_stride, inner, panel, panel_stride, out0, out_stride, add,   \
        part);                                                             \
    break;
      DYNCONV_MM_ROWS(1) DYNCONV_MM_ROWS(2) DYNCONV_MM_ROWS(3)
      DYNCONV_MM_ROWS(4) DYNCONV_MM_ROWS(5) DYNCONV_MM_ROWS(6)
#undef DYNCONV_MM_ROWS
    }
  }
}

// The coefficients of row o of W_b, c[k] = mixing(b, g, o, k), to `c`.
inline void row_mixing(const Layout& l, int64_t b, int64_t g, int64_t o,
                       float* c) {
  for (int64_t k = 0; k < l.num_kernels; ++k) c[k] = l.mixing(b, g, o, k);
}

// Asks for the cache lines of n floats at `src` ahead of their use (`write`:
// to be written). The ops walk the bank a few hundred bytes per row with
// rows 4-18 KB apart: more streams than the hardware prefetcher follows,
// so without these each piece waits on memory (the forward at batch 1 and
// the weight gradients, both with four to six kernels: 7-20% longer).
inline void prefetch(const float* src, int64_t n, bool write = false) {
  for (int64_t j = 0; j < n; j += 64 / sizeof(float)) {
    if (write)
      __builtin_prefetch(src + j, 1, 3);
    else
      __builtin_prefetch(src + j, 0, 3);
  }
}

// How the reduction writes a bank row's gradient: added to what is there,
// written, or written with non-temporal stores past the caches
// (`kStream`: 64-byte aligned rows; the op fences after).
enum class GradientStore { kAddTo, kWrite, kStream };

// The pieces of n floats at ahead[2k] and, to be written, ahead[2k + 1]
// (either may be null; `ahead` too).
inline void prefetch_ahead(const float* const* ahead, int64_t k, int64_t n) {
  if (ahead == nullptr) return;
  if (ahead[2 * k]) prefetch(ahead[2 * k], n);
  if (ahead[2 * k + 1]) prefetch(ahead[2 * k + 1], n, true);
}

// One output row's share of NB samples, for each of its K bank rows k
// (`w[k]`, gradient `dw[k]`): dw_k (+)= sum_i c[k * c_stride + i] G_i
// (how: `store`) and the dot products <G_i, w_k>, added (`fresh`:
// written) to 8 lanes at dots + i * dots_stride + k * kernel_stride, over
// `width` columns; prefetch_ahead(ahead, k, n) as bank row k starts.
// (One call a row, not one a bank row: the calls' set-up and the dot
// products' folding took about as long as their arithmetic. 7x7, batch 8,
// four kernels, backward op alone, alternating processes: 18.0-18.5 ->
// 16.3-17.8 ms.)
template <int NB>
DYNCONV_MM_AVX2 inline __attribute__((always_inline)) void reduce_samples(
    int64_t K, const float* const* w, float* const* dw, GradientStore store,
    const float* G, int64_t G_stride, const float* c, int64_t c_stride,
    float* dots, int64_t dots_stride, int64_t kernel_stride, bool fresh,
    int64_t width, const float* const* ahead, int64_t n) {
  for (int64_t k = 0; k < K; ++k) {
    prefetch_ahead(ahead, k, n);
    __m256 dot[NB];
    for (int i = 0; i < NB; ++i)
      dot[i] = fresh ? _mm256_setzero_ps()
                     : _mm256_loadu_ps(dots + i * dots_stride +
                                       k * kernel_stride);
    for (int64_t h = 0; h < width; h += 8) {
      const __m256 wv = _mm256_loadu_ps(w[k] + h);
      __m256 sum = store != GradientStore::kAddTo
                       ? _mm256_setzero_ps()
                       : _mm256_loadu_ps(dw[k] + h);
      for (int i = 0; i < NB; ++i) {
        const __m256 g = _mm256_loadu_ps(G + i * G_stride + h);
        sum = _mm256_fmadd_ps(_mm256_broadcast_ss(c + k * c_stride + i), g,
                              sum);
        dot[i] = _mm256_fmadd_ps(g, wv, dot[i]);
      }
      if (store == GradientStore::kStream)
        _mm256_stream_ps(dw[k] + h, sum);
      else
        _mm256_storeu_ps(dw[k] + h, sum);
    }
    for (int i = 0; i < NB; ++i)
      _mm256_storeu_ps(dots + i * dots_stride + k * kernel_stride, dot[i]);
  }
}

// ---- each instruction set's kernels ---------------------------------------
// An op's call takes one set: AVX2's (register tiles of 16 columns) or,
// where the caller asks for `wide` tiles, AVX-512's (sample_conv_cpu.cpp's
// tiles of 64 columns).
struct Kernels {
  int64_t width;  // columns of a register tile
  // register tiles of `width` columns over any number of rows
  // (rows_of_tiles; `a_transposed`: a given by columns), and whether they
  // take a prefetch stream (avx512_tiles)
  void (*tiles)(int64_t rows, const float* a, int64_t a_stride, int64_t inner,
                const float* panel, int64_t panel_stride, float* out,
                int64_t out_stride, bool add, const PrefetchStream& stream,
                bool a_transposed);
  bool streams;
  // dst[s * dst_stride + 0:n] = sum_k c[s * K + k] src[k * src_stride + 0:n]
  // for s < samples: one row of several samples' W_b (mix_row's, sample by
  // sample)
  void (*mix)(const float* src, int64_t src_stride, const float* c,
              int64_t num_kernels, int64_t samples, int64_t n, float* dst,
              int64_t dst_stride);
  // reduce_samples<samples> (1-8 samples), the dot products in `lanes`
  // lanes each
  void (*reduce)(int64_t samples, int64_t K, const float* const* w,
                 float* const* dw, GradientStore store, const float* G,
                 int64_t G_stride, const float* c, int64_t c_stride,
                 float* dots, int64_t dots_stride, int64_t kernel_stride,
                 bool fresh, int64_t width, const float* const* ahead,
                 int64_t n);
  int64_t lanes;
  // rows of a block of the weight gradients (weight_grad_rows): its G,
  // then its reduction
  int64_t grad_rows;
  // a unit of the weight gradients: its packed input within this many
  // bytes, and at most this many tiles of columns (unit_columns)
  int64_t unit_bytes, unit_tiles;
};

// Kernels::reduce compiled for `isa` as `name`: `kernel`<samples>.
#define DYNCONV_MM_REDUCE_CASE(NB, kernel)                                \
  case NB:                                                                \
    kernel<NB>(K, w, dw, store, G, G_stride, c, c_stride, dots,           \
               dots_stride, kernel_stride, fresh, width, ahead, n);       \
    break;
#define DYNCONV_MM_REDUCE(isa, name, kernel)                              \
  isa void name(int64_t samples, int64_t K, const float* const* w,        \
                float* const* dw, GradientStore store, const float* G,    \
                int64_t G_stride, const float* c, int64_t c_stride,       \
                float* dots, int64_t dots_stride, int64_t kernel_stride,  \
                bool fresh, int64_t width, const float* const* ahead,     \
                int64_t n) {                                              \
    switch (samples) { DYNCONV_MM_COUNTS(DYNCONV_MM_REDUCE_CASE, kernel) } \
  }

void tiles_avx2(int64_t rows, const float* a, int64_t a_stride,
                int64_t inner, const float* panel, int64_t panel_stride,
                float* out, int64_t out_stride, bool add,
                const PrefetchStream& stream, bool a_transposed) {
  rows_of_tiles(rows, a, a_stride, inner, panel, panel_stride, out,
                out_stride, add, a_transposed, stream);
}

void mix_samples_by_rows(const float* src, int64_t src_stride,
                         const float* c, int64_t num_kernels,
                         int64_t samples, int64_t n, float* dst,
                         int64_t dst_stride) {
  for (int64_t s = 0; s < samples; ++s)
    mix_row(src, src_stride, c + s * num_kernels, num_kernels, n,
            dst + s * dst_stride);
}

DYNCONV_MM_REDUCE(DYNCONV_MM_AVX2, reduce_avx2, reduce_samples)

// Kernels::mix in AVX-512 (avx512_mix_rows: each bank row read once for
// all samples).
void mix_avx512(const float* src, int64_t src_stride, const float* c,
                int64_t num_kernels, int64_t samples, int64_t n, float* dst,
                int64_t dst_stride) {
  avx512_mix_rows(src, src_stride, c, num_kernels, nullptr, 0, samples, n,
                  dst, dst_stride);
}

// reduce_samples in 16 lanes (`width` a multiple of 16, 16 lanes of
// dot products each).
template <int NB>
DYNCONV_MM_AVX512 inline __attribute__((always_inline)) void
reduce_samples_wide(int64_t K, const float* const* w, float* const* dw,
                    GradientStore store, const float* G, int64_t G_stride,
                    const float* c, int64_t c_stride, float* dots,
                    int64_t dots_stride, int64_t kernel_stride, bool fresh,
                    int64_t width, const float* const* ahead, int64_t n) {
  for (int64_t k = 0; k < K; ++k) {
    prefetch_ahead(ahead, k, n);
    __m512 dot[NB], cv[NB];
    for (int i = 0; i < NB; ++i) {
      dot[i] = fresh ? _mm512_setzero_ps()
                     : _mm512_loadu_ps(dots + i * dots_stride +
                                       k * kernel_stride);
      cv[i] = _mm512_set1_ps(c[k * c_stride + i]);
    }
    for (int64_t h = 0; h < width; h += 16) {
      const __m512 wv = _mm512_loadu_ps(w[k] + h);
      __m512 sum = store != GradientStore::kAddTo
                       ? _mm512_setzero_ps()
                       : _mm512_loadu_ps(dw[k] + h);
      for (int i = 0; i < NB; ++i) {
        const __m512 g = _mm512_loadu_ps(G + i * G_stride + h);
        sum = _mm512_fmadd_ps(cv[i], g, sum);
        dot[i] = _mm512_fmadd_ps(g, wv, dot[i]);
      }
      if (store == GradientStore::kStream)
        _mm512_stream_ps(dw[k] + h, sum);
      else
        _mm512_storeu_ps(dw[k] + h, sum);
    }
    for (int i = 0; i < NB; ++i)
      _mm512_storeu_ps(dots + i * dots_stride + k * kernel_stride, dot[i]);
  }
}

DYNCONV_MM_REDUCE(DYNCONV_MM_AVX512, reduce_avx512, reduce_samples_wide)

// Columns of the AVX-512 register tile (sample_conv_cpu.cpp's: 4 registers).
constexpr int64_t kWideColumns = 64;

void tiles_avx512(int64_t rows, const float* a, int64_t a_stride,
                  int64_t inner, const float* panel, int64_t panel_stride,
                  float* out, int64_t out_stride, bool add,
                  const PrefetchStream& stream, bool a_transposed) {
  avx512_tiles(rows, a, a_stride, inner, panel, panel_stride, out,
               out_stride, kWideColumns, add, stream, a_transposed);
}

// The wide tiles' G blocks: two register tiles of rows, so each sample's
// packed input, read from L2 by the first, is in L1 for the second. On a
// 2-core 2.6 GHz Xeon VM (480 MB L3), 512-channel 3x3 at 7x7, batch 8,
// backward op alone, one process switching: DyNet's six kernels -0.6 to
// -1.5 ms of 29-32, four kernels -0.9 of 25 (15, 18, 20 and 24 rows: no
// better than 12). AVX2's stay at one tile, as measured there.
constexpr int64_t kWideGradRows = 2 * kRows;

// The wide tiles' units of the weight gradients: each one reads the whole
// output gradient (B x P x O_g floats: 800 KB at 512 channels, 7x7, batch
// 8), and from L3, as the bank's rows streaming through L2 evict it, so
// wider units read it fewer times, up to where the unit's own working set
// leaves L2. On the slower Xeon VM (2 MB of L2), 512-channel 3x3 at 7x7,
// six kernels, backward op alone, one process switching the columns call
// by call: batch 8 192 columns against 128 -0.7 to -1.1 ms of 26-29
// (256: +1.9 against 192), batch 4 192 against 256 -0.5, batch 12 and 16
// 192 against 64 -3.2 and -6.7 ms (256 alike), batch 32 128 against 64
// -7.4 ms of 127 (192: 1.2 ms slower than 128); the layer's forward +
// backward at batch 8, 128 against 192 columns: DyNet +2.6 ms, four
// kernels +1.1. AVX2's keep the bounds measured on the Emerald Rapids and
// AMD VMs.
constexpr int64_t kWideUnitBytes = 1 << 20;
constexpr int64_t kWideUnitTiles = 3;
constexpr int64_t kUnitBytes = 256 << 10;

Kernels kernels_for(bool wide) {
  return wide ? Kernels{kWideColumns, tiles_avx512, true, mix_avx512,
                        reduce_avx512, 16, kWideGradRows, kWideUnitBytes,
                        kWideUnitTiles}
              : Kernels{kLanes, tiles_avx2, false, mix_samples_by_rows,
                        reduce_avx2, 8, kRows, kUnitBytes,
                        256 / kLanes};
}

// ---- forward: a unit is (g, rows [o_begin, o_end)), all samples -------
// Over the rows' bank a block of columns at a time (a few hundred KB, in
// cache for every sample): each sample's rows of W_b on the block are
// mixed into a panel, and its register tiles over the block of the input
// are added to y. Columns of y past the last 16 (P = 49: one) are dot
// products with the input's transposed copy (`tail`, [B, G, P % 16, J]).
// Every unit reads the whole input, so units of more rows read it fewer
// times, up to where a unit's bank rows on a block (rows x K x kBlock
// floats) crowd L2 (forward_unit_rows). On the slower Xeon VM held to
// AVX2, 512-channel 3x3 at 7x7, batch 8, forward op alone, one process
// switching, by rows per unit 24 (22 units) / 36 / 54 / 64 / 96 / 128:
// four kernels 15.7 / 16.6 / 15.2 / 14.4 / 15.9 / 14.4 ms, DyNet 17.3 /
// 18.3 / 16.9 / 16.3 / 18.6 / 18.3 (36 rows: 15 units, one thread doing
// eight; 96 from another run).
constexpr int64_t kBlock = 128;
constexpr int64_t kForwardRows = 64;

DYNCONV_MM_AVX2 void forward_unit(const Layout& l, const float* cols,
                                  const float* tail, float* y, int64_t g,
                                  int64_t o_begin, int64_t o_end) {
  const int64_t P = l.pixels, J = l.row, O = l.group_out;
  const int64_t full = P / kLanes * kLanes, extra = P - full;
  const int64_t K = l.num_kernels, B = l.batch;
  TileFloats panel(kRows * kBlock);  // rows of W_b on a block
  std::vector<float> c(K);
  std::vector<const float*> pieces(kRows * K);
  const int64_t pixel_tiles = std::max<int64_t>(full / kLanes, 1);
  for (int64_t j0 = 0; j0 < J; j0 += kBlock) {
    const int64_t n = std::min(kBlock, J - j0);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t o0 = o_begin; o0 < o_end; o0 += kRows) {
        const int64_t rows = std::min<int64_t>(kRows, o_end - o0);
        const int64_t bg = b * l.groups + g;
        const float* x = cols + (bg * J + j0) * P;  // [n, P]
        float* out = y + (bg * O + o0) * P;         // [rows, P]
        for (int64_t r = 0; r < rows; ++r) {
          row_mixing(l, b, g, o0 + r, c.data());
          mix_row(l.bank_row(0, g, o0 + r) + j0, l.groups * O * J,
                  c.data(), K, n, panel.data() + r * kBlock);
        }
        // The bank rows mixed next for the first time (the next tile's, or
        // past the unit's last rows the next block's first: later samples
        // find them in cache), streamed in over this tile's steps, as the
        // AVX-512 op does; asked for at once, as the rows were mixed, they
        // waited on the core's few outstanding misses. On the slower Xeon
        // VM, 512-channel 3x3 at 7x7, forward op alone, alternating
        // processes: batch 1, four kernels 2.19 -> 2.03 ms, DyNet's six
        // 2.64 -> 2.36; batch 8, four kernels 14.6 -> 14.2.
        PrefetchStream stream{pieces.data(), 0, 0};
        int64_t next_o = o0 + kRows, next_j = j0;
        if (next_o >= o_end) {
          next_o = o_begin;
          next_j = j0 + kBlock;
        }
        if (next_j < J && (next_j > j0 ? b == B - 1 : b == 0)) {
          for (int64_t o = next_o; o < std::min(o_end, next_o + kRows); ++o)
            for (int64_t k = 0; k < K; ++k)
              pieces[stream.count++] = l.bank_row(k, g, o) + next_j;
          stream.lines = (std::min(kBlock, J - next_j) + 15) / 16;
        }
        if (full == 0)  // no tiles to spread it over
          for (int64_t q = 0; q < stream.count; ++q)
            prefetch(pieces[q], stream.lines * 16);
        for (int64_t p0 = 0; p0 < full; p0 += kLanes)
          rows_of_tiles(rows, panel.data(), kBlock, n, x + p0, P, out + p0, P,
                        j0 > 0, false, stream.share(p0 / kLanes, pixel_tiles));
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t p = 0; p < extra; ++p) {
            const float d = dot(panel.data() + r * kBlock,
                                tail + (bg * extra + p) * J + j0, n);
            out[r * P + full + p] = j0 > 0 ? out[r * P + full + p] + d : d;
          }
      }
  }
}

// ---- input gradient: a unit is (g, columns [j_begin, j_end)), all
// samples ------------------------------------------------------------------
// Each sample's rows of W_b on the unit's columns are mixed into its
// panel, which the register tiles take (16 or 64 columns at a time) with
// the output gradient gy [B, G, O_g, P], read by columns, as A.
// Alone (a frozen bank, or the weight gradients' pass cannot take it: see
// backward_fuses), row by row of the bank's columns, its K short rows read
// once and the rows a few ahead prefetched, into eight samples' panels at
// a time ([O_g][64] each: 1 MB at 512 rows, in L2). (Copying the unit's
// bank columns together first, then mixing each sample's panel from the
// copy, read the copy from L2 once per sample: 512-channel 3x3 at 7x7,
// batch 8, four kernels, in AVX-512 tiles on the Emerald Rapids VM, 13.3
// against 11.9 ms; in AVX2 tiles a tie.)
constexpr int64_t kInputColumns = 64;
constexpr int64_t kMixedSamples = 8;
constexpr int64_t kRowsAhead = 8;  // measured: 4 and 8 alike, 16 slower

// Row o of W_b on columns [j_begin, j_begin + n) for samples [b0, b1), to
// dst + (b - b0) * dst_stride, from one read of its K bank rows (`c`
// [b1 - b0][K] holding their coefficients).
inline void mix_samples_row(const Layout& l, const Kernels& kernels,
                            int64_t g, int64_t o, int64_t j_begin, int64_t n,
                            int64_t b0, int64_t b1, float* c, float* dst,
                            int64_t dst_stride) {
  const int64_t K = l.num_kernels;
  for (int64_t b = b0; b < b1; ++b) row_mixing(l, b, g, o, c + (b - b0) * K);
  kernels.mix(l.bank_row(0, g, o) + j_begin, l.groups * l.group_out * l.row,
              c, K, b1 - b0, n, dst, dst_stride);
}

// Rows of each sample's W_b on the unit's columns [j_begin, j_begin + n)
// for samples [b0, b1), into `panels` ([b1 - b0][O_g][kInputColumns]),
// `c` ([b1 - b0][K]) holding a row's coefficients.
DYNCONV_MM_AVX2 void mix_input_panels(const Layout& l, const Kernels& kernels,
                                      int64_t g, int64_t j_begin, int64_t n,
                                      int64_t b0, int64_t b1, float* panels,
                                      float* c) {
  const int64_t O = l.group_out, K = l.num_kernels;
  for (int64_t o = 0; o < O; ++o) {
    if (o + kRowsAhead < O)
      for (int64_t k = 0; k < K; ++k)
        prefetch(l.bank_row(k, g, o + kRowsAhead) + j_begin, n);
    mix_samples_row(l, kernels, g, o, j_begin, n, b0, b1, c,
                    panels + o * kInputColumns, O * kInputColumns);
  }
}

// grad_cols_t[b, :, j_begin:j_begin + n] (+)= gy[b, o_begin:o_end, :]^T
// times sample b's panel of W_b's rows o_begin .. o_end-1, for samples
// [b0, b1) (`panels`: sample b0's first, each `panel_rows` rows of
// `panel_width` floats; `add`: added to what the rows before left).
// `edge` [P][width] holds the last columns' results. The tiles read the
// output gradient by columns (a[p, o] = gy[b, o, p]): a transposed copy
// [B, G, P, O_g] made for them was a second copy of it that every unit of
// the weight gradients read again (512-channel 3x3 at 7x7, batch 8, on the
// slower Xeon VM: -0.8 to -1.0 ms of 26-28 for the backward op alone, in
// AVX-512 tiles; AVX2's read it the same way, unmeasured on AMD's VMs).
DYNCONV_MM_AVX2 void input_grad_tiles(const Layout& l, const Kernels& kernels,
                                      const float* gy, float* grad_cols_t,
                                      int64_t g, int64_t j_begin, int64_t n,
                                      int64_t b0, int64_t b1, int64_t o_begin,
                                      int64_t o_end, const float* panels,
                                      int64_t panel_rows, int64_t panel_width,
                                      float* edge, bool add) {
  const int64_t P = l.pixels, J = l.row, O = l.group_out;
  const int64_t width = kernels.width;
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t bg = b * l.groups + g;
    const float* a = gy + (bg * O + o_begin) * P;  // [o_end - o_begin, P]
    const float* panel = panels + (b - b0) * panel_rows * panel_width;
    float* out = grad_cols_t + bg * P * J + j_begin;
    for (int64_t t = 0; t < n; t += width) {
      if (t + width <= n) {
        kernels.tiles(P, a, P, o_end - o_begin, panel + t, panel_width,
                      out + t, J, add, kNoStream, true);
        continue;
      }
      // the panel's columns past n: computed, not stored
      kernels.tiles(P, a, P, o_end - o_begin, panel + t, panel_width, edge,
                    width, false, kNoStream, true);
      for (int64_t p = 0; p < P; ++p)
        for (int64_t i = 0; i < n - t; ++i)
          out[p * J + t + i] =
              (add ? out[p * J + t + i] : 0.f) + edge[p * width + i];
    }
  }
}

DYNCONV_MM_AVX2 void input_grad_unit(const Layout& l, const Kernels& kernels,
                                     const float* gy,
                                     float* grad_cols_t, int64_t g,
                                     int64_t j_begin, int64_t j_end,
                                     float* panels) {
  const int64_t P = l.pixels, O = l.group_out, K = l.num_kernels;
  const int64_t n = j_end - j_begin, B = l.batch;
  const int64_t samples = std::min(kMixedSamples, B);
  TileFloats edge(P * kernels.width);
  std::vector<float> c(samples * K);  // a row's coefficients, per sample
  for (int64_t b0 = 0; b0 < B; b0 += samples) {
    const int64_t b1 = std::min(B, b0 + samples);
    mix_input_panels(l, kernels, g, j_begin, n, b0, b1, panels, c.data());
    input_grad_tiles(l, kernels, gy, grad_cols_t, g, j_begin, n, b0, b1, 0,
                     O, panels, O, kInputColumns, edge.data(), false);
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The input gradient of a call, transposed ([B, G, P, J]), unit by unit.
void input_grad(const Layout& l, const Kernels& kernels, const float* gy,
                float* grad_cols_t) {
  const int64_t column_units = ceil_div(l.row, kInputColumns);
  at::parallel_for(0, l.groups * column_units, 1, [&](int64_t begin,
                                                      int64_t end) {
    TileFloats panels(
        std::min(kMixedSamples, l.batch) * l.group_out * kInputColumns, 0.f);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t j0 = u % column_units * kInputColumns;
      input_grad_unit(l, kernels, gy, grad_cols_t, u / column_units, j0,
                      std::min(l.row, j0 + kInputColumns), panels.data());
    }
  });
}

// Whether a backward call computes the input gradient in the weight
// gradients' units (weight_grad_unit given grad_cols_t), reading the bank
// once instead of twice: each bank row the reduction has just read is mixed
// into every sample's panel of the unit's columns, kFusedRows rows at a
// time, and the input gradient's tiles then add those rows' share. On the
// Emerald Rapids VM, 512-channel 3x3 at 7x7, four kernels, both gradients:
// batch 8 36.3 -> 33.3 ms (DyNet's per-row mixing -2.8 ms), batch 1/2/4
// -0.8/-1.2/-0.5 ms, 10 and 12 -0.7 and -1.9 ms. AVX2's tiles lost there
// (3.7 ms of 59) while they spilled their accumulators; without the spills
// they win too (the slower Xeon VM held to AVX2, the backward op, its
// gradient streamed up to batch 8, by batch 1/2/4/8/12: four kernels
// 7.1/11.3/18.2/34.8/56.0 -> 5.6/9.4/15.9/33.1/55.6 ms, DyNet
// 8.6/13.1/21.0/41.9/71.2 -> 7.1/11.1/18.5/37.5/66.7). Only where a unit's
// working set (its panels, packed input and input gradient, B x columns x
// (kFusedRows + 2 P) floats, and the output gradient, B P O_g) is within
// kFusedUnitBytes: then (a transposed copy of the output gradient read
// too) batch 12 was 2.9 MB; 16, 24 and 32 (3.9-7.7 MB) lost 5, 3 and 18
// ms, their passes alone closer to fitting L2. On the slower Xeon VM with
// units of 192 columns: batch 12 (2.7 MB) fused -2.2 ms of 45, batch 16
// (3.5 MB) +1.6 ms of 57.
constexpr int64_t kFusedRows = 10 * kRows;  // measured: 30 and 90 slower
constexpr int64_t kFusedUnitBytes = 3 << 20;

bool backward_fuses(const Layout& l, int64_t columns) {
  const int64_t unit_floats =
      l.batch * (columns * (kFusedRows + 2 * l.pixels) +
                 l.pixels * l.group_out);
  return unit_floats * 4 <= kFusedUnitBytes;
}

// ---- weight gradients: a unit is (g, columns [j_begin, j_end)), every
// row --------------------------------------------------------------------

// Rows o0 .. o0+rows: first every sample's G on the unit's columns, to
// `products` ([B][rows][width], in cache); then, bank row by bank row, its
// gradient summed over the samples (eight at a time in registers) and the
// mixing's dot products, `kernels.lanes` lanes each in `dots` ([B][K],
// or per row [B][rows][K], summed to `partial` here). Each bank row's
// piece of the next tile (and its gradient's) is prefetched while this
// tile's G compute (wide tiles) or are reduced (AVX2's), `next_rows`
// holding where they are.
// Given `panels`, each row's K bank rows, just read, are mixed into every
// sample's panel row r (`panel_stride` floats from one sample's to the
// next; `mix_c` [B][K] the coefficients) for the input gradient.
DYNCONV_MM_AVX2 void weight_grad_rows(const Layout& l, const Kernels& kernels,
                                      const float* gy,
                                      float* grad_bank, int64_t g,
                                      int64_t o0, int64_t rows,
                                      int64_t j_begin, int64_t n,
                                      const float* packed, float* products,
                                      float* edge, float* dots,
                                      float* partial,
                                      const float** next_rows,
                                      const float** row_w, float** row_dw,
                                      const float** ahead,
                                      float* panels, int64_t panel_stride,
                                      float* mix_c) {
  const int64_t K = l.num_kernels, P = l.pixels, B = l.batch;
  const int64_t tile = kernels.width;
  const int64_t count = (n + tile - 1) / tile, width = count * tile;
  // the gradient of the bank's floats at p
  auto gradient_of = [&](const float* p) { return grad_bank + (p - l.bank); };
  // The next tile's bank rows and their gradient's, streamed in while
  // these G compute (the AVX2 tiles: asked for below, all at once). On the
  // Emerald Rapids VM, 512-channel 3x3 at 7x7, batch 8, four kernels: 12.1
  // -> 11.7 ms (DyNet's per-row mixing 11.4 -> 10.7): asked for at once,
  // the prefetches wait for the core's few outstanding misses. (Streamed
  // by the AVX2 tiles too, the same layer's forward + backward on the
  // slower Xeon VM held to AVX2 moved within its noise: not taken.)
  const bool stream = kernels.streams;
  const int64_t block_rows = kernels.grad_rows;
  int64_t pieces = 0;
  if (stream)
    for (int64_t r = 0; r < block_rows && o0 + block_rows + r < l.group_out;
         ++r)
      for (int64_t k = 0; k < K; ++k) {
        const float* ahead = l.bank_row(k, g, o0 + block_rows + r) + j_begin;
        next_rows[pieces++] = ahead;
        if (!l.stream_gradient)
          next_rows[pieces++] = gradient_of(ahead);
      }
  for (int64_t t = 0; t < count; ++t)
    for (int64_t b = 0; b < B; ++b) {
      kernels.tiles(rows, gy + ((b * l.groups + g) * l.group_out + o0) * P, P,
                    P, packed + (t * B + b) * P * tile, tile,
                    products + b * rows * width + t * tile, width, false,
                    PrefetchStream{next_rows, pieces, (n + 15) / 16}.share(
                        t * B + b, count * B),
                    false);
    }
  const int64_t lanes = kernels.lanes;
  const int64_t dots_rows = l.per_row ? block_rows : 1;
  const int64_t sample_stride = dots_rows * K * lanes;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < K; ++k) {
      const float* w = l.bank_row(k, g, o0 + r) + j_begin;
      row_w[k] = w;
      row_dw[k] = gradient_of(w);
      if (n < width) {  // the row's end: padded copies ([K][2][width])
        float* e = edge + 2 * k * width;
        std::fill_n(e, width, 0.f);
        std::copy_n(w, n, e);
        row_w[k] = e;
        row_dw[k] = e + width;
      }
      // The bank row (and gradient) to bring to L1 while bank row k is
      // reduced. With the tiles' stream (it has brought them to L2): the
      // next one, this row's k + 1 or the next row's first (at 7x7, batch
      // 8, four kernels: paired -0.3 to -0.6 ms of ~20 in five runs,
      // DyNet's six per row -0.5; batch 2, 4, 12 and 16 within noise).
      // Without: this row of the next tile.
      const int64_t next_r = stream ? (k + 1 < K ? r : r + 1) : block_rows + r;
      const int64_t next_k = stream && k + 1 == K ? 0 : (stream ? k + 1 : k);
      const bool next = stream ? next_r < rows : o0 + next_r < l.group_out;
      ahead[2 * k] = next ? l.bank_row(next_k, g, o0 + next_r) + j_begin
                          : nullptr;
      ahead[2 * k + 1] =
          next && !l.stream_gradient ? gradient_of(ahead[2 * k]) : nullptr;
    }
    const float* c = l.row_coefficients(g, o0 + r);
    float* d = dots + (l.per_row ? r : 0) * K * lanes;
    const GradientStore written = l.stream_gradient && n == width
                                      ? GradientStore::kStream
                                      : GradientStore::kWrite;
    for (int64_t b0 = 0; b0 < B; b0 += 8)
      kernels.reduce(std::min<int64_t>(8, B - b0), K, row_w, row_dw,
                     b0 > 0 ? GradientStore::kAddTo : written,
                     products + (b0 * rows + r) * width, rows * width, c + b0,
                     B, d + b0 * sample_stride, sample_stride, lanes,
                     l.per_row, width, b0 == 0 ? ahead : nullptr, n);
    if (n < width)
      for (int64_t k = 0; k < K; ++k)
        std::copy_n(row_dw[k], n,
                    gradient_of(l.bank_row(k, g, o0 + r) + j_begin));
    if (panels != nullptr)  // (the bank rows are in L1)
      mix_samples_row(l, kernels, g, o0 + r, j_begin, n, 0, B, mix_c,
                      panels + r * width, panel_stride);
  }
  // This tile's rows are done: their sums (each sample's rows and
  // kernels in the order of its partials). Their lanes are written afresh
  // by the next tile's (not cleared here and added to: DyNet's backward op
  // at 7x7, batch 8, -0.4 to -0.7 ms, one process switching).
  if (l.per_row)
    for (int64_t b = 0; b < B; ++b)
      lane_sums(dots + b * sample_stride, rows * K, lanes,
                partial + l.mixing_index(b, g, o0, 0));
}

DYNCONV_MM_AVX2 void weight_grad_unit(const Layout& l, const Kernels& kernels,
                                      const float* gy,
                                      const float* cols, float* grad_bank,
                                      int64_t g, int64_t j_begin,
                                      int64_t j_end, float* partial,
                                      float* grad_cols_t) {
  const int64_t P = l.pixels, B = l.batch, K = l.num_kernels;
  const int64_t n = j_end - j_begin;
  const int64_t tile = kernels.width, count = (n + tile - 1) / tile;
  // The unit's columns of every sample, transposed a tile's width at a
  // time ([count][B][P][tile], zero past the last): contiguous for the
  // register tiles. (Transposing here, a unit's share at a time, replaces a copy
  // of the whole input in PyTorch: 2.5 ms of a 512-channel 3x3 layer's
  // backward at 7x7, batch 8.)
  TileFloats packed(count * B * P * tile, 0.f);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < count; ++t) {
      const int64_t j0 = j_begin + t * tile;
      const int64_t m = std::min<int64_t>(tile, j_end - j0);
      float* dst = packed.data() + (t * B + b) * P * tile;
      const float* src = cols + ((b * l.groups + g) * l.row + j0) * P;
      if (kernels.width == kWideColumns) {
        // blocks of 16 x 16 transposed in registers (the wide tiles' CPUs
        // have AVX-512): element by element this took 2% of the op
        for (int64_t lane = 0; lane < m; lane += 16)
          for (int64_t p = 0; p < P; p += 16)
            avx512_transpose_block(src + lane * P + p, P,
                                   std::min<int64_t>(16, m - lane),
                                   std::min<int64_t>(16, P - p),
                                   dst + p * tile + lane, tile);
        continue;
      }
      for (int64_t lane = 0; lane < m; ++lane)
        for (int64_t p = 0; p < P; ++p)
          dst[p * tile + lane] = src[lane * P + p];
    }
  const int64_t block_rows = kernels.grad_rows;
  TileFloats products(B * block_rows * count * tile);
  TileFloats edge(2 * K * count * tile);
  std::vector<float> dots(B * K * (l.per_row ? block_rows : 1) * kernels.lanes,
                          0.f);
  std::vector<const float*> next_rows(2 * K * block_rows);
  // a row's K bank rows and gradients, and the pieces to prefetch
  std::vector<const float*> row_w(K), ahead(2 * K);
  std::vector<float*> row_dw(K);
  const int64_t O = l.group_out, width = count * tile;
  // with the input gradient: kFusedRows rows at a time, then their tiles
  const int64_t block = grad_cols_t ? kFusedRows : O;
  TileFloats panels(grad_cols_t ? B * block * width : 0, 0.f);
  std::vector<float> mix_c(B * K);
  TileFloats input_edge(P * tile);
  for (int64_t ob = 0; ob < O; ob += block) {
    const int64_t oe = std::min(O, ob + block);
    for (int64_t o0 = ob; o0 < oe; o0 += block_rows)
      weight_grad_rows(l, kernels, gy, grad_bank, g, o0,
                       std::min<int64_t>(block_rows, oe - o0), j_begin, n,
                       packed.data(), products.data(), edge.data(),
                       dots.data(), partial, next_rows.data(), row_w.data(),
                       row_dw.data(), ahead.data(),
                       grad_cols_t ? panels.data() + (o0 - ob) * width
                                   : nullptr,
                       block * width, mix_c.data());
    if (grad_cols_t)
      input_grad_tiles(l, kernels, gy, grad_cols_t, g, j_begin, n, 0, B, ob,
                       oe, panels.data(), block, width, input_edge.data(),
                       ob > 0);
  }
  if (l.stream_gradient) _mm_sfence();  // the streamed gradient, ordered
  if (!l.per_row)  // shared mixing: the unit's sums, [B][K] as its partials
    lane_sums(dots.data(), B * K, kernels.lanes, partial);
}

// The weight gradients' unit: every row, and as many columns as keep the
// packed input within kernels.unit_bytes (in L2 while all rows take it),
// one tile's to kernels.unit_tiles tiles'.
int64_t unit_columns(const Kernels& kernels, const Layout& l) {
  const int64_t tile_bytes = l.batch * l.pixels * kernels.width * 4;
  return kernels.width * std::clamp<int64_t>(kernels.unit_bytes / tile_bytes,
                                             1, kernels.unit_tiles);
}

// The layout of an op's call, its arguments checked: the bank, the mixing
// and `t`, the per-sample operand [B, G, ., .] (`expected`), whose
// dimension `width_dim` (2 or 3) must be the bank's rows per group O_g
// (`output_rows`) or its row length J, and whose other one is the pixels.
Layout checked_layout(const char* op, const char* name, const at::Tensor& t,
                      const char* expected, bool output_rows,
                      int64_t width_dim, const at::Tensor& bank,
                      const at::Tensor& mixing) {
  TORCH_CHECK(avx2_fma_supported(), "dynconv_mm ", op,
              ": needs a CPU with AVX2 and FMA");
  check_float_cpu(op, name, t, t.dim() == 4, expected);
  check_float_cpu(op, "bank", bank, bank.dim() == 4,
                  "[K, groups, C_out/groups, J]");
  const int64_t B = t.size(0), K = bank.size(0), G = bank.size(1),
                O = bank.size(2);
  const bool per_row = mixing.dim() == 4;
  if (per_row)
    check_float_cpu_shape(op, "mixing", mixing, {B, G, O, K});
  else
    check_float_cpu_shape(op, "mixing", mixing, {B, K});
  const int64_t pixel_dim = 5 - width_dim;
  std::vector<int64_t> sizes{B, G, 0, 0};
  sizes[width_dim] = output_rows ? O : bank.size(3);
  sizes[pixel_dim] = t.size(pixel_dim);
  check_float_cpu_shape(op, name, t, sizes);
  return Layout{B, G, O, t.size(pixel_dim), bank.size(3), K,
                bank.data_ptr<float>(), mixing.data_ptr<float>(), per_row};
}

// The tiles an op's call asks for (`wide`: AVX-512's), if this CPU has them.
Kernels checked_kernels(const char* op, bool wide) {
  check_avx512_choice(op, "wide", wide);
  return kernels_for(wide);
}

}  // namespace

bool avx2_fma_supported() {
  static const bool supported =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return supported;
}

// Rows per forward unit: about kForwardRows, in a number of units per
// group such that the G groups' units share out evenly among the threads.
int64_t forward_unit_rows(int64_t groups, int64_t rows) {
  const int64_t threads = at::get_num_threads();
  int64_t units = ceil_div(rows, kForwardRows);
  while ((groups * units) % threads != 0 && units < rows) ++units;
  return ceil_div(rows, units);
}

at::Tensor sample_gemm_forward(const at::Tensor& cols, const at::Tensor& bank,
                               const at::Tensor& mixing) {
  const Layout l = checked_layout("sample_gemm_forward", "cols", cols,
                                  "[B, groups, J, P]", false, 2, bank,
                                  mixing);
  at::Tensor y = at::empty({l.batch, l.groups, l.group_out, l.pixels},
                           cols.options());
  const int64_t full = l.pixels / kLanes * kLanes;
  const at::Tensor tail =
      cols.narrow(3, full, l.pixels - full).transpose(2, 3).contiguous();
  const int64_t unit_rows = forward_unit_rows(l.groups, l.group_out);
  const int64_t row_units = ceil_div(l.group_out, unit_rows);
  at::parallel_for(0, l.groups * row_units, 1, [&](int64_t begin,
                                                   int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      const int64_t o0 = u % row_units * unit_rows;
      forward_unit(l, cols.data_ptr<float>(), tail.data_ptr<float>(),
                   y.data_ptr<float>(), u / row_units, o0,
                   std::min(l.group_out, o0 + unit_rows));
    }
  });
  return y;
}

at::Tensor sample_gemm_input_grad(const at::Tensor& grad_y,
                                  const at::Tensor& bank,
                                  const at::Tensor& mixing, bool wide,
                                  bool huge_pages) {
  const Kernels kernels = checked_kernels("sample_gemm_input_grad", wide);
  const Layout l = checked_layout("sample_gemm_input_grad", "grad_y",
                                  grad_y, "[B, groups, C_out/groups, P]",
                                  true, 2, bank, mixing);
  if (huge_pages) ask_for_huge_pages(l.bank, bank.numel() * 4);
  at::Tensor grad_cols_t = at::empty({l.batch, l.groups, l.pixels, l.row},
                                     grad_y.options());
  input_grad(l, kernels, grad_y.data_ptr<float>(),
             grad_cols_t.data_ptr<float>());
  return grad_cols_t;
}

std::vector<at::Tensor> sample_gemm_backward(
    const at::Tensor& grad_y, const at::Tensor& cols, const at::Tensor& bank,
    const at::Tensor& mixing, bool input_grad_wanted, bool wide,
    bool huge_pages) {
  const Kernels kernels = checked_kernels("sample_gemm_backward", wide);
  Layout l = checked_layout("sample_gemm_backward", "grad_y", grad_y,
                            "[B, groups, C_out/groups, P]", true, 2, bank,
                            mixing);
  // each row's coefficients side by side for the reduction (gathered per
  // row from [B, G, O, K], DyNet's took 0.2-0.4 ms at 7x7, batch 8)
  const at::Tensor mixing_t = l.per_row
                                  ? mixing.permute({1, 2, 3, 0}).contiguous()
                                  : mixing.t().contiguous();
  l.m_t = mixing_t.data_ptr<float>();
  check_float_cpu_shape("sample_gemm_backward", "cols", cols,
                        {l.batch, l.groups, l.row, l.pixels});
  at::Tensor grad_bank =
      huge_pages ? gradient_blocks().empty_like(bank) : at::empty_like(bank);
  if (huge_pages) ask_for_huge_pages(l.bank, bank.numel() * 4);
  // The bank's gradient, written once (one group of eight samples), goes
  // to memory with non-temporal stores, neither read for ownership nor
  // prefetched: at 7x7, batch 8, the caches' way cost its read and its
  // prefetches' fill buffers in every phase (backward op, one process
  // switching: DyNet 20.4 -> 18.7-19.0 ms, four kernels 17.4-17.8 ->
  // 16.6-16.8; AVX2's tiles on the slower Xeon VM, both gradients, unfused:
  // DyNet 44.5 -> 41.9 ms, four kernels 36.5 -> 34.8, batch 1 DyNet 10.2 ->
  // 8.6). (Streamed while still prefetched, as tried before, it was
  // slower: +0.2 to +0.5 ms.) Rows must start on 64 bytes.
  l.stream_gradient =
      l.batch <= 8 && l.row % 16 == 0 &&
      reinterpret_cast<uintptr_t>(grad_bank.data_ptr<float>()) % 64 == 0;
  at::Tensor grad_cols_t;
  if (input_grad_wanted)
    grad_cols_t = at::empty({l.batch, l.groups, l.pixels, l.row},
                            grad_y.options());
  // (the input is packed once per unit: a unit takes every row)
  const int64_t columns = unit_columns(kernels, l);
  const bool fused = input_grad_wanted && backward_fuses(l, columns);
  const int64_t column_units = ceil_div(l.row, columns);
  const int64_t units = l.groups * column_units;
  // Each unit's share of the mixing gradient, summed below: the same
  // result whatever the number of threads. Per row, the units of one
  // column range write disjoint entries of one row of partials. Every
  // entry is written once (not added to: zeroing DyNet's 3.5 MB at 7x7,
  // batch 8, took 0.1 ms).
  at::Tensor partials = at::empty(
      {column_units * (l.per_row ? 1 : l.groups), mixing.numel()},
      mixing.options());
  at::parallel_for(0, units, 1, [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      const int64_t co = u % column_units, j0 = co * columns;
      weight_grad_unit(
          l, kernels, grad_y.data_ptr<float>(), cols.data_ptr<float>(),
          grad_bank.data_ptr<float>(), u / column_units, j0,
          std::min(l.row, j0 + columns),
          partials.data_ptr<float>() + (l.per_row ? co : u) * mixing.numel(),
          fused ? grad_cols_t.data_ptr<float>() : nullptr);
    }
  });
  if (input_grad_wanted && !fused)
    input_grad(l, kernels, grad_y.data_ptr<float>(),
               grad_cols_t.data_ptr<float>());
  std::vector<at::Tensor> grads{grad_bank,
                                partials.sum(0).view(mixing.sizes())};
  if (input_grad_wanted) grads.push_back(grad_cols_t);
  return grads;
}

#else  // not x86-64 with GCC: never offered, PyTorch runs them

bool avx2_fma_supported() { return false; }

void mix_row(const float*, int64_t, const float*, int64_t, int64_t, float*) {
  TORCH_CHECK(false, "dynconv_mm mix_row: x86-64 only");
}

at::Tensor sample_gemm_forward(const at::Tensor&, const at::Tensor&,
                               const at::Tensor&) {
  TORCH_CHECK(false, "dynconv_mm sample_gemm_forward: x86-64 only");
}

at::Tensor sample_gemm_input_grad(const at::Tensor&, const at::Tensor&,
                                  const at::Tensor&, bool, bool) {
  TORCH_CHECK(false, "dynconv_mm sample_gemm_input_grad: x86-64 only");
}

std::vector<at::Tensor> sample_gemm_backward(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    bool, bool, bool) {
  TORCH_CHECK(false, "dynconv_mm sample_gemm_backward: x86-64 only");
}
#endif  // DYNCONV_MM_SAMPLE_GEMM

}  // namespace dynconv_mm
