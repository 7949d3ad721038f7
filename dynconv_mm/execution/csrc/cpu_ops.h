// dynconv_mm's compiled CPU ops (the _cpu_ops extension): declarations and
// what their sources share. They run where eager PyTorch would spend more
// on dispatching small ops, on extra passes over kernel- or activation-
// sized tensors, or on one thread, than on the arithmetic.
#pragma once

#include <ATen/ATen.h>

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

namespace dynconv_mm {

#if defined(__x86_64__) && defined(__GNUC__)
// Functions whose intrinsics are AVX-512's, called only where the CPU has
// it (avx512_supported).
#define DYNCONV_MM_AVX512 __attribute__((target("avx512f")))

// A mask of a zmm register's first n lanes (all 16 from n = 16 up).
inline __mmask16 first_lanes(int64_t n) {
  return static_cast<__mmask16>(n >= 16 ? 0xFFFF : (1u << n) - 1u);
}

// dst[c * dst_stride + r] = src[r * src_stride + c] for c < cols and r < 16,
// zero for r >= rows (rows, cols <= 16): a block transposed in registers,
// where element by element each store went to its own line.
DYNCONV_MM_AVX512 inline void avx512_transpose_block(
    const float* src, int64_t src_stride, int64_t rows, int64_t cols,
    float* dst, int64_t dst_stride) {
  const __mmask16 in = first_lanes(cols);
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i)
    r[i] = i < rows ? _mm512_maskz_loadu_ps(in, src + i * src_stride)
                    : _mm512_setzero_ps();
  // (the zero-masked forms of the shuffles, with every lane kept: GCC 12
  // warns, wrongly, on the plain ones' undefined pass-through)
  const __mmask16 all = 0xFFFF;
  const __mmask8 all8 = 0xFF;
  // pairs of rows interleaved, then pairs of pairs: u[4k + m] holds, in
  // its 128-bit lane L, column 4L + m of rows 4k .. 4k + 3
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_maskz_unpacklo_ps(all, r[i], r[i + 1]);
    t[i + 1] = _mm512_maskz_unpackhi_ps(all, r[i], r[i + 1]);
  }
  for (int k = 0; k < 16; k += 4)
    for (int h = 0; h < 2; ++h) {
      const __m512d a = _mm512_castps_pd(t[k + h]),
                    b = _mm512_castps_pd(t[k + 2 + h]);
      r[k + 2 * h] = _mm512_castpd_ps(_mm512_maskz_unpacklo_pd(all8, a, b));
      r[k + 2 * h + 1] =
          _mm512_castpd_ps(_mm512_maskz_unpackhi_pd(all8, a, b));
    }
  // lane L of the four row groups: column 4L + m
  for (int m = 0; m < 4; ++m) {
    const __m512 v0 = _mm512_maskz_shuffle_f32x4(all, r[m], r[4 + m], 0x88),
                 v1 = _mm512_maskz_shuffle_f32x4(all, r[m], r[4 + m], 0xDD),
                 w0 = _mm512_maskz_shuffle_f32x4(all, r[8 + m], r[12 + m],
                                                 0x88),
                 w1 = _mm512_maskz_shuffle_f32x4(all, r[8 + m], r[12 + m],
                                                 0xDD);
    t[m] = _mm512_maskz_shuffle_f32x4(all, v0, w0, 0x88);
    t[8 + m] = _mm512_maskz_shuffle_f32x4(all, v0, w0, 0xDD);
    t[4 + m] = _mm512_maskz_shuffle_f32x4(all, v1, w1, 0x88);
    t[12 + m] = _mm512_maskz_shuffle_f32x4(all, v1, w1, 0xDD);
  }
  for (int c = 0; c < cols; ++c) _mm512_storeu_ps(dst + c * dst_stride, t[c]);
}
#endif

