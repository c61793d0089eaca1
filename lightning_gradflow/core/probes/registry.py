"""Which modules are probed, and how a module of your own opts in or out.

==============  ==============================================================  ==============
kind            probed by default                                               measures
==============  ==============================================================  ==============
``"relu"``      ``nn.ReLU``, ``nn.ReLU6``                                       dead units
``"sigmoid"``   ``nn.Sigmoid``                                                  saturation
``"tanh"``      ``nn.Tanh``                                                     saturation
``"attention"`` ``nn.MultiheadAttention`` (also inside transformer layers)      head entropy
``"block"``     ``nn.TransformerEncoderLayer``, ``nn.TransformerDecoderLayer``  effective rank
==============  ==============================================================  ==============

Functional activations (``F.relu``, ``torch.sigmoid``) are invisible to module hooks. A module
of your own opts in with a class attribute ``gradflow_probe = "<kind>"`` or, per instance, with
:func:`register_probe`; ``register_probe(module, None)`` opts a module out (e.g. a gate that is
meant to saturate). What an opted-in module's output must be:

* ``"relu"``/``"sigmoid"``/``"tanh"``: the activations, ``(..., features)``, or ``(N, C, ...)``
  when the module that ran just before is a conv, norm or pooling layer over channels (see
  :mod:`~lightning_gradflow.core.probes.activations`).
* ``"attention"``: for a subclass of ``nn.MultiheadAttention`` nothing (probabilities are
  recomputed from its inputs); for any other module the attention probabilities themselves,
  ``(batch, heads, queries, keys)`` or ``(batch, queries, keys)`` (e.g. the ``nn.Softmax`` of
  your attention). Masked keys cannot be told apart there, so every row is normalised by
  ``log(keys)``.
* ``"block"``: the token representations ``(batch, tokens, d_model)``, or
  ``(tokens, batch, d_model)`` if the module has ``batch_first = False``.

A tuple output is read from its first element.

Example:
    >>> from torch import nn
    >>> class Gate(nn.Module):
    ...     gradflow_probe = "sigmoid"
    >>> model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), Gate(), nn.Tanh())
    >>> _ = register_probe(model[3], None)
    >>> discover_probes(model)
    {'1': 'relu', '2': 'sigmoid'}
"""

from __future__ import annotations

from typing import Literal, get_args

from torch import nn

from lightning_gradflow.core.validation import fail

ProbeKind = Literal["relu", "sigmoid", "tanh", "attention", "block"]
PROBE_KINDS: tuple[str, ...] = get_args(ProbeKind)
ATTRIBUTE = "gradflow_probe"

_DEFAULTS: tuple[tuple[type[nn.Module], str], ...] = (
    (nn.ReLU, "relu"),
    (nn.ReLU6, "relu"),
    (nn.Sigmoid, "sigmoid"),
    (nn.Tanh, "tanh"),
    (nn.MultiheadAttention, "attention"),
    (nn.TransformerEncoderLayer, "block"),
    (nn.TransformerDecoderLayer, "block"),
)
_UNSET = object()


def _check_kind(kind: object, where: str) -> None:
    if kind is not None and kind not in PROBE_KINDS:
        fail(where, kind, f"one of {PROBE_KINDS} or None")


def register_probe(module: nn.Module, kind: ProbeKind | None) -> nn.Module:
    """Probe ``module`` as ``kind`` (``None``: never probe it); returns the module.

    Raises:
        ValueError: for an unknown kind.

    Example:
        >>> from torch import nn
        >>> probe_kind(register_probe(nn.Identity(), "relu"))
        'relu'
    """
    _check_kind(kind, "kind")
    setattr(module, ATTRIBUTE, kind)
    return module


def probe_kind(module: nn.Module) -> str | None:
    """The kind ``module`` is probed as, or ``None``.

    Raises:
        ValueError: if its ``gradflow_probe`` attribute names an unknown kind.
    """
    declared = getattr(module, ATTRIBUTE, _UNSET)
    if declared is not _UNSET:
        _check_kind(declared, f"{type(module).__name__}.{ATTRIBUTE}")
        return declared
    for cls, kind in _DEFAULTS:
        if isinstance(module, cls):
            return kind
    return None


def discover_probes(model: nn.Module) -> dict[str, str]:
    """Dotted module name -> kind for every module of ``model`` that is probed."""
    found = {}
    for name, module in model.named_modules():
        kind = probe_kind(module)
        if kind is not None:
            found[name] = kind
    return found
