// One sample's kernel at batch-1 inference on a CPU, in one pass over the
// bank [K, O, I_g, kh, kw]:
//
//   kernel[o,i,s] = f[o] * c[g(o) I_g + i] * a[s] * sum_k m[o,k] W[k,o,i,s]
//
// with the kernel attention m ([K], or DyNet's [O, K]), the channel (c),
// spatial (a, s over kh * kw) and filter (f) attentions of ODConv, each
// optional, and g(o) the group of output channel o. Formed in PyTorch this
// is one op per kernel plus one per factor, each a pass over a kernel-sized
// tensor (a 512-channel 3x3 kernel is 9.4 MB: four kernels, four passes,
// several times the cache); here each output channel's row is mixed from
// the K kernels' rows read side by side (AVX2 and FMA), which the
// prefetchers stream faster than K rows one after another (on a Zen 3 VM
// 0.72-0.86x the time with four kernels), and scaled in cache before it
// is written.
#include "cpu_ops.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace dynconv_mm {
namespace {

DYNCONV_MM_VECTOR_CLONES
void scale_rows(float* out, const float* factor, float scale, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) out[j] *= factor[j] * scale;
}

}  // namespace

at::Tensor sample_kernel(const at::Tensor& bank,
                         const c10::optional<at::Tensor>& mixing,
                         const c10::optional<at::Tensor>& channel,
                         const c10::optional<at::Tensor>& spatial,
                         const c10::optional<at::Tensor>& filter,
                         int64_t groups) {
  TORCH_CHECK(avx2_fma_supported(),
              "dynconv_mm sample_kernel: needs a CPU with AVX2 and FMA");
  check_float_cpu("sample_kernel", "bank", bank, bank.dim() == 5,
                  "[K, C_out, C_in/groups, kh, kw]");
  const int64_t num_kernels = bank.size(0), out_channels = bank.size(1);
  const int64_t group_in = bank.size(2);
  const int64_t area = bank.size(3) * bank.size(4);
  const int64_t row = group_in * area;
  TORCH_CHECK(groups >= 1 && out_channels % groups == 0,
              "dynconv_mm sample_kernel: groups=", groups,
              " does not divide C_out=", out_channels);
  const int64_t group_out = out_channels / groups;
  // [K] (or [1, K]) for one set of coefficients, [O, K] (or [1, O, K]) for
  // DyNet's per output channel; with one output channel the two agree.
  bool per_channel_mixing = false;
  if (mixing.has_value()) {
    per_channel_mixing = mixing->numel() == out_channels * num_kernels;
    check_float_cpu_values(
        "sample_kernel", "mixing", *mixing,
        per_channel_mixing ? out_channels * num_kernels : num_kernels);
  } else {
    TORCH_CHECK(num_kernels == 1, "dynconv_mm sample_kernel: a bank of ",
                num_kernels, " kernels needs mixing coefficients");
  }
  if (channel.has_value())
    check_float_cpu_values("sample_kernel", "channel", *channel,
                           groups * group_in);
  if (spatial.has_value())
    check_float_cpu_values("sample_kernel", "spatial", *spatial, area);
  if (filter.has_value())
    check_float_cpu_values("sample_kernel", "filter", *filter, out_channels);

  at::Tensor kernel = at::empty({out_channels, group_in, bank.size(3),
                                 bank.size(4)}, bank.options());
  const float* w = bank.data_ptr<float>();
  const float* m = mixing.has_value() ? mixing->data_ptr<float>() : nullptr;
  const float* c = channel.has_value() ? channel->data_ptr<float>() : nullptr;
  const float* a = spatial.has_value() ? spatial->data_ptr<float>() : nullptr;
  const float* f = filter.has_value() ? filter->data_ptr<float>() : nullptr;
  float* out = kernel.data_ptr<float>();
  const bool has_factor = c != nullptr || a != nullptr;

  at::parallel_for(
      0, out_channels,
      std::max<int64_t>(1, kGrainElements / (num_kernels * row)),
      [&](int64_t begin, int64_t end) {
        // The channel-spatial factor of the current group, [I_g * kh * kw].
        std::vector<float> factor(has_factor ? row : 0);
        int64_t factor_group = -1;
        std::vector<float> coefficients(num_kernels);
        for (int64_t o = begin; o < end; ++o) {
          float* dst = out + o * row;
          for (int64_t k = 0; k < num_kernels; ++k)
            coefficients[k] =
                m == nullptr ? 1.f
                             : (per_channel_mixing ? m[o * num_kernels + k]
                                                   : m[k]);
          mix_row(w + o * row, out_channels * row, coefficients.data(),
                  num_kernels, row, dst);
          const float scale = f == nullptr ? 1.f : f[o];
          if (has_factor) {
            const int64_t g = o / group_out;
            if (g != factor_group) {
              for (int64_t i = 0; i < group_in; ++i)
                for (int64_t s = 0; s < area; ++s)
                  factor[i * area + s] =
                      (c == nullptr ? 1.f : c[g * group_in + i]) *
                      (a == nullptr ? 1.f : a[s]);
              factor_group = g;
            }
            scale_rows(dst, factor.data(), scale, row);
          } else if (f != nullptr) {
            for (int64_t j = 0; j < row; ++j) dst[j] *= scale;
          }
        }
      });
  return kernel;
}

}  // namespace dynconv_mm
