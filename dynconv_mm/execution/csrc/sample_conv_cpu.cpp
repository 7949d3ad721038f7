// Each sample's convolution on a CPU with AVX-512, as a GEMM over its
// unfolded input whose kernel is mixed inside the GEMM's tiles and never
// formed (batch-1 inference; tiled_gemm's forward over a batch):
//
//   y[n, o, p] = sum_j (f[o] sum_k m[o, k] W[k, o, j]) e[j] cols[n, j, p]
//                + b[o]
//
// with the bank W [K, O, J] (J = C_in kh kw), the kernel attention m ([K],
// or DyNet's [O, K]), e[j] = c[i] a[s] the channel and spatial attentions
// of ODConv at j = i kh kw + s, f the filter attention (m, e and f sample
// n's own), b the bias, each optional. Over a batch, each chunk's bank rows
// are read from memory once, and mixed into four samples' panels at a time
// from registers (kBatchSamples; from cache for the next four).
// sample_kernel + a convolution read the bank, write the kernel and read it
// again, and the bank's read (the memory's bandwidth) and the
// convolution's arithmetic take turns. Here a panel of a few rows of the
// kernel is mixed in cache right before the register tiles use it, and the
// next panel's bank rows are prefetched a few lines per step of the tiles,
// so the read overlaps the arithmetic: on an Emerald Rapids VM (2 cores,
// ~28 GB/s), a 512-channel 3x3 layer at 7x7 with four kernels took 2.9 ms
// as sample_kernel + a convolution (its bank read alone 1.3 ms, a static
// convolution 1.3 ms) and takes 2.0-2.3 ms here (docs/benchmarks.md).
//
// Groups of one only; the Python side decides where it runs.
#include "cpu_ops.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define DYNCONV_MM_SAMPLE_CONV 1
#endif