// An allocator of blocks that start on a cache line (64 bytes). The ops'
// scratch buffers are read by register tiles a whole line at a time, rows a
// multiple of 16 floats apart; from the heap a buffer starts 16 bytes past a
// line as often as not, and then every such load spans two lines.
template <typename T>
struct CacheLineAllocator {
  using value_type = T;
  static constexpr std::align_val_t kAlignment{64};
  CacheLineAllocator() = default;
  template <typename U>
  CacheLineAllocator(const CacheLineAllocator<U>&) {}
  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), kAlignment));
  }
  void deallocate(T* p, std::size_t) { ::operator delete(p, kAlignment); }
  template <typename U>
  bool operator==(const CacheLineAllocator<U>&) const { return true; }
  template <typename U>
  bool operator!=(const CacheLineAllocator<U>&) const { return false; }
};

// Floats for register tiles to load: on cache lines (CacheLineAllocator).
using TileFloats = std::vector<float, CacheLineAllocator<float>>;

// A switch's cases over a count (1-8) to its instance of `kernel`.
#define DYNCONV_MM_COUNTS(CASE, kernel)                                   \
  CASE(1, kernel) CASE(2, kernel) CASE(3, kernel) CASE(4, kernel)         \
  CASE(5, kernel) CASE(6, kernel) CASE(7, kernel) CASE(8, kernel)

// Enough work per thread that waking the second one pays (elements read).
constexpr int64_t kGrainElements = 1 << 15;

// Loops compiled for AVX-512, AVX2 and the baseline; the loader picks one
// for the CPU it runs on (the extension is built once for any x86-64).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DYNCONV_MM_VECTOR_CLONES \
  __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DYNCONV_MM_VECTOR_CLONES
#endif

// sum_i a[i] * b[i] over n floats (attention_cpu.cpp), vectorised.
float dot(const float* a, const float* b, int64_t n);

// A contiguous float32 CPU tensor whose shape is right (`shape_ok`), or an
// error that names the op and the argument and says what was expected
// (`expected...`, formatted only on failure).
template <typename... Expected>
inline void check_float_cpu(const char* op, const char* name,
                            const at::Tensor& t, bool shape_ok,
                            const Expected&... expected) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat &&
                  t.is_contiguous() && shape_ok,
              "dynconv_mm ", op, ": ", name,
              " must be a contiguous float32 CPU tensor ", expected...,
              ", got ", t.sizes(), " ", t.scalar_type(), " on ", t.device());
}

// ... of exactly `sizes`.
inline void check_float_cpu_shape(const char* op, const char* name,
                                  const at::Tensor& t,
                                  const std::vector<int64_t>& sizes) {
  check_float_cpu(op, name, t, t.sizes() == at::IntArrayRef(sizes),
                  "of shape ", at::IntArrayRef(sizes));
}

// An optional tensor's floats, or null.
inline const float* data_or_null(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<float>() : nullptr;
}

// Each sample's channel x spatial factor c[b, i] a[b, s], as [B, channels,
// area] (c or a null: ones; empty where both are), for the ops that fold
// ODConv's two input-side attentions into a kernel's columns.
std::vector<float> channel_spatial_factors(const float* c, const float* a,
                                           int64_t batch, int64_t channels,
                                           int64_t area);

// ... of `numel` values, of any shape (a sample's attention arrives as
// [1, n] or [1, kh, kw]).
inline void check_float_cpu_values(const char* op, const char* name,
                                   const at::Tensor& t, int64_t numel) {
  check_float_cpu(op, name, t, t.numel() == numel, "of ", numel, " values");
}

std::vector<at::Tensor> attention_heads(
    const at::Tensor& x, const at::Tensor& trunk_weight,
    const c10::optional<at::Tensor>& trunk_bias,
    const c10::optional<at::Tensor>& norm_mean,
    const c10::optional<at::Tensor>& norm_var,
    const c10::optional<at::Tensor>& norm_weight,
    const c10::optional<at::Tensor>& norm_bias, double norm_eps,
    const at::Tensor& heads_weight, const at::Tensor& heads_bias,
    const at::Tensor& temperature, int64_t num_sigmoid,
    std::vector<int64_t> widths);

// Whether this CPU has AVX2 and FMA, which sample_kernel and the
// sample_gemm ops need (sample_gemm_cpu.cpp; elsewhere PyTorch runs them).
bool avx2_fma_supported();

// dst[0:n] = sum_k c[k] * src[k * src_stride + 0:n]: a row mixed from K
// kernels' rows (`src_stride` apart), read side by side (AVX2 and FMA).
void mix_row(const float* src, int64_t src_stride, const float* c,
             int64_t num_kernels, int64_t n, float* dst);

