// The unfolded input (im2col) of `im2col` and `tiled_gemm` on a CPU, and
// its gradient (col2im):
//
//   cols[b, (c kh + i) kw + j, oy W_out + ox]
//       = r[b, c, i kw + j] x[b, c, oy s_h - pad_h + i d_h, ox s_w - pad_w + j d_w]
//
// (0 outside x), the rows optionally scaled by r: ODConv's channel x spatial
// attention, applied while unfolding and, in the fold, differentiated while
// folding, instead of in three more passes over the columns (scaling them,
// scaling their gradient, and the gradient's products with them).
//
// PyTorch's im2col and col2im run one sample at a time on one thread, and
// its col2im needs contiguous columns: the input gradient of the sample
// GEMMs arrives transposed ([B, P, J] in memory), so it was copied first.
// On a 512-channel 3x3 layer at 7x7, batch 8, the three took ~8 ms of a
// ~95 ms forward + backward (a static convolution's is ~40). Here the
// samples' channels are split over threads, and the gradient is summed a
// whole input plane per channel, from columns of any strides, in col2im's
// order (so to the same bits): with AVX-512, 16 channels at a time in
// registers (fold_pixels_avx512), from either layout of the columns.
//
// The same bits also mean a rounding after each product, as PyTorch's
// scaling does before its col2im: compilers fuse a product and the sum it
// feeds into one multiply-add where the target has one (GCC by default,
// clang within an expression): on aarch64 the portable fold differed from
// PyTorch's in the last bits. Not in this file. x86-64's baseline has no
// multiply-add and the AVX-512 fold rounds its products itself
// (rounded_product), so its code is left as it was measured.
#if !defined(__x86_64__)
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif
#endif
#include "cpu_ops.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <utility>

