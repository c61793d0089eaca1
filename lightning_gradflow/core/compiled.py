"""Running compiled code eagerly while the monitor's module hooks are attached.

``torch.compile`` traces module hooks into its graph when it compiles, and by default does not
guard on them: a hook registered after compiling is never called, one removed afterwards keeps
running. The monitor's hooks (the first forward pass, which records the layer order, and probe
steps) are short-lived, so those forward passes run eagerly instead: no recompilation, and the
other steps keep their compiled code.

Example:
    >>> import torch
    >>> double = torch.compile(lambda x: 2 * x, backend="eager")
    >>> with eager_forward():
    ...     double(torch.ones(2)).tolist()
    [2.0, 2.0]
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch


def eager_forward() -> AbstractContextManager[object]:
    """Inside, compiled functions and modules run eagerly (``torch>=2.6``; else a no-op)."""
    set_stance = getattr(torch.compiler, "set_stance", None)
    return set_stance("force_eager") if set_stance is not None else nullcontext()
