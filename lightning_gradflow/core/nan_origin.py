"""Where the first NaN/Inf of a forward pass came from: the module, and the operation in it.

Once a NaN reaches the loss, backward spreads it into every gradient, so the gradients alone
cannot say where it started. :func:`locate_nonfinite_origin` re-runs a forward pass with hooks
on every module and returns the first module (innermost first) whose inputs are finite but
whose output is not; it then re-runs that module alone under a dispatch mode to name the first
operation that turned finite inputs into a non-finite output (``aten.log`` of a negative
activation, ``aten.div`` by zero, an overflowing ``aten.exp``). Both passes run without
gradients, and only when asked: a healthy step pays nothing.

Example:
    >>> import torch
    >>> from torch import nn
    >>> class Log(nn.Module):
    ...     def forward(self, x):
    ...         return torch.log(x)
    >>> model = nn.Sequential(nn.Linear(2, 2), Log(), nn.Linear(2, 1))
    >>> with torch.no_grad():
    ...     _ = model[0].weight.copy_(-torch.eye(2))
    ...     _ = model[0].bias.zero_()
    >>> origin = locate_nonfinite_origin(model, lambda: model(torch.ones(1, 2)))
    >>> origin.module, origin.op
    ('1', 'log')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from lightning_gradflow.core.compiled import eager_forward


@dataclass(frozen=True)
class NonfiniteOrigin:
    """The first module whose output became non-finite from finite inputs.

    Attributes:
        module: its qualified name in the model (``""`` for the model itself).
        module_type: its class name.
        op: the first operation inside it that produced a non-finite value from finite
            inputs, e.g. ``"log"``; ``None`` when it cannot be pinned down (the value came from
            non-finite parameters, or the module is not re-runnable on its own).
        nonfinite_params: names of its own parameters that hold NaN/Inf already.
    """

    module: str
    module_type: str
    op: str | None
    nonfinite_params: tuple[str, ...] = ()

    def describe(self) -> str:
        """One phrase for an alert message."""
        if self.module_type == INPUT:
            return "the input batch itself (NaN/Inf in the data)"
        where = f"`{self.module or '<model>'}` ({self.module_type})"
        if self.nonfinite_params:
            return f"{where}, whose parameters are already non-finite"
        return f"{where}, in op `{self.op}`" if self.op else where


def _finite(tree: Any) -> bool:
    leaves, _ = tree_flatten(tree)
    return all(
        bool(torch.isfinite(t).all())
        for t in leaves
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex())
    )


INPUT = "input"
"""The ``module_type`` of an origin in the batch itself."""


class _Found(Exception):
    """Stops the forward pass once the origin is known."""


class _FirstNonfiniteOp(TorchDispatchMode):
    """Records the first op whose tensor inputs are finite and whose output is not."""

    def __init__(self) -> None:
        super().__init__()
        self.op: str | None = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.op is None and _finite((args, kwargs)) and not _finite(out):
            self.op = func.overloadpacket.__name__
        return out


def locate_nonfinite_origin(
    model: nn.Module, run_forward: Callable[[], object], inputs: Any = None
) -> NonfiniteOrigin | None:
    """Re-run a forward pass of ``model`` and return where its first NaN/Inf appeared.

    Args:
        model: the module whose submodules are watched.
        run_forward: calls the forward pass (e.g. ``lambda: model(batch)``); it runs under
            ``torch.no_grad()`` and is stopped as soon as the origin is found.
        inputs: the batch, if known: NaN/Inf in it is the origin (module type ``"input"``).

    Returns:
        The origin, or ``None`` if the re-run produced no non-finite module output (the bad
        value arose outside ``model``'s modules, e.g. in the loss, or the batch differs).
    """
    if inputs is not None and not _finite(inputs):
        return NonfiniteOrigin("", INPUT, None)
    names = {module: name for name, module in model.named_modules()}
    found: list[tuple[nn.Module, tuple, dict]] = []

    def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if not found and not _finite(output) and _finite((args, kwargs)):
            found.append((module, args, kwargs))
            raise _Found

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in names]
    try:
        with torch.no_grad():
            run_forward()
    except _Found:
        pass
    finally:
        for handle in handles:
            handle.remove()
    if not found:
        return None
    module, args, kwargs = found[0]
    bad = tuple(
        n for n, p in module.named_parameters(recurse=False) if not bool(torch.isfinite(p).all())
    )
    op = None
    if not bad:
        mode = _FirstNonfiniteOp()
        try:
            with torch.no_grad(), mode:
                module(*args, **kwargs)
        except Exception:  # a module that cannot run twice: the module name is still known
            pass
        op = mode.op
    return NonfiniteOrigin(names[module], type(module).__name__, op, bad)


def diagnose_without_side_effects(
    model: nn.Module, run_forward: Callable[[], object], inputs: Any = None
) -> NonfiniteOrigin | None:
    """:func:`locate_nonfinite_origin` inside a training run, leaving the run as it was.

    The random state (CPU and the model's CUDA device) and the model's buffers (BatchNorm
    statistics) are restored afterwards, compiled code runs eagerly so the hooks fire, and any
    error of the re-run gives ``None``: a diagnosis must never break the run it diagnoses.
    Models with ``SyncBatchNorm`` are not re-run (its forward is a collective, and a re-run that
    stops early on one rank would leave the others waiting).
    """
    if any(isinstance(m, nn.SyncBatchNorm) for m in model.modules()):
        return None
    buffers = [b.detach().clone() for b in model.buffers()]
    devices = [b.device for b in buffers if b.device.type == "cuda"][:1]
    try:
        with torch.random.fork_rng(devices=devices), eager_forward():
            return locate_nonfinite_origin(model, run_forward, inputs=inputs)
    except Exception:
        return None
    finally:
        with torch.no_grad():
            for buffer, saved in zip(model.buffers(), buffers, strict=True):
                buffer.copy_(saved)
