"""Multiply-accumulates of single ATen operators, and the operators that
cost nothing by the counting convention (see :mod:`.complexity`).

Every operator the counter meets outside a module with its own formula falls
in exactly one of three groups:

* :data:`MAC_OPS` -- products with weights or between tensors
  (convolutions, matrix products, attention), counted by a formula here;
  average pooling and ``mean`` count one addition per input element;
* zero by convention (:func:`is_zero_cost_op`) -- elementwise arithmetic,
  activations, normalisation, max-type reductions, interpolation, copies,
  views, indexing and tensor creation: not multiply-accumulates, the way the
  papers' tables (and fvcore/mmengine) leave them out; they are still listed
  by name and call count in the report;
* anything else -- reported as *uncounted* (an error by default), never
  silently taken as 0. The same holds for calls into mmcv's compiled ops
  (:data:`ZERO_COST_COMPILED_OPS` lists the free ones).
"""
import math
from typing import Callable, Dict, Sequence

import torch
from torch import Tensor


def op_name(func: torch._ops.OpOverload) -> str:
    """``'aten.convolution'`` for ``torch.ops.aten.convolution.default``."""
    return f'{func.namespace}.{func.overloadpacket.__name__}'


def _numel(shape: Sequence[int]) -> int:
    return math.prod(int(size) for size in shape)


def _convolution(args: tuple, output: Tensor) -> int:
    # aten.convolution(input, weight, bias, stride, padding, dilation,
    #                  transposed, output_padding, groups)
    x, weight, transposed = args[0], args[1], args[6]
    # weight is [C_out, C_in/g, k...] (or [C_in, C_out/g, k...] transposed):
    # every output (input, when transposed) element takes one product per
    # weight of a filter.
    per_element = _numel(weight.shape[1:])
    return (x.numel() if transposed else output.numel()) * per_element


def _mm(args: tuple, output: Tensor) -> int:
    a, b = args[0], args[1]
    return a.shape[0] * a.shape[1] * b.shape[1]


def _addmm(args: tuple, output: Tensor) -> int:
    return _mm(args[1:], output)


def _bmm(args: tuple, output: Tensor) -> int:
    a, b = args[0], args[1]
    return a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]


def _baddbmm(args: tuple, output: Tensor) -> int:
    return _bmm(args[1:], output)


def _mv(args: tuple, output: Tensor) -> int:
    return args[0].numel()


def _addmv(args: tuple, output: Tensor) -> int:
    return args[1].numel()


def _dot(args: tuple, output: Tensor) -> int:
    return args[0].numel()


def _sdpa(args: tuple, output) -> int:
    # query [..., L, E], key [..., S, E], value [..., S, Ev]:
    # Q K^T then softmax(.) V.
    query, key, value = args[0], args[1], args[2]
    batch = _numel(query.shape[:-2])
    length, embed = query.shape[-2], query.shape[-1]
    return batch * length * key.shape[-2] * (embed + value.shape[-1])


def _input_numel(args: tuple, output) -> int:
    """Average pooling / mean: one addition per input element (the scaling
    by 1/n is one multiply per output, negligible and not counted)."""
    return args[0].numel()


MacFormula = Callable[[tuple, object], int]

#: Operators counted by a formula, by :func:`op_name`.
MAC_OPS: Dict[str, MacFormula] = {
    'aten.convolution': _convolution,
    'aten._convolution': _convolution,
    'aten.mm': _mm,
    'aten.addmm': _addmm,
    'aten.bmm': _bmm,
    'aten.baddbmm': _baddbmm,
    'aten.mv': _mv,
    'aten.addmv': _addmv,
    'aten.dot': _dot,
    'aten.vdot': _dot,
    'aten._scaled_dot_product_attention_math': _sdpa,
    'aten._scaled_dot_product_flash_attention': _sdpa,
    'aten._scaled_dot_product_flash_attention_for_cpu': _sdpa,
    'aten._scaled_dot_product_efficient_attention': _sdpa,
    'aten._scaled_dot_product_cudnn_attention': _sdpa,
    'aten.mean': _input_numel,
    'aten.avg_pool1d': _input_numel,
    'aten.avg_pool2d': _input_numel,
    'aten.avg_pool3d': _input_numel,
    'aten.adaptive_avg_pool1d': _input_numel,
    'aten.adaptive_avg_pool2d': _input_numel,
    'aten.adaptive_avg_pool3d': _input_numel,
    'aten._adaptive_avg_pool2d': _input_numel,
    'aten._adaptive_avg_pool3d': _input_numel,
}

