// The Python module of dynconv_mm's compiled CPU ops; the Python side is
// dynconv_mm/execution/cpu_ops.py.
#include <torch/extension.h>

#include "cpu_ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("attention_heads", &dynconv_mm::attention_heads,
        "The attention MLP's activated heads at inference (CPU, float32)");
  m.def("sample_kernel", &dynconv_mm::sample_kernel,
        "One sample's kernel from the bank and its attentions, in one pass "
        "(CPU, float32)");
  m.def("sample_kernels", &dynconv_mm::sample_kernels,
        "Every sample's kernel from the bank and its attentions, in one pass "
        "(CPU, float32)");
  m.def("sample_kernels_backward", &dynconv_mm::sample_kernels_backward,
        "Their gradients from the kernels' gradient, in one pass (CPU, "
        "float32)");
  m.def("avx2_fma_supported", &dynconv_mm::avx2_fma_supported,
        "Whether this CPU runs the sample_kernel and sample_gemm ops (AVX2 and "
        "FMA)");
  m.def("sample_gemm_forward", &dynconv_mm::sample_gemm_forward,
        "tiled_gemm's per-sample GEMMs, kernels mixed in the tiles (CPU, "
        "float32)");
  m.def("sample_gemm_input_grad", &dynconv_mm::sample_gemm_input_grad,
        "Their input gradient, transposed (CPU, float32)");
  m.def("sample_gemm_backward", &dynconv_mm::sample_gemm_backward,
        "Their bank's and mixing's gradients, and if asked the input's (CPU, "
        "float32)");
  m.def("avx512_supported", &dynconv_mm::avx512_supported,
        "Whether this CPU runs the sample_conv op (AVX-512)");
  m.def("sample_conv", &dynconv_mm::sample_conv,
        "One sample's convolution, its kernel mixed in the GEMM's tiles "
        "(CPU, float32)");
  m.def("unfold_columns", &dynconv_mm::unfold_columns,
        "F.unfold, rows optionally scaled, samples and channels over threads "
        "(CPU, float32)",
        py::arg("x"), py::arg("kernel_size"), py::arg("dilation"),
        py::arg("padding"), py::arg("stride"), py::arg("rows") = py::none(),
        py::arg("avx512") = false);
  m.def("fold_columns", &dynconv_mm::fold_columns,
        "F.fold of columns of any strides, optionally scaled by rows, and "
        "given x the rows' gradient; channels over threads (CPU, float32)",
        py::arg("cols"), py::arg("height"), py::arg("width"),
        py::arg("kernel_size"), py::arg("dilation"), py::arg("padding"),
        py::arg("stride"), py::arg("rows") = py::none(),
        py::arg("x") = py::none(), py::arg("avx512") = false);
}