namespace dynconv_mm {

#ifdef DYNCONV_MM_SAMPLE_CONV

namespace {

constexpr int kLanes = 16;           // floats in a zmm register
constexpr int kTileRows = 6;         // output channels of a register tile
constexpr int kTileVectors = 4;      // its pixels: 4 registers, 64 floats
// Output channels of a tile of at most 3 registers of pixels (7x7: 48 and
// the last one apart): 24 accumulators, as 6 x 4, and fewer loads of the
// input per multiply-add. 512-channel 3x3 at 7x7 on the Emerald Rapids VM,
// batch 8, four kernels: paired -0.3 to -0.4 ms of 11; batch 1 -0.12 ms
// of 2.1-2.3.
constexpr int kNarrowTileRows = 8;
// The rows of the register tiles of `width` pixels (the first tile's of
// wider rows).
inline int tile_rows_for(int64_t width) {
  return width > (kTileVectors - 1) * kLanes ? kTileRows : kNarrowTileRows;
}
constexpr int64_t kBlock = 512;      // batch 1: columns j of a panel
// Batch 1, at most one register tile of pixels: tiles of a unit. A wider
// map is a unit of the thread's every row, as over a batch: each unit reads
// the whole unfolded input again, and at 14x14 (1.8 MB for 256-channel 3x3)
// that re-read cost the op 1.04 against 0.92 ms on the Emerald Rapids VM
// (bank cold; 1x1 layers at 14x14 -0.02 ms, 7x7 unchanged).
constexpr int64_t kUnitTiles = 4;
// Over a batch: rows whose panels are mixed before their tiles run, a
// chunk. At batch 1 a chunk is a tile's rows, its panel in L1 (24 rows
// there: 512-channel 3x3 at 7x7 +3-7%).
constexpr int64_t kChunkRows = 24;
// Over a batch, with more than one kernel: samples whose panels are mixed
// together (avx512_mix_rows). On the Emerald Rapids VM, 512-channel 3x3
// at 7x7, batch 8, four kernels: 18.2 -> 17.2 ms (paired -0.8 to -2.7 ms
// over runs; DyNet's six per-row -1.9; 2 samples -1.0); at one kernel +0.8
// ms (nothing to share), so not there.
constexpr int64_t kBatchSamples = 4;
// Over a batch: columns of a block, so that a sample's block of the input
// (192 x 49 pixels at 7x7: 37 KB) stays in L1 over a chunk's tiles. Same
// shape, batch 8: 192 against 128 / 160 / 224 / 256 columns -0.5 / -0.3 /
// -0.4 / -0.4 ms of 8.4-9.4 (DyNet's: -0.5 / +0.1 against 128 / 256);
// 2048 -> 512 1x1 at 7x7 -0.15 / -0.54 ms (128 / 256) of 3.2.
constexpr int64_t kBatchBlock = 192;

// B samples, each with its own attentions, sharing the bank.
struct SampleConv {
  const float* cols;  // [B, J, P]
  const float* bank;  // [K, O, J]
  const float* m;     // [B, K], [B, O, K] (per_row) or null (K = 1)
  const float* e;     // [B, J] or null
  const float* f;     // [B, O] or null
  const float* bias;  // [O] or null
  float* y;           // [B, O, P]
  const float* tail;  // cols' last `tails` pixels, [B, tails, J]
  int64_t B, J, P, O, K, tails;
  bool per_row;
};

// A row's last pixels past its last full register, when at most this many,
// are dot products of the panel's rows with their columns of cols (copied
// out contiguous, `tail`), not a register of their own in every row of a
// tile: at 7x7 (49 pixels) that register held one pixel. Measured on the
// Emerald Rapids VM against the masked register: 2-5% off the op at 7x7
// and 14x14 (batch 8, 512-channel 3x3, four kernels: 13.9 -> 13.6 ms).
constexpr int64_t kTailPixels = 4;

// sums[r * kLanes + 0:16] (+)= the lanes of sum_j panel[r * block + j] x[j]
// over n columns, for each of R rows (`add`: added to sums); the lanes are
// summed once, after the last block (summed per block, they took 7% of the
// op's time at 7x7, batch 8). (With the row count a run-time value, GCC 12
// kept the accumulators on the stack: the dots took 10% of the op at 7x7,
// batch 8, four kernels.)
template <int R>
DYNCONV_MM_AVX512 inline __attribute__((always_inline)) void tail_dots_of(
    const float* panel, int64_t block, const float* x, int64_t n,
    float* sums, bool add) {
  __m512 acc[R];
  for (int r = 0; r < R; ++r)
    acc[r] = add ? _mm512_loadu_ps(sums + r * kLanes) : _mm512_setzero_ps();
  for (int64_t j = 0; j < n; j += kLanes) {
    const __mmask16 mask = first_lanes(n - j);
    const __m512 xv = _mm512_maskz_loadu_ps(mask, x + j);
    for (int r = 0; r < R; ++r)
      acc[r] = _mm512_fmadd_ps(
          _mm512_maskz_loadu_ps(mask, panel + r * block + j), xv, acc[r]);
  }
  for (int r = 0; r < R; ++r) _mm512_storeu_ps(sums + r * kLanes, acc[r]);
}

// tail_dots_of for 1-8 rows.
DYNCONV_MM_AVX512 void tail_dots(int rows, const float* panel, int64_t block,
                                 const float* x, int64_t n, float* sums,
                                 bool add) {
#define DYNCONV_MM_TAIL_ROWS(R, kernel)          \
  case R:                                        \
    kernel<R>(panel, block, x, n, sums, add);    \
    break;
  switch (rows) { DYNCONV_MM_COUNTS(DYNCONV_MM_TAIL_ROWS, tail_dots_of) }
#undef DYNCONV_MM_TAIL_ROWS
}

// dst[0:n] = e[0:n] * sum_k c[k] src[k * stride + 0:n] (e may be null):
// one row of the kernel on a block, from its K bank rows read side by side.
// (sample_gemm_cpu.cpp's AVX2 mix_row, then a pass scaling by e, measured
// 3-10% slower for the whole op.)
DYNCONV_MM_AVX512 void mix_panel_row(const float* src, int64_t stride,
                                     const float* c, int64_t num_kernels,
                                     const float* e, int64_t n, float* dst) {
  for (int64_t j = 0; j < n; j += kLanes) {
    const __mmask16 mask = first_lanes(n - j);
    __m512 sum = _mm512_setzero_ps();
    for (int64_t k = 0; k < num_kernels; ++k)
      sum = _mm512_fmadd_ps(_mm512_set1_ps(c[k]),
                            _mm512_maskz_loadu_ps(mask, src + k * stride + j),
                            sum);
    if (e != nullptr)
      sum = _mm512_mul_ps(sum, _mm512_maskz_loadu_ps(mask, e + j));
    _mm512_mask_storeu_ps(dst + j, mask, sum);
  }
}

// avx512_mix_rows for H kernels k0 .. k0 + H - 1 (added to dst past the
// first eight; e applied with the last).
template <int H>
DYNCONV_MM_AVX512 inline __attribute__((always_inline)) void mix_held_rows(
    const float* src, int64_t stride, const float* c, int64_t K, int64_t k0,
    const float* e, int64_t e_stride, int64_t samples, int64_t n, float* dst,
    int64_t dst_stride) {
  const bool scale = e != nullptr && k0 + H == K;
  for (int64_t j = 0; j < n; j += kLanes) {
    const __mmask16 mask = first_lanes(n - j);
    __m512 rows[H];
    for (int h = 0; h < H; ++h)
      rows[h] = _mm512_maskz_loadu_ps(mask, src + (k0 + h) * stride + j);
    for (int64_t s = 0; s < samples; ++s) {
      float* out = dst + s * dst_stride + j;
      __m512 sum = k0 == 0 ? _mm512_setzero_ps()
                           : _mm512_maskz_loadu_ps(mask, out);
      for (int h = 0; h < H; ++h)
        sum = _mm512_fmadd_ps(_mm512_set1_ps(c[s * K + k0 + h]), rows[h], sum);
      if (scale)
        sum = _mm512_mul_ps(
            sum, _mm512_maskz_loadu_ps(mask, e + s * e_stride + j));
      _mm512_mask_storeu_ps(out, mask, sum);
    }
  }
}

// out[r, 0:16V] (+)= sum_i a[r, i] x[i, 0:16V] for R rows (a's rows
// `a_stride` apart, x's `x_stride`, out's `out_stride`), the last
// register's lanes masked by `last`. S, if not 0, is a_stride known at
// compile time: a's rows are then addressed from one register, not R.
// `Transposed`: a is stored by columns, a[r, i] at a[i * a_stride + r].
template <int R, int V, bool Add, int64_t S, bool Transposed = false>
DYNCONV_MM_AVX512 __attribute__((noinline)) void register_tile(
    const float* a, int64_t a_stride_arg, int64_t inner, const float* x,
    int64_t x_stride, float* out, int64_t out_stride, __mmask16 last,
    const PrefetchStream& stream) {
  const int64_t a_stride = S != 0 ? S : a_stride_arg;
  // Told that the loop runs (inner >= 1), GCC 12 keeps the accumulators in
  // registers; otherwise it stores all of them to the stack on every step
  // (3x slower).
  if (inner <= 0) return;
  __m512 acc[R][V];
  PrefetchCursor cursor(stream, inner);
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t i = 0; i < inner; ++i) {
    const float* row = x + i * x_stride;
    __m512 c[V];
    for (int v = 0; v < V; ++v)
      c[v] = v == V - 1 ? _mm512_maskz_loadu_ps(last, row + v * kLanes)
                        : _mm512_loadu_ps(row + v * kLanes);
    for (int r = 0; r < R; ++r) {
      const __m512 w = _mm512_set1_ps(Transposed ? a[i * a_stride + r]
                                                 : a[r * a_stride + i]);
      for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(w, c[v], acc[r][v]);
    }
    cursor.ask();
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) {
      float* o = out + r * out_stride + v * kLanes;
      const __mmask16 mask = v == V - 1 ? last : 0xFFFF;
      _mm512_mask_storeu_ps(
          o, mask,
          Add ? _mm512_add_ps(_mm512_maskz_loadu_ps(mask, o), acc[r][v])
              : acc[r][v]);
    }
}

template <int V, int64_t S, bool Transposed = false>
DYNCONV_MM_AVX512 void tile_of_rows(int rows, const float* a,
                                    int64_t a_stride, int64_t inner,
                                    const float* x, int64_t x_stride,
                                    float* out, int64_t out_stride,
                                    __mmask16 last, bool add,
                                    const PrefetchStream& stream) {
  switch (rows * 2 + add) {
#define DYNCONV_MM_ROWS(R)                                                  \
  case 2 * R:                                                               \
    if constexpr (R * V <= 24)                                              \
    register_tile<R, V, false, S, Transposed>(a, a_stride, inner, x,        \
                                              x_stride, out, out_stride,    \
                                              last, stream);                \
    break;                                                                  \
  case 2 * R + 1:                                                           \
    if constexpr (R * V <= 24)                                              \
    register_tile<R, V, true, S, Transposed>(a, a_stride, inner, x,         \
                                             x_stride, out, out_stride,     \
                                             last, stream);                 \
    break;
    DYNCONV_MM_ROWS(1) DYNCONV_MM_ROWS(2) DYNCONV_MM_ROWS(3)
    DYNCONV_MM_ROWS(4) DYNCONV_MM_ROWS(5) DYNCONV_MM_ROWS(6)
    DYNCONV_MM_ROWS(7) DYNCONV_MM_ROWS(8)
#undef DYNCONV_MM_ROWS
  }
}

// Rows [o_begin, o_end) of y, a block of columns at a time, a chunk of
// rows at a time: the chunk's rows of the kernel on the block are mixed
// into each sample's panel (a group of samples from one read of the bank
// rows), then each sample's tiles run over the chunk, its block of cols in
// cache, while the next chunk's bank rows are prefetched. Over a batch a
// unit is a thread's every row, so each block of cols is read from memory
// once per thread (units of four tiles re-read it per unit: at 7x7, batch
// 8, four kernels, the two changes -0.7 ms of 11, paired).
DYNCONV_MM_AVX512 void conv_unit(const SampleConv& s, int64_t o_begin,
                                 int64_t o_end) {
  const int64_t J = s.J, P = s.P, K = s.K, B = s.B, O = s.O;
  const bool batch = B > 1;
  const int64_t block = batch ? kBatchBlock : kBlock;
  const int64_t tiled = P - s.tails;  // pixels in register tiles
  const int64_t chunk_rows = batch ? kChunkRows : tile_rows_for(tiled);
  const int64_t group = batch && K > 1 ? std::min(kBatchSamples, B) : 1;
  TileFloats panels(group * chunk_rows * block);
  std::vector<float> c(group * K);  // a row's coefficients, per sample
  std::vector<const float*> pieces(chunk_rows * K);
  const int64_t rows = o_end - o_begin;
  // the tail pixels' dot products, 16 lanes each: [B][tails][rows][16]
  std::vector<float> sums(B * s.tails * rows * kLanes);
  auto lanes_of = [&](int64_t b, int64_t t, int64_t o) {
    return sums.data() + ((b * s.tails + t) * rows + o - o_begin) * kLanes;
  };
  const int64_t width = kTileVectors * kLanes;
  const int64_t pixel_tiles = (tiled + width - 1) / width;
  // Over a batch, on maps whose rows are not a whole number of lines (7x7:
  // 49 floats), each block of the input is first copied with rows that are
  // (48 floats): read in place, nearly every load of the tiles spanned two
  // lines. 512-channel 3x3 at 7x7, batch 8, the op alone, one kernel:
  // 8.1 ms, against 7.3 for a 6x8 map (48 pixels) in place.
  const bool pack = batch && P % kLanes != 0;
  const int64_t x_stride = pack ? (tiled + kLanes - 1) / kLanes * kLanes : P;
  TileFloats packed(pack ? B * block * x_stride : 0);
  for (int64_t j0 = 0; j0 < J; j0 += block) {
    const int64_t n = std::min(block, J - j0);
    if (pack)
      for (int64_t b = 0; b < B; ++b)
        for (int64_t j = 0; j < n; ++j)
          std::copy_n(s.cols + (b * J + j0 + j) * P, tiled,
                      packed.data() + (b * block + j) * x_stride);
    for (int64_t c0 = o_begin; c0 < o_end; c0 += chunk_rows) {
      const int64_t c1 = std::min(o_end, c0 + chunk_rows);
      // The next chunk's bank rows (this block's or, past the unit's last
      // rows, the next block's first), streamed in over this chunk's tiles.
      int64_t next_c = c1, next_j = j0;
      if (next_c >= o_end) {
        next_c = o_begin;
        next_j = j0 + block;
      }
      PrefetchStream stream{pieces.data(), 0, 0};
      if (next_j < J) {
        for (int64_t o = next_c; o < std::min(o_end, next_c + chunk_rows); ++o)
          for (int64_t k = 0; k < K; ++k)
            pieces[stream.count++] = s.bank + (k * O + o) * J + next_j;
        stream.lines = (std::min(block, J - next_j) + kLanes - 1) / kLanes;
      }
      const int64_t calls = B * pixel_tiles;
      int64_t call = 0;
      for (int64_t b0 = 0; b0 < B; b0 += group) {
        const int64_t samples = std::min(group, B - b0);
        const float* e = s.e == nullptr ? nullptr : s.e + b0 * J + j0;
        for (int64_t o = c0; o < c1; ++o) {
          for (int64_t q = 0; q < samples; ++q) {
            const int64_t b = b0 + q;
            const float* m = s.m == nullptr ? nullptr
                             : s.m + b * (s.per_row ? O * K : K);
            const float scale = s.f == nullptr ? 1.f : s.f[b * O + o];
            for (int64_t k = 0; k < K; ++k)
              c[q * K + k] = scale * (m == nullptr ? 1.f
                                      : s.per_row  ? m[o * K + k]
                                                   : m[k]);
          }
          float* row = panels.data() + (o - c0) * block;
          if (samples == 1)
            mix_panel_row(s.bank + o * J + j0, O * J, c.data(), K, e, n, row);
          else
            avx512_mix_rows(s.bank + o * J + j0, O * J, c.data(), K, e, J,
                            samples, n, row, chunk_rows * block);
        }
        for (int64_t q = 0; q < samples; ++q) {
          const int64_t b = b0 + q;
          const float* panel = panels.data() + q * chunk_rows * block;
          const float* x = pack ? packed.data() + b * block * x_stride
                                : s.cols + (b * J + j0) * P;
          for (int64_t p0 = 0; p0 < tiled; p0 += width, ++call)
            avx512_tiles(c1 - c0, panel, block, n, x + p0, x_stride,
                         s.y + (b * O + c0) * P + p0, P,
                         std::min(width, tiled - p0), j0 > 0,
                         stream.share(call, calls), false);
          for (int64_t t = 0; t < s.tails; ++t)
            for (int64_t o0 = c0; o0 < c1; o0 += kNarrowTileRows)
              tail_dots(static_cast<int>(
                            std::min<int64_t>(kNarrowTileRows, c1 - o0)),
                        panel + (o0 - c0) * block, block,
                        s.tail + (b * s.tails + t) * J + j0, n,
                        lanes_of(b, t, o0), j0 > 0);
        }
      }
    }
  }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < s.tails; ++t)
      for (int64_t o = o_begin; o < o_end; ++o) {
        const float* lanes = lanes_of(b, t, o);
        float d = 0.f;
        for (int64_t i = 0; i < kLanes; ++i) d += lanes[i];
        s.y[(b * O + o) * P + tiled + t] = d;
      }
  if (s.bias != nullptr)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t o = o_begin; o < o_end; ++o)
        for (int64_t p = 0; p < P; ++p) s.y[(b * O + o) * P + p] += s.bias[o];
}

}  // namespace

