"""Forward hooks that measure activations on probe steps, and the statistics they produce.

:class:`ActivationProbes` finds the probed modules once (see
:mod:`~lightning_gradflow.core.probes.registry`). Hooks exist only between :meth:`attach` and
:meth:`detach`, so steps that are not probed run the unmodified model. Inside the hooks
everything stays on the device (no ``.item()``, no host sync) and nothing is recorded for
autograd; the model's outputs are bit-identical to an unprobed forward. :meth:`collect` then
copies all statistics to the host in one transfer (optionally summed over ranks first) and
returns a :class:`ProbeStats`.

Probed layers are named by their dotted module path; a module called more than once between
two collections gets one entry per call, ``name``, ``name#1``, ``name#2``, ... in forward
order (a shared ``self.act = nn.ReLU()`` used after each layer is several layers).

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

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from lightning_gradflow.core.probes.activations import (
    alive_units,
    saturated_count,
    unit_activity,
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


@dataclass(frozen=True)
class ProbeStats:
    """Host-side statistics of the probe steps since the last collection.

    Every mapping is keyed by layer name, in forward order.

    Attributes:
        kinds: probe kind of every layer seen.
        dead_relu: share of units that were zero on every row (``"relu"`` layers).
        relu_rows: rows (samples × positions) the dead-unit share was measured on.
        saturation: share of activations in the flat tails (``"sigmoid"``/``"tanh"`` layers).
        attention_entropy: per-head mean normalised entropy, ``(heads,)``, ``NaN`` for heads
            without a usable query row.
        effective_rank: mean effective rank of the tokens after each ``"block"``, ``NaN`` if
            no sample had a non-zero output.
        block_tokens: sequence length seen by each block.
        output_layers: layers whose output is (a view of) what the probed model returned.
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


