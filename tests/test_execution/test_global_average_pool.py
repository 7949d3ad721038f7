"""The attentions' pooling: ``x.mean`` over the map, with a gradient that
is the pooled one broadcast as a view (no activation-sized tensor)."""
import pytest
import torch

from dynconv_mm.execution.attentions import global_average_pool


@pytest.mark.parametrize('dtype,pooled_dtype', [
    (torch.float64, torch.float64), (torch.float32, torch.float32),
    (torch.bfloat16, torch.float32), (torch.float16, torch.float32)])
@pytest.mark.parametrize('shape', [(2, 3, 5, 7), (1, 4, 1, 1), (3, 2, 8, 1)])
def test_values_and_gradient_are_mean(dtype, pooled_dtype, shape):
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64).to(dtype).requires_grad_()
    weight = torch.randn(shape[:2], dtype=pooled_dtype)
    pooled = global_average_pool(x, pooled_dtype)
    expected = x.mean(dim=(2, 3), dtype=pooled_dtype)
    assert pooled.dtype == pooled_dtype
    torch.testing.assert_close(pooled, expected, rtol=0, atol=0)
    grad, = torch.autograd.grad((pooled * weight).sum(), x)
    expected_grad, = torch.autograd.grad((expected * weight).sum(), x)
    assert grad.dtype == dtype and grad.shape == x.shape
    torch.testing.assert_close(grad, expected_grad, rtol=0, atol=0)


def test_gradient_is_a_broadcast_view():
    """The point of the function: mean's own backward writes a new
    [B, C, H, W] tensor."""
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    grad, = torch.autograd.grad(global_average_pool(x, x.dtype).sum(), x)
    assert grad.stride()[2:] == (0, 0)


def test_added_to_another_gradient_of_the_input():
    """As in a layer: the input feeds its convolution and its attention."""
    torch.manual_seed(1)
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    conv = torch.randn(4, 3, 3, 3)
    head = torch.randn(3, 4)

    def loss(pool):
        y = torch.nn.functional.conv2d(x, conv, padding=1)
        return (y * (pool(x) @ head)[:, :, None, None]).square().sum()

    grad, = torch.autograd.grad(loss(lambda t: global_average_pool(
        t, t.dtype)), x)
    expected, = torch.autograd.grad(loss(lambda t: t.mean(dim=(2, 3))), x)
    torch.testing.assert_close(grad, expected)


def test_second_derivatives():
    x = torch.randn(2, 3, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda t: global_average_pool(t, t.dtype).square(), (x, ))
    assert torch.autograd.gradgradcheck(
        lambda t: global_average_pool(t, t.dtype).square(), (x, ))


def test_without_autograd_plain_mean():
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        pooled = global_average_pool(x.requires_grad_(), x.dtype)
    assert pooled.grad_fn is None
    torch.testing.assert_close(pooled, x.mean(dim=(2, 3)), rtol=0, atol=0)