bool avx512_supported() {
  static const bool supported = __builtin_cpu_supports("avx512f");
  return supported;
}

DYNCONV_MM_AVX512 void avx512_mix_rows(const float* src, int64_t stride,
                                       const float* c, int64_t num_kernels,
                                       const float* e, int64_t e_stride,
                                       int64_t samples, int64_t n, float* dst,
                                       int64_t dst_stride) {
#define DYNCONV_MM_HELD(H, kernel)                                         \
  case H:                                                                   \
    kernel<H>(src, stride, c, num_kernels, k0, e, e_stride, samples, n, dst, \
              dst_stride);                                                  \
    break;
  for (int64_t k0 = 0; k0 < num_kernels; k0 += 8)
    switch (std::min<int64_t>(8, num_kernels - k0)) {
      DYNCONV_MM_COUNTS(DYNCONV_MM_HELD, mix_held_rows)
    }
#undef DYNCONV_MM_HELD
}

// tile_of_rows over `rows` rows and `width` (1-64) columns of x and out.
DYNCONV_MM_AVX512 void avx512_tiles(int64_t rows, const float* a,
                                     int64_t a_stride, int64_t inner,
                                     const float* x, int64_t x_stride,
                                     float* out, int64_t out_stride,
                                     int64_t width, bool add,
                                     const PrefetchStream& stream,
                                     bool a_transposed) {
  const int vectors = static_cast<int>((width + kLanes - 1) / kLanes);
  const __mmask16 last = first_lanes(width - (vectors - 1) * kLanes);
  const int tile_rows = tile_rows_for(width);
  const int64_t row_tiles = (rows + tile_rows - 1) / tile_rows;
  for (int64_t r0 = 0, t = 0; r0 < rows; r0 += tile_rows, ++t) {
    const int r = static_cast<int>(std::min<int64_t>(tile_rows, rows - r0));
    const float* a0 = a_transposed ? a + r0 : a + r0 * a_stride;
    float* out0 = out + r0 * out_stride;
    const PrefetchStream part = stream.share(t, row_tiles);
    switch (vectors) {
#define DYNCONV_MM_VECTORS(V)                                              \
  case V:                                                                  \
    (a_transposed              ? tile_of_rows<V, 0, true>                \
     : a_stride == kBatchBlock ? tile_of_rows<V, kBatchBlock>              \
     : a_stride == kBlock      ? tile_of_rows<V, kBlock>                   \
                               : tile_of_rows<V, 0>)(r, a0, a_stride,      \
                                                     inner, x, x_stride,   \
                                                     out0, out_stride,     \
                                                     last, add, part);     \
    break;
      DYNCONV_MM_VECTORS(1) DYNCONV_MM_VECTORS(2) DYNCONV_MM_VECTORS(3)
      DYNCONV_MM_VECTORS(4)
#undef DYNCONV_MM_VECTORS
    }
  }
}

