"""Per-sample kernels, and the scaled or unfolded input of the static-bank
forms, are formed again in backward instead of kept
(recompute.StagesRecomputedInBackward): what autograd keeps,
higher derivatives, autocast, and refusal after an in-place change. First
derivatives of every formulation against the oracle are in
test_dynamic_conv2d.py (they run through the same path)."""
import pytest
import torch

from dynconv_mm.execution import ConvAttentions, dynamic_conv2d, recompute
from oracle import reference_dynamic_conv2d
from test_dynamic_conv2d import CPU_FORMULATIONS, make_case, runs

PER_SAMPLE = ('aggregated', 'batch_folded')
# forms per-sample kernels tile by tile, in forward and again in backward
# (tiled_gemm_conv2d.py; test_tiled_gemm.py checks its tiles)
RECOMPUTING = PER_SAMPLE + ('tiled_gemm', )
# form their scaled (and unfolded) input again in backward
SCALED_INPUT = ('im2col', 'kernel_branches', 'tiled_gemm')


def keep_every_stage(monkeypatch):
    """Turn the recomputation off: every stage is saved, as plain autograd
    would."""
    monkeypatch.setattr(recompute, 'recomputed_in_backward',
                        lambda form, sources, use: use(form([])))


def saved_bytes(run) -> int:
    """Bytes of the distinct storages autograd keeps for backward."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = run()
    return out, sum(storages.values())


def large_kernel_case(attention):
    """Kernels far larger than the activations: 4 samples of a 32 -> 32
    3x3 bank on 3x3 maps (one batch of kernels: 295 KB in float64)."""
    torch.manual_seed(0)
    kernel_attention = 'kernel' in attention
    num_kernels = 4 if kernel_attention else 1
    x = torch.randn(4, 32, 3, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(num_kernels, 32, 32, 3, 3, dtype=torch.float64,
                         requires_grad=True)
    if attention == 'dynet_kernel':  # DyNet's [B, O, K] only
        return x, weight, ConvAttentions(kernel=torch.rand(
            4, 32, num_kernels, dtype=torch.float64, requires_grad=True))
    att = dict(spatial=torch.rand(4, 3, 3, dtype=torch.float64),
               input=torch.rand(4, 32, dtype=torch.float64),
               output=torch.rand(4, 32, dtype=torch.float64))
    if kernel_attention:
        att['kernel'] = torch.rand(4, num_kernels, dtype=torch.float64)
    att = {k: v.requires_grad_() for k, v in att.items()}
    return x, weight, ConvAttentions(**att)


def check_no_kernel_sized_tensor_is_kept(attention, conv, method):
    """``conv(x, weight, attentions)`` keeps neither the per-sample kernels
    nor their like for backward, and its gradients are the oracle's."""
    x, weight, att = large_kernel_case(attention)
    one_batch_of_kernels = 4 * weight[0].numel() * 8
    out, kept = saved_bytes(lambda: conv(x, weight, att))
    # Kept: the bank (a parameter), the input, the small attentions and
    # activation-sized products; not the per-sample kernels. tiled_gemm
    # also keeps the 3x3 unfolded input, before and after its scaling.
    activations = 6 + (2 * 9 if method == 'tiled_gemm' else 0)
    bank_and_activations = (weight.numel() + activations * x.numel()) * 8 \
        + 4096
    assert kept < bank_and_activations < one_batch_of_kernels + \
        weight.numel() * 8, (kept, one_batch_of_kernels)
    # and backward still gives the oracle's gradients
    ref = reference_dynamic_conv2d(x, weight, padding=1,
                                   **{k: v for k, v in att._asdict().items()
                                      if v is not None})
    inputs = [x, weight] + [t for t in att if t is not None]
    got = torch.autograd.grad(out.square().sum(), inputs)
    want = torch.autograd.grad(ref.square().sum(), inputs)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize('method', RECOMPUTING)
@pytest.mark.parametrize('attention',
                         ['odconv_4x_kernel', 'odconv_1x', 'dynet_kernel'])
