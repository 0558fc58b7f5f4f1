from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from autotune.errors import Diverged, UsageError
from autotune.fast._malloc import keep_freed_memory
from autotune.spec._config import OPTIMIZERS, TrainConfig
from autotune.training._fit import (
    OPTIMIZER_FACTORIES,
    EpochResult,
    FitResult,
    batches,
    build_optimizer,
    build_scheduler,
    compile_model,
    evaluate,
    fit,
    n_batches_per_epoch,
    resolve_device,
    wants_channels_last,
)
from autotune.training._models import build_model

N_CLASSES = 3


def make_textures(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """A linearly separable 3-class problem of shape (n, 1, 8, 8): noisy stripes or checks.

    The three ±1 patterns (horizontal stripes, vertical stripes, checkerboard) are orthogonal,
    so a linear template match separates them; 3x3 convolutions see them too.
    """
    rows = torch.arange(8).view(8, 1).expand(8, 8)
    cols = rows.T
    patterns = torch.stack([rows % 2, cols % 2, (rows + cols) % 2]).float() * 2 - 1
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, N_CLASSES, (n,), generator=g)
    x = patterns[y].unsqueeze(1) + 0.5 * torch.randn(n, 1, 8, 8, generator=g)
    return x, y


X_TRAIN, Y_TRAIN = make_textures(300, seed=0)  # 300 = 4 full batches of 64 + one of 44
X_VAL, Y_VAL = make_textures(150, seed=1)


def fit_textures(
    cfg: TrainConfig, on_epoch: Callable[[EpochResult], None] | None = None
) -> FitResult:
    model = build_model(cfg, (1, 8, 8), N_CLASSES)
    return fit(model, X_TRAIN, Y_TRAIN, X_VAL, Y_VAL, cfg, on_epoch)


def a_model() -> torch.nn.Module:
    return build_model(TrainConfig(width=4, depth=1), (1, 8, 8), N_CLASSES)


# name → (torch class, hyperparameters expected in param_groups[0])
EXPECTED_OPTIMIZERS: dict[str, tuple[type[torch.optim.Optimizer], dict[str, object]]] = {
    "sgd": (torch.optim.SGD, {"momentum": 0.8, "nesterov": True}),
    "adam": (torch.optim.Adam, {"betas": (0.8, 0.95)}),
    "adamw": (torch.optim.AdamW, {"betas": (0.8, 0.95)}),
    "nadam": (torch.optim.NAdam, {"betas": (0.8, 0.95)}),
    "rmsprop": (torch.optim.RMSprop, {"momentum": 0.8}),
    "adadelta": (torch.optim.Adadelta, {}),
}


def test_optimizer_registry_matches_the_optimizers_config_accepts() -> None:
    assert sorted(OPTIMIZER_FACTORIES) == sorted(OPTIMIZERS) == sorted(EXPECTED_OPTIMIZERS)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_build_optimizer_makes_the_named_torch_class_with_the_config_hyperparameters(
    name: str,
) -> None:
    cfg = TrainConfig(
        optimizer=name,
        lr=0.03,
        momentum=0.8,
        nesterov=True,
        beta1=0.8,
        beta2=0.95,
        weight_decay=1e-3,
    )
    optimizer = build_optimizer(a_model().parameters(), cfg)
    torch_class, expected = EXPECTED_OPTIMIZERS[name]
    assert type(optimizer) is torch_class
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.03
    assert group["weight_decay"] == 1e-3
    for key, value in expected.items():
        assert group[key] == value, key


def test_build_optimizer_turns_nesterov_off_when_momentum_is_zero() -> None:
    cfg = TrainConfig(optimizer="sgd", momentum=0.0, nesterov=True)
    optimizer = build_optimizer(a_model().parameters(), cfg)
    assert optimizer.param_groups[0]["nesterov"] is False


def test_build_optimizer_keeps_adamw_weight_decay_at_the_configured_zero() -> None:
    # torch's AdamW defaults to weight_decay=0.01; the config's 0.0 must win
    optimizer = build_optimizer(a_model().parameters(), TrainConfig(optimizer="adamw"))
    assert optimizer.param_groups[0]["weight_decay"] == 0.0