at::Tensor sample_conv(const at::Tensor& cols, const at::Tensor& bank,
                       const c10::optional<at::Tensor>& mixing,
                       const c10::optional<at::Tensor>& channel,
                       const c10::optional<at::Tensor>& spatial,
                       const c10::optional<at::Tensor>& filter,
                       const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(avx512_supported(),
              "dynconv_mm sample_conv: needs a CPU with AVX-512");
  check_float_cpu("sample_conv", "bank", bank, bank.dim() == 5,
                  "[K, C_out, C_in, kh, kw]");
  const int64_t K = bank.size(0), O = bank.size(1), I = bank.size(2);
  const int64_t area = bank.size(3) * bank.size(4), J = I * area;
  check_float_cpu("sample_conv", "cols", cols,
                  cols.dim() == 3 && cols.size(1) == J,
                  "[B, C_in*kh*kw = ", J, ", pixels]");
  const int64_t B = cols.size(0), P = cols.size(2);
  bool per_row = false;
  if (mixing.has_value()) {
    per_row = mixing->numel() == B * O * K;
    check_float_cpu_values("sample_conv", "mixing", *mixing,
                           per_row ? B * O * K : B * K);
  } else {
    TORCH_CHECK(K == 1, "dynconv_mm sample_conv: a bank of ", K,
                " kernels needs mixing coefficients");
  }
  if (channel.has_value())
    check_float_cpu_values("sample_conv", "channel", *channel, B * I);
  if (spatial.has_value())
    check_float_cpu_values("sample_conv", "spatial", *spatial, B * area);
  if (filter.has_value())
    check_float_cpu_values("sample_conv", "filter", *filter, B * O);
  if (bias.has_value())
    check_float_cpu_values("sample_conv", "bias", *bias, O);

  // Each sample's channel x spatial factor of each column j, once.
  const std::vector<float> factor = channel_spatial_factors(
      data_or_null(channel), data_or_null(spatial), B, I, area);
  // The last pixels that go by dot products, each one's column of cols.
  const int64_t tails = P % kLanes <= kTailPixels ? P % kLanes : 0;
  std::vector<float> tail(B * tails * J);
  const float* x = cols.data_ptr<float>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < tails; ++t)
      for (int64_t j = 0; j < J; ++j)
        tail[(b * tails + t) * J + j] = x[(b * J + j) * P + P - tails + t];
  at::Tensor y = at::empty({B, O, P}, cols.options());
  const SampleConv s{x, bank.data_ptr<float>(),
                     data_or_null(mixing), factor.empty() ? nullptr
                                                          : factor.data(),
                     data_or_null(filter), data_or_null(bias),
                     y.data_ptr<float>(), tail.data(), B, J, P, O, K, tails,
                     per_row};
  const int64_t tiles = (O + kTileRows - 1) / kTileRows;
  const int64_t unit_tiles =
      B > 1 || P - tails > kTileVectors * kLanes ? tiles : kUnitTiles;
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; t += unit_tiles)
      conv_unit(s, t * kTileRows,
                std::min(O, std::min(end, t + unit_tiles) * kTileRows));
  });
  return y;
}

#else  // not x86-64 with GCC: never offered

bool avx512_supported() { return false; }

void avx512_tiles(int64_t, const float*, int64_t, int64_t, const float*,
                  int64_t, float*, int64_t, int64_t, bool,
                  const PrefetchStream&, bool) {
  TORCH_CHECK(false, "dynconv_mm avx512_tiles: needs an x86-64 CPU");
}

void avx512_mix_rows(const float*, int64_t, const float*, int64_t,
                     const float*, int64_t, int64_t, int64_t, float*,
                     int64_t) {
  TORCH_CHECK(false, "dynconv_mm avx512_mix_rows: needs an x86-64 CPU");
}

at::Tensor sample_conv(const at::Tensor&, const at::Tensor&,
                       const c10::optional<at::Tensor>&,
                       const c10::optional<at::Tensor>&,
                       const c10::optional<at::Tensor>&,
                       const c10::optional<at::Tensor>&,
                       const c10::optional<at::Tensor>&) {
  TORCH_CHECK(false, "dynconv_mm sample_conv: needs an x86-64 CPU");
}

#endif

}  // namespace dynconv_mm
