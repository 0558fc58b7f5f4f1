from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from autotune.fast import _onednn as onednn

pytestmark = pytest.mark.skipif(not onednn.available(), reason="torch built without oneDNN")


def tensors(n_in: int, n_out: int, seed: int = 0):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(32, n_in, generator=g)
    weight = torch.randn(n_out, n_in, generator=g) / n_in**0.5
    bias = torch.randn(n_out, generator=g)
    grad = torch.randn(32, n_out, generator=g)
    return x, weight, bias, grad


@pytest.fixture
def faster_here(monkeypatch):  # type: ignore[no-untyped-def]
    """oneDNN's products taken as on a CPU with AVX-512, whatever this one has: they run (and
    must be right) on any x86 CPU."""
    monkeypatch.setattr(onednn, "FASTER_HERE", True)


def test_without_avx512_every_layer_keeps_mkl(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(onednn, "FASTER_HERE", False)
    assert not onednn.wide(torch.empty(128, 784))


@pytest.mark.usefixtures("faster_here")
def test_only_wide_float32_cpu_layers_take_onednn() -> None:
    assert onednn.wide(torch.empty(128, 784))
    assert onednn.wide(torch.empty(10, onednn.WIDE_IN_FEATURES))
    assert not onednn.wide(torch.empty(128, 128))
    assert not onednn.wide(torch.empty(128, 784, dtype=torch.float64))


@pytest.mark.usefixtures("faster_here")
@pytest.mark.parametrize("n_in", [24, 784])  # MKL's path and oneDNN's
@pytest.mark.parametrize("relu", [False, True])
def test_the_three_products_are_a_linear_layers_forward_and_gradients(n_in: int, relu: bool
                                                                      ) -> None:
    x, weight, bias, grad = tensors(n_in, 16)
    wide = onednn.wide(weight)
    assert wide == (n_in == 784)
    expected = F.linear(x, weight, bias)
    torch.testing.assert_close(onednn.linear(x, weight, bias, wide, relu=relu),
                               expected.relu() if relu else expected)
    torch.testing.assert_close(onednn.linear(x, weight, None, wide), x @ weight.t())
    torch.testing.assert_close(onednn.grad_weight(grad, x, wide), grad.t() @ x)
    out = torch.empty(16, n_in)
    got = onednn.grad_weight(grad, x, wide, out=out)
    torch.testing.assert_close(got, grad.t() @ x)
    assert (got is out) == (not wide)  # MKL writes into the buffer it is given
    torch.testing.assert_close(onednn.grad_input(grad, weight, wide), grad @ weight)
    torch.testing.assert_close(onednn.grad_input(grad, weight, wide, scale=1.25),
                               1.25 * grad @ weight)


def test_wide_linear_gives_f_linears_output_and_gradients() -> None:
    x, weight, bias, grad = tensors(784, 16, seed=1)
    ours = [t.clone().requires_grad_() for t in (x, weight, bias)]
    theirs = [t.clone().requires_grad_() for t in (x, weight, bias)]
    out = onednn.WideLinear.apply(*ours)
    expected = F.linear(*theirs)
    torch.testing.assert_close(out, expected)
    out.backward(grad)
    expected.backward(grad)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.usefixtures("faster_here")
def test_a_build_without_the_op_sends_every_product_to_mkl(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(onednn, "_linear_pointwise", None)
    assert not onednn.available() and not onednn.wide(torch.empty(128, 784))