at::Tensor sample_kernel(const at::Tensor& bank,
                         const c10::optional<at::Tensor>& mixing,
                         const c10::optional<at::Tensor>& channel,
                         const c10::optional<at::Tensor>& spatial,
                         const c10::optional<at::Tensor>& filter,
                         int64_t groups);

// Every sample's kernel [B, C_out, C_in/groups, kh, kw] (sample_kernel for
// B samples, each attention with its samples first), and from the kernels'
// gradient the gradients {bank (if `bank_grad`), mixing, channel, spatial,
// filter}, each undefined where not asked or its attention absent
// (`wide`: AVX-512's loops, every sample's share of a bank row at once).
at::Tensor sample_kernels(const at::Tensor& bank,
                          const c10::optional<at::Tensor>& mixing,
                          const c10::optional<at::Tensor>& channel,
                          const c10::optional<at::Tensor>& spatial,
                          const c10::optional<at::Tensor>& filter,
                          int64_t groups, int64_t batch, bool wide);
std::vector<at::Tensor> sample_kernels_backward(
    const at::Tensor& grad, const at::Tensor& bank,
    const c10::optional<at::Tensor>& mixing,
    const c10::optional<at::Tensor>& channel,
    const c10::optional<at::Tensor>& spatial,
    const c10::optional<at::Tensor>& filter, int64_t groups, bool bank_grad,
    bool wide);

// tiled_gemm's per-sample GEMMs with the kernels mixed in their tiles
// (sample_gemm_cpu.cpp). Per group of the bank W [K, G, O_g, J] and the
// mixing m [B, K] (or DyNet's [B, G, O_g, K]): the output y [B, G, O_g, P]
// of the unfolded input cols [B, G, J, P]; the input gradient, transposed,
// [B, G, P, J], of the output gradient grad_y [B, G, O_g, P]; the bank's
// and the mixing's gradients {dW, dm} from grad_y and the input cols, and
// with `input_grad` the input gradient as a third, sharing the bank's read
// where that was measured faster (`wide`: the gradients in AVX-512 tiles,
// avx512_tiles; `huge_pages`: the bank asked into 2 MB pages first, Linux's
// MADV_COLLAPSE, and the bank's gradient in blocks of 2 MB pages kept for
// the next call once freed).
at::Tensor sample_gemm_forward(const at::Tensor& cols,
                               const at::Tensor& bank,
                               const at::Tensor& mixing);
at::Tensor sample_gemm_input_grad(const at::Tensor& grad_y,
                                  const at::Tensor& bank,
                                  const at::Tensor& mixing, bool wide,
                                  bool huge_pages);
std::vector<at::Tensor> sample_gemm_backward(
    const at::Tensor& grad_y, const at::Tensor& cols, const at::Tensor& bank,
    const at::Tensor& mixing, bool input_grad, bool wide, bool huge_pages);

// Each sample's convolution from its unfolded input cols [B, C_in*kh*kw,
// P] with its kernel mixed in the GEMM's tiles from the bank [K, C_out,
// C_in, kh, kw] and its attentions (groups of one; AVX-512,
// `avx512_supported`): y [B, C_out, P] (sample_conv_cpu.cpp).
bool avx512_supported();

// An op's check that the AVX-512 loops its caller chose (`flag`) can run
// on this CPU.
inline void check_avx512_choice(const char* op, const char* flag,
                                bool chosen) {
  TORCH_CHECK(!chosen || avx512_supported(), "dynconv_mm ", op, ": ", flag,
              "=true needs a CPU with AVX-512");
}

// Cache lines to bring in while register tiles compute (`count` pieces of
// `lines` lines each), asked for a few per step of a tile: spread over its
// arithmetic, the next reads of the bank overlap it.
struct PrefetchStream {
  const float* const* pieces;
  int64_t count, lines;

