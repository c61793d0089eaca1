"""The size of an optimizer's update, read from its state after the step: no copy of the weights.

An update ratio needs ``‖Δθ‖`` per layer. Copying every parameter before the step and
subtracting after it is exact for any optimizer, but holds a second copy of the model. For the
optimizers whose update is a function of their state after the step, :func:`update_reader`
returns an :class:`UpdateReader` that computes ``‖Δθ‖`` from that state, batched over chunks
of at most :data:`CHUNK_BYTES` of parameters, so the extra memory is a few temporaries of one
chunk (or of the largest parameter):

* ``torch.optim.SGD`` with momentum, without Nesterov: ``Δθ = -lr · buf`` (the momentum buffer
  already holds the weight decay, dampening and sign of ``maximize``);
* ``torch.optim.Adam`` and ``AdamW``, with or without AMSGrad, weight decay (coupled or
  decoupled) and ``maximize``: ``Δθ = -(lr / bc1) · m / (√v / √bc2 + eps)``, plus the decoupled
  decay ``-lr · wd · θ_before`` where ``θ_before`` follows from ``θ_after``.

The hyperparameters are read before the step (a scheduler may change ``lr`` right after it),
the state after it. A parameter the step left untouched (no gradient, a step skipped by a
``GradScaler``) has a zero update: its version counter did not move. Everything else keeps the
copy: plain or Nesterov SGD (their update needs the gradient, which the loop may have zeroed),
fused, capturable or differentiable implementations, half-precision or complex parameters (the
applied change is the rounded one), any other or subclassed optimizer.

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

from lightning_gradflow.core.chunking import runs_within

_EXACT_DTYPES = (torch.float32, torch.float64)


CHUNK_BYTES = 8 * 2**20
"""Adam's updates are computed for at most this many bytes of parameters at a time (batched
ops over the chunk; a larger parameter is a chunk of its own)."""


@dataclass(frozen=True)
class _GroupRule:
    """One parameter group's hyperparameters, as they were before the step."""

    adam: bool
    lr: float
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
        params, rules = self._params, self._rules
        stepped = [
            i
            for i, (p, v) in enumerate(zip(params, self._versions, strict=True))
            if p._version != v
        ]  # a parameter the step left alone kept its version
        out: list[Tensor | None] = [None] * len(params)
        with torch.no_grad():
            momentum = [i for i in stepped if not rules[i].adam]
            if momentum:  # Δθ = -lr · buf
                buffers = local([self._state[params[i]]["momentum_buffer"] for i in momentum])
                norms = torch._foreach_norm(buffers)
                scaled = torch._foreach_mul(norms, [rules[i].lr for i in momentum])
                for i, norm in zip(momentum, scaled, strict=True):
                    out[i] = norm
            for chunk in _chunks([i for i in stepped if rules[i].adam], params):
                for i, norm in zip(chunk, self._adam(chunk, local), strict=True):
                    out[i] = norm
        return [
            torch.zeros((), dtype=p.dtype, device=p.device) if norm is None else norm
            for p, norm in zip(params, out, strict=True)
        ]

    def _adam(self, chunk: list[int], local: Callable) -> list[Tensor]:
        """Δθ = -(lr / bc1) m / (√v / √bc2 + eps), and for decoupled decay
        -(lr wd θ_after + u) / (1 - lr wd), since θ_after = θ_before (1 - lr wd) - u."""
        states = [self._state[self._params[i]] for i in chunk]
        rules = [self._rules[i] for i in chunk]
        means = local([s["exp_avg"] for s in states])
        squares = local(
            [
                s["max_exp_avg_sq" if r.amsgrad else "exp_avg_sq"]
                for s, r in zip(states, rules, strict=True)
            ]
        )
        steps = [float(s["step"]) for s in states]  # CPU scalars: no device sync
        root_bc2 = [(1 - r.beta2**t) ** 0.5 for r, t in zip(rules, steps, strict=True)]
        # m / (√v / √bc2 + eps) = √bc2 · m / (√v + eps √bc2): one pass fewer
        denominators = torch._foreach_sqrt(squares)
        torch._foreach_add_(denominators, [r.eps * b for r, b in zip(rules, root_bc2, strict=True)])
        updates = torch._foreach_div(means, denominators)
        del denominators
        torch._foreach_mul_(
            updates,
            [r.lr * b / (1 - r.beta1**t) for r, b, t in zip(rules, root_bc2, steps, strict=True)],
        )
        shrink = [r.lr * r.decay for r in rules]
        if any(shrink):
            weights = local([self._params[i] for i in chunk])
            if len(set(shrink)) == 1:  # one group's decay
                torch._foreach_add_(updates, weights, alpha=shrink[0])
            else:
                torch._foreach_add_(updates, torch._foreach_mul(weights, shrink))
        norms = torch._foreach_norm(updates)
        return torch._foreach_div(norms, [1 - s for s in shrink]) if any(shrink) else list(norms)


def _chunks(indices: list[int], params: Sequence[Tensor]) -> list[list[int]]:
    """``indices`` in runs of at most :data:`CHUNK_BYTES` of parameters (at least one each)."""
    sizes = [params[i].numel() * params[i].element_size() for i in indices]
    return runs_within(indices, sizes, CHUNK_BYTES)


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
            rule = _rule(group, kind)
            if rule is None:
                return None
            rules[id(group)] = rule
        per_param.append(rule)
    return UpdateReader(optimizer, params, per_param)


def _rule(group: dict, kind: type) -> _GroupRule | None:
    if group.get("fused") or group.get("differentiable") or group.get("capturable"):
        return None  # a fused step may skip itself on Inf (its version still moves)
    lr = group["lr"]
    if isinstance(lr, Tensor):
        if lr.device.type != "cpu":
            return None
        lr = lr.item()  # its value now: a scheduler may change it in place after the step
    if kind is torch.optim.SGD:
        if not group["momentum"] or group["nesterov"]:
            return None
        return _GroupRule(adam=False, lr=lr)
    # torch < 2.6 has no such key: AdamW was its own class, and decoupled
    decoupled = group.get("decoupled_weight_decay", kind is torch.optim.AdamW)
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
