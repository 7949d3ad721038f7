// Samples' kernels on a CPU, in one pass over the bank [K, O, I_g, kh, kw]:
//
//   kernel[b,o,i,s] = f[b,o] c[b,g(o) I_g+i] a[b,s] sum_k m[b,o,k] W[k,o,i,s]
//
// with the kernel attention m ([B, K], or DyNet's [B, O, K]), the channel
// (c), spatial (a, s over kh * kw) and filter (f) attentions of ODConv, each
// optional, and g(o) the group of output channel o; and, for training, its
// gradients from the kernels' gradient in one more pass. Formed in PyTorch
// this is one op per kernel plus one per factor, each a pass over a
// kernel-sized tensor (a 512-channel 3x3 kernel is 9.4 MB: four kernels,
// four passes, several times the cache), and its backward as many again;
// here each output channel's row is mixed from the K kernels' rows read
// side by side (AVX2 and FMA), which the prefetchers stream faster than K
// rows one after another (on a Zen 3 VM 0.72-0.86x the time with four
// kernels), and scaled in cache before it is written, for every sample
// while the bank's rows are in cache.
#include "cpu_ops.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace dynconv_mm {
namespace {

// One call's bank and attentions (pointers null where absent).
struct KernelCall {
  const float* bank;  // [K, O, row]
  const float* m;     // [B, K], [B, O, K] (per_row), or null for K = 1
  const float* c;     // [B, groups * group_in]
  const float* a;     // [B, area]
  const float* f;     // [B, O]
  int64_t batch, num_kernels, out_channels, groups, group_out, group_in,
      area, row;
  bool per_row;

  float mixing(int64_t b, int64_t o, int64_t k) const {
    if (m == nullptr) return 1.f;
    return per_row ? m[(b * out_channels + o) * num_kernels + k]
                   : m[b * num_kernels + k];
  }
  const float* bank_row(int64_t k, int64_t o) const {
    return bank + (k * out_channels + o) * row;
  }
};

// The call of `op` for `batch` samples, its arguments checked.
KernelCall checked_call(const char* op, const at::Tensor& bank,
                        const c10::optional<at::Tensor>& mixing,
                        const c10::optional<at::Tensor>& channel,
                        const c10::optional<at::Tensor>& spatial,
                        const c10::optional<at::Tensor>& filter,
                        int64_t groups, int64_t batch) {
  TORCH_CHECK(avx2_fma_supported(), "dynconv_mm ", op,
              ": needs a CPU with AVX2 and FMA");
  check_float_cpu(op, "bank", bank, bank.dim() == 5,
                  "[K, C_out, C_in/groups, kh, kw]");
  const int64_t num_kernels = bank.size(0), out_channels = bank.size(1);
  const int64_t group_in = bank.size(2);
  const int64_t area = bank.size(3) * bank.size(4);
  TORCH_CHECK(groups >= 1 && out_channels % groups == 0, "dynconv_mm ", op,
              ": groups=", groups, " does not divide C_out=", out_channels);
  TORCH_CHECK(batch >= 1, "dynconv_mm ", op, ": batch=", batch,
              " must be at least 1");
  // [B, K] for one set of coefficients per sample, [B, O, K] for DyNet's
  // per output channel (any shape of those sizes); with one output channel
  // the two agree.
  bool per_row = false;
  if (mixing.has_value()) {
    per_row = mixing->numel() == batch * out_channels * num_kernels;
    check_float_cpu_values(op, "mixing", *mixing,
                           per_row ? batch * out_channels * num_kernels
                                   : batch * num_kernels);
  } else {
    TORCH_CHECK(num_kernels == 1, "dynconv_mm ", op, ": a bank of ",
                num_kernels, " kernels needs mixing coefficients");
  }
  if (channel.has_value())
    check_float_cpu_values(op, "channel", *channel,
                           batch * groups * group_in);
  if (spatial.has_value())
    check_float_cpu_values(op, "spatial", *spatial, batch * area);
  if (filter.has_value())
    check_float_cpu_values(op, "filter", *filter, batch * out_channels);
  return KernelCall{bank.data_ptr<float>(), data_or_null(mixing),
                    data_or_null(channel), data_or_null(spatial),
                    data_or_null(filter), batch, num_kernels, out_channels,
                    groups, out_channels / groups, group_in, area,
                    group_in * area, per_row};
}

// Each sample's channel x spatial factor for each group's rows,
// [B, groups, row] (empty without either attention): formed once, each
// row of a kernel is scaled by one of them.
std::vector<float> row_factors(const KernelCall& call) {
  return channel_spatial_factors(call.c, call.a, call.batch,
                                 call.groups * call.group_in, call.area);
}

DYNCONV_MM_VECTOR_CLONES
void scale_rows(float* out, const float* factor, float scale, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) out[j] *= factor[j] * scale;
}

