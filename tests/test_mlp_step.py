from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autotune.fast import _onednn as onednn
from autotune.fast._mlp_step import mlp_step
from autotune.spec._config import TrainConfig
from autotune.training._fit import evaluate, fit
from autotune.training._models import Dropout, build_model

SHAPE = (1, 6, 6)
N_CLASSES = 5


def data(n: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, N_CLASSES, (n,), generator=g)
    x = torch.randn(n, *SHAPE, generator=g) + y.view(n, 1, 1, 1) * 0.3
    return x, y


X, Y = data(100, seed=0)
X_VAL, Y_VAL = data(40, seed=1)


class Plain(nn.Sequential):
    """The same layers and parameter names, but not a type `mlp_step` takes: autograd's step."""


def autograd_step(model: nn.Module, cfg: TrainConfig, x: Tensor, y: Tensor) -> Tensor:
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing)
    loss.backward()
    return loss.detach()


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_written_out_step_gives_autograds_loss_and_gradients(
    depth: int, dropout: float, label_smoothing: float
) -> None:
    cfg = TrainConfig(model="mlp", depth=depth, width=16, dropout=dropout,
                      label_smoothing=label_smoothing, seed=3)
    model = build_model(cfg, SHAPE, N_CLASSES)
    step = mlp_step(model, cfg)
    assert step is not None
    torch.manual_seed(7)  # the same dropout masks on both sides
    loss = step(X[:32], Y[:32])
    written = {name: p.grad.clone() for name, p in model.named_parameters()}
    torch.manual_seed(7)
    expected = autograd_step(model, cfg, X[:32], Y[:32])
    assert loss.requires_grad is False
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    for name, p in model.named_parameters():
        torch.testing.assert_close(written[name], p.grad, rtol=1e-5, atol=1e-7, msg=name)
        assert written[name].abs().sum() > 0, name  # every layer learns something


