from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from autotune.spec._config import MODELS, TrainConfig
from autotune.training._models import MODEL_BUILDERS, build_model, count_parameters

DIGITS = (1, 8, 8)
MNIST = (1, 28, 28)


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("input_shape", [DIGITS, MNIST])
@pytest.mark.parametrize("model", MODELS)
def test_build_model_outputs_one_logit_per_class(
    model: str, input_shape: tuple[int, int, int], depth: int
) -> None:
    cfg = TrainConfig(model=model, width=8, depth=depth)
    net = build_model(cfg, input_shape, n_classes=10)
    for mode in (True, False):  # BatchNorm and Dropout behave differently in each mode
        net.train(mode)
        assert net(torch.randn(5, *input_shape)).shape == (5, 10)


@pytest.mark.parametrize("model", MODELS)
def test_build_model_gives_identical_weights_for_the_same_config(model: str) -> None:
    cfg = TrainConfig(model=model, width=8, seed=3)
    first = build_model(cfg, DIGITS, 3).state_dict()
    torch.manual_seed(12345)  # the caller's RNG state must not matter
    second = build_model(cfg, DIGITS, 3).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("model", MODELS)
def test_build_model_gives_different_weights_for_another_seed(model: str) -> None:
    cfg = TrainConfig(model=model, width=8, seed=0)
    first = build_model(cfg, DIGITS, 3).state_dict()
    second = build_model(dataclasses.replace(cfg, seed=1), DIGITS, 3).state_dict()
    assert not all(torch.equal(first[k], second[k]) for k in first)


def test_count_parameters_counts_weights_and_biases_of_mlp() -> None:
    net = build_model(TrainConfig(model="mlp", width=4, depth=1), DIGITS, 3)
    assert count_parameters(net) == (64 * 4 + 4) + (4 * 3 + 3)


def test_count_parameters_excludes_batchnorm_running_statistics() -> None:
    net = build_model(TrainConfig(model="cnn", width=4, depth=1), DIGITS, 3)
    conv, batchnorm = 1 * 4 * 3 * 3, 2 * 4  # conv has no bias
    fc_units = 128  # 8x8 input pooled once: 4 channels x 4 x 4 features into the head
    head = (4 * 4 * 4 * fc_units + fc_units) + (fc_units * 3 + 3)
    assert count_parameters(net) == conv + batchnorm + head


def test_count_parameters_skips_frozen_parameters() -> None:
    net = build_model(TrainConfig(model="mlp", width=4, depth=1), DIGITS, 3)
    hidden = next(m for m in net.modules() if isinstance(m, nn.Linear))
    for p in hidden.parameters():
        p.requires_grad_(False)
    assert count_parameters(net) == 4 * 3 + 3


def test_cnn_doubles_channels_in_each_block() -> None:
    net = build_model(TrainConfig(model="cnn", width=8, depth=3), MNIST, 10)
    channels = [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert channels == [8, 16, 32]


def test_cnn_stops_pooling_before_the_map_drops_below_2x2() -> None:
    net = build_model(TrainConfig(model="cnn", width=4, depth=3), DIGITS, 10)
    # 8x8 → 4x4 → 2x2, then no third pool
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 2


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("dropout", [0.0, 0.25])
def test_dropout_layers_exist_only_when_dropout_is_positive(model: str, dropout: float) -> None:
    cfg = TrainConfig(model=model, width=8, depth=2, dropout=dropout)
    layers = [m for m in build_model(cfg, DIGITS, 3).modules() if isinstance(m, nn.Dropout)]
    assert bool(layers) == (dropout > 0)
    assert all(m.p == dropout for m in layers)


def test_mlp_has_one_dropout_after_each_hidden_layer() -> None:
    net = build_model(TrainConfig(model="mlp", depth=3, width=8, dropout=0.5), DIGITS, 3)
    assert sum(isinstance(m, nn.Dropout) for m in net.modules()) == 3


def test_model_registry_matches_the_models_config_accepts() -> None:
    assert sorted(MODEL_BUILDERS) == sorted(MODELS)


def test_build_model_rejects_an_unknown_model_and_lists_the_available_ones() -> None:
    cfg = TrainConfig()
    # TrainConfig refuses unknown names itself; bypass it to reach the registry's own guard
    object.__setattr__(cfg, "model", "resnet")
    with pytest.raises(ValueError, match="unknown model 'resnet'; available: cnn, mlp"):
        build_model(cfg, DIGITS, 3)


def test_cnn_without_batch_norm_has_no_batchnorm_and_conv_biases_instead() -> None:
    plain = build_model(TrainConfig(model="cnn", width=8, depth=2, batch_norm=False), MNIST, 10)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert all(m.bias is not None for m in plain.modules() if isinstance(m, nn.Conv2d))
    assert plain(torch.randn(3, *MNIST)).shape == (3, 10)
    normed = build_model(TrainConfig(model="cnn", width=8, depth=2), MNIST, 10)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in normed.modules()) == 2
    assert all(m.bias is None for m in normed.modules() if isinstance(m, nn.Conv2d))