// Row o of every sample's kernel, dst[b * dst_stride + 0:row] = e_b *
// sum_k coefficients[b * K + k] W[k, o] (e_b = e + b * e_stride, or ones
// where e is null). With AVX-512 each piece of the K bank rows is read
// once for all samples: sample by sample, each piece's K multiply-adds
// wait on one another (four kernels, 256 channels, batch 8: 1.55 ms
// against 0.75 for PyTorch's one matrix product without a factor).
void mix_samples(const KernelCall& call, bool wide, int64_t o,
                 const float* coefficients, const float* e, int64_t e_stride,
                 float* dst, int64_t dst_stride) {
  const int64_t K = call.num_kernels, row = call.row;
  const int64_t stride = call.out_channels * row;
  if (wide)
    return avx512_mix_rows(call.bank_row(0, o), stride, coefficients, K, e,
                           e_stride, call.batch, row, dst, dst_stride);
  for (int64_t b = 0; b < call.batch; ++b) {
    float* out = dst + b * dst_stride;
    mix_row(call.bank_row(0, o), stride, coefficients + b * K, K, row, out);
    if (e != nullptr) scale_rows(out, e + b * e_stride, 1.f, row);
  }
}

// Every sample's kernel, out [B, O, row] (`wide`: AVX-512's mixing).
void form_kernels(const KernelCall& call, bool wide, float* out) {
  const std::vector<float> factor = row_factors(call);
  const int64_t K = call.num_kernels, O = call.out_channels, row = call.row;
  const int64_t B = call.batch;
  at::parallel_for(
      0, O, std::max<int64_t>(1, kGrainElements / (K * row * B)),
      [&](int64_t begin, int64_t end) {
        std::vector<float> coefficients(B * K);  // the filter's folded in
        for (int64_t o = begin; o < end; ++o) {
          for (int64_t b = 0; b < B; ++b)
            for (int64_t k = 0; k < K; ++k)
              coefficients[b * K + k] =
                  call.mixing(b, o, k) *
                  (call.f == nullptr ? 1.f : call.f[b * O + o]);
          const float* e = factor.empty()
                               ? nullptr
                               : factor.data() + o / call.group_out * row;
          mix_samples(call, wide, o, coefficients.data(), e,
                      call.groups * row, out + o * row, O * row);
        }
      });
}

// For one row of one sample's kernel, from its gradient g and its mixed
// (unscaled) row `mixed`: the mixed row's gradient g_mixed = g F f, the
// factor's gradient added to g_factor (+= g f mixed), and the filter
// attention's, returned (sum g F mixed); F the row's factor (null: ones).
DYNCONV_MM_VECTOR_CLONES
float kernel_row_grads(const float* g, const float* factor, float f,
                       const float* mixed, float* g_mixed, float* g_factor,
                       int64_t n) {
  float g_f = 0.f;
  if (factor != nullptr) {
#pragma omp simd reduction(+ : g_f)
    for (int64_t j = 0; j < n; ++j) {
      const float scaled = g[j] * factor[j];
      g_mixed[j] = scaled * f;
      g_f += scaled * mixed[j];
      g_factor[j] += g[j] * f * mixed[j];
    }
  } else {
#pragma omp simd reduction(+ : g_f)
    for (int64_t j = 0; j < n; ++j) {
      g_mixed[j] = g[j] * f;
      g_f += g[j] * mixed[j];
    }
  }
  return g_f;
}

// A bank row w's share: its gradient g_w += coefficient g_mixed (g_w null:
// not wanted), and the coefficient's gradient, returned (<g_mixed, w>).
DYNCONV_MM_VECTOR_CLONES
float bank_row_grads(const float* w, float* g_w, const float* g_mixed,
                     float coefficient, int64_t n) {
  float dot = 0.f;
  if (g_w != nullptr) {
#pragma omp simd reduction(+ : dot)
    for (int64_t j = 0; j < n; ++j) {
      g_w[j] += coefficient * g_mixed[j];
      dot += g_mixed[j] * w[j];
    }
  } else {
#pragma omp simd reduction(+ : dot)
    for (int64_t j = 0; j < n; ++j) dot += g_mixed[j] * w[j];
  }
  return dot;
}