def test_no_kernel_sized_tensor_is_kept(method, attention):
    check_no_kernel_sized_tensor_is_kept(
        attention, lambda x, weight, att: dynamic_conv2d(
            x, weight, att, padding=1, method=method), method)


# Not tiled_gemm: a compiled graph traces its tile loop, and the
# partitioner keeps the forward's kernel tiles for backward rather than
# forming them again; 'auto' does not pick it under torch.compile.
@pytest.mark.parametrize('method', PER_SAMPLE)
@pytest.mark.parametrize('attention', ['odconv_4x_kernel', 'odconv_1x'])
def test_compiled_training_keeps_no_kernel_sized_tensor(method, attention):
    """Saved-tensor hooks do not reach the tensors a compiled graph saves
    (its partitioner decides those); without the checkpointed mixing, the
    compiled form kept every sample's kernel (a 256-channel 3x3 ODConv 4x
    layer at 14x14, batch 8: 49.7 MB saved against 13.7 MB eager)."""
    torch._dynamo.reset()

    def conv(x, weight, att):
        return dynamic_conv2d(x, weight, att, padding=1, method=method)

    try:
        check_no_kernel_sized_tensor_is_kept(
            attention, torch.compile(conv, backend='aot_eager',
                                     fullgraph=True), method)
    finally:
        torch._dynamo.reset()


@pytest.mark.parametrize('method', RECOMPUTING + SCALED_INPUT[:2])
@pytest.mark.parametrize('attention', ['odconv_4x', 'dynet', 'odconv_1x'])
def test_second_derivatives_match_the_oracle(method, attention):
    """create_graph=True through re-formed kernels and columns."""
    if not runs(method, attention):
        pytest.skip(f'{method} cannot apply {attention}')
    x, weight, _, att, conv = make_case('plain3x3', attention, False)
    inputs = [x, weight] + list(att.values())

    def gradient_penalty(out):
        grad_x, = torch.autograd.grad(out.square().sum(), x,
                                      create_graph=True)
        return torch.autograd.grad(grad_x.square().sum(), inputs[1:])

    out = dynamic_conv2d(x, weight, ConvAttentions(**att), method=method,
                         **conv)
    ref = reference_dynamic_conv2d(x, weight, **att, **conv)
    for got, want in zip(gradient_penalty(out), gradient_penalty(ref)):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize('method', CPU_FORMULATIONS)
@pytest.mark.parametrize('attention', ['odconv_4x', 'channels_only'])
@pytest.mark.parametrize('changed', ['weight', 'x'])
def test_a_tensor_changed_before_backward_is_refused(method, attention,
                                                      changed):
    """As autograd refuses for what it saves (under saved-tensor hooks it
    no longer checks: the hooks do)."""
    if not runs(method, attention):
        pytest.skip(f'{method} cannot apply {attention}')
    if (changed, attention) == ('weight', 'channels_only') and \
            method in PER_SAMPLE:
        pytest.skip('the bank folded over the batch is a copy: backward '
                    'uses the one the forward convolved with')
    x, weight, _, att, conv = make_case('plain3x3', attention, False)
    out = dynamic_conv2d(x, weight, ConvAttentions(**att), method=method,
                         **conv)
    with torch.no_grad():
        # e.g. an optimizer step, or an in-place op on the layer's input
        (weight if changed == 'weight' else x).mul_(2)
    with pytest.raises(RuntimeError,
                       match='modified (in place|by an inplace)'):
        out.sum().backward()


@pytest.mark.parametrize('method,attention,staged', [
    ('im2col', 'odconv_1x', 2 * 9),  # unfolded, before and after scaling
    ('im2col', 'odconv_4x', 2 * 9),
    ('tiled_gemm', 'odconv_4x', 2 * 9),
    ('kernel_branches', 'channels_only', 1),  # the channel-scaled input
    ('kernel_branches', 'dynet', 0),  # nothing to form: nothing changes
])
def test_scaled_input_is_formed_again_in_backward(method, attention, staged,
                                                  monkeypatch):
    """The scaled or unfolded input (up to twice kh*kw times the input) is
    not kept; gradients stay the oracle's (test_dynamic_conv2d.py)."""
    x, weight, _, att, conv = make_case('plain3x3', attention, False)

    def run():
        return dynamic_conv2d(x, weight, ConvAttentions(**att),
                              method=method, **conv).sum()

    _, kept = saved_bytes(run)
    keep_every_stage(monkeypatch)
    _, kept_without = saved_bytes(run)
    assert kept_without - kept == staged * x.numel() * x.element_size()


