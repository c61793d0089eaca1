"""Update norms read from the optimizer's state equal the change a copy of the weights shows."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from lightning_gradflow.core import updates
from lightning_gradflow.core.collector import GradientCollector
from lightning_gradflow.core.layers import group_parameters
from lightning_gradflow.core.updates import _chunks, update_reader

Factory = Callable[[list], torch.optim.Optimizer]

READABLE: dict[str, Factory] = {
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    "sgd_momentum_decay_dampening": lambda p: torch.optim.SGD(
        p, lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.01
    ),
    "sgd_momentum_maximize": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, maximize=True),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "adam_coupled_decay": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=0.1),
    "adam_amsgrad": lambda p: torch.optim.Adam(p, lr=1e-2, amsgrad=True),
    "adam_maximize_foreach": lambda p: torch.optim.Adam(p, lr=1e-2, maximize=True, foreach=True),
    "adam_decoupled": lambda p: torch.optim.Adam(
        p, lr=1e-2, weight_decay=0.5, decoupled_weight_decay=True
    ),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.5),
    "adamw_amsgrad_single_tensor": lambda p: torch.optim.AdamW(
        p, lr=3e-2, weight_decay=0.2, amsgrad=True, foreach=False, betas=(0.8, 0.95), eps=1e-6
    ),
    "adamw_tensor_lr": lambda p: torch.optim.AdamW(p, lr=torch.tensor(1e-2), foreach=False),
}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def _backward(model: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 6, generator=generator, dtype=torch.float64)
    model.zero_grad()
    model(x).pow(2).sum().backward()


def _changes(params: list[nn.Parameter], before: list[torch.Tensor]) -> torch.Tensor:
    """‖θ_after - θ_before‖ per parameter, from a copy taken before the step."""
    return torch.stack([(p.detach() - b).norm() for p, b in zip(params, before, strict=True)])


@pytest.mark.parametrize("name", sorted(READABLE))
def test_read_update_equals_the_weights_change(name: str) -> None:
    model = _model()
    params = list(model.parameters())
    optimizer = READABLE[name](params)
    for step in range(4):  # the first step (fresh state) and later ones
        _backward(model, step)
        reader = update_reader(optimizer, params)
        assert reader is not None
        before = [p.detach().clone() for p in params]
        optimizer.step()
        read = torch.stack(reader.norms(list)).double()
        actual = _changes(params, before)
        assert actual.min() > 0
        rtol = 1e-6 if "tensor_lr" in name else 1e-9  # a float32 lr: its scalar arithmetic
        torch.testing.assert_close(read, actual, rtol=rtol, atol=0.0)


@pytest.mark.parametrize("chunk_bytes", [1, 100, 260, 448])
def test_chunks_of_parameters_give_the_same_norms(monkeypatch, chunk_bytes: int) -> None:
    model = _model()  # float64 tensors of 384, 64, 192 and 24 bytes
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.5)
    _backward(model, 0)
    whole = update_reader(optimizer, params)
    before = [p.detach().clone() for p in params]
    optimizer.step()
    expected = _changes(params, before)
    monkeypatch.setattr(updates, "CHUNK_BYTES", chunk_bytes)
    assert (
        _chunks([0, 1, 2, 3], params)
        == {
            1: [[0], [1], [2], [3]],
            100: [[0], [1], [2], [3]],
            260: [[0], [1, 2], [3]],  # the first alone: larger than a chunk
            448: [[0, 1], [2, 3]],  # exactly full
        }[chunk_bytes]
    )
    torch.testing.assert_close(torch.stack(whole.norms(list)), expected, rtol=1e-9, atol=0.0)


def test_adamw_of_a_torch_without_the_decoupled_key_is_still_decoupled() -> None:
    model = _model()
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=0.1, weight_decay=0.5)
    _backward(model, 0)
    del optimizer.param_groups[0]["decoupled_weight_decay"]  # as in torch < 2.6
    reader = update_reader(optimizer, params)
    optimizer.param_groups[0]["decoupled_weight_decay"] = True
    before = [p.detach().clone() for p in params]
    optimizer.step()
    read = torch.stack(reader.norms(list)).double()
    torch.testing.assert_close(read, _changes(params, before), rtol=1e-9, atol=0.0)


def test_learning_rate_is_the_one_the_step_used() -> None:
    model = _model()
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(
        [{"params": params[:2], "lr": 0.1}, {"params": params[2:], "lr": 1e-3}], weight_decay=0.3
    )
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.01)
    _backward(model, 0)
    reader = update_reader(optimizer, params)
    before = [p.detach().clone() for p in params]
    optimizer.step()
    scheduler.step()  # lr changes before the update is read
    read = torch.stack(reader.norms(list)).double()
    actual = _changes(params, before)
    torch.testing.assert_close(read, actual, rtol=1e-9, atol=0.0)


def test_parameters_the_step_left_alone_read_zero() -> None:
    model = _model()
    params = list(model.parameters())
    optimizer = torch.optim.Adam(params, lr=0.1)
    _backward(model, 0)
    optimizer.step()  # state exists: a later read could mistake it for this step's update
    _backward(model, 1)
    params[0].grad = None  # no gradient: Adam skips it
    reader = update_reader(optimizer, params)
    optimizer.step()
    norms = [float(n) for n in reader.norms(list)]
    assert norms[0] == 0.0 and min(norms[1:]) > 0
    _backward(model, 2)
    reader = update_reader(optimizer, params)  # a step a GradScaler skipped: never called
    assert [float(n) for n in reader.norms(list)] == [0.0] * len(params)


class _OwnAdam(torch.optim.Adam):
    """A subclass may change the step: its update cannot be read from the state."""


UNREADABLE: dict[str, Factory] = {
    "sgd_plain": lambda p: torch.optim.SGD(p, lr=0.1),
    "sgd_nesterov": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.1),
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=0.1),
    "adam_subclass": lambda p: _OwnAdam(p, lr=0.1),
    "adam_fused": lambda p: torch.optim.Adam(p, lr=0.1, fused=True),
    "adam_differentiable": lambda p: torch.optim.Adam(p, lr=0.1, differentiable=True),
    "adam_capturable": lambda p: torch.optim.Adam(p, lr=0.1, capturable=True),
}


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_other_optimizers_keep_the_copy(name: str) -> None:
    params = list(_model().parameters())
    assert update_reader(UNREADABLE[name](params), params) is None


def test_half_precision_and_foreign_parameters_keep_the_copy() -> None:
    model = _model()
    half = nn.Linear(2, 2).bfloat16()
    optimizer = torch.optim.Adam([*model.parameters(), *half.parameters()])
    assert update_reader(optimizer, list(model.parameters())) is not None
    assert update_reader(optimizer, list(half.parameters())) is None  # rounding is the change
    stranger = nn.Parameter(torch.ones(2, dtype=torch.float64))
    assert update_reader(optimizer, [*model.parameters(), stranger]) is None


def test_a_lightning_wrapped_optimizer_is_read() -> None:
    from pytorch_lightning.core.optimizer import LightningOptimizer

    params = list(_model().parameters())
    wrapped = LightningOptimizer(torch.optim.AdamW(params))
    assert update_reader(wrapped, params) is not None


def _ratios(optimizer_class: type[torch.optim.Optimizer]) -> tuple[np.ndarray, bool]:
    model = _model()
    collector = GradientCollector(group_parameters(model))
    optimizer = optimizer_class(model.parameters(), lr=0.05, weight_decay=0.1)
    params = list(model.parameters())
    ratios = []
    copied = False
    for step in range(3):
        _backward(model, step)
        collector.capture(step, params, snapshot=True, optimizer=optimizer)
        copied = copied or collector._pending[-1].snapshot is not None
        optimizer.step()
        collector.after_optimizer_step()
        ratios.append(collector.flush()[0].update_ratios)
    return np.stack(ratios), copied


class _CopiedAdamW(torch.optim.AdamW):
    """The same optimizer, as a subclass: measured from a copy of the weights."""


def test_collector_ratios_match_the_copy_without_holding_one() -> None:
    read, read_copied = _ratios(torch.optim.AdamW)
    copied, copy_copied = _ratios(_CopiedAdamW)
    assert copy_copied and not read_copied
    assert np.all(read > 0)
    np.testing.assert_allclose(read, copied, rtol=1e-9)
