import math
import threading
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from lightning_gradflow.core.collector import GradientCollector, StepRecord
from lightning_gradflow.core.histograms import LogBins
from lightning_gradflow.core.layers import group_parameters
from tests.helpers.dispatch import SYNC_OPS, OpRecorder
from tests.helpers.gloo import run_on_gloo_ranks
from tests.helpers.threaded import run_on_threaded_ranks

_SEEDING = threading.Lock()  # ranks that are threads share torch's global generator


def _model_with_grads(seed: int = 0) -> nn.Module:
    with _SEEDING:
        torch.manual_seed(seed)
        model = nn.Sequential(
            nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3), nn.Tanh(), nn.Linear(3, 1)
        )
        model(torch.randn(16, 5)).square().mean().backward()
    return model


def test_norms_match_reference_and_clip_grad_norm():
    model = _model_with_grads()
    collector = GradientCollector(group_parameters(model))
    collector.capture(step=3, params=model.parameters(), weights=True)
    [record] = collector.flush()
    for i, module in enumerate([model[0], model[2], model[4]]):
        grads = torch.cat([module.weight.grad.flatten(), module.bias.grad.flatten()])
        weights = torch.cat([module.weight.flatten(), module.bias.flatten()])
        assert record.layer_norms[i] == pytest.approx(torch.linalg.vector_norm(grads).item())
        assert record.weight_norms[i] == pytest.approx(torch.linalg.vector_norm(weights).item())
    total = nn.utils.clip_grad_norm_(model.parameters(), 1e9).item()
    assert record.total_norm == pytest.approx(total, rel=1e-6)
    assert record.step == 3 and record.has_grad.all()