def test_build_scheduler_multiplies_the_learning_rate_by_decay_rate_per_step() -> None:
    cfg = TrainConfig(lr=0.1, decay_rate=0.5)
    optimizer = build_optimizer(a_model().parameters(), cfg)
    scheduler = build_scheduler(optimizer, cfg)
    lrs = []
    for _ in range(3):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.1, 0.05, 0.025])


def test_evaluate_returns_accuracy_and_restores_training_mode() -> None:
    model = a_model().train()
    with torch.no_grad():
        predicted = model.eval()(X_VAL).argmax(dim=1)
    model.train()
    expected = (predicted == Y_VAL).float().mean().item()
    assert evaluate(model, X_VAL, Y_VAL, batch_size=64) == pytest.approx(expected)
    assert model.training


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_fit_learns_a_separable_problem_in_a_few_epochs(model: str) -> None:
    cfg = TrainConfig(model=model, optimizer="adam", lr=0.01, width=16, depth=1, max_epochs=4)
    result = fit_textures(cfg)
    assert result.best_value > 0.9
    assert result.epochs[-1].train_loss < result.epochs[0].train_loss


def test_fit_calls_on_epoch_once_per_epoch_in_order() -> None:
    seen: list[EpochResult] = []
    result = fit_textures(TrainConfig(width=8, max_epochs=3), on_epoch=seen.append)
    assert [e.epoch for e in seen] == [1, 2, 3]
    assert seen == result.epochs


def test_fit_reports_the_learning_rate_used_in_each_epoch() -> None:
    result = fit_textures(TrainConfig(width=8, lr=0.2, decay_rate=0.5, max_epochs=3))
    assert [e.lr for e in result.epochs] == pytest.approx([0.2, 0.1, 0.05])
    # decay by 1.0 keeps the rate (that schedule is not stepped at all)
    result = fit_textures(TrainConfig(width=8, lr=0.2, decay_rate=1.0, max_epochs=3))
    assert [e.lr for e in result.epochs] == [0.2, 0.2, 0.2]


def test_fit_lets_an_exception_from_on_epoch_propagate_and_stops_training() -> None:
    class Stop(Exception):
        pass

    seen: list[int] = []

    def stop_at_epoch_2(result: EpochResult) -> None:
        seen.append(result.epoch)
        if result.epoch == 2:
            raise Stop("pruned")

    with pytest.raises(Stop, match="pruned"):
        fit_textures(TrainConfig(width=8, max_epochs=5), on_epoch=stop_at_epoch_2)
    assert seen == [1, 2]


def test_fit_raises_diverged_when_loss_becomes_nan() -> None:
    cfg = TrainConfig(optimizer="sgd", lr=1e10, width=8, max_epochs=3)
    with pytest.raises(
        Diverged, match=r"loss became (nan|inf) in epoch 1 \(lr=1e\+10, optimizer=sgd\)"
    ):
        fit_textures(cfg)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_fit_gives_identical_results_for_the_same_config(model: str) -> None:
    cfg = TrainConfig(
        model=model, width=8, depth=2, dropout=0.3, lr=0.05, momentum=0.9, max_epochs=3, seed=7
    )
    first, second = fit_textures(cfg), fit_textures(cfg)
    assert [e.value for e in first.epochs] == [e.value for e in second.epochs]
    assert [e.train_loss for e in first.epochs] == [e.train_loss for e in second.epochs]


def test_fit_differs_for_another_seed() -> None:
    cfg = TrainConfig(width=8, dropout=0.3, max_epochs=2, seed=0)
    first = fit_textures(cfg)
    second = fit_textures(dataclasses.replace(cfg, seed=1))
    assert [e.train_loss for e in first.epochs] != [e.train_loss for e in second.epochs]


def test_fit_summary_is_consistent_with_its_epochs() -> None:
    result = fit_textures(TrainConfig(width=8, max_epochs=4))
    accuracies = [e.value for e in result.epochs]
    assert result.best_value == max(accuracies)
    assert result.best_epoch == accuracies.index(max(accuracies)) + 1
    assert result.train_time_s == pytest.approx(sum(e.seconds for e in result.epochs))
    assert all(e.seconds > 0 and math.isfinite(e.train_loss) for e in result.epochs)
    assert all(0.0 <= a <= 1.0 for a in accuracies)