@dataclass
class _Record:
    name: str
    kind: str
    tensors: dict[str, Tensor] = field(default_factory=dict)
    histogram: bool = False
    count: int = 0
    output: Tensor | None = None
    is_output: bool = False


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
        self._modules = {n: m for n, m in model.named_modules() if n in self.sites}
        self._handles: list[RemovableHandle] = []
        self._records: list[_Record] = []
        self._calls: Counter[str] = Counter()
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
        for name, module in self._modules.items():
            kind = self.sites[name]
            if kind == "attention" and isinstance(module, nn.MultiheadAttention):
                hook = module.register_forward_hook(self._mha_hook(name), with_kwargs=True)
            elif kind == "block":
                hook = module.register_forward_hook(self._block_hook(name), with_kwargs=True)
            else:
                hook = module.register_forward_hook(self._output_hook(name, kind))
            self._handles.append(hook)
        self._handles.append(self.model.register_forward_hook(self._model_hook))

    def detach(self) -> None:
        """Remove every hook; safe to call twice."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._release_outputs()

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
            all_ranks: sum the statistics over the default process group first (every rank
                must call this and must have probed the same layers, e.g. DDP replicas).
        """
        records, self._records = self._records, []
        self._calls.clear()
        if not records:
            return ProbeStats()
        self._effective_ranks(records)
        return self._stats(records, self._to_host(records, all_ranks))

    # hooks ---------------------------------------------------------------------------------

    def _new_record(self, name: str, kind: str) -> _Record:
        calls = self._calls[name]
        self._calls[name] += 1
        record = _Record(
            name if calls == 0 else f"{name}#{calls}", kind, histogram=self._histograms
        )
        self._records.append(record)
        return record

    def _output_hook(self, name: str, kind: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _args: tuple, output: Any) -> None:
            tensor = _first_tensor(output)
            if tensor is None or tensor.dim() == 0 or tensor.is_nested:
                return
            with torch.no_grad():
                self._measure(self._new_record(name, kind), tensor.detach())

        return hook

    def _measure(self, record: _Record, tensor: Tensor) -> None:
        cfg, bins = self.config, self.config.histogram_bins
        if record.kind == "relu":
            record.tensors["alive"], record.count = alive_units(tensor)
            if record.histogram:
                record.tensors["active_rows"] = unit_activity(tensor)
        elif record.kind in ("sigmoid", "tanh"):
            tail = cfg.sigmoid_tail if record.kind == "sigmoid" else cfg.tanh_tail
            record.tensors["tail"] = saturated_count(tensor, record.kind, tail)
            record.count = tensor.numel()
            record.output = tensor  # held until the model returns: is it the model's output?
            if record.histogram:
                low = 0.0 if record.kind == "sigmoid" else -1.0
                record.tensors["hist"] = torch.histc(tensor.float(), bins, low, 1.0)
        else:  # attention probabilities from an opted-in module
            probs = probabilities_from_output(tensor, cfg.max_samples)
            keys = torch.full((), probs.shape[-1], device=probs.device)
            self._attention(record, probs, keys)

    def _attention(self, record: _Record, probs: Tensor, keys: Tensor) -> None:
        min_keys = self.config.attention_min_keys
        sums, rows = entropy_sums(probs, keys, min_keys)
        record.tensors["entropy"], record.tensors["rows"] = sums, rows
        if record.histogram:
            normalised, usable = normalised_entropy(probs, keys, min_keys)
            values = torch.where(usable, normalised, -1.0)  # outside [0, 1]: not counted
            record.tensors["hist"] = torch.histc(values, self.config.histogram_bins, 0.0, 1.0)

    def _mha_hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, kwargs: dict, _output: Any) -> None:
            with torch.no_grad():
                arguments = bind_arguments(module, args, kwargs)
                found = recompute_attention(module, arguments, self.config.max_samples)
                if found is not None:
                    self._attention(self._new_record(name, "attention"), *found)

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
                    record = self._new_record(name, "block")
                    record.tensors["tokens"], record.count = tokens, tokens.shape[1]

        return hook

    def _model_hook(self, _module: nn.Module, _args: tuple, output: Any) -> None:
        returned = {_storage(t) for t in _tensors(output)}
        for record in self._records:
            if record.output is not None and _storage(record.output) in returned:
                record.is_output = True
        self._release_outputs()

    def _release_outputs(self) -> None:
        for record in self._records:
            record.output = None

    # collection ----------------------------------------------------------------------------

    @staticmethod
    def _effective_ranks(records: list[_Record]) -> None:
        batches: dict[tuple, list[_Record]] = {}  # one batched SVD per shape and device
        for record in records:
            if "tokens" in record.tensors:
                tokens = record.tensors["tokens"]
                batches.setdefault((*tokens.shape[1:], tokens.device), []).append(record)
        for group in batches.values():
            sizes = [r.tensors["tokens"].shape[0] for r in group]
            ranks = effective_rank(torch.cat([r.tensors.pop("tokens") for r in group]))
            for record, part in zip(group, ranks.split(sizes), strict=True):
                finite = torch.isfinite(part)
                record.tensors["rank"] = torch.where(finite, part, 0.0).sum()
                record.tensors["samples"] = finite.sum()

    @staticmethod
    def _to_host(records: list[_Record], all_ranks: bool) -> list[dict[str, np.ndarray]]:
        """One copy of every record's tensors; the host-side counts join the device buffer
        only when they are summed over ranks."""
        counts = np.array([float(r.count) for r in records])
        groups: list[dict[str, Tensor]] = [r.tensors for r in records]
        if all_ranks:
            device = next((t.device for r in records for t in r.tensors.values()), None)
            groups.append({"count": torch.from_numpy(counts).to(device)})
        values = copy_to_host(groups, all_ranks=all_ranks)
        if all_ranks:
            counts = values.pop()["count"]
        for value, count in zip(values, counts, strict=True):
            value["count"] = count
        return values

    def _stats(self, records: list[_Record], values: list[dict[str, np.ndarray]]) -> ProbeStats:
        bins = self.config.histogram_bins
        stats = ProbeStats(output_layers=frozenset(r.name for r in records if r.is_output))
        for record, value in zip(records, values, strict=True):
            name, kind, count = record.name, record.kind, float(value["count"])
            stats.kinds[name] = kind
            if kind == "relu":
                stats.dead_relu[name] = float(np.mean(value["alive"] == 0))
                stats.relu_rows[name] = int(count)
                if record.histogram:
                    edges = np.linspace(0.0, 1.0, bins + 1)
                    share = value["active_rows"] / max(count, 1.0)
                    counts = np.histogram(share, edges)[0].astype(np.float64)
                    stats.histograms[f"probe/unit_activity/{name}"] = (counts, edges)
            elif kind in ("sigmoid", "tanh"):
                stats.saturation[name] = float(value["tail"]) / max(count, 1.0)
                if record.histogram:
                    edges = np.linspace(0.0 if kind == "sigmoid" else -1.0, 1.0, bins + 1)
                    stats.histograms[f"probe/activation/{name}"] = (value["hist"], edges)
            elif kind == "attention":
                rows = value["rows"]
                with np.errstate(invalid="ignore", divide="ignore"):
                    stats.attention_entropy[name] = np.where(
                        rows > 0, value["entropy"] / rows, np.nan
                    )
                if record.histogram:
                    edges = np.linspace(0.0, 1.0, bins + 1)
                    stats.histograms[f"probe/attention_entropy/{name}"] = (value["hist"], edges)
            else:
                samples = float(value["samples"])
                stats.effective_rank[name] = float(value["rank"]) / samples if samples else np.nan
                stats.block_tokens[name] = record.count  # a sequence length: never summed
        return stats


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


def _storage(tensor: Tensor) -> int:
    return tensor.untyped_storage().data_ptr()