def test_capture_and_update_make_no_host_sync():
    model = _model_with_grads()
    collector = GradientCollector(group_parameters(model), linear_bins=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with OpRecorder() as rec:
        collector.add_loss(torch.tensor(0.5))
        collector.capture(0, model.parameters(), weights=True, histograms=True, snapshot=True)
        optimizer.step()
        collector.after_optimizer_step()
    assert rec.ops, "the dispatch mode saw no ops"
    assert not SYNC_OPS & set(rec.ops)


def test_update_ratio_is_relative_size_of_the_step():
    model = _model_with_grads()
    collector = GradientCollector(group_parameters(model))
    before = [p.detach().clone() for p in model.parameters()]
    collector.capture(0, model.parameters(), snapshot=True)
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    collector.after_optimizer_step()
    [record] = collector.flush()
    after = list(model.parameters())
    delta = torch.cat([(a - b).flatten() for a, b in zip(after[:2], before[:2], strict=True)])
    weight = torch.cat([b.flatten() for b in before[:2]])
    expected = (torch.linalg.vector_norm(delta) / torch.linalg.vector_norm(weight)).item()
    assert record.update_ratios[0] == pytest.approx(expected, rel=1e-5)


def test_weight_rms_on_every_step_for_the_optimizers_layers():
    model = _model_with_grads()
    collector = GradientCollector(group_parameters(model))
    collector.capture(0, [*model[2].parameters(), *model[4].parameters()])  # model[0]: not ours
    [record] = collector.flush()
    assert record.weight_norms is None and record.update_ratios is None  # not a logged step
    assert math.isnan(record.weight_rms[0])
    for i, module in [(1, model[2]), (2, model[4])]:
        values = torch.cat([p.detach().flatten() for p in module.parameters()])
        assert record.weight_rms[i] == pytest.approx(values.square().mean().sqrt().item())


def test_every_step_kept_until_one_flush_and_losses_accumulate():
    model = _model_with_grads()
    collector = GradientCollector(group_parameters(model))
    for step in range(4):
        collector.add_loss(torch.tensor(1.0))
        collector.add_loss(torch.tensor(float(step)))  # two micro-batches
        collector.capture(step, model.parameters())
    assert collector.num_pending == 4
    records = collector.flush()
    assert [r.step for r in records] == [0, 1, 2, 3]
    assert [r.loss for r in records] == [1.0, 2.0, 3.0, 4.0]
    assert collector.num_pending == 0 and collector.flush() == []


def test_missing_and_nonfinite_gradients():
    model = _model_with_grads()
    model[2].weight.grad = None  # unused this step
    model[4].bias.grad[0] = float("nan")
    collector = GradientCollector(group_parameters(model))
    collector.capture(0, model.parameters(), histograms=True)
    [record] = collector.flush()
    assert record.has_grad.tolist() == [True, True, True]  # bias of layer 1 still has a grad
    model[2].bias.grad = None
    collector.capture(1, model.parameters(), histograms=True)
    [record] = collector.flush()
    assert record.has_grad.tolist() == [True, False, True]
    assert math.isnan(record.layer_norms[1])
    assert record.nonfinite_layers.tolist() == [2]
    assert math.isnan(record.total_norm)
    assert record.log_histograms[2, -1] == 1  # the NaN is counted in the non-finite bucket
    assert record.log_histograms[0].sum() == model[0].weight.numel() + model[0].bias.numel()


def test_frozen_parameters_have_no_gradient_but_a_weight_norm():
    model = _model_with_grads()
    for p in model[0].parameters():
        p.requires_grad_(False)
        p.grad = None
    collector = GradientCollector(group_parameters(model))
    collector.capture(0, model.parameters(), weights=True)
    [record] = collector.flush()
    assert not record.has_grad[0] and record.weight_norms[0] > 0


def test_model_without_parameters():
    collector = GradientCollector(group_parameters(nn.ReLU()), linear_bins=4)
    collector.capture(0, [], weights=True, histograms=True, snapshot=True)
    collector.after_optimizer_step()
    [record] = collector.flush()
    assert record.total_norm == 0.0 and record.layer_norms.shape == (0,)
    counts, maxima = record.linear_histograms
    assert counts.shape == (0, 4) and maxima.shape == (0,)
    assert record.log_histograms.shape == (0, LogBins().num_buckets)


@pytest.mark.parametrize("bins", [0, 2.5, True])
def test_invalid_linear_bins(bins):
    with pytest.raises(ValueError, match=f"linear_bins={bins} is not allowed: expected a positive"):
        GradientCollector([], linear_bins=bins)


def _flat_shards(model: nn.Module, rank: int) -> None:
    """FSDP1 with ``use_orig_params``: each rank holds a plain flat slice of every parameter."""
    for param in model.parameters():
        flat_grad, flat = param.grad.flatten(), param.detach().flatten()
        half = (flat.numel() + 1) // 2
        part = slice(0, half) if rank == 0 else slice(half, None)
        param.data = flat[part].clone()
        param.grad = flat_grad[part].clone()


def _dtensors(model: nn.Module, rank: int) -> None:
    """FSDP2 / tensor parallel: DTensor shards and replicas, beside a plain replicated bias."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (2,))
    placements = {"0.weight": Shard(0), "0.bias": Shard(0), "2.weight": Shard(1)}
    placements |= {"2.bias": Replicate(), "4.weight": Shard(0)}  # 4.weight: rank 1 gets nothing
    for name, placement in placements.items():
        module_name, attr = name.split(".", 1)
        module = model.get_submodule(module_name)
        param = getattr(module, attr)
        sharded = nn.Parameter(distribute_tensor(param.detach(), mesh, [placement]))
        sharded.grad = distribute_tensor(param.grad, mesh, [placement])
        setattr(module, attr, sharded)


def _sharded_records(rank: int, layout: str) -> tuple[StepRecord, StepRecord]:
    """This rank's record of its shards, and the record of the whole model."""
    full, shard = _model_with_grads(), _model_with_grads()
    (_flat_shards if layout == "flat" else _dtensors)(shard, rank)
    records = []
    for model, sharded in ((shard, layout == "flat"), (full, False)):
        collector = GradientCollector(group_parameters(model), linear_bins=8, sharded=sharded)
        collector.capture(0, model.parameters(), weights=True, histograms=True, snapshot=True)
        with torch.no_grad():
            for param in model.parameters():
                param.mul_(0.5)
        collector.after_optimizer_step()
        [record] = collector.flush()
        records.append(record)
    return records[0], records[1]


@pytest.mark.parametrize("layout", ["flat", "dtensor"])
def test_sharded_statistics_equal_the_whole_models(layout):
    """Summed over a real gloo group, each element counted once: norms, weight RMS, update
    ratios and both histograms equal those of the unsharded model."""
    _assert_like_the_whole_model(run_on_gloo_ranks(_sharded_records, layout))


@pytest.mark.parametrize("layout", ["flat", "dtensor"])
def test_sharded_statistics_on_threaded_ranks(layout):
    """The same on two ranks that are threads of this process (where mutmut sees them)."""
    _assert_like_the_whole_model(run_on_threaded_ranks(_sharded_records, layout))


def _assert_like_the_whole_model(results: list[tuple[StepRecord, StepRecord]]) -> None:
    for record, expected in results:
        np.testing.assert_allclose(record.layer_norms, expected.layer_norms, rtol=1e-6)
        np.testing.assert_allclose(record.weight_norms, expected.weight_norms, rtol=1e-6)
        np.testing.assert_allclose(record.weight_rms, expected.weight_rms, rtol=1e-6)
        np.testing.assert_allclose(record.update_ratios, expected.update_ratios, rtol=1e-6)
        assert record.total_norm == pytest.approx(expected.total_norm, rel=1e-6)
        np.testing.assert_array_equal(record.log_histograms, expected.log_histograms)
        counts, maxima = record.linear_histograms
        np.testing.assert_array_equal(counts, expected.linear_histograms[0])
        np.testing.assert_array_equal(maxima, expected.linear_histograms[1])


def test_a_step_reads_gradients_and_weights_in_one_batched_norm():
    model = _model_with_grads()
    collector = GradientCollector(group_parameters(model))
    params = list(model.parameters())
    collector.capture(0, params)
    with OpRecorder() as rec:
        collector.capture(1, params)  # the same list: the layout is known
    assert rec.ops.count("_foreach_norm") == 1
    assert "lift_fresh" not in rec.ops  # nothing planned again (no index tensor built)
    model[2].bias.grad = None  # another set of parameters with a gradient: planned afresh
    collector.capture(2, params, weights=True)
    first, second, third = collector.flush()
    np.testing.assert_array_equal(second.layer_norms, first.layer_norms)
    assert third.has_grad.tolist() == [True, True, True]
    weight = model[2].weight.grad
    assert third.layer_norms[1] == pytest.approx(torch.linalg.vector_norm(weight).item())
    assert third.weight_norms[1] == pytest.approx(second.weight_rms[1] * math.sqrt(3 * 7 + 3))


class _NormReads(OpRecorder):
    """Also records how many tensors each ``_foreach_norm`` reads."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ == "_foreach_norm":
            self.sizes.append(len(args[0]))
        return super().__torch_dispatch__(func, types, args, kwargs)


def test_a_step_without_weight_statistics_reads_the_gradients_alone():
    model = _model_with_grads()
    collector = GradientCollector(group_parameters(model))
    params = list(model.parameters())  # 6 tensors
    with _NormReads() as rec:
        collector.capture(0, params, weight_rms=False)
        collector.capture(1, params)
        collector.capture(2, params, weight_rms=False, weights=True)
    assert rec.sizes == [6, 12, 12]
    alone, both, weights = collector.flush()
    assert (alone.weight_rms, alone.weight_norms, alone.update_ratios) == (None, None, None)
    np.testing.assert_array_equal(alone.layer_norms, both.layer_norms)
    assert alone.total_norm == both.total_norm and alone.has_grad.all()
    np.testing.assert_array_equal(weights.weight_rms, both.weight_rms)
    module = model[2]
    values = torch.cat([p.detach().flatten() for p in module.parameters()])
    assert weights.weight_norms[1] == pytest.approx(torch.linalg.vector_norm(values).item())


def test_an_update_ratio_reads_the_weights_whatever_weight_rms_says():
    model = _model_with_grads()
    collector = GradientCollector(group_parameters(model))
    collector.capture(0, model.parameters(), weight_rms=False, snapshot=True)
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    collector.after_optimizer_step()
    [record] = collector.flush()
    assert record.update_ratios is not None and (record.update_ratios > 0).all()
    assert record.weight_rms is not None and record.weight_norms is not None


def test_sparse_gradients_without_weight_statistics_take_the_general_path():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 4, sparse=True), nn.Linear(4, 1))
    model(torch.tensor([[1, 2, 2]])).sum().backward()
    collector = GradientCollector(group_parameters(model))
    params = list(model.parameters())
    collector.capture(0, params, weight_rms=False)
    collector.capture(1, params, weight_rms=False)  # the plan was dropped at step 0
    collector.capture(2, params)
    first, second, both = collector.flush()
    dense = model[0].weight.grad.to_dense()
    assert first.layer_norms[0] == pytest.approx(torch.linalg.vector_norm(dense).item())
    np.testing.assert_array_equal(second.layer_norms, first.layer_norms)
    np.testing.assert_array_equal(both.layer_norms, first.layer_norms)
    assert first.weight_rms is None and both.weight_rms is not None


def test_last_step_is_finite_looks_at_the_last_steps_gradients_and_loss():
    model = _model_with_grads()
    collector = GradientCollector(group_parameters(model))
    assert collector.last_step_is_finite()  # nothing captured yet
    collector.capture(0, model.parameters())
    assert collector.last_step_is_finite()
    for bad in (float("nan"), float("inf"), -float("inf")):
        model[2].bias.grad[1] = bad
        collector.capture(1, model.parameters())
        assert not collector.last_step_is_finite()
        model[2].bias.grad[1] = 0.0
        collector.add_loss(torch.tensor(bad))
        collector.capture(2, model.parameters())
        assert not collector.last_step_is_finite()
    collector.add_loss(torch.tensor(1.0))
    collector.capture(3, model.parameters())
    assert collector.last_step_is_finite()  # only the last step counts


def test_a_discarded_loss_is_not_reported():
    model = _model_with_grads()
    collector = GradientCollector(group_parameters(model))
    collector.add_loss(torch.tensor(5.0))
    collector.discard_loss()
    collector.capture(0, model.parameters())
    collector.add_loss(torch.tensor(5.0))
    collector.discard_loss()
    collector.add_loss(torch.tensor(2.0))
    collector.capture(1, model.parameters())
    assert [r.loss for r in collector.flush()] == [None, 2.0]


def _losses_on_rank(rank: int) -> tuple[list, list, list]:
    model = _model_with_grads()
    collector = GradientCollector(group_parameters(model))
    for step in range(2):
        collector.add_loss(torch.tensor(10.0 * rank + step))
        collector.capture(step, model.parameters())
    averaged = [r.loss for r in collector.flush()]
    collector.add_loss(torch.tensor(float(rank)))
    collector.capture(2, model.parameters())
    own = [r.loss for r in collector.flush(all_ranks=False)]
    collector.add_loss(torch.tensor(float(rank)))
    collector.capture(3, model.parameters())
    collector.capture(4, model.parameters())  # no loss: the steps are not averaged
    partial = [r.loss for r in collector.flush()]
    return averaged, own, partial


def test_losses_are_averaged_over_ranks_only_when_every_step_has_one():
    assert run_on_threaded_ranks(_losses_on_rank) == [
        ([5.0, 6.0], [0.0], [0.0, None]),
        ([5.0, 6.0], [1.0], [1.0, None]),
    ]


def test_linear_histograms_and_the_optimizer_index_reach_the_record():
    model = _model_with_grads()
    collector = GradientCollector(group_parameters(model), linear_bins=4)
    collector.capture(0, model.parameters(), optimizer_index=1, histograms=True)
    collector.capture(1, model.parameters(), optimizer_index=1)  # not a histogram step
    first, second = collector.flush()
    assert first.optimizer_index == second.optimizer_index == 1
    counts, maxima = first.linear_histograms
    assert counts.shape == (3, 4) and second.linear_histograms is None
    for i, module in enumerate([model[0], model[2], model[4]]):
        grads = torch.cat([p.grad.flatten() for p in module.parameters()])
        assert counts[i].sum() == grads.numel()
        assert maxima[i] == pytest.approx(grads.abs().max().item())


def test_layers_without_weights_or_outside_the_optimizer_raise_no_numpy_warnings():
    model = _model_with_grads()
    with torch.no_grad():
        for p in model[2].parameters():
            p.zero_()  # an update ratio over a zero weight norm: x / 0
    collector = GradientCollector(group_parameters(model))
    collector.capture(0, [*model[2].parameters(), *model[4].parameters()], snapshot=True)
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    collector.after_optimizer_step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        [record] = collector.flush()
    assert math.isnan(record.weight_rms[0])  # model[0]: 0 / 0 elements, not ours
    assert record.update_ratios[1] == math.inf and math.isnan(record.update_ratios[0])


def test_losses_are_summed_in_float64():
    model = _model_with_grads()
    collector = GradientCollector(group_parameters(model))
    collector.add_loss(torch.tensor(1e8))  # float32: 1e8 + 1 rounds back to 1e8
    collector.add_loss(torch.tensor(1.0))
    collector.capture(0, model.parameters())
    collector.add_loss(torch.tensor(60000.0, dtype=torch.float16))
    collector.add_loss(torch.tensor(60000.0, dtype=torch.float16))  # overflows float16
    collector.capture(1, model.parameters())
    assert [r.loss for r in collector.flush()] == [100000001.0, 120000.0]


def test_by_default_a_step_has_optimizer_0_and_neither_histograms_nor_update_ratios():
    model = _model_with_grads()
    collector = GradientCollector(group_parameters(model), linear_bins=4)
    collector.capture(0, model.parameters())
    collector.after_optimizer_step()
    [record] = collector.flush()
    assert record.optimizer_index == 0 and record.log_histograms is None
    assert record.linear_histograms is None and record.update_ratios is None


def test_one_parameter_list_with_gradients_missing_in_turn():
    """The layout is kept per set of parameters with a gradient, for the same list object."""
    model = _model_with_grads()
    params = list(model.parameters())
    collector = GradientCollector(group_parameters(model))
    grads = [p.grad for p in params]
    expected = []
    for missing in ([2, 3], [4, 5], [], [0, 1, 4, 5], [2, 3]):
        for i, p in enumerate(params):
            p.grad = None if i in missing else grads[i]
        collector.capture(len(expected), params)
        expected.append([i not in missing for i in (0, 2, 4)])
    records = collector.flush()
    assert [r.has_grad.tolist() for r in records] == expected
    for record, has in zip(records, expected, strict=True):
        for layer in range(3):
            if has[layer]:
                norm = torch.cat([g.flatten() for g in grads[2 * layer : 2 * layer + 2]]).norm()
                assert record.layer_norms[layer] == pytest.approx(norm.item())
            else:
                assert math.isnan(record.layer_norms[layer])


def test_weight_rms_follows_the_parameter_list_of_each_step():
    model = _model_with_grads()
    collector = GradientCollector(group_parameters(model))
    collector.capture(0, list(model.parameters()))
    collector.capture(1, list(model[4].parameters()))  # another optimizer's list
    first, second = collector.flush()
    assert not np.isnan(first.weight_rms).any()
    assert np.isnan(second.weight_rms[:2]).all() and second.weight_rms[2] == first.weight_rms[2]


def test_a_single_parameter():
    torch.manual_seed(0)
    model = nn.Linear(3, 1, bias=False)
    model(torch.randn(4, 3)).sum().backward()
    collector = GradientCollector(group_parameters(model))
    collector.capture(0, [model.weight], weights=True)
    [record] = collector.flush()
    assert record.layer_norms[0] == pytest.approx(model.weight.grad.norm().item())


def test_sparse_gradients_on_every_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 4, sparse=True), nn.Linear(4, 1))
    params = list(model.parameters())
    collector = GradientCollector(group_parameters(model))
    for step in range(2):
        model.zero_grad()
        model(torch.tensor([1, 3, 3])).sum().backward()
        collector.capture(step, params)
    for record in collector.flush():
        dense = model[0].weight.grad.to_dense()
        assert record.layer_norms[0] == pytest.approx(dense.norm().item())
        assert record.layer_norms[1] == pytest.approx(
            torch.cat([model[1].weight.grad.flatten(), model[1].bias.grad]).norm().item()
        )


def test_after_optimizer_step_twice_keeps_the_first_update():
    model = _model_with_grads()
    before = [p.detach().clone() for p in model[0].parameters()]
    collector = GradientCollector(group_parameters(model))
    collector.capture(0, model.parameters(), snapshot=True)
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    collector.after_optimizer_step()
    collector.after_optimizer_step()  # nothing left to turn into update norms
    [record] = collector.flush()
    after = list(model[0].parameters())
    delta = torch.cat([(a - b).flatten() for a, b in zip(after, before, strict=True)]).norm()
    weight = torch.cat([b.flatten() for b in before]).norm()
    assert record.update_ratios[0] == pytest.approx((delta / weight).item(), rel=1e-5)


def test_on_host_when_every_parameter_is_on_the_cpu():
    assert GradientCollector(group_parameters(_model_with_grads())).on_host is True
    assert GradientCollector([]).on_host is True  # nothing to copy from a device
    meta = nn.Linear(2, 2, device="meta")
    assert GradientCollector(group_parameters(meta)).on_host is False