  // Share `part` of `parts` of the pieces, for one of several tiles.
  PrefetchStream share(int64_t part, int64_t parts) const {
    const int64_t first = count * part / parts;
    return {pieces + first, count * (part + 1) / parts - first, lines};
  }
};
// A tile's walk through its PrefetchStream: ask() once a step asks for
// the next few lines (64 bytes each), all of them by the tile's `steps`-th.
// (ask()'s loop as written: with `piece_ != end_` in its condition, GCC 12
// kept sample_conv's AVX-512 accumulators on the stack, its forward at
// 512-channel 3x3, 7x7, batch 8 9.5 -> 15.6 ms.)
class PrefetchCursor {
 public:
  PrefetchCursor(const PrefetchStream& stream, int64_t steps)
      : piece_(stream.pieces),
        end_(stream.pieces + stream.count),
        lines_(stream.lines),
        rate_((stream.count * stream.lines + steps - 1) / steps) {}

  inline __attribute__((always_inline)) void ask() {
    for (int64_t q = 0; q < rate_; ++q)
      if (piece_ != end_) {
        __builtin_prefetch(*piece_ + line_ * 16, 0, 2);
        if (++line_ == lines_) {
          line_ = 0;
          ++piece_;
        }
      }
  }

 private:
  const float* const* piece_;
  const float* const* const end_;
  const int64_t lines_, rate_;
  int64_t line_ = 0;
};
// out[r, 0:width] (+)= sum_i a[r, i] panel[i, 0:width] for `rows` rows and
// 1-64 columns, in AVX-512 register tiles of 6 rows by 64 columns (8 rows
// up to 48 columns; a's rows `a_stride` apart, or with `a_transposed` its
// columns: a[r, i] at a[i * a_stride + r]; the panel's rows
// `panel_stride` apart, out's `out_stride`; `add`: added to out), asking
// for `stream`'s lines as they compute (shared out among the tiles):
// sample_conv's tiles and the sample_gemm ops' wide ones.
void avx512_tiles(int64_t rows, const float* a, int64_t a_stride,
                  int64_t inner, const float* panel, int64_t panel_stride,
                  float* out, int64_t out_stride, int64_t width, bool add,
                  const PrefetchStream& stream, bool a_transposed);
// dst[s * dst_stride + 0:n] = e_s[0:n] * sum_k c[s * K + k] src[k * stride
// + 0:n] for s < samples (e_s = e + s * e_stride; e may be null): one row of
// several samples' kernels from its K bank rows (`stride` apart), each
// bank row read once for all samples (held in registers, eight at a time).
void avx512_mix_rows(const float* src, int64_t stride, const float* c,
                     int64_t num_kernels, const float* e, int64_t e_stride,
                     int64_t samples, int64_t n, float* dst,
                     int64_t dst_stride);
at::Tensor sample_conv(const at::Tensor& cols, const at::Tensor& bank,
                       const c10::optional<at::Tensor>& mixing,
                       const c10::optional<at::Tensor>& channel,
                       const c10::optional<at::Tensor>& spatial,
                       const c10::optional<at::Tensor>& filter,
                       const c10::optional<at::Tensor>& bias);

// F.unfold's columns [B, C*kh*kw, H_out*W_out] of a contiguous x
// [B, C, H, W], and F.fold of columns of any strides back to an input of
// H x W (unfold_cpu.cpp); padding is symmetric, as F.unfold's. With `rows`
// [B, C, kh*kw], the columns' rows are scaled by it (unfolding), or the
// columns' gradient by it before folding; given x too, the fold also returns
// the gradient of `rows` [B, C, kh*kw] (after the input's). `avx512`: the
// unfold's rows in AVX-512 registers, and the fold of columns whose rows
// are contiguous per pixel gathered 16 channels at a time (the CPU must
// have it).
at::Tensor unfold_columns(const at::Tensor& x, at::IntArrayRef kernel_size,
                          at::IntArrayRef dilation, at::IntArrayRef padding,
                          at::IntArrayRef stride,
                          const c10::optional<at::Tensor>& rows, bool avx512);
std::vector<at::Tensor> fold_columns(
    const at::Tensor& cols, int64_t height, int64_t width,
    at::IntArrayRef kernel_size, at::IntArrayRef dilation,
    at::IntArrayRef padding, at::IntArrayRef stride,
    const c10::optional<at::Tensor>& rows, const c10::optional<at::Tensor>& x,
    bool avx512);

}  // namespace dynconv_mm