@pytest.mark.parametrize('batch,formed_again', [(2, False), (4, True)])
def test_columns_smaller_than_the_bank_are_kept(batch, formed_again,
                                                monkeypatch):
    """Forming the columns again pays only where they outweigh the bank: a
    32-channel 3x3 layer on 3x3 maps has 2,592 column elements a sample
    against a 9,216-element bank."""
    x, weight, att = large_kernel_case('odconv_1x')
    x = x[:batch].detach().requires_grad_()
    att = ConvAttentions(*(None if t is None else t[:batch].detach()
                           .requires_grad_() for t in att))

    def run():
        return dynamic_conv2d(x, weight, att, padding=1,
                              method='im2col').sum()

    _, kept = saved_bytes(run)
    keep_every_stage(monkeypatch)
    _, kept_without = saved_bytes(run)
    assert (kept < kept_without) == formed_again


@pytest.mark.parametrize('method', SCALED_INPUT)
def test_stages_are_formed_again_under_the_forwards_autocast(
        method, monkeypatch):
    """bf16 forward, backward outside autocast: the columns formed again
    have the forward's dtype, so the gradients are those of keeping them."""
    x, weight, _, att, conv = make_case('plain3x3', 'odconv_4x', False)
    if method == 'kernel_branches':
        x, weight, _, att, conv = make_case('plain3x3', 'dynet', False)
        att['input'] = torch.rand(x.shape[:2], dtype=x.dtype,
                                  requires_grad=True)
    x, weight = x.float(), weight.float()
    att = {k: v.float() for k, v in att.items()}
    inputs = [x, weight] + list(att.values())

    def gradients():
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = dynamic_conv2d(x, weight, ConvAttentions(**att),
                                 method=method, **conv)
        return torch.autograd.grad(out.float().square().sum(), inputs)

    got = gradients()
    keep_every_stage(monkeypatch)
    for g, want in zip(got, gradients()):
        torch.testing.assert_close(g, want, rtol=0, atol=0)


@pytest.mark.parametrize('method', PER_SAMPLE)
@pytest.mark.parametrize('forward_amp,backward_amp', [
    (torch.bfloat16, None), (None, torch.bfloat16)])
def test_kernels_are_formed_again_under_the_forwards_autocast(
        method, forward_amp, backward_amp, monkeypatch):
    """Backward runs outside the forward's autocast (and maybe inside
    another): kernels formed again there must have the dtype of those the
    forward convolved with. Formed in float32 against a bf16 forward, a
    CUDA convolution's backward raised (OD-ResNet-50 4x on an H200) and
    the CPU's silently differentiated another function."""
    from dynconv_mm.execution import per_sample_kernels as module
    formed = []
    original = module.per_sample_kernels

    def spy(*args, **kwargs):
        kernels = original(*args, **kwargs)
        formed.append((torch.is_grad_enabled(), kernels.dtype))
        return kernels

    monkeypatch.setattr(module, 'per_sample_kernels', spy)
    x, weight, _, att, conv = make_case('plain3x3', 'odconv_4x', False)
    x, weight = x.float(), weight.float()
    att = {k: v.float() for k, v in att.items()}

    def amp(dtype):
        return torch.autocast('cpu', dtype=dtype or torch.bfloat16,
                              enabled=dtype is not None)

    with amp(forward_amp):
        out = dynamic_conv2d(x, weight, ConvAttentions(**att),
                             method=method, **conv)
    with amp(backward_amp):
        out.float().square().sum().backward()
    forward = [dtype for grad, dtype in formed if grad]
    again = [dtype for grad, dtype in formed if not grad]
    assert forward == [forward_amp or torch.float32]
    assert again == forward
