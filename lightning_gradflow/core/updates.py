"""The size of an optimizer's update, read from its state after the step: no copy of the weights.

An update ratio needs ``‖Δθ‖`` per layer. Copying every parameter before the step and
subtracting after it is exact for any optimizer, but holds a second copy of the model. For the
optimizers whose update is a function of their state after the step, :func:`update_reader`
returns an :class:`UpdateReader` that computes ``‖Δθ‖`` from that state one tensor at a time,
so the extra memory is a few temporaries the size of the largest parameter:

* ``torch.optim.SGD`` with momentum, without Nesterov: ``Δθ = -lr · buf`` (the momentum buffer
  already holds the weight decay, dampening and sign of ``maximize``);
* ``torch.optim.Adam`` and ``AdamW``, with or without AMSGrad, weight decay (coupled or
  decoupled) and ``maximize``: ``Δθ = -(lr / bc1) · m / (√v / √bc2 + eps)``, plus the decoupled
  decay ``-lr · wd · θ_before`` where ``θ_before`` follows from ``θ_after``.

The hyperparameters are read before the step (a scheduler may change ``lr`` right after it),
the state after it. A parameter the step left untouched (no gradient, a step skipped by a
``GradScaler``) has a zero update: its version counter did not move. Everything else (plain or
Nesterov SGD, whose update needs the gradient the loop may have zeroed; fused or differentiable
implementations; half-precision or complex parameters, whose applied change is the rounded one;
any other or subclassed optimizer) keeps the copy.

Example:
    >>> import torch
    >>> w = torch.nn.Parameter(torch.ones(3))
    >>> opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    >>> reader = update_reader(opt, [w])
    >>> w.grad = torch.full((3,), 2.0)
    >>> opt.step()
    >>> round(float(reader.norms(list)[0]), 4)  # 0.1 * ‖(2, 2, 2)‖
    0.3464
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

_EXACT_DTYPES = (torch.float32, torch.float64)


@dataclass(frozen=True)
class _GroupRule:
    """One parameter group's hyperparameters, as they were before the step."""

    adam: bool
    lr: float | Tensor
    beta1: float = 0.0
    beta2: float = 0.0
    eps: float = 0.0
    decay: float = 0.0  # the decoupled (AdamW) weight decay; coupled decay is in the state
    amsgrad: bool = False


class UpdateReader:
    """``‖Δθ‖`` of each parameter of one step, read from the optimizer's state after it.

    Built by :func:`update_reader` before the step; call :meth:`norms` once after it.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        params: Sequence[Tensor],
        rules: Sequence[_GroupRule],
    ) -> None:
        self._state = optimizer.state
        self._params = list(params)
        self._rules = list(rules)
        self._versions = [p._version for p in self._params]

    def norms(self, local: Callable[[list[Tensor]], list[Tensor]]) -> list[Tensor]:
        """The update's L2 norm per parameter (0-dim tensors on each parameter's device).

        Args:
            local: maps a parameter and its state tensors to what this rank holds of them
                (shards of sharded ones; ``list`` when nothing is sharded).
        """
        out = []
        with torch.no_grad():
            for p, rule, version in zip(self._params, self._rules, self._versions, strict=True):
                if p._version == version:  # not stepped
                    out.append(torch.zeros((), dtype=p.dtype, device=p.device))
                elif rule.adam:
                    out.append(self._adam(p, rule, local))
                else:
                    (buf,) = local([self._state[p]["momentum_buffer"]])
                    out.append(torch.linalg.vector_norm(buf) * rule.lr)
        return out

    def _adam(self, p: Tensor, rule: _GroupRule, local: Callable) -> Tensor:
        state = self._state[p]
        second = state["max_exp_avg_sq"] if rule.amsgrad else state["exp_avg_sq"]
        weight, m, v = local([p, state["exp_avg"], second])
        step = state["step"]
        if isinstance(step, Tensor) and step.device.type == "cpu":
            step = step.item()  # a CPU scalar: no device sync
        bias1 = 1 - rule.beta1**step
        bias2 = 1 - rule.beta2**step
        update = m / (v.sqrt() / bias2**0.5 + rule.eps)
        update.mul_(rule.lr / bias1)
        if (
            rule.decay
        ):  # θ_after = θ_before (1 - lr wd) - u  ⇒  Δθ = -(lr wd θ_after + u) / (1 - lr wd)
            shrink = rule.lr * rule.decay
            update.add_(weight * shrink).div_(1 - shrink)
        return torch.linalg.vector_norm(update)


def update_reader(optimizer: object, params: Sequence[Tensor]) -> UpdateReader | None:
    """An :class:`UpdateReader` for the coming step of ``optimizer`` over ``params``, or
    ``None`` when its update cannot be read exactly from its state (keep a copy then).

    Call it before the step. ``optimizer`` may be a Lightning or Fabric wrapper of one.
    """
    optimizer = _unwrap(optimizer)
    kind = type(optimizer)
    if kind not in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW):
        return None
    group_of = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    rules: dict[int, _GroupRule] = {}
    per_param = []
    for p in params:
        group = group_of.get(id(p))
        if group is None or p.dtype not in _EXACT_DTYPES:
            return None
        rule = rules.get(id(group))
        if rule is None:
            rule = _rule(group, adam=kind is not torch.optim.SGD)
            if rule is None:
                return None
            rules[id(group)] = rule
        per_param.append(rule)
    return UpdateReader(optimizer, params, per_param)


def _rule(group: dict, adam: bool) -> _GroupRule | None:
    if group.get("fused") or group.get("differentiable"):
        return None  # a fused step may skip itself on Inf (its version still moves)
    lr = group["lr"]
    if not adam:
        if not group["momentum"] or group["nesterov"]:
            return None
        return _GroupRule(adam=False, lr=lr)
    decoupled = group.get("decoupled_weight_decay", False)
    beta1, beta2 = group["betas"]
    return _GroupRule(
        adam=True,
        lr=lr,
        beta1=float(beta1),
        beta2=float(beta2),
        eps=group["eps"],
        decay=group["weight_decay"] if decoupled else 0.0,
        amsgrad=group["amsgrad"],
    )


def _unwrap(optimizer: object) -> object:
    """The torch optimizer inside a ``LightningOptimizer`` or Fabric's ``_FabricOptimizer``."""
    inner = getattr(optimizer, "optimizer", None)
    return inner if isinstance(inner, torch.optim.Optimizer) else optimizer