namespace dynconv_mm {
namespace {

struct Geometry {
  int64_t height, width, kh, kw, dh, dw, ph, pw, sh, sw, out_h, out_w;
};

// The convolution arguments, each refused by name unless it has 2 values
// of at least its bound, and the output size they give.
Geometry checked_geometry(const char* op, int64_t height, int64_t width,
                          at::IntArrayRef kernel_size,
                          at::IntArrayRef dilation, at::IntArrayRef padding,
                          at::IntArrayRef stride) {
  struct Argument {
    const char* name;
    at::IntArrayRef values;
    int64_t low;
  };
  for (const Argument& a : {Argument{"kernel_size", kernel_size, 1},
                            Argument{"dilation", dilation, 1},
                            Argument{"padding", padding, 0},
                            Argument{"stride", stride, 1}}) {
    TORCH_CHECK(a.values.size() == 2, "dynconv_mm ", op, ": ", a.name,
                " must have 2 values, got ", a.values);
    TORCH_CHECK(a.values[0] >= a.low && a.values[1] >= a.low, "dynconv_mm ",
                op, ": ", a.name, " must be >= ", a.low, ", got ", a.values);
  }
  Geometry g{height,      width,       kernel_size[0], kernel_size[1],
             dilation[0], dilation[1], padding[0],     padding[1],
             stride[0],   stride[1],   0,              0};
  g.out_h = (height + 2 * g.ph - g.dh * (g.kh - 1) - 1) / g.sh + 1;
  g.out_w = (width + 2 * g.pw - g.dw * (g.kw - 1) - 1) / g.sw + 1;
  TORCH_CHECK(g.out_h > 0 && g.out_w > 0, "dynconv_mm ", op, ": a ", height,
              "x", width, " input gives no output for kernel_size ",
              kernel_size, ", dilation ", dilation, ", padding ", padding,
              ", stride ", stride);
  return g;
}

// Output positions o < n whose input position o * s - p + k * d lies in
// [0, size): [first, last).
inline std::pair<int64_t, int64_t> inside(int64_t n, int64_t size, int64_t s,
                                          int64_t p, int64_t k, int64_t d) {
  const int64_t offset = k * d - p;  // input position of output 0
  int64_t first = offset >= 0 ? 0 : (-offset + s - 1) / s;
  int64_t last = offset >= size ? 0 : (size - 1 - offset) / s + 1;
  first = std::min(first, n);
  return {first, std::max(first, std::min(last, n))};
}

// The row scales r [B, C, kh*kw] if given (checked), else null.
const float* checked_rows(const char* op, const c10::optional<at::Tensor>& rows,
                          int64_t batch, int64_t channels, int64_t area) {
  if (!rows) return nullptr;
  check_float_cpu_shape(op, "rows", *rows, {batch, channels, area});
  return rows->data_ptr<float>();
}

#if defined(__x86_64__) && defined(__GNUC__)
// One kernel position's row of the columns, out[oy * out_w + ox] =
// r * in[oy * row_stride + ox] for the output rows [0, out_h) (column
// stride 1; `in` at output pixel (0, 0)'s input, zero outside rows
// [y0, y1) and columns [x0, x1)), in masked registers of 16: each output
// row is one masked load and store where std::copy and std::fill made
// three calls (a 7-float row at 7x7: the unfold of a 512-channel 3x3 layer
// at batch 8 took ~0.8 ms).
DYNCONV_MM_AVX512 void unfold_position_avx512(const float* in,
                                              int64_t row_stride,
                                              float* out, int64_t out_h,
                                              int64_t out_w, int64_t y0,
                                              int64_t y1, int64_t x0,
                                              int64_t x1, float r) {
  const __m512 scale = _mm512_set1_ps(r);
  for (int64_t c = 0; c < out_w; c += 16) {
    // lanes of this chunk inside the output row, and inside the input
    const __mmask16 store = first_lanes(out_w - c);
    const int64_t lo = std::clamp<int64_t>(x0 - c, 0, 16),
                  hi = std::clamp<int64_t>(x1 - c, 0, 16);
    const __mmask16 load = static_cast<__mmask16>(first_lanes(hi) &
                                                  ~first_lanes(lo));
    for (int64_t oy = 0; oy < out_h; ++oy) {
      const __m512 v =
          oy >= y0 && oy < y1
              ? _mm512_mul_ps(
                    _mm512_maskz_loadu_ps(load, in + oy * row_stride + c),
                    scale)
              : _mm512_setzero_ps();
      _mm512_mask_storeu_ps(out + oy * out_w + c, store, v);
    }
  }
}

// The buffers of fold_pixels_avx512, a thread's, reused unit by unit.
struct FoldBuffers {
  TileFloats acc, input, taps, scales, grad_scales;
  FoldBuffers(int64_t plane, int64_t area, bool scaled, bool with_input)
      : acc(plane * 16),
        input(with_input ? plane * 16 : 0),
        taps(16 * area * 16),
        scales(scaled ? (area + 15) / 16 * 256 : 0),
        grad_scales(with_input ? (area + 15) / 16 * 256 : 0) {}
};

// a * b rounded on its own: a builtin (the zero-masked form, every lane
// kept) that the compiler does not fuse with the add that follows, as it
// does the plain form into a multiply-add that rounds once: not the bits
// of scaling, then folding.
DYNCONV_MM_AVX512 inline __m512 rounded_product(__m512 a, __m512 b) {
  return _mm512_maskz_mul_ps(0xFFFF, a, b);
}

// col2im of one sample's 16 channels (`lanes` of them) into buf.acc
// [H W][16], channel-last, from columns whose element (c, s, p) (channel,
// kernel position, pixel) is at column[(c kh kw + s) tap_stride + p
// pixel_stride], with tap_stride 1 (the sample GEMMs' input gradient, a
// transposed view) or pixel_stride 1 (contiguous columns). Each pixel's
// kh kw registers of 16 channels are transposed in registers (the first
// layout: a pixel's 16 rows of taps, 16 taps at a time; the second: 16
// pixels of a tap's 16 rows, into buf.taps [16][kh kw][16]), and each tap
// inside the input adds its register, times the tap's row scales if given
// (`scales` [lanes][kh kw], transposed first). Given the input's planes
// (`input` [lanes][H W], transposed to channel-last first), also the
// scales' gradient, buf.grad_scales [kh kw][16]: each tap's register times
// the input's pixel under it. The pixels run last to first: each input
// element's terms come in col2im's order (kernel row, then column,
// ascending), so the same bits, and the scales' gradient sums its terms in
// the portable loop's order. (That loop read transposed columns 4-18 KB
// apart, a float at a time: on the Emerald Rapids VM, 512 channels 3x3 at
// 7x7, batch 8, 0.6 ms, now 0.24; 256 channels at 50x50, batch 2, 25 ms,
// now 2.2. Gathering each tap's 16 channels instead of transposing: 15-30%
// slower from 14x14 up.)
DYNCONV_MM_AVX512 void fold_pixels_avx512(const float* column,
                                          int64_t tap_stride,
                                          int64_t pixel_stride,
                                          const Geometry& geometry,
                                          int64_t lanes, const float* scales,
                                          const float* input,
                                          FoldBuffers& buf) {
  const Geometry g = geometry;  // (in registers, not reloaded per store)
  const int64_t area = g.kh * g.kw, plane = g.height * g.width;
  const int64_t pixels = g.out_h * g.out_w;
  float* acc = buf.acc.data();
  float* taps = buf.taps.data();
  float* x = buf.input.data();
  float* r = buf.scales.data();
  float* gr = buf.grad_scales.data();
  std::fill_n(acc, plane * 16, 0.f);
  for (int64_t s = 0; s < area; s += 16) {
    const int64_t n = std::min<int64_t>(16, area - s);
    if (scales)
      avx512_transpose_block(scales + s, area, lanes, n, r + s * 16, 16);
    if (input) std::fill_n(gr + s * 16, n * 16, 0.f);
  }
  if (input)
    for (int64_t q = 0; q < plane; q += 16)
      avx512_transpose_block(input + q, plane, lanes,
                             std::min<int64_t>(16, plane - q), x + q * 16, 16);
  for (int64_t p = pixels - 1; p >= 0; --p) {
    const int64_t oy = p / g.out_w, ox = p % g.out_w;
    const float* v_of_tap;  // this pixel's [kh kw][16]
    if (tap_stride == 1) {
      const float* pixel = column + p * pixel_stride;
      for (int64_t s = 0; s < area; s += 16)
        avx512_transpose_block(pixel + s, area, lanes,
                               std::min<int64_t>(16, area - s),
                               taps + s * 16, 16);
      v_of_tap = taps;
    } else {
      const int64_t p0 = p / 16 * 16;
      if (p == pixels - 1 || p % 16 == 15)  // a block's first pixel here
        for (int64_t s = 0; s < area; ++s)
          avx512_transpose_block(column + s * tap_stride + p0,
                                 area * tap_stride, lanes,
                                 std::min<int64_t>(16, pixels - p0),
                                 taps + s * 16, area * 16);
      v_of_tap = taps + (p - p0) * area * 16;
    }
    for (int64_t i = 0; i < g.kh; ++i) {
      const int64_t y = oy * g.sh - g.ph + i * g.dh;
      if (y < 0 || y >= g.height) continue;
      for (int64_t j = 0; j < g.kw; ++j) {
        const int64_t xx = ox * g.sw - g.pw + j * g.dw;
        if (xx < 0 || xx >= g.width) continue;
        const int64_t tap = (i * g.kw + j) * 16, at = (y * g.width + xx) * 16;
        const __m512 v = _mm512_loadu_ps(v_of_tap + tap);
        if (input)
          _mm512_storeu_ps(gr + tap, _mm512_add_ps(
              _mm512_loadu_ps(gr + tap),
              rounded_product(v, _mm512_loadu_ps(x + at))));
        const __m512 term =
            scales ? rounded_product(v, _mm512_loadu_ps(r + tap)) : v;
        _mm512_storeu_ps(acc + at,
                         _mm512_add_ps(_mm512_loadu_ps(acc + at), term));
      }
    }
  }
}

// out[l * plane + q] = acc[q * 16 + l] for l < lanes: fold_pixels_avx512's
// channel-last sums to the input gradient's channels.
DYNCONV_MM_AVX512 void channels_first_avx512(const float* acc, int64_t plane,
                                             int64_t lanes, float* out) {
  const int64_t full = plane / 16 * 16;
  for (int64_t q = 0; q < full; q += 16)
    avx512_transpose_block(acc + q * 16, 16, 16, lanes, out + q, plane);
  for (int64_t l = 0; l < lanes; ++l)  // (a block's stores would run past)
    for (int64_t q = full; q < plane; ++q) out[l * plane + q] = acc[q * 16 + l];
}
#endif

}  // namespace

at::Tensor unfold_columns(const at::Tensor& x, at::IntArrayRef kernel_size,
                          at::IntArrayRef dilation, at::IntArrayRef padding,
                          at::IntArrayRef stride,
                          const c10::optional<at::Tensor>& rows, bool avx512) {
  check_float_cpu("unfold_columns", "x", x, x.dim() == 4, "[B, C, H, W]");
  check_avx512_choice("unfold_columns", "avx512", avx512);
  const Geometry g = checked_geometry("unfold_columns", x.size(2),
                                      x.size(3), kernel_size, dilation,
                                      padding, stride);
  const int64_t channels = x.size(1);
  const int64_t batch = x.size(0), area = g.kh * g.kw;
  const int64_t pixels = g.out_h * g.out_w;
  const float* scales =
      checked_rows("unfold_columns", rows, batch, channels, area);
  at::Tensor cols =
      at::empty({batch, channels * area, pixels}, x.options());
  const float* src = x.data_ptr<float>();
  float* dst = cols.data_ptr<float>();
  const int64_t plane = g.height * g.width;
  // rows in masked AVX-512 registers where asked and the columns' stride
  // is 1
  [[maybe_unused]] const bool vectors = avx512 && g.sw == 1;
  at::parallel_for(
      0, batch * channels,
      std::max<int64_t>(1, kGrainElements / (area * pixels)),
      [&](int64_t begin, int64_t end) {
        for (int64_t bc = begin; bc < end; ++bc) {
          const float* in = src + bc * plane;
          for (int64_t i = 0; i < g.kh; ++i)
            for (int64_t j = 0; j < g.kw; ++j) {
              float* out = dst + (bc * area + i * g.kw + j) * pixels;
              const float r = scales ? scales[bc * area + i * g.kw + j] : 1.f;
              const auto [y0, y1] =
                  inside(g.out_h, g.height, g.sh, g.ph, i, g.dh);
              const auto [x0, x1] =
                  inside(g.out_w, g.width, g.sw, g.pw, j, g.dw);
#if defined(__x86_64__) && defined(__GNUC__)
              if (vectors) {
                unfold_position_avx512(
                    in + (i * g.dh - g.ph) * g.width - g.pw + j * g.dw,
                    g.sh * g.width, out, g.out_h, g.out_w, y0, y1, x0, x1,
                    r);
                continue;
              }
#endif
              std::fill_n(out, y0 * g.out_w, 0.f);
              for (int64_t oy = y0; oy < y1; ++oy) {
                float* row = out + oy * g.out_w;
                const float* line =
                    in + (oy * g.sh - g.ph + i * g.dh) * g.width - g.pw +
                    j * g.dw;
                std::fill_n(row, x0, 0.f);
                if (!scales && g.sw == 1)
                  std::copy(line + x0, line + x1, row + x0);
                else
                  for (int64_t ox = x0; ox < x1; ++ox)
                    row[ox] = line[ox * g.sw] * r;
                std::fill(row + x1, row + g.out_w, 0.f);
              }
              std::fill(out + y1 * g.out_w, out + pixels, 0.f);
            }
        }
      });
  return cols;
}

std::vector<at::Tensor> fold_columns(
    const at::Tensor& cols, int64_t height, int64_t width,
    at::IntArrayRef kernel_size, at::IntArrayRef dilation,
    at::IntArrayRef padding, at::IntArrayRef stride,
    const c10::optional<at::Tensor>& rows,
    const c10::optional<at::Tensor>& x, bool avx512) {
  // Any strides: the sample GEMMs' input gradient is a transposed view.
  TORCH_CHECK(cols.device().is_cpu() && cols.scalar_type() == at::kFloat &&
                  cols.dim() == 3,
              "dynconv_mm fold_columns: cols must be a float32 CPU tensor "
              "[B, C*kh*kw, P], got ",
              cols.sizes(), " ", cols.scalar_type(), " on ", cols.device());
  check_avx512_choice("fold_columns", "avx512", avx512);
  const Geometry g = checked_geometry("fold_columns", height, width,
                                      kernel_size, dilation, padding, stride);
  const int64_t area = g.kh * g.kw;
  TORCH_CHECK(cols.size(1) % area == 0, "dynconv_mm fold_columns: ",
              "kernel_size ", kernel_size, " does not divide the columns' ",
              cols.size(1), " rows");
  const int64_t channels = cols.size(1) / area;
  TORCH_CHECK(g.out_h * g.out_w == cols.size(2), "dynconv_mm fold_columns: ",
              cols.size(2), " columns, but a ", height, "x", width,
              " input unfolds into ", g.out_h, "x", g.out_w);
  const int64_t batch = cols.size(0);
  const float* scales =
      checked_rows("fold_columns", rows, batch, channels, area);
  // Given the input, the gradient of the row scales too:
  // grad_r[b, c, s] = sum_p grad_cols[b, c, s, p] unfold(x)[b, c, s, p].
  const float* input = nullptr;
  at::Tensor grad_rows;
  if (x) {
    check_float_cpu_shape("fold_columns", "x", *x,
                          {batch, channels, height, width});
    input = x->data_ptr<float>();
    grad_rows = at::empty({batch, channels, area}, cols.options().memory_format(
                                                       at::MemoryFormat::Contiguous));
  }
  at::Tensor grad_x = at::empty({batch, channels, height, width},
                                cols.options().memory_format(
                                    at::MemoryFormat::Contiguous));
  const float* src = cols.data_ptr<float>();
  const int64_t sb = cols.stride(0), sj = cols.stride(1),
                sp = cols.stride(2);
  float* dst = grad_x.data_ptr<float>();
  float* dst_rows = x ? grad_rows.data_ptr<float>() : nullptr;
#if defined(__x86_64__) && defined(__GNUC__)
  if (avx512 && (sj == 1 || sp == 1)) {
    // 16 channels of a sample at a time
    const int64_t blocks = (channels + 15) / 16, plane = height * width;
    at::parallel_for(
        0, batch * blocks,
        std::max<int64_t>(1, kGrainElements / (16 * area * g.out_h * g.out_w)),
        [&](int64_t begin, int64_t end) {
          FoldBuffers buf(plane, area, scales != nullptr, input != nullptr);
          for (int64_t u = begin; u < end; ++u) {
            const int64_t b = u / blocks, c0 = u % blocks * 16;
            const int64_t lanes = std::min<int64_t>(16, channels - c0);
            const int64_t bc = b * channels + c0;
            fold_pixels_avx512(src + b * sb + c0 * area * sj, sj, sp, g,
                               lanes,
                               scales ? scales + bc * area : nullptr,
                               input ? input + bc * plane : nullptr, buf);
            channels_first_avx512(buf.acc.data(), plane, lanes,
                                  dst + bc * plane);
            if (dst_rows)  // (a few floats: a block's stores would run past)
              for (int64_t l = 0; l < lanes; ++l)
                for (int64_t s = 0; s < area; ++s)
                  dst_rows[(bc + l) * area + s] = buf.grad_scales[s * 16 + l];
          }
        });
    if (x) return {grad_x, grad_rows};
    return {grad_x};
  }
#endif
  at::parallel_for(
      0, batch * channels,
      std::max<int64_t>(1, kGrainElements / (area * height * width)),
      [&](int64_t begin, int64_t end) {
        for (int64_t bc = begin; bc < end; ++bc) {
          const int64_t b = bc / channels, c = bc % channels;
          const float* base = src + b * sb + c * area * sj;
          float* out = dst + bc * height * width;
          const float* plane = input ? input + bc * height * width : nullptr;
          std::fill_n(out, height * width, 0.f);
          // Each column adds to one input element: in this order every
          // element's terms are summed by kernel position, as col2im does.
          for (int64_t i = 0; i < g.kh; ++i)
            for (int64_t j = 0; j < g.kw; ++j) {
              const int64_t s = i * g.kw + j;
              const float* column = base + s * sj;
              const float r = scales ? scales[bc * area + s] : 1.f;
              const auto [y0, y1] =
                  inside(g.out_h, height, g.sh, g.ph, i, g.dh);
              const auto [x0, x1] =
                  inside(g.out_w, width, g.sw, g.pw, j, g.dw);
              float grad_r = 0.f;
              // (last to first, as fold_pixels_avx512 sums grad_r)
              for (int64_t oy = y1 - 1; oy >= y0; --oy) {
                const int64_t at = (oy * g.sh - g.ph + i * g.dh) * width -
                                   g.pw + j * g.dw;
                float* row = out + at;
                const float* in = column + oy * g.out_w * sp;
                for (int64_t ox = x1 - 1; ox >= x0; --ox) {
                  const float v = in[ox * sp];
                  row[ox * g.sw] += scales ? v * r : v;
                  if (plane) grad_r += v * plane[at + ox * g.sw];
                }
              }
              if (dst_rows) dst_rows[bc * area + s] = grad_r;
            }
        }
      });
  if (x) return {grad_x, grad_rows};
  return {grad_x};
}

}  // namespace dynconv_mm