#: Operators that are not multiply-accumulates by the convention, beyond
#: those torch tags ``pointwise`` and the views (see :func:`is_zero_cost_op`).
ZERO_COST_OPS = frozenset({
    # normalisation (folds into the preceding conv at inference) and the
    # softmax / log-softmax activations
    'aten.native_batch_norm', 'aten._native_batch_norm_legit',
    'aten._native_batch_norm_legit_no_training', 'aten.batch_norm',
    'aten.native_group_norm', 'aten.native_layer_norm', 'aten.group_norm',
    'aten.layer_norm', 'aten.instance_norm', 'aten._softmax',
    'aten._log_softmax', 'aten.softmax', 'aten.log_softmax',
    'aten._safe_softmax', 'aten.hardswish', 'aten.hardsigmoid',
    # ReLU6 (MobileNetV2); torch < 2.14 does not tag it pointwise
    'aten.hardtanh',
    'aten.prelu', 'aten._prelu_kernel', 'aten.glu',
    # max-type and other reductions, sorting, selection
    'aten.max_pool1d', 'aten.max_pool2d', 'aten.max_pool3d',
    'aten.max_pool2d_with_indices', 'aten.max_pool3d_with_indices',
    'aten.adaptive_max_pool1d', 'aten.adaptive_max_pool2d',
    'aten.adaptive_max_pool3d', 'aten.max', 'aten.min', 'aten.amax',
    'aten.amin', 'aten.aminmax', 'aten.argmax', 'aten.argmin', 'aten.sum',
    'aten.prod', 'aten.cumsum', 'aten.cumprod', 'aten.any', 'aten.all',
    'aten.topk', 'aten.sort', 'aten.argsort', 'aten.unique',
    'aten._unique2', 'aten.unique_consecutive', 'aten.nonzero',
    'aten.nonzero_static', 'aten.count_nonzero', 'aten.var', 'aten.std',
    'aten.var_mean', 'aten.norm', 'aten.linalg_vector_norm', 'aten.kthvalue',
    'aten.median', 'aten.mode', 'aten.bincount', 'aten.histc',
    'aten.searchsorted', 'aten.bucketize',
    # interpolation, padding, resampling
    'aten.upsample_nearest1d', 'aten.upsample_nearest2d',
    'aten.upsample_nearest3d', 'aten._upsample_nearest_exact2d',
    'aten.upsample_bilinear2d', 'aten._upsample_bilinear2d_aa',
    'aten.upsample_bicubic2d', 'aten.upsample_linear1d',
    'aten.upsample_trilinear3d', 'aten.grid_sampler_2d', 'aten.grid_sampler',
    'aten.constant_pad_nd', 'aten.reflection_pad1d', 'aten.reflection_pad2d',
    'aten.replication_pad1d', 'aten.replication_pad2d', 'aten.pad',
    'aten.pixel_shuffle', 'aten.pixel_unshuffle', 'aten.im2col',
    'aten.col2im', 'aten.roll', 'aten.flip', 'aten.rot90',
    # creation, copies, shape and indexing
    'aten.empty', 'aten.empty_like', 'aten.empty_strided', 'aten.zeros',
    'aten.zeros_like', 'aten.ones', 'aten.ones_like', 'aten.full',
    'aten.full_like', 'aten.scalar_tensor', 'aten.arange', 'aten.linspace',
    'aten.logspace', 'aten.eye', 'aten.new_empty', 'aten.new_empty_strided',
    'aten.new_zeros', 'aten.new_ones', 'aten.new_full', 'aten.rand',
    'aten.rand_like', 'aten.randn', 'aten.randn_like', 'aten.randint',
    'aten.randperm', 'aten.uniform_', 'aten.normal_', 'aten.bernoulli',
    'aten.bernoulli_', 'aten.native_dropout', 'aten.dropout',
    'aten.clone', 'aten.copy_', 'aten.copy', 'aten._to_copy',
    'aten.contiguous', 'aten.lift_fresh', 'aten.lift_fresh_copy',
    'aten.detach', 'aten.alias', 'aten.cat', 'aten.stack', 'aten.split',
    'aten.split_with_sizes', 'aten.chunk', 'aten.unbind', 'aten.repeat',
    'aten.repeat_interleave', 'aten.tile', 'aten.index', 'aten.index_put',
    'aten.index_put_', 'aten._index_put_impl_', 'aten.index_select',
    'aten.index_add', 'aten.index_add_', 'aten.index_copy',
    'aten.index_fill', 'aten.index_fill_', 'aten.gather', 'aten.scatter',
    'aten.scatter_', 'aten.scatter_add', 'aten.scatter_add_',
    'aten.scatter_reduce', 'aten.masked_fill', 'aten.masked_fill_',
    'aten.masked_scatter', 'aten.masked_select', 'aten.take',
    'aten.put_', 'aten.fill', 'aten.fill_', 'aten.zero_', 'aten.tril',
    'aten.triu', 'aten.tril_indices', 'aten.triu_indices', 'aten.diag',
    'aten.diag_embed', 'aten.flatten', 'aten.reshape', 'aten.meshgrid',
    'aten.one_hot', 'aten.embedding', 'aten.resize_', 'aten.set_',
    'aten.item', 'aten._local_scalar_dense', 'aten.equal', 'aten.is_nonzero',
    'aten.allclose', 'aten.isin', 'aten._unsafe_view', 'aten.sym_size',
    'aten.sym_numel',
    'aten.sym_stride', 'aten.sym_storage_offset', 'aten._assert_async',
    'aten._assert_tensor_metadata', 'aten._functional_assert_async',
    'aten.record_stream', 'aten.to',
})