#if defined(__x86_64__) && defined(__GNUC__)
// bank_row_grads for S samples at once (AVX-512): g_w (+)= sum_s
// c[s * c_stride] g_mixed_s (`add`: added to g_w; g_w null: not wanted),
// and dots[s] = <g_mixed_s, w>, g_mixed_s = g_mixed + s * g_stride. One
// read of each piece of w and g_w for all samples, their dot products in
// S chains side by side (sample by sample, each row's sum was one chain of
// multiply-adds waiting on one another).
template <int S>
DYNCONV_MM_AVX512 void samples_bank_row_grads(
    const float* w, float* g_w, bool add, const float* g_mixed,
    int64_t g_stride, const float* c, int64_t c_stride, int64_t n,
    float* dots) {
  __m512 dot[S], coefficient[S];
  for (int s = 0; s < S; ++s) {
    dot[s] = _mm512_setzero_ps();
    coefficient[s] = _mm512_set1_ps(c[s * c_stride]);
  }
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 mask = first_lanes(n - j);
    const __m512 wv = _mm512_maskz_loadu_ps(mask, w + j);
    __m512 sum = g_w != nullptr && add ? _mm512_maskz_loadu_ps(mask, g_w + j)
                                       : _mm512_setzero_ps();
    for (int s = 0; s < S; ++s) {
      const __m512 gv =
          _mm512_maskz_loadu_ps(mask, g_mixed + s * g_stride + j);
      sum = _mm512_fmadd_ps(coefficient[s], gv, sum);
      dot[s] = _mm512_fmadd_ps(gv, wv, dot[s]);
    }
    if (g_w != nullptr) _mm512_mask_storeu_ps(g_w + j, mask, sum);
  }
  // (not _mm512_reduce_add_ps: GCC 12 warns, wrongly, inside it)
  alignas(64) float lanes[16];
  for (int s = 0; s < S; ++s) {
    _mm512_store_ps(lanes, dot[s]);
    float sum = 0.f;
    for (int i = 0; i < 16; ++i) sum += lanes[i];
    dots[s] = sum;
  }
}

// samples_bank_row_grads for 1-8 samples.
DYNCONV_MM_AVX512 void samples_bank_row_grads_for(
    int64_t samples, const float* w, float* g_w, bool add,
    const float* g_mixed, int64_t g_stride, const float* c, int64_t c_stride,
    int64_t n, float* dots) {
#define DYNCONV_MM_SAMPLES(S, kernel)                                        \
  case S:                                                                    \
    kernel<S>(w, g_w, add, g_mixed, g_stride, c, c_stride, n, dots);         \
    break;
  switch (samples) { DYNCONV_MM_COUNTS(DYNCONV_MM_SAMPLES,
                                       samples_bank_row_grads) }
#undef DYNCONV_MM_SAMPLES
}
#else  // never chosen: check_avx512_choice refuses `wide` off x86-64
void samples_bank_row_grads_for(int64_t, const float*, float*, bool,
                                const float*, int64_t, const float*, int64_t,
                                int64_t, float*) {
  TORCH_CHECK(false, "dynconv_mm sample_kernels_backward: needs x86-64");
}
#endif

// One factor's gradient from the factors' F' [B, channels, area]: the
// channel attention's (`per_channel`) sum_s F'[b, i, s] a[b, s], or the
// spatial attention's sum_i F'[b, i, s] c[b, i], `other` the other
// attention (null: ones); shaped as `like`.
at::Tensor factor_grad_share(const std::vector<float>& g_factor,
                             int64_t batch, int64_t channels, int64_t area,
                             const float* other, bool per_channel,
                             const at::Tensor& like) {
  const int64_t kept = per_channel ? channels : area;
  const int64_t summed = per_channel ? area : channels;
  at::Tensor grad = at::empty_like(like);
  float* out = grad.data_ptr<float>();
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t x = 0; x < kept; ++x) {
      float sum = 0.f;
      for (int64_t y = 0; y < summed; ++y) {
        const int64_t i = per_channel ? x : y, s = per_channel ? y : x;
        sum += g_factor[(b * channels + i) * area + s] *
               (other == nullptr ? 1.f : other[b * summed + y]);
      }
      out[b * kept + x] = sum;
    }
  return grad;
}

