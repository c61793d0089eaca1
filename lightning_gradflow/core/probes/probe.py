"""Forward hooks that measure activations on probe steps, and the statistics they produce.

:class:`ActivationProbes` finds the probed modules, its *sites*, once (see
:mod:`~lightning_gradflow.core.probes.registry`). Hooks exist only between :meth:`attach` and
:meth:`detach`, so steps that are not probed run the unmodified model. Inside the hooks
everything stays on the device (no ``.item()``, no host sync) and nothing is recorded for
autograd; the model's outputs are bit-identical to an unprobed forward. :meth:`collect` then
copies all statistics to the host in one transfer (optionally summed over ranks first) and
returns a :class:`ProbeStats`.

Statistics are kept per site, named by its dotted module path. A module called several times
between two collections (a loop of adaptive depth, chunks, an expert, a shared ``self.act``)
adds every call to its one entry: rows add up, and a ReLU's unit ``i`` is unit ``i`` of every
call (give layers their own activation modules to have them judged apart). Every site has a
slot of fixed layout, zero where it did not run, so the ranks' buffers line up under DDP
whatever ran where; a site that ran on no rank is left out of the statistics.

The hooks also follow the forward order of every module of the model:

* the *producer* of a ReLU call, the leaf module that finished last before the ReLU's hook
  (dropout and identity layers aside), decides the unit axis
  (:func:`~lightning_gradflow.core.probes.activations.unit_dim`);
* the *output layer* is the site whose call came last, if no module with parameters started
  after it (under DDP: so on every rank it ran on): a final ``nn.Sigmoid``, however the model
  was called (``self(x)`` or ``self.net(x)``) and whatever loss module or metric ran after it.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1), nn.Sigmoid())
    >>> probes = ActivationProbes(model)
    >>> with probes.attached():
    ...     _ = model(torch.randn(32, 4))
    >>> stats = probes.collect()
    >>> sorted(stats.scalars())
    ['probe/dead_relu/1', 'probe/saturation/3']
    >>> stats.output_layers
    frozenset({'3'})
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from lightning_gradflow.core.norms import all_reduce
from lightning_gradflow.core.probes.activations import (
    PASS_THROUGH,
    saturated_count,
    unit_counts,
    unit_dim,
)
from lightning_gradflow.core.probes.attention import (
    bind_arguments,
    entropy_sums,
    normalised_entropy,
    probabilities_from_output,
    recompute_attention,
)
from lightning_gradflow.core.probes.config import ProbeConfig
from lightning_gradflow.core.probes.rank import block_tokens, effective_rank
from lightning_gradflow.core.probes.registry import discover_probes
from lightning_gradflow.core.transfer import copy_to_host

Call = dict[str, Tensor]
"""The statistics of one call of a site, on the device."""

_WIDTH = {"relu": "active", "attention": "entropy"}
"""Per kind, the statistic whose length (units, heads) is only known once the site ran."""


@dataclass(frozen=True)
class ProbeStats:
    """Host-side statistics of the probe steps since the last collection.

    Every mapping is keyed by site name, in the model's module order, and holds the sites that
    ran (on any rank).

    Attributes:
        kinds: probe kind of every site that ran.
        dead_relu: share of the judged units (those with a finite value) that were zero on
            every row (``"relu"`` sites); ``NaN`` if no unit was judged.
        relu_rows: the fewest rows (samples × positions, over all calls) a judged unit had a
            finite value on; 0 if none.
        saturation: share of the finite activations in the flat tails (``"sigmoid"``/
            ``"tanh"``); ``NaN`` if none was finite.
        attention_entropy: per-head mean normalised entropy, ``(heads,)``, ``NaN`` for heads
            without a usable query row.
        effective_rank: mean effective rank of the tokens after each ``"block"``, ``NaN`` if
            no sample had a finite non-zero output.
        block_tokens: mean sequence length of the samples the effective rank was measured on.
        output_layers: the output layer of the probed forward pass (see the module docstring).
        histograms: ``(counts, edges)`` per logging tag (probe steps with histograms only).
    """

    kinds: dict[str, str] = field(default_factory=dict)
    dead_relu: dict[str, float] = field(default_factory=dict)
    relu_rows: dict[str, int] = field(default_factory=dict)
    saturation: dict[str, float] = field(default_factory=dict)
    attention_entropy: dict[str, np.ndarray] = field(default_factory=dict)
    effective_rank: dict[str, float] = field(default_factory=dict)
    block_tokens: dict[str, int] = field(default_factory=dict)
    output_layers: frozenset[str] = frozenset()
    histograms: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def scalars(self) -> dict[str, float]:
        """Finite statistics as ``{"probe/<statistic>/<layer>[/head<h>]": value}`` for loggers."""
        out = {f"probe/dead_relu/{k}": v for k, v in self.dead_relu.items()}
        out.update({f"probe/saturation/{k}": v for k, v in self.saturation.items()})
        for name, heads in self.attention_entropy.items():
            for h, value in enumerate(heads):
                out[f"probe/attention_entropy/{name}/head{h}"] = float(value)
        out.update({f"probe/effective_rank/{k}": v for k, v in self.effective_rank.items()})
        return {k: v for k, v in out.items() if np.isfinite(v)}


class ActivationProbes:
    """Measures dead units, saturation, attention entropy and effective rank on probe steps.

    Args:
        model: the model; its probed modules are found once, here.
        config: thresholds and sample caps (defaults: :class:`ProbeConfig`).

    Attributes:
        sites: probed module name -> kind.
    """

    def __init__(self, model: nn.Module, config: ProbeConfig | None = None) -> None:
        self.model = model
        self.config = config or ProbeConfig()
        self.sites = discover_probes(model)
        modules = dict(model.named_modules())
        self._modules = {name: modules[name] for name in self.sites}
        self._leaves = [
            m
            for m in modules.values()
            if next(m.children(), None) is None and not isinstance(m, PASS_THROUGH)
        ]
        self._parametrised = [
            m for m in modules.values() if next(m.parameters(recurse=False), None) is not None
        ]
        self._handles: list[RemovableHandle] = []
        self._calls: dict[str, list[Call]] = {name: [] for name in self.sites}
        self._events = 0  # site calls and starts of modules with parameters, in forward order
        self._last_event: dict[str, int] = {}
        self._producer: nn.Module | None = None
        self._histograms = False

    @property
    def is_attached(self) -> bool:
        """Whether the hooks are registered."""
        return bool(self._handles)

    def attach(self, histograms: bool = False) -> None:
        """Register the forward hooks (a no-op while attached).

        Args:
            histograms: also compute per-layer histograms during this probe step.
        """
        if self.is_attached:
            return
        self._histograms = histograms
        self._producer = None
        for name, module in self._modules.items():
            kind = self.sites[name]
            if kind == "attention" and isinstance(module, nn.MultiheadAttention):
                hook = module.register_forward_hook(self._mha_hook(name), with_kwargs=True)
            elif kind == "block":
                hook = module.register_forward_hook(self._block_hook(name), with_kwargs=True)
            else:
                hook = module.register_forward_hook(self._output_hook(name, kind))
            self._handles.append(hook)
        # after the site hooks, so that a site's hook still sees the leaf that ran before it
        self._handles += [leaf.register_forward_hook(self._leaf_hook) for leaf in self._leaves]
        self._handles += [m.register_forward_pre_hook(self._start_hook) for m in self._parametrised]

    def detach(self) -> None:
        """Remove every hook; safe to call twice."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @contextmanager
    def attached(self, histograms: bool = False) -> Iterator[ActivationProbes]:
        """Hooks on inside the ``with`` block (see :meth:`attach`)."""
        self.attach(histograms)
        try:
            yield self
        finally:
            self.detach()

    def collect(self, all_ranks: bool = False) -> ProbeStats:
        """Everything recorded since the last collection, copied to the host in one transfer.

        Args:
            all_ranks: sum the statistics over the default process group first. Every rank
                must call this, with the same model; each site has a slot of the same layout
                on every rank, so sites may have run a different number of times (or not at
                all) on each.
        """
        calls, self._calls = self._calls, {name: [] for name in self.sites}
        last = self._events
        output = {name for name, event in self._last_event.items() if event == last}
        self._events, self._last_event = 0, {}
        if not all_ranks and not any(calls.values()):
            return ProbeStats()
        self._effective_ranks(calls)
        slots, meta = self._slots(calls, output, all_ranks)
        *values, meta_values = copy_to_host([*slots.values(), meta], all_ranks=all_ranks)
        return self._stats(dict(zip(slots, values, strict=True)), meta_values)

    # hooks ---------------------------------------------------------------------------------

    def _leaf_hook(self, module: nn.Module, _args: tuple, _output: Any) -> None:
        self._producer = module

    def _start_hook(self, _module: nn.Module, _args: tuple) -> None:
        self._events += 1

    def _new_call(self, name: str) -> Call:
        self._events += 1
        self._last_event[name] = self._events
        call: Call = {}
        self._calls[name].append(call)
        return call

    def _output_hook(self, name: str, kind: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _args: tuple, output: Any) -> None:
            tensor = _first_tensor(output)
            if tensor is None or tensor.dim() == 0 or tensor.is_nested:
                return
            with torch.no_grad():
                self._measure(self._new_call(name), kind, tensor.detach())

        return hook

    def _measure(self, call: Call, kind: str, tensor: Tensor) -> None:
        cfg, bins = self.config, self.config.histogram_bins
        if kind == "relu":
            call["active"], call["rows"] = unit_counts(tensor, unit_dim(tensor, self._producer))
        elif kind in ("sigmoid", "tanh"):
            tail = cfg.sigmoid_tail if kind == "sigmoid" else cfg.tanh_tail
            call["tail"] = saturated_count(tensor, kind, tail)
            call["values"] = tensor.isfinite().sum()
            if self._histograms:  # histc leaves NaN out
                low = 0.0 if kind == "sigmoid" else -1.0
                call["hist"] = torch.histc(tensor.float(), bins, low, 1.0)
        else:  # attention probabilities from an opted-in module
            probs = probabilities_from_output(tensor, cfg.max_samples)
            keys = torch.full((), probs.shape[-1], device=probs.device)
            self._attention(call, probs, keys)

    def _attention(self, call: Call, probs: Tensor, keys: Tensor) -> None:
        min_keys = self.config.attention_min_keys
        call["entropy"], call["rows"] = entropy_sums(probs, keys, min_keys)
        if self._histograms:
            normalised, usable = normalised_entropy(probs, keys, min_keys)
            values = torch.where(usable, normalised, -1.0)  # outside [0, 1]: not counted
            call["hist"] = torch.histc(values, self.config.histogram_bins, 0.0, 1.0)

    def _mha_hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, kwargs: dict, _output: Any) -> None:
            with torch.no_grad():
                arguments = bind_arguments(module, args, kwargs)
                found = recompute_attention(module, arguments, self.config.max_samples)
                if found is not None:
                    self._attention(self._new_call(name), *found)

        return hook

    def _block_hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            tensor = _first_tensor(output)
            if tensor is None or tensor.dim() < 2:
                return
            with torch.no_grad():
                arguments = bind_arguments(module, args, kwargs)
                tokens = block_tokens(module, arguments, tensor, self.config.max_samples)
                if tokens is not None:
                    self._new_call(name)["sequences"] = tokens

        return hook

    # collection ----------------------------------------------------------------------------

    @staticmethod
    def _effective_ranks(calls: dict[str, list[Call]]) -> None:
        """Replace every block call's sequences by its summed effective rank, the number of
        samples it was measured on and their tokens."""
        batches: dict[tuple, list[Call]] = {}  # one batched SVD per shape and device
        for call in itertools.chain.from_iterable(calls.values()):
            if "sequences" in call:
                sequences = call["sequences"]
                batches.setdefault((*sequences.shape[1:], sequences.device), []).append(call)
        for (length, *_), group in batches.items():
            sizes = [call["sequences"].shape[0] for call in group]
            ranks = effective_rank(torch.cat([call.pop("sequences") for call in group]))
            for call, part in zip(group, ranks.split(sizes), strict=True):
                finite = torch.isfinite(part)
                call["rank"] = torch.where(finite, part, 0.0).sum()
                call["samples"] = finite.sum()
                call["tokens"] = call["samples"] * length

    def _slots(
        self, calls: dict[str, list[Call]], output: set[str], all_ranks: bool
    ) -> tuple[dict[str, Call], Call]:
        """Per site a fixed layout of float64 sums of its calls (zeros if it did not run), and
        per site whether it ran and whether it is the output layer (1 or 0; summed over ranks,
        the number of ranks).

        The lengths that depend on the data (units, heads) are the longest seen; with
        ``all_ranks`` on any rank (one small collective), so every rank lays out the same.
        """
        device = self._device(calls)
        widths = [
            max((call[_WIDTH[kind]].shape[0] for call in calls[name]), default=0)
            if kind in _WIDTH
            else 0
            for name, kind in self.sites.items()
        ]
        if all_ranks and widths:
            widths = all_reduce(torch.tensor(widths, device=device), "max").tolist()
        bins = self.config.histogram_bins if self._histograms else 0
        slots = {}
        for (name, kind), width in zip(self.sites.items(), widths, strict=True):
            slot = {
                key: torch.zeros(shape, dtype=torch.float64, device=device)
                for key, shape in _layout(kind, width, bins).items()
            }
            for call in calls[name]:
                for key, value in call.items():
                    target = slot[key][: value.shape[0]] if value.dim() else slot[key]
                    target += value.to(device)
            slots[name] = slot
        flags = [(bool(calls[name]), name in output) for name in self.sites]
        meta = torch.tensor(flags, dtype=torch.float64).reshape(-1, 2).to(device)
        return slots, {"ran": meta[:, 0], "output": meta[:, 1]}

    def _device(self, calls: dict[str, list[Call]]) -> torch.device:
        """That of the first statistic, else of the model's parameters (else the CPU)."""
        for call in itertools.chain.from_iterable(calls.values()):
            return next(iter(call.values())).device
        tensor = next(itertools.chain(self.model.parameters(), self.model.buffers()), None)
        return torch.device("cpu") if tensor is None else tensor.device

    def _stats(
        self, values: dict[str, dict[str, np.ndarray]], meta: dict[str, np.ndarray]
    ) -> ProbeStats:
        ran = dict(zip(self.sites, meta["ran"], strict=True))
        outputs = zip(self.sites, meta["output"], strict=True)  # on every rank it ran on
        stats = ProbeStats(output_layers=frozenset(n for n, o in outputs if o and o == ran[n]))
        histograms = self._histograms
        edges = np.linspace(0.0, 1.0, self.config.histogram_bins + 1)
        for name in self.sites:
            if not ran[name]:
                continue
            kind, value = self.sites[name], values[name]
            stats.kinds[name] = kind
            if kind == "relu":
                active, rows = value["active"], value["rows"]
                judged = rows > 0
                if judged.any():
                    stats.dead_relu[name] = float(np.mean(active[judged] == 0))
                    stats.relu_rows[name] = int(rows[judged].min())
                else:
                    stats.dead_relu[name], stats.relu_rows[name] = float("nan"), 0
                if histograms:
                    share = active[judged] / rows[judged]
                    counts = np.histogram(share, edges)[0].astype(np.float64)
                    stats.histograms[f"probe/unit_activity/{name}"] = (counts, edges)
            elif kind in ("sigmoid", "tanh"):
                finite = float(value["values"])
                stats.saturation[name] = float(value["tail"]) / finite if finite else np.nan
                if histograms:
                    low = 0.0 if kind == "sigmoid" else -1.0
                    bounds = np.linspace(low, 1.0, self.config.histogram_bins + 1)
                    stats.histograms[f"probe/activation/{name}"] = (value["hist"], bounds)
            elif kind == "attention":
                rows = value["rows"]
                with np.errstate(invalid="ignore", divide="ignore"):
                    stats.attention_entropy[name] = np.where(
                        rows > 0, value["entropy"] / rows, np.nan
                    )
                if histograms:
                    stats.histograms[f"probe/attention_entropy/{name}"] = (value["hist"], edges)
            else:
                samples = float(value["samples"])
                stats.effective_rank[name] = float(value["rank"]) / samples if samples else np.nan
                stats.block_tokens[name] = round(float(value["tokens"]) / samples) if samples else 0
        return stats


def _layout(kind: str, width: int, bins: int) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a site's slot; ``width``: its units or heads, ``bins``: 0 for no
    histogram."""
    if kind == "relu":
        return {"active": (width,), "rows": (width,)}
    if kind == "block":
        return {"rank": (), "samples": (), "tokens": ()}
    if kind == "attention":
        layout = {"entropy": (width,), "rows": (width,)}
    else:
        layout = {"tail": (), "values": ()}
    return {**layout, "hist": (bins,)} if bins else layout


def _tensors(value: Any) -> Iterator[Tensor]:
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _first_tensor(value: Any) -> Tensor | None:
    return next(_tensors(value), None)