#: Compiled mmcv ops (invisible to the dispatcher) that are not
#: multiply-accumulates: suppression, IoUs, and sampling / pooling of RoIs
#: (bilinear sampling is interpolation, not counted, as for upsampling).
ZERO_COST_COMPILED_OPS = frozenset(
    f'mmcv._ext.{name}' for name in (
        'nms', 'softnms', 'nms_match', 'nms_rotated', 'nms_quadri',
        'bbox_overlaps', 'box_iou_rotated', 'box_iou_quadri',
        'roi_align_forward', 'roi_align_rotated_forward',
        'riroi_align_rotated_forward', 'roi_pool_forward',
        'prroi_pool_forward', 'deform_roi_pool_forward', 'psamask_forward',
        'get_compiler_version', 'get_compiling_cuda_version'))


def is_zero_cost_op(func: torch._ops.OpOverload) -> bool:
    """Whether ``func`` is free by the convention: tagged pointwise by torch
    (elementwise arithmetic, activations, comparisons), a view, or listed in
    :data:`ZERO_COST_OPS`."""
    if torch.Tag.pointwise in func.tags or func.is_view:
        return True
    if torch.Tag.inplace_view in func.tags:
        return True
    name = op_name(func)
    # In-place variants (``aten.hardswish_``) cost what their op costs.
    return name in ZERO_COST_OPS or name.rstrip('_') in ZERO_COST_OPS