def test_fit_best_epoch_is_the_first_on_ties() -> None:
    # a learning rate this small leaves every prediction, hence every accuracy, unchanged
    result = fit_textures(TrainConfig(width=8, lr=1e-30, max_epochs=3))
    assert len({e.value for e in result.epochs}) == 1
    assert result.best_epoch == 1


class RecordingModel(nn.Module):
    """Wraps a model and keeps the inputs of every training-mode forward pass."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.batches: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            self.batches.append(x.detach().clone())
        logits: Tensor = self.inner(x)
        return logits


def test_fit_visits_every_example_once_per_epoch_in_a_new_order_keeping_the_partial_batch() -> (
    None
):
    cfg = TrainConfig(width=8, batch_size=64, max_epochs=2)
    model = RecordingModel(build_model(cfg, (1, 8, 8), N_CLASSES))
    fit(model, X_TRAIN, Y_TRAIN, X_VAL, Y_VAL, cfg)
    assert [len(b) for b in model.batches] == [64, 64, 64, 64, 44] * 2
    # each noisy example has a unique pixel sum: use it to identify the example
    fingerprints = [torch.cat(model.batches[i : i + 5]).sum(dim=(1, 2, 3)) for i in (0, 5)]
    for seen in fingerprints:
        assert torch.equal(seen.sort().values, X_TRAIN.sum(dim=(1, 2, 3)).sort().values)
    assert not torch.equal(fingerprints[0], fingerprints[1])


def test_resolve_device_cpu_is_cpu() -> None:
    assert resolve_device("cpu") == torch.device("cpu")


def test_resolve_device_auto_picks_cuda_only_when_available() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_resolve_device_cuda_without_cuda_raises_usage_error_naming_the_fix() -> None:
    with pytest.raises(UsageError, match="use --device cpu or auto"):
        resolve_device("cuda")


def test_resolve_device_rejects_an_unknown_name() -> None:
    with pytest.raises(UsageError, match="unknown device 'tpu'; available: auto, cpu, cuda"):
        resolve_device("tpu")


def test_fit_resumed_from_a_checkpoint_matches_an_uninterrupted_fit() -> None:
    import io

    from autotune.training._fit import TrainState

    x, y = _resume_data()
    cfg = TrainConfig(model="mlp", width=16, depth=1, dropout=0.3, optimizer="sgd", lr=0.05,
                      momentum=0.9, decay_rate=0.9, batch_size=32, max_epochs=5, seed=7)
    full = fit(build_model(cfg, (1, 8, 8), 3), x, y, x, y, cfg)

    saved: list[bytes] = []

    def keep(state: TrainState) -> None:
        buffer = io.BytesIO()
        torch.save(state.to_dict(), buffer)
        saved.append(buffer.getvalue())

    class Killed(Exception):
        pass

    def die_in_the_third(result) -> None:  # after epoch 2's checkpoint, before epoch 3's
        if result.epoch == 3:
            raise Killed

    with pytest.raises(Killed):
        fit(build_model(cfg, (1, 8, 8), 3), x, y, x, y, cfg, die_in_the_third,
            on_checkpoint=keep)
    state = TrainState.from_dict(torch.load(io.BytesIO(saved[-1]), weights_only=True))
    assert state.epoch == 2
    resumed = fit(build_model(cfg, (1, 8, 8), 3), x, y, x, y, cfg, start=state)
    assert [e.value for e in resumed.epochs] == [e.value for e in full.epochs]
    assert [e.train_loss for e in resumed.epochs] == [e.train_loss for e in full.epochs]


def _resume_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(300) % 3
    x = torch.randn(300, 1, 8, 8, generator=g) * 0.5 + y.view(-1, 1, 1, 1).float()
    return x, y


# --- epoch and validation budgets, augmentation, speed paths -------------------------------


def test_fit_stops_each_epoch_after_max_batches_per_epoch() -> None:
    cfg = TrainConfig(width=8, batch_size=64, max_epochs=2, max_batches_per_epoch=2)
    model = RecordingModel(build_model(cfg, (1, 8, 8), N_CLASSES))
    result = fit(model, X_TRAIN, Y_TRAIN, X_VAL, Y_VAL, cfg)
    assert [len(b) for b in model.batches] == [64, 64] * 2
    # a different random 128 of the 300 examples in each epoch, as a shuffled DataLoader gives
    assert not torch.equal(model.batches[0], model.batches[2])
    assert len(result.epochs) == 2


@pytest.mark.parametrize(("n_train", "batch_size", "cap", "expected"), [
    (300, 64, 0, 5), (300, 64, 3, 3), (300, 64, 9, 5), (128, 128, 0, 1)])
def test_n_batches_per_epoch_counts_the_partial_batch_and_honours_the_cap(
        n_train: int, batch_size: int, cap: int, expected: int) -> None:
    cfg = TrainConfig(batch_size=batch_size, max_batches_per_epoch=cap)
    assert n_batches_per_epoch(n_train, cfg) == expected


def test_fit_validates_on_the_first_val_subset_examples() -> None:
    cfg = TrainConfig(width=8, max_epochs=1, val_subset=7)
    model = build_model(cfg, (1, 8, 8), N_CLASSES)
    result = fit(model, X_TRAIN, Y_TRAIN, X_VAL, Y_VAL, cfg)
    assert result.epochs[0].value == evaluate(model, X_VAL[:7], Y_VAL[:7])
    assert result.epochs[0].value * 7 == round(result.epochs[0].value * 7)


def test_fit_augments_training_batches_only_as_configured() -> None:
    cfg = TrainConfig(width=8, batch_size=300, max_epochs=1, hflip=True)
    model = RecordingModel(build_model(cfg, (1, 8, 8), N_CLASSES))
    fit(model, X_TRAIN, Y_TRAIN, X_VAL, Y_VAL, cfg)
    seen = model.batches[0]
    originals = {tuple(x.flatten().tolist()) for x in X_TRAIN}
    flipped = {tuple(x.flip(-1).flatten().tolist()) for x in X_TRAIN}
    kinds = [tuple(x.flatten().tolist()) in originals for x in seen]
    assert all(k or tuple(x.flatten().tolist()) in flipped for k, x in zip(kinds, seen,
                                                                          strict=True))
    assert 100 < kinds.count(False) < 200  # about half flipped
    assert torch.equal(X_TRAIN, make_textures(300, seed=0)[0])  # the dataset is untouched


def test_fit_pads_random_crops_with_the_darkest_training_value() -> None:
    cfg = TrainConfig(width=8, batch_size=300, max_epochs=1, crop_padding=3)
    model = RecordingModel(build_model(cfg, (1, 8, 8), N_CLASSES))
    fit(model, X_TRAIN, Y_TRAIN, X_VAL, Y_VAL, cfg)
    darkest = X_TRAIN.min()
    shifted_in = (model.batches[0] == darkest).flatten(1).sum(dim=1)
    assert (shifted_in >= 8).float().mean() > 0.5  # most crops brought in a padded row/column


def test_fit_with_augmentation_resumes_exactly_from_a_checkpoint() -> None:
    from autotune.training._fit import TrainState

    cfg = TrainConfig(width=8, dropout=0.2, max_epochs=3, crop_padding=2, hflip=True, seed=3)
    full = fit(build_model(cfg, (1, 8, 8), 3), X_TRAIN, Y_TRAIN, X_VAL, Y_VAL, cfg)
    states: list[TrainState] = []

    class Killed(Exception):
        pass

    def die_in_the_second(result: EpochResult) -> None:
        if result.epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        fit(build_model(cfg, (1, 8, 8), 3), X_TRAIN, Y_TRAIN, X_VAL, Y_VAL, cfg,
            die_in_the_second, on_checkpoint=lambda s: states.append(copy_state(s)))
    resumed = fit(build_model(cfg, (1, 8, 8), 3), X_TRAIN, Y_TRAIN, X_VAL, Y_VAL, cfg,
                  start=states[-1])
    assert [e.train_loss for e in resumed.epochs] == [e.train_loss for e in full.epochs]


def copy_state(state):  # type: ignore[no-untyped-def]
    """What a checkpoint file holds: a deep copy (fit hands out live CPU tensors)."""
    import io

    from autotune.training._fit import TrainState

    buffer = io.BytesIO()
    torch.save(state.to_dict(), buffer)
    return TrainState.from_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))


class DtypeRecorder(nn.Module):
    """Keeps the dtype of every training-mode output of the wrapped model."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.dtypes: set[torch.dtype] = set()

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.inner(x)
        if self.training:
            self.dtypes.add(out.dtype)
        return out


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_fit_in_bf16_runs_under_autocast_and_learns(model: str) -> None:
    cfg = TrainConfig(model=model, optimizer="adam", lr=0.01, width=16, depth=1, max_epochs=4,
                      precision="bf16")
    recorder = DtypeRecorder(build_model(cfg, (1, 8, 8), N_CLASSES))
    result = fit(recorder, X_TRAIN, Y_TRAIN, X_VAL, Y_VAL, cfg)
    assert recorder.dtypes == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in recorder.parameters())  # weights stay fp32
    assert result.best_value > 0.9