// Output channels are split into this many fixed ranges, each with its own
// partial sums of the shared gradients (the mixing's [B, K], the factors'):
// the same sums in the same order whatever the number of threads.
constexpr int64_t kGradientRanges = 8;

}  // namespace

std::vector<float> channel_spatial_factors(const float* c, const float* a,
                                           int64_t batch, int64_t channels,
                                           int64_t area) {
  if (c == nullptr && a == nullptr) return {};
  std::vector<float> factor(batch * channels * area);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < channels; ++i)
      for (int64_t s = 0; s < area; ++s)
        factor[(b * channels + i) * area + s] =
            (c == nullptr ? 1.f : c[b * channels + i]) *
            (a == nullptr ? 1.f : a[b * area + s]);
  return factor;
}

at::Tensor sample_kernel(const at::Tensor& bank,
                         const c10::optional<at::Tensor>& mixing,
                         const c10::optional<at::Tensor>& channel,
                         const c10::optional<at::Tensor>& spatial,
                         const c10::optional<at::Tensor>& filter,
                         int64_t groups) {
  const KernelCall call = checked_call("sample_kernel", bank, mixing, channel,
                                       spatial, filter, groups, 1);
  at::Tensor kernel = at::empty(
      {call.out_channels, call.group_in, bank.size(3), bank.size(4)},
      bank.options());
  // (at batch 1 as measured for batch-1 inference: sample by sample)
  form_kernels(call, false, kernel.data_ptr<float>());
  return kernel;
}

at::Tensor sample_kernels(const at::Tensor& bank,
                          const c10::optional<at::Tensor>& mixing,
                          const c10::optional<at::Tensor>& channel,
                          const c10::optional<at::Tensor>& spatial,
                          const c10::optional<at::Tensor>& filter,
                          int64_t groups, int64_t batch, bool wide) {
  const KernelCall call = checked_call("sample_kernels", bank, mixing,
                                       channel, spatial, filter, groups,
                                       batch);
  check_avx512_choice("sample_kernels", "wide", wide);
  at::Tensor kernels =
      at::empty({batch, call.out_channels, call.group_in, bank.size(3),
                 bank.size(4)},
                bank.options());
  form_kernels(call, wide, kernels.data_ptr<float>());
  return kernels;
}

