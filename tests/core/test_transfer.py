"""copy_to_host: every group's tensors back by name, shape and value, as float64."""

import numpy as np
import torch

from lightning_gradflow.core.transfer import copy_to_host
from tests.helpers.threaded import run_on_threaded_ranks


def test_names_shapes_and_values_of_every_group_as_float64():
    groups = [
        {"scalar": torch.tensor(3.5), "matrix": torch.arange(6).reshape(2, 3)},
        {},
        {"empty": torch.zeros(0), "half": torch.tensor([0.5, -2.0], dtype=torch.float16)},
        {"flags": torch.tensor([True, False]), "cube": torch.ones(1, 2, 2)},
    ]
    values = copy_to_host(groups)
    assert len(values) == 4 and values[1] == {}
    assert [list(v) for v in values] == [
        ["scalar", "matrix"],
        [],
        ["empty", "half"],
        ["flags", "cube"],
    ]
    for group, host in zip(groups, values, strict=True):
        for name, tensor in group.items():
            assert isinstance(host[name], np.ndarray) and host[name].dtype == np.float64
            assert host[name].shape == tuple(tensor.shape)
            np.testing.assert_array_equal(host[name], tensor.double().numpy())
    assert float(values[0]["scalar"]) == 3.5


def test_no_tensors_gives_an_empty_dict_per_group():
    assert copy_to_host([]) == []
    assert copy_to_host([{}, {}], all_ranks=True) == [{}, {}]


def test_without_a_process_group_all_ranks_changes_nothing():
    [host] = copy_to_host([{"x": torch.tensor([1.0, 2.0])}], all_ranks=True)
    assert host["x"].tolist() == [1.0, 2.0]


def _copied_on_rank(rank: int) -> tuple[list[float], list[float], float]:
    groups = [{"x": torch.tensor([1.0, 10.0 * rank]), "y": torch.tensor(float(rank + 1))}]
    [summed] = copy_to_host(groups, all_ranks=True)
    [own] = copy_to_host(groups)
    return summed["x"].tolist(), own["x"].tolist(), float(summed["y"])


def test_all_ranks_sums_over_the_group_and_the_default_keeps_this_ranks_values():
    assert run_on_threaded_ranks(_copied_on_rank) == [
        ([2.0, 10.0], [1.0, 0.0], 3.0),
        ([2.0, 10.0], [1.0, 10.0], 3.0),
    ]