def test_fit_in_fp32_does_not_autocast() -> None:
    cfg = TrainConfig(width=8, max_epochs=1)
    recorder = DtypeRecorder(build_model(cfg, (1, 8, 8), N_CLASSES))
    fit(recorder, X_TRAIN, Y_TRAIN, X_VAL, Y_VAL, cfg)
    assert recorder.dtypes == {torch.float32}


def test_compile_model_compiles_only_when_asked_and_trains_the_same_parameters() -> None:
    model = a_model()
    assert compile_model(model, TrainConfig()) is model
    compiled = compile_model(model, TrainConfig(compile=True))  # compiles lazily, on first call
    assert isinstance(compiled, torch._dynamo.eval_frame.OptimizedModule)
    assert compiled._orig_mod is model
    assert list(compiled.parameters()) == list(model.parameters())


@pytest.mark.parametrize(("model", "expected"), [("mlp", False), ("cnn", True)])
def test_conv_models_get_channels_last_inputs(model: str, expected: bool) -> None:
    assert wants_channels_last(build_model(TrainConfig(model=model), (3, 8, 8), 3)) is expected
    x = torch.randn(10, 3, 8, 8)
    cfg = TrainConfig(batch_size=4)
    first, _ = next(batches(x, torch.zeros(10, dtype=torch.long), cfg, torch.Generator(),
                            channels_last=expected))
    assert first.is_contiguous(memory_format=torch.channels_last) is expected


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizers_take_one_fused_or_foreach_step_over_all_parameters(name: str) -> None:
    group = build_optimizer(a_model().parameters(), TrainConfig(optimizer=name)).param_groups[0]
    if name in ("sgd", "adam", "adamw"):
        assert group["fused"] is True
    else:
        assert group["foreach"] is True


