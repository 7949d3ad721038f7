"""The fused Triton kernels (convolution and attention MLP) compile for an
H100 (sm_90) without one: Triton ships ``ptxas``, so each kernel is
compiled ahead of time to a cubin on the CPU machine. The interpreter (``test_triton_conv2d.py``) checks what the
kernels compute; this checks that the GPU compiler accepts them, for the
dtypes and attention combinations the layers launch."""
import pytest

triton = pytest.importorskip('triton')
tl = pytest.importorskip('triton.language')
try:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
except ImportError:  # an older Triton without this API
    pytest.skip('no ahead-of-time compile API in this Triton',
                allow_module_level=True)

from dynconv_mm.execution import triton_conv2d  # noqa: E402

H100 = GPUTarget('cuda', 90, 32)
# What each pointer points to, by dtype case: the activations, the bank and
# their gradients in the compute dtype; attentions and the kernel's own
# accumulation buffers in float32 (float64 for float64 inputs).
ACTIVATIONS = {'x_ptr', 'w_ptr', 'y_ptr', 'gy_ptr', 'gx_ptr'}
DTYPES = {
    'fp32': ('fp32', 'fp32', tl.float32, False, 'tf32'),
    'bf16': ('bf16', 'fp32', tl.float32, True, 'ieee'),
    'fp16': ('fp16', 'fp32', tl.float32, True, 'ieee'),  # mmengine's AMP
    'fp64': ('fp64', 'fp64', tl.float64, False, 'ieee'),
}
# (dtype, KERNEL_MODE, NUM_KERNELS, spatial, input, output, kh)
CASES = [
    ('fp32', 1, 4, True, True, True, 3),  # ODConv 4x
    ('bf16', 2, 6, False, False, False, 3),  # DyNet under bf16 autocast
    ('fp16', 1, 4, True, True, True, 3),  # ODConv 4x under fp16 autocast
    ('fp32', 0, 1, False, True, True, 1),  # ODConv 1x, 1x1 kernel
    ('fp64', 1, 4, True, True, True, 3),
]
KERNELS = {
    'forward': (triton_conv2d._dynamic_conv2d_fwd,
                dict(HAS_BIAS=True, BLOCK_M=64, BLOCK_N=64, BLOCK_K=32)),
    'input_grad': (triton_conv2d._dynamic_conv2d_bwd_input,
                   dict(BLOCK_M=64, BLOCK_N=64, BLOCK_O=32)),
    'weight_grads': (triton_conv2d._dynamic_conv2d_bwd_weight,
                     dict(BLOCK_M=32, BLOCK_N=64, BLOCK_K=32)),
}


def compile_for_h100(kernel, constexprs: dict, pointer_type) -> object:
    """Compile ``kernel`` to an sm_90 cubin; ``pointer_type(name)`` is the
    Triton type of an argument that is not a constexpr (``'*fp32'``,
    ``'i32'``...)."""
    names = kernel.arg_names
    signature = {
        name: 'constexpr' if name in constexprs else pointer_type(name)
        for name in names
    }
    source = ASTSource(
        fn=kernel, signature=signature,
        constexprs={(names.index(k), ): v for k, v in constexprs.items()})
    compiled = triton.compile(source, target=H100)
    assert compiled.asm['cubin']  # machine code for sm_90
    # an H100 SM has 228 KiB of shared memory
    assert compiled.metadata.shared <= 228 * 1024
    return compiled


@pytest.mark.parametrize('case', CASES, ids=lambda c: '-'.join(map(str, c)))
@pytest.mark.parametrize('name', list(KERNELS))
def test_kernel_compiles_for_h100(name, case):
    dtype, mode, num_kernels, spatial, channel, output, kh = case
    tensor, other, acc, dot_in_input, precision = DTYPES[dtype]
    kernel, blocks = KERNELS[name]
    constexprs = dict(
        KH=kh, KW=kh, NUM_KERNELS=num_kernels, KERNEL_MODE=mode,
        HAS_SPATIAL=spatial, HAS_INPUT=channel, HAS_OUTPUT=output, ACC=acc,
        DOT_IN_INPUT_DTYPE=dot_in_input, PRECISION=precision, **blocks)
    compile_for_h100(
        kernel, constexprs, lambda name: '*' + (
            tensor if name in ACTIVATIONS else other)
        if name.endswith('_ptr') else 'i32')


# The fused attention MLP: ODConv's four heads (a softmax over K among
# sigmoids), DyNet's single wide sigmoid head with a hidden layer of 512.
ATTENTION_CASES = {
    'odconv': (128, [(64, False), (64, False), (9, False), (4, True)]),
    'dynet': (512, [(3072, False)]),
}


@pytest.mark.parametrize('case', list(ATTENTION_CASES))
@pytest.mark.parametrize('direction', ['forward', 'backward'])
def test_attention_kernel_compiles_for_h100(direction, case):
    import torch

    from dynconv_mm.execution import triton_attention
    hidden, heads = ATTENTION_CASES[case]
    pooled = torch.empty(2, 2048)
    settings = triton_attention._settings(pooled, hidden, heads)
    if direction == 'forward':
        kernel = triton_attention._attention_mlp_fwd
        settings['HAS_B1'] = True
    else:
        kernel = triton_attention._attention_mlp_bwd
    compile_for_h100(
        kernel, settings, lambda name: 'i32'
        if name in ('B', 'C', 'HIDDEN') else '*fp32')