def test_cnn_head_has_fc_units_hidden_units() -> None:
    net = build_model(TrainConfig(model="cnn", width=8, depth=2, fc_units=40), MNIST, 10)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16 * 7 * 7, 40), (40, 10)]


def test_dropout_keeps_each_value_with_probability_1_minus_p_and_rescales_it():
    from autotune.training._models import Dropout

    layer = Dropout(0.3)
    x = torch.ones(400, 500, requires_grad=True)
    torch.manual_seed(0)
    out = layer(x)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.005  # 200,000 draws: sd ~0.001
    assert torch.allclose(out[kept], torch.full_like(out[kept], 1 / 0.7))
    out.sum().backward()  # the gradient flows through the kept values only, scaled alike
    assert x.grad is not None and torch.equal(x.grad, out.detach())
    torch.manual_seed(0)
    assert torch.equal(layer(x), out)  # the global RNG decides: seeded runs repeat
    layer.eval()
    assert layer(x) is x


def test_dropout_matches_torch_dropout_in_distribution_across_rates():
    from autotune.training._models import Dropout

    x = torch.randn(300, 300)
    for p in (0.1, 0.5, 0.9):
        ours, theirs = Dropout(p)(x), nn.Dropout(p)(x)
        assert abs((ours == 0).float().mean() - (theirs == 0).float().mean()) < 0.01
        assert torch.allclose(ours[ours != 0], x[ours != 0] / (1 - p))


def test_keep_scales_draws_for_several_layers_what_one_call_per_layer_draws():
    from autotune.training._models import keep_scales

    numels = [6, 128, 33, 5]  # lanes left over in a word (6, 33, 5) are skipped alike
    torch.manual_seed(3)
    together = keep_scales(numels, 0.25)
    torch.manual_seed(3)
    apart = [keep_scales([n], 0.25)[0] for n in numels]
    for a, b, n in zip(together, apart, numels, strict=True):
        assert a.shape == (n,) and torch.equal(a, b)


@pytest.mark.parametrize("p", [0.05, 0.5, 0.93])
def test_keep_scales_keeps_with_probability_1_minus_p_and_scales_by_its_inverse(p: float):
    from autotune.training._models import keep_scales

    torch.manual_seed(0)
    (scales,) = keep_scales([400_000], p)
    kept = scales != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.003  # sd <= 0.0008
    assert torch.equal(scales[kept], torch.full_like(scales[kept], 1 / (1 - p)))
    assert set(scales[~kept].tolist()) == {0.0}


@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.999])
def test_keep_scales_keeps_exactly_the_values_whose_16_bit_lane_reaches_the_threshold(p: float):
    from autotune.training._models import keep_scales

    torch.manual_seed(5)
    (scales,) = keep_scales([1001], p)
    torch.manual_seed(5)  # the same draw, read by hand: 4 lanes of 16 bits per 64-bit word
    words = torch.empty(251, dtype=torch.int64).random_(-(2**63), None)
    lanes = words.view(torch.int16)[:1001].long() + 32768  # u in [0, 65536)
    expected = (lanes >= round(p * 65536)).float() / (1 - p)
    assert torch.equal(scales, expected)