def test_to_host_leaves_cpu_states_as_they_are() -> None:
    from autotune.training._fit import TrainState, to_host

    weights = torch.ones(3)
    state = TrainState(epoch=1, model={"w": weights}, optimizer={"state": {}, "param_groups": []},
                       scheduler={}, shuffle_rng=torch.Generator().get_state(),
                       torch_rng=torch.get_rng_state(), epochs=[])
    assert to_host(state).model["w"] is weights


@pytest.mark.skipif(sys.platform != "linux", reason="glibc malloc tuning is Linux-only")
def test_keep_freed_memory_takes_on_glibc_and_runs_once() -> None:
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # cached: mallopt is called once per process


# --- LR schedules, label smoothing, gradient clipping ---------------------------------------


class StepRecorder:
    """Records, at every optimizer step in its block, the LR used and the gradients' norm."""

    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.grad_norms: list[float] = []

    def __enter__(self) -> StepRecorder:
        def hook(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
            self.lrs.append(optimizer.param_groups[0]["lr"])
            grads = [p.grad for g in optimizer.param_groups for p in g["params"]
                     if p.grad is not None]
            self.grad_norms.append(torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())

        self.handle = register_optimizer_step_pre_hook(hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


def test_build_scheduler_cosine_anneals_from_lr_to_zero_over_every_step() -> None:
    cfg = TrainConfig(lr=0.1, schedule="cosine", max_epochs=3)
    optimizer = build_optimizer(a_model().parameters(), cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=4)
    lrs = []
    for _ in range(12):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    assert lrs[6] == pytest.approx(0.05)  # half-way
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_fit_with_cosine_steps_per_batch_and_ends_near_zero() -> None:
    cfg = TrainConfig(lr=0.1, schedule="cosine", width=8, batch_size=64, max_epochs=3)
    with StepRecorder() as steps:
        result = fit_textures(cfg)
    assert len(steps.lrs) == 3 * 5  # 300 examples: 5 batches per epoch
    assert steps.lrs[0] == pytest.approx(0.1) and steps.lrs[-1] < 0.002
    assert len(set(steps.lrs[:5])) == 5  # a new LR for every batch of the first epoch
    assert [e.lr for e in result.epochs] == [steps.lrs[0], steps.lrs[5], steps.lrs[10]]


def test_fit_with_onecycle_warms_up_to_lr_then_anneals_per_batch() -> None:
    cfg = TrainConfig(lr=0.2, schedule="onecycle", warmup_fraction=0.25, optimizer="sgd",
                      momentum=0.9, width=8, batch_size=64, max_epochs=4)
    with StepRecorder() as steps:
        fit_textures(cfg)
    lrs = steps.lrs
    assert len(lrs) == 20  # 4 epochs x 5 batches: one step per batch
    peak = lrs.index(max(lrs))
    assert peak == 4 and lrs[peak] == pytest.approx(0.2)  # after 25% of the 20 steps
    assert lrs[0] == pytest.approx(0.2 / 25)
    assert all(a < b for a, b in zip(lrs[:peak], lrs[1 : peak + 1], strict=True))
    assert all(a > b for a, b in zip(lrs[peak:], lrs[peak + 1 :], strict=False))
    assert lrs[-1] < 0.2 / 1000


def test_fit_with_onecycle_spans_only_the_batches_max_batches_per_epoch_allows() -> None:
    cfg = TrainConfig(lr=0.1, schedule="onecycle", width=8, batch_size=64, max_epochs=3,
                      max_batches_per_epoch=2)
    with StepRecorder() as steps:
        fit_textures(cfg)  # OneCycleLR raises if stepped past its total_steps
    assert len(steps.lrs) == 6 and steps.lrs[-1] < 0.1 / 1000


def test_fit_with_onecycle_resumed_mid_run_matches_an_uninterrupted_fit() -> None:
    from autotune.training._fit import TrainState

    cfg = TrainConfig(lr=0.05, schedule="onecycle", warmup_fraction=0.2, optimizer="adamw",
                      width=8, dropout=0.2, crop_padding=1, max_epochs=4, seed=5)
    full = fit(build_model(cfg, (1, 8, 8), 3), X_TRAIN, Y_TRAIN, X_VAL, Y_VAL, cfg)
    states: list[TrainState] = []

    class Killed(Exception):
        pass

    def die_in_the_third(result: EpochResult) -> None:
        if result.epoch == 3:
            raise Killed

    with pytest.raises(Killed):
        fit(build_model(cfg, (1, 8, 8), 3), X_TRAIN, Y_TRAIN, X_VAL, Y_VAL, cfg,
            die_in_the_third, on_checkpoint=lambda s: states.append(copy_state(s)))
    assert states[-1].epoch == 2 and states[-1].scheduler["last_epoch"] == 2 * 5
    resumed = fit(build_model(cfg, (1, 8, 8), 3), X_TRAIN, Y_TRAIN, X_VAL, Y_VAL, cfg,
                  start=states[-1])
    assert [e.train_loss for e in resumed.epochs] == [e.train_loss for e in full.epochs]
    assert [e.value for e in resumed.epochs] == [e.value for e in full.epochs]
    assert [e.lr for e in resumed.epochs] == [e.lr for e in full.epochs]


@pytest.mark.parametrize("schedule", ["exponential", "cosine", "onecycle"])
def test_fit_n_epochs_stops_early_on_the_full_runs_schedule(schedule: str) -> None:
    cfg = TrainConfig(lr=0.05, schedule=schedule, decay_rate=0.8, width=8, max_epochs=4)
    full = fit_textures(cfg)
    model = build_model(cfg, (1, 8, 8), N_CLASSES)
    first = fit(model, X_TRAIN, Y_TRAIN, X_VAL, Y_VAL, cfg, n_epochs=2)
    assert [(e.train_loss, e.value, e.lr) for e in first.epochs] == [
        (e.train_loss, e.value, e.lr) for e in full.epochs[:2]]


def test_label_smoothing_changes_the_loss_to_the_smoothed_cross_entropy() -> None:
    # one batch of everything, a learning rate too small to move the weights: the epoch's
    # loss is the initial model's loss on the training set
    losses = {}
    for smoothing in (0.0, 0.2):
        cfg = TrainConfig(width=8, batch_size=300, max_epochs=1, lr=1e-12,
                          label_smoothing=smoothing)
        losses[smoothing] = fit_textures(cfg).epochs[0].train_loss
        with torch.no_grad():
            logits = build_model(cfg, (1, 8, 8), N_CLASSES)(X_TRAIN)
        expected = F.cross_entropy(logits, Y_TRAIN, label_smoothing=smoothing).item()
        assert losses[smoothing] == pytest.approx(expected, rel=1e-5)
    assert losses[0.2] != pytest.approx(losses[0.0], rel=1e-3)


def test_grad_clip_bounds_the_gradient_norm_of_every_step() -> None:
    cfg = TrainConfig(model="cnn", width=8, depth=1, lr=0.01, max_epochs=1)
    with StepRecorder() as free:
        fit_textures(cfg)
    clip = min(free.grad_norms) / 2  # below every unclipped norm: each step must be clipped
    with StepRecorder() as clipped:
        fit_textures(dataclasses.replace(cfg, grad_clip=clip))
    assert max(clipped.grad_norms) == pytest.approx(clip, rel=1e-4)
    assert len(clipped.grad_norms) == len(free.grad_norms)


def test_checkpoints_come_after_every_epoch_but_the_last_or_once_per_interval() -> None:
    cfg = TrainConfig(width=8, max_epochs=4, seed=1)
    every: list[int] = []
    fit(build_model(cfg, (1, 8, 8), 3), X_TRAIN, Y_TRAIN, X_VAL, Y_VAL, cfg,
        on_checkpoint=lambda s: every.append(s.epoch))
    assert every == [1, 2, 3]  # the last epoch ends the fit: nothing left to resume
    rare: list[int] = []
    fit(build_model(cfg, (1, 8, 8), 3), X_TRAIN, Y_TRAIN, X_VAL, Y_VAL, cfg,
        on_checkpoint=lambda s: rare.append(s.epoch), checkpoint_every_s=3600)
    assert rare == []  # none due within the hour


def test_a_head_lr_multiplier_gives_the_last_linear_layer_its_own_learning_rate() -> None:
    from autotune.training._fit import param_groups

    model = a_model()
    cfg = TrainConfig(lr=0.02, head_lr_multiplier=5.0, schedule="onecycle")
    optimizer = build_optimizer(param_groups(model, cfg), cfg)
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    body, top = optimizer.param_groups
    assert [id(p) for p in top["params"]] == [id(p) for p in head.parameters()]
    assert len(body["params"]) + len(top["params"]) == len(list(model.parameters()))
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=5)
    for _ in range(7):  # onecycle keeps the ratio: each group peaks at its own lr
        optimizer.step()
        scheduler.step()
        assert top["lr"] == pytest.approx(5 * body["lr"])
    assert list(param_groups(model, TrainConfig()))[0] is next(model.parameters())
    with pytest.raises(ValueError, match="head_lr_multiplier must be a finite number > 0"):
        TrainConfig(head_lr_multiplier=0.0)


def test_a_frozen_body_trained_with_a_head_multiplier_equals_the_head_at_that_lr() -> None:
    def frozen_body_fit(cfg: TrainConfig) -> tuple[FitResult, dict[str, Tensor]]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3))
        model[1].requires_grad_(False)
        result = fit(model, X_TRAIN, Y_TRAIN, X_VAL, Y_VAL, cfg, plain=True)
        return result, {k: v.clone() for k, v in model.state_dict().items()}

    base = dict(optimizer="sgd", momentum=0.5, max_epochs=2, seed=3)
    # 1/64 x 4 is 1/16 exactly: the same lr in both, to the bit
    scaled, scaled_weights = frozen_body_fit(TrainConfig(lr=1 / 64, head_lr_multiplier=4.0,
                                                         **base))
    plain, plain_weights = frozen_body_fit(TrainConfig(lr=1 / 16, **base))
    assert [e.value for e in scaled.epochs] == [e.value for e in plain.epochs]
    for key, value in plain_weights.items():
        torch.testing.assert_close(scaled_weights[key], value, rtol=0, atol=0)
