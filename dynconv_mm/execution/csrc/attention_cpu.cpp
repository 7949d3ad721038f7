// The attention MLP of the three papers at inference on a CPU, as one op:
// pool -> FC [-> eval BatchNorm] -> ReLU -> heads / tau -> sigmoid/softmax.
//
// Eager PyTorch runs it as eight to ten small ops per layer; at batch 1 each
// costs 10-15 us inside a network, several times its arithmetic, so the
// 48 attentions of OD-ResNet-50 cost it 8-10 points of the static network's
// latency (docs/benchmarks.md). Here the pooled vector and the hidden layer
// never leave this function. No autograd: the Python side calls it only
// where none is recorded.
#include "cpu_ops.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace dynconv_mm {

DYNCONV_MM_VECTOR_CLONES
float dot(const float* a, const float* b, int64_t n) {
  float acc = 0.f;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}
namespace {

DYNCONV_MM_VECTOR_CLONES
float row_sum(const float* row, int64_t n) {
  float acc = 0.f;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += row[i];
  return acc;
}

// out[j] = (bias[j] + w[j, :] . v) for j < rows; w row-major [rows, n].
void affine(const float* w, const float* bias, const float* v, int64_t rows,
            int64_t n, float* out) {
  at::parallel_for(0, rows, std::max<int64_t>(1, kGrainElements / n),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t j = begin; j < end; ++j)
                       out[j] = dot(w + j * n, v, n) + (bias ? bias[j] : 0.f);
                   });
}

void check_vector(const char* name, const c10::optional<at::Tensor>& t,
                  int64_t size) {
  if (t.has_value())
    check_float_cpu_shape("attention_heads", name, *t, {size});
}

}  // namespace

// Every head's activated output, [B, width] each, in `widths`' order: the
// first `num_sigmoid` outputs (whole heads) take a sigmoid, each later head
// a softmax over its width. The trunk's norm, if given, is a BatchNorm in
// eval mode (running statistics; affine parameters optional).
std::vector<at::Tensor> attention_heads(
    const at::Tensor& x, const at::Tensor& trunk_weight,
    const c10::optional<at::Tensor>& trunk_bias,
    const c10::optional<at::Tensor>& norm_mean,
    const c10::optional<at::Tensor>& norm_var,
    const c10::optional<at::Tensor>& norm_weight,
    const c10::optional<at::Tensor>& norm_bias, double norm_eps,
    const at::Tensor& heads_weight, const at::Tensor& heads_bias,
    const at::Tensor& temperature, int64_t num_sigmoid,
    std::vector<int64_t> widths) {
  check_float_cpu("attention_heads", "x", x, x.dim() == 4, "[B, C, H, W]");
  const int64_t batch = x.size(0), channels = x.size(1);
  const int64_t area = x.size(2) * x.size(3);
  const int64_t hidden = trunk_weight.size(0);
  int64_t total = 0;
  for (int64_t w : widths) {
    TORCH_CHECK(w > 0, "dynconv_mm attention_heads: head widths must be "
                "positive, got ", widths);
    total += w;
  }
  check_float_cpu_shape("attention_heads", "trunk_weight", trunk_weight,
                        {hidden, channels});
  check_vector("trunk_bias", trunk_bias, hidden);
  check_float_cpu_shape("attention_heads", "heads_weight", heads_weight,
                        {total, hidden});
  check_float_cpu_shape("attention_heads", "heads_bias", heads_bias, {total});
  TORCH_CHECK(norm_mean.has_value() == norm_var.has_value(),
              "dynconv_mm attention_heads: give both norm_mean and norm_var "
              "or neither");
  check_vector("norm_mean", norm_mean, hidden);
  check_vector("norm_var", norm_var, hidden);
  check_vector("norm_weight", norm_weight, hidden);
  check_vector("norm_bias", norm_bias, hidden);
  // Read where it lies (a layer's buffer): no conversion, no dispatch.
  TORCH_CHECK(temperature.device().is_cpu() && temperature.numel() == 1 &&
                  (temperature.scalar_type() == at::kFloat ||
                   temperature.scalar_type() == at::kDouble),
              "dynconv_mm attention_heads: temperature must be a float32 or "
              "float64 CPU tensor of one value, got ",
              temperature.sizes(), " ", temperature.scalar_type(), " on ",
              temperature.device());
  const double tau = temperature.scalar_type() == at::kFloat
                         ? static_cast<double>(*temperature.data_ptr<float>())
                         : *temperature.data_ptr<double>();
  TORCH_CHECK(tau > 0, "dynconv_mm attention_heads: temperature must be > 0, "
              "got ", tau);
  TORCH_CHECK(num_sigmoid >= 0 && num_sigmoid <= total,
              "dynconv_mm attention_heads: num_sigmoid=", num_sigmoid,
              " is outside [0, ", total, "]");
  TORCH_CHECK(area > 0, "dynconv_mm attention_heads: x has no pixels to "
              "pool: ", x.sizes());

  at::Tensor out = at::empty({batch, total}, x.options());
  if (batch == 0) return out.split_with_sizes(widths, 1);

  // Pooling: one pass over x, the two threads splitting its rows.
  std::vector<float> pooled(batch * channels);
  const float* xs = x.data_ptr<float>();
  const float inv_area = 1.f / static_cast<float>(area);
  at::parallel_for(0, batch * channels,
                   std::max<int64_t>(1, kGrainElements / area),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t r = begin; r < end; ++r)
                       pooled[r] = row_sum(xs + r * area, area) * inv_area;
                   });

  const float* mean = data_or_null(norm_mean);
  const float* var = data_or_null(norm_var);
  const float* gamma = data_or_null(norm_weight);
  const float* beta = data_or_null(norm_bias);
  const float inv_tau = static_cast<float>(1.0 / tau);
  std::vector<float> h(hidden);
  float* outs = out.data_ptr<float>();
  for (int64_t b = 0; b < batch; ++b) {
    affine(trunk_weight.data_ptr<float>(), data_or_null(trunk_bias),
           pooled.data() + b * channels, hidden, channels, h.data());
    for (int64_t j = 0; j < hidden; ++j) {
      float v = h[j];
      if (mean) {
        v = (v - mean[j]) / std::sqrt(var[j] + static_cast<float>(norm_eps));
        if (gamma) v *= gamma[j];
        if (beta) v += beta[j];
      }
      h[j] = v > 0.f ? v : 0.f;
    }
    float* z = outs + b * total;
    affine(heads_weight.data_ptr<float>(), heads_bias.data_ptr<float>(),
           h.data(), total, hidden, z);
    for (int64_t j = 0; j < num_sigmoid; ++j)
      z[j] = 1.f / (1.f + std::exp(-z[j] * inv_tau));
    // The heads after the sigmoid ones: a softmax each.
    int64_t start = 0;
    for (int64_t w : widths) {
      if (start >= num_sigmoid) {
        float top = z[start] * inv_tau;
        for (int64_t i = 1; i < w; ++i)
          top = std::max(top, z[start + i] * inv_tau);
        float sum = 0.f;
        for (int64_t i = 0; i < w; ++i) {
          z[start + i] = std::exp(z[start + i] * inv_tau - top);
          sum += z[start + i];
        }
        for (int64_t i = 0; i < w; ++i) z[start + i] /= sum;
      }
      start += w;
    }
  }
  return out.split_with_sizes(widths, 1);
}

}  // namespace dynconv_mm