def test_written_out_step_overwrites_the_previous_gradients_instead_of_adding() -> None:
    cfg = TrainConfig(model="mlp", depth=2, width=8)
    model = build_model(cfg, SHAPE, N_CLASSES)
    step = mlp_step(model, cfg)
    assert step is not None
    step(X[:20], Y[:20])
    step(X[20:40], Y[20:40])
    written = [p.grad.clone() for p in model.parameters()]
    autograd_step(model, cfg, X[20:40], Y[20:40])
    for got, expected in zip(written, (p.grad for p in model.parameters()), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("changes", [
    {"optimizer": "adam", "dropout": 0.2},
    {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 1e-3, "grad_clip": 0.5},
    {"optimizer": "rmsprop", "depth": 3, "label_smoothing": 0.1, "schedule": "cosine"},
])
def test_fit_with_the_written_out_step_repeats_the_autograd_fit(changes: dict[str, object]
                                                                ) -> None:
    cfg = dataclasses.replace(TrainConfig(model="mlp", width=16, batch_size=32, max_epochs=3,
                                          lr=0.01, seed=5), **changes)  # type: ignore[arg-type]
    model = build_model(cfg, SHAPE, N_CLASSES)
    plain = Plain(*build_model(cfg, SHAPE, N_CLASSES))
    assert mlp_step(model, cfg) is not None and mlp_step(plain, cfg) is None
    written = fit(model, X, Y, X_VAL, Y_VAL, cfg)
    reference = fit(plain, X, Y, X_VAL, Y_VAL, cfg)
    for got, expected in zip(written.epochs, reference.epochs, strict=True):
        assert got.train_loss == pytest.approx(expected.train_loss, rel=1e-4)
        assert got.value == expected.value
    for (name, got), expected in zip(model.state_dict().items(), plain.state_dict().values(),
                                     strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=name)
    assert written.epochs[-1].train_loss < written.epochs[0].train_loss


def test_mlp_step_declines_what_it_was_not_written_for() -> None:
    mlp = TrainConfig(model="mlp", width=8)
    assert mlp_step(build_model(mlp, SHAPE, N_CLASSES), mlp) is not None
    cnn = TrainConfig(model="cnn", width=4, depth=1)
    assert mlp_step(build_model(cnn, SHAPE, N_CLASSES), cnn) is None
    for other in (dataclasses.replace(mlp, precision="bf16"),
                  dataclasses.replace(mlp, compile=True)):
        assert mlp_step(build_model(mlp, SHAPE, N_CLASSES), other) is None
    frozen = build_model(mlp, SHAPE, N_CLASSES)
    frozen[1].weight.requires_grad_(False)
    assert mlp_step(frozen, mlp) is None
    plain_dropout = build_model(dataclasses.replace(mlp, dropout=0.5), SHAPE, N_CLASSES)
    plain_dropout[3] = nn.Dropout(0.5)  # torch's own: another random stream
    assert mlp_step(plain_dropout, mlp) is None
    without_bias = nn.Sequential(nn.Flatten(), nn.Linear(36, 8, bias=False), nn.ReLU(),
                                 nn.Linear(8, N_CLASSES))
    assert mlp_step(without_bias, mlp) is None


def test_written_out_step_refuses_a_model_in_eval_mode() -> None:
    cfg = TrainConfig(model="mlp", width=8, dropout=0.5)
    model = build_model(cfg, SHAPE, N_CLASSES)
    step = mlp_step(model, cfg)
    assert step is not None
    model.eval()
    with pytest.raises(RuntimeError, match="model.train"):
        step(X[:4], Y[:4])


@pytest.mark.parametrize("depth", [1, 3])
def test_written_out_accuracy_is_evaluates_accuracy_in_eval_mode(depth: int) -> None:
    cfg = TrainConfig(model="mlp", depth=depth, width=16, dropout=0.4, batch_size=20,
                      max_epochs=2, lr=0.05, seed=2)
    model = build_model(cfg, SHAPE, N_CLASSES)
    fit(model, X, Y, X_VAL, Y_VAL, cfg)  # trained a little: not every answer the same
    step = mlp_step(model, cfg)
    assert step is not None
    model.train()
    for batch_size in (1024, 7):  # one chunk, and several with a partial last one
        expected = evaluate(model, X_VAL, Y_VAL, batch_size=batch_size)
        assert step.accuracy(X_VAL, Y_VAL, batch_size=batch_size) == expected
    assert 0.0 < expected < 1.0
    assert model.training  # left as it was
    with pytest.raises(ValueError, match="equally long"):
        step.accuracy(X_VAL, Y_VAL[:3])


@pytest.mark.parametrize("faster_here", [True, False])  # oneDNN's input layer, and MKL's
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_written_out_step_with_a_wide_input_layer_gives_autograds_gradients(
        dropout: float, faster_here: bool, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(onednn, "FASTER_HERE", faster_here)
    cfg = TrainConfig(model="mlp", depth=2, width=32, dropout=dropout, seed=4)
    model = build_model(cfg, (1, 28, 28), N_CLASSES)
    step = mlp_step(model, cfg)
    assert step is not None
    assert step.wide == [onednn.available() and faster_here, False, False]
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 1, 28, 28, generator=g), torch.randint(0, N_CLASSES, (64,), generator=g)
    torch.manual_seed(7)
    loss = step(x, y)
    written = {name: p.grad.clone() for name, p in model.named_parameters()}
    torch.manual_seed(7)
    expected = autograd_step(model, cfg, x, y)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for name, p in model.named_parameters():
        torch.testing.assert_close(written[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("faster_here", [True, False])
def test_written_out_accuracy_with_a_wide_input_layer_is_evaluates(
        faster_here: bool, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(onednn, "FASTER_HERE", faster_here)
    cfg = TrainConfig(model="mlp", depth=2, width=32, dropout=0.3, seed=4)
    model = build_model(cfg, (1, 28, 28), N_CLASSES)
    step = mlp_step(model, cfg)
    assert step is not None and step.wide[0] == (onednn.available() and faster_here)
    g = torch.Generator().manual_seed(2)
    y = torch.randint(0, N_CLASSES, (300,), generator=g)
    x = torch.randn(300, 1, 28, 28, generator=g) + y.view(-1, 1, 1, 1) * 0.05
    for batch_size in (1024, 128):  # one chunk, and several with a partial last one
        expected = evaluate(model, x, y, batch_size=batch_size)
        assert step.accuracy(x, y, batch_size=batch_size) == expected
    assert 0.0 < expected < 1.0


def test_mlp_step_declines_layers_with_different_dropout() -> None:
    cfg = TrainConfig(model="mlp", depth=2, width=8, dropout=0.2)
    model = build_model(cfg, SHAPE, N_CLASSES)
    model[6] = Dropout(0.4)  # build_mlp gives every hidden layer the same
    assert mlp_step(model, cfg) is None
