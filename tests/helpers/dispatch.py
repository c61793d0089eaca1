"""Prove that code makes no host synchronisation: record the aten ops it runs."""

from __future__ import annotations

from torch.utils._python_dispatch import TorchDispatchMode

SYNC_OPS = {"_local_scalar_dense", "nonzero", "is_nonzero", "equal", "item"}
"""aten ops that wait for the device (``.item()``, data-dependent shapes, comparisons)."""


class OpRecorder(TorchDispatchMode):
    """Records the name of every aten op that runs inside the ``with`` block."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))
