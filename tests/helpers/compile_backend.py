"""A ``torch.compile`` backend that records the graphs it is given and runs them as they are."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def recording_backend() -> tuple[list[Any], Callable[[Any, Any], Callable[..., Any]]]:
    """``(graphs, backend)``: pass ``backend`` to ``torch.compile``; ``graphs`` grows by one
    each time dynamo compiles a new graph.

    Example:
        >>> graphs, backend = recording_backend()
        >>> graphs
        []
    """
    graphs: list[Any] = []

    def backend(graph: Any, example_inputs: Any) -> Callable[..., Any]:
        graphs.append(graph)
        return graph.forward

    return graphs, backend
