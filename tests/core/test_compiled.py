"""eager_forward: compiled code runs eagerly inside the block, compiled again after it."""

import pytest
import torch

from lightning_gradflow.core.compiled import eager_forward
from tests.helpers.compile_backend import recording_backend


@pytest.mark.skipif(not hasattr(torch.compiler, "set_stance"), reason="torch < 2.6")
def test_compiled_code_runs_eagerly_inside_the_block_only():
    torch._dynamo.reset()
    graphs, backend = recording_backend()
    double = torch.compile(lambda x: 2 * x, backend=backend)
    with eager_forward():
        assert double(torch.ones(2)).tolist() == [2.0, 2.0]
    assert graphs == []  # nothing compiled inside
    assert double(torch.ones(2)).tolist() == [2.0, 2.0]
    assert len(graphs) == 1
    torch._dynamo.reset()


def test_without_set_stance_it_changes_nothing(monkeypatch):
    """torch < 2.6 has no ``set_stance``: the block is a no-op there."""
    monkeypatch.delattr(torch.compiler, "set_stance", raising=False)
    with eager_forward() as entered:
        assert entered is None