std::vector<at::Tensor> sample_kernels_backward(
    const at::Tensor& grad, const at::Tensor& bank,
    const c10::optional<at::Tensor>& mixing,
    const c10::optional<at::Tensor>& channel,
    const c10::optional<at::Tensor>& spatial,
    const c10::optional<at::Tensor>& filter, int64_t groups, bool bank_grad,
    bool wide) {
  const char* op = "sample_kernels_backward";
  check_avx512_choice(op, "wide", wide);
  check_float_cpu(op, "grad", grad, grad.dim() == 5,
                  "[B, C_out, C_in/groups, kh, kw]");
  const KernelCall call = checked_call(op, bank, mixing, channel, spatial,
                                       filter, groups, grad.size(0));
  check_float_cpu_shape(op, "grad", grad,
                        {call.batch, call.out_channels, call.group_in,
                         bank.size(3), bank.size(4)});
  const int64_t B = call.batch, K = call.num_kernels, O = call.out_channels;
  const int64_t G = call.groups, row = call.row;
  const std::vector<float> factor = row_factors(call);
  const int64_t ranges = std::min(O, kGradientRanges);
  const bool shared_mixing = call.m != nullptr && !call.per_row;
  at::Tensor grad_bank = bank_grad ? at::empty_like(bank) : at::Tensor();
  at::Tensor grad_mixing =
      call.m == nullptr ? at::Tensor() : at::empty_like(*mixing);
  at::Tensor grad_filter =
      call.f == nullptr ? at::Tensor() : at::empty_like(*filter);
  // per range: the mixing's [B, K] and the factors' [B, G, row] sums
  std::vector<float> mixing_sums(shared_mixing ? ranges * B * K : 0, 0.f);
  std::vector<float> factor_sums(factor.empty() ? 0 : ranges * B * G * row,
                                 0.f);
  const float* g_all = grad.data_ptr<float>();
  float* g_bank = bank_grad ? grad_bank.data_ptr<float>() : nullptr;
  float* g_m = call.m == nullptr ? nullptr : grad_mixing.data_ptr<float>();
  float* g_f = call.f == nullptr ? nullptr : grad_filter.data_ptr<float>();
  at::parallel_for(0, ranges, 1, [&](int64_t begin, int64_t end) {
    // every sample's mixed row o, and its gradient
    std::vector<float> mixed(B * row), g_mixed(B * row), coefficients(B * K),
        dots(8);
    for (int64_t r = begin; r < end; ++r)
      for (int64_t o = r * O / ranges; o < (r + 1) * O / ranges; ++o) {
        const int64_t g = o / call.group_out;
        if (g_bank != nullptr && !wide)
          for (int64_t k = 0; k < K; ++k)
            std::fill_n(g_bank + (k * O + o) * row, row, 0.f);
        for (int64_t b = 0; b < B; ++b)
          for (int64_t k = 0; k < K; ++k)
            coefficients[b * K + k] = call.mixing(b, o, k);
        if (call.m != nullptr)
          mix_samples(call, wide, o, coefficients.data(), nullptr, 0,
                      mixed.data(), row);
        for (int64_t b = 0; b < B; ++b) {
          const float* m_row = call.m == nullptr ? call.bank_row(0, o)
                                                 : mixed.data() + b * row;
          const int64_t bg = (b * G + g) * row;
          const float grad_filter_value = kernel_row_grads(
              g_all + (b * O + o) * row,
              factor.empty() ? nullptr : factor.data() + bg,
              call.f == nullptr ? 1.f : call.f[b * O + o], m_row,
              g_mixed.data() + b * row,
              factor.empty() ? nullptr : factor_sums.data() + r * B * G * row +
                                             bg,
              row);
          if (g_f != nullptr) g_f[b * O + o] = grad_filter_value;
        }
        if (call.m == nullptr && g_bank == nullptr) continue;
        // the bank rows' gradients, and the mixing's
        auto take_dot = [&](int64_t b, int64_t k, float dot) {
          if (call.m == nullptr) return;
          if (call.per_row)
            g_m[(b * O + o) * K + k] = dot;
          else
            mixing_sums[(r * B + b) * K + k] += dot;
        };
        for (int64_t k = 0; k < K; ++k) {
          float* g_w =
              g_bank == nullptr ? nullptr : g_bank + (k * O + o) * row;
          if (!wide) {
            for (int64_t b = 0; b < B; ++b)
              take_dot(b, k, bank_row_grads(call.bank_row(k, o), g_w,
                                            g_mixed.data() + b * row,
                                            coefficients[b * K + k], row));
            continue;
          }
          for (int64_t b0 = 0; b0 < B; b0 += 8) {
            const int64_t samples = std::min<int64_t>(8, B - b0);
            samples_bank_row_grads_for(
                samples, call.bank_row(k, o), g_w, b0 > 0,
                g_mixed.data() + b0 * row, row,
                coefficients.data() + b0 * K + k, K, row, dots.data());
            for (int64_t s = 0; s < samples; ++s)
              take_dot(b0 + s, k, dots[s]);
          }
        }
      }
  });
  if (shared_mixing)
    for (int64_t i = 0; i < B * K; ++i) {
      float sum = 0.f;
      for (int64_t r = 0; r < ranges; ++r) sum += mixing_sums[r * B * K + i];
      g_m[i] = sum;
    }
  at::Tensor grad_channel, grad_spatial;
  if (!factor.empty()) {
    // the factors' gradient F'[b, i, s] (i over all groups' channels), then
    // the channel's sum_s F' a and the spatial's sum_i F' c
    const int64_t channels = G * call.group_in, area = call.area;
    std::vector<float> g_factor(B * G * row, 0.f);
    for (int64_t r = 0; r < ranges; ++r)
      for (int64_t i = 0; i < B * G * row; ++i)
        g_factor[i] += factor_sums[r * B * G * row + i];
    if (call.c != nullptr)
      grad_channel = factor_grad_share(g_factor, B, channels, area, call.a,
                                       true, *channel);
    if (call.a != nullptr)
      grad_spatial = factor_grad_share(g_factor, B, channels, area, call.c,
                                       false, *spatial);
  }
  return {grad_bank, grad_mixing, grad_channel, grad_spatial, grad_filter};
}

}  // namespace dynconv_mm
