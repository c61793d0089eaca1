"""Layer grouping: which parameters form a layer, and in which order the layers run.

A *layer* is the set of parameters owned directly by one module (``encoder.layers.3.linear1``
owns ``weight`` and ``bias``). Layers are sorted by the order in which their modules are first
entered during a forward pass, so that layer index means depth and the gradient-flow picture
(layer index vs log gradient norm) reads from input to output. A module that owns parameters but
never runs its own ``forward`` (``nn.MultiheadAttention.out_proj``, tied weights) takes the place
of its nearest ancestor that ran. Without a recorded forward pass, registration order is used.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    >>> with ForwardOrderRecorder(model) as order:
    ...     _ = model(torch.zeros(2, 4))
    >>> [layer.name for layer in group_parameters(model, order.order)]
    ['0', '2']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

from torch import nn

from lightning_gradflow.core.validation import check_choice

Granularity = Literal["layer", "block"]
GRANULARITIES: tuple[str, ...] = get_args(Granularity)
_CONTAINERS = (nn.ModuleList, nn.Sequential)


@dataclass(frozen=True)
class Layer:
    """A named group of parameters at one depth.

    Attributes:
        name: dotted module path (``"encoder.layers.3.linear1"``); ``"<root>"`` for parameters
            owned by the model itself.
        param_names: the full parameter names in the group.
        params: the parameters, in the same order as ``param_names``.
        numel: total number of elements.
    """

    name: str
    param_names: tuple[str, ...]
    params: tuple[nn.Parameter, ...] = field(repr=False, compare=False)

    @property
    def numel(self) -> int:
        return sum(p.numel() for p in self.params)


class ForwardOrderRecorder:
    """Context manager recording the order in which modules are first entered.

        Forward pre-hooks are attached on enter and removed on exit (or on :meth:`remove`), so the
        recorder costs nothing once the first forward pass is seen.

        Example:
            >>> from torch import nn

    from lightning_gradflow.core.validation import check_choice
            >>> import torch
            >>> m = nn.Sequential(nn.Linear(2, 2))
            >>> with ForwardOrderRecorder(m) as rec:
            ...     _ = m(torch.ones(1, 2))
            >>> rec.order
            ['', '0']
    """

    def __init__(self, model: nn.Module) -> None:
        self.order: list[str] = []
        self._seen: set[str] = set()
        self._handles = [
            module.register_forward_pre_hook(self._make_hook(name))
            for name, module in model.named_modules()
        ]

    def _make_hook(self, name: str):
        def hook(_module: nn.Module, _args: object) -> None:
            if name not in self._seen:
                self._seen.add(name)
                self.order.append(name)

        return hook

    @property
    def recorded(self) -> bool:
        """Whether at least one forward pass has been seen."""
        return bool(self.order)

    def remove(self) -> None:
        """Detach all hooks; safe to call twice."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> ForwardOrderRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _owner(param_name: str) -> str:
    return param_name.rpartition(".")[0]


def _block_of(module_name: str, model: nn.Module) -> str:
    """The shortest prefix of ``module_name`` that is an element of a ModuleList/Sequential."""
    parts = module_name.split(".") if module_name else []
    module = model
    for i, part in enumerate(parts):
        parent = module
        module = getattr(parent, part)
        if isinstance(parent, _CONTAINERS):
            return ".".join(parts[: i + 1])
    return module_name


def _depth_key(module_name: str, first_seen: dict[str, int]) -> int:
    """Forward position of a module, or of its nearest ancestor below the root that ran.

    The root's own parameters take the root's position (first); a top-level module that did
    not run in the recorded pass (one added since) goes last.
    """
    if not module_name:
        return first_seen.get("", len(first_seen))
    name = module_name
    while name:
        if name in first_seen:
            return first_seen[name]
        name = name.rpartition(".")[0]
    return len(first_seen)


def group_parameters(
    model: nn.Module,
    forward_order: Sequence[str] | None = None,
    granularity: Granularity = "layer",
    include: Iterable[nn.Parameter] | None = None,
) -> list[Layer]:
    """Group a model's parameters into layers sorted by depth.

        Args:
            model: the model.
            forward_order: module names in first-entered order (from :class:`ForwardOrderRecorder`);
                ``None`` or empty means registration order.
            granularity: ``"layer"`` (one group per owning module) or ``"block"`` (one group per
                element of the outermost ``nn.ModuleList``/``nn.Sequential``, for very deep models).
            include: only these parameters (e.g. the trainable ones); default all.

        Returns:
            Layers in depth order; empty if the model has no (included) parameters.

        Raises:
            ValueError: for an unknown granularity.

        Example:
            >>> from torch import nn

    from lightning_gradflow.core.validation import check_choice
            >>> net = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
            >>> [(l.name, l.param_names) for l in group_parameters(net)]
            [('0', ('0.weight', '0.bias')), ('1', ('1.weight', '1.bias'))]
    """
    check_choice("granularity", granularity, GRANULARITIES)
    wanted = None if include is None else {id(p) for p in include}
    first_seen = {name: i for i, name in enumerate(forward_order or ())}
    registration = {name: i for i, (name, _) in enumerate(model.named_modules())}

    groups: dict[str, list[tuple[str, nn.Parameter]]] = {}
    keys: dict[str, tuple[int, int]] = {}
    for param_name, param in model.named_parameters():
        if wanted is not None and id(param) not in wanted:
            continue
        owner = _owner(param_name)
        group = _block_of(owner, model) if granularity == "block" else owner
        key = (_depth_key(owner, first_seen), registration[owner])
        groups.setdefault(group, []).append((param_name, param))
        keys[group] = min(keys.get(group, key), key)

    ordered = sorted(groups, key=lambda g: keys[g])
    return [
        Layer(
            name=group or "<root>",
            param_names=tuple(n for n, _ in groups[group]),
            params=tuple(p for _, p in groups[group]),
        )
        for group in ordered
    ]
