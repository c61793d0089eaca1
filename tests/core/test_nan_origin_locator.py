"""locate_nonfinite_origin: the first module, and the op in it, that made a NaN/Inf."""

import pytest
import torch
from torch import nn

from lightning_gradflow.core.nan_origin import (
    NonfiniteOrigin,
    diagnose_without_side_effects,
    locate_nonfinite_origin,
)
from tests.helpers.compile_backend import recording_backend


class Div(nn.Module):
    def forward(self, x, scale):
        return x / scale


class Block(nn.Module):
    """The NaN comes from the block's own code between its children: the block is named."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(4, 4)
        self.after = nn.Linear(4, 4)

    def forward(self, x):
        return self.after(torch.exp(self.inner(x) * 1e4))


def test_the_op_is_named_with_keyword_inputs():
    div = Div()
    model = nn.ModuleDict({"first": nn.Linear(4, 4), "div": div})

    def run():
        return model["div"](model["first"](torch.ones(1, 4)), scale=torch.zeros(1, 4))

    origin = locate_nonfinite_origin(model, run)
    assert (origin.module, origin.module_type, origin.op) == ("div", "Div", "div")


def test_a_nan_made_between_children_names_the_parent():
    torch.manual_seed(0)
    model = nn.Sequential(Block())
    with torch.no_grad():
        model[0].inner.bias.fill_(1.0)
    origin = locate_nonfinite_origin(model, lambda: model(torch.ones(2, 4)))
    assert (origin.module, origin.op) == ("0", "exp")
    assert origin.describe() == "`0` (Block), in op `exp`"


def test_non_finite_weights_are_named_as_such():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
    with torch.no_grad():
        model[2].weight[0, 1] = float("nan")
    origin = locate_nonfinite_origin(model, lambda: model(torch.ones(2, 4)))
    assert origin.module == "2" and origin.nonfinite_params == ("weight",) and origin.op is None
    assert "parameters are already non-finite" in origin.describe()


def test_finite_passes_and_bad_inputs():
    model = nn.Sequential(nn.Linear(4, 1))
    batch = torch.ones(2, 4)
    assert locate_nonfinite_origin(model, lambda: model(batch), inputs=batch) is None
    batch[1, 2] = float("inf")
    origin = locate_nonfinite_origin(model, lambda: model(batch), inputs=(batch, None))
    assert origin.describe() == "the input batch itself (NaN/Inf in the data)"
    assert all(not hook for m in model.modules() for hook in (m._forward_hooks,))


class LogThenExp(nn.Module):
    """Two ops each turn finite inputs into non-finite outputs: the first one is named."""

    def forward(self, x):
        return torch.log(-x) + torch.exp(x * 1e4)


class FloorDiv(nn.Module):
    def forward(self, x):
        return torch.div(x, torch.zeros_like(x), rounding_mode="floor")  # a keyword-only argument


class InfBuffer(nn.Module):
    """The value comes from a buffer: no op made it from finite inputs."""

    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.full((4,), float("inf")))

    def forward(self, x):
        return (x * self.scale).sum(-1)


class BorrowsWeights(nn.Module):
    """Uses its child's weight without calling the child: the child never runs on its own."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(4, 4)

    def forward(self, x):
        return x @ self.inner.weight.T


@pytest.mark.parametrize(
    ("module", "op"), [(LogThenExp(), "log"), (FloorDiv(), "div"), (InfBuffer(), None)]
)
def test_the_op_named_is_the_first_to_turn_finite_inputs_non_finite(module, op):
    model = nn.Sequential(nn.Linear(4, 4), module)
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(4))
        model[0].bias.fill_(1.0)
    origin = locate_nonfinite_origin(model, lambda: model(torch.ones(2, 4)))
    assert origin == NonfiniteOrigin("1", type(module).__name__, op, ())


def test_only_the_modules_own_parameters_are_named():
    model = nn.Sequential(BorrowsWeights())
    with torch.no_grad():
        model[0].inner.weight[0, 0] = float("nan")
    origin = locate_nonfinite_origin(model, lambda: model(torch.ones(2, 4)))
    assert origin == NonfiniteOrigin("0", "BorrowsWeights", None, ())
    assert origin.describe() == "`0` (BorrowsWeights)"


def test_an_input_origin_is_the_batch():
    batch = torch.tensor([[1.0, float("nan")]])
    model = nn.Linear(2, 1)
    origin = locate_nonfinite_origin(model, lambda: model(batch), inputs={"x": batch})
    assert origin == NonfiniteOrigin("", "input", None)


def test_each_form_of_the_description():
    assert NonfiniteOrigin("", "input", None).describe() == (
        "the input batch itself (NaN/Inf in the data)"
    )
    assert NonfiniteOrigin("", "Net", "log").describe() == "`<model>` (Net), in op `log`"
    assert NonfiniteOrigin("", "Net", None).describe() == "`<model>` (Net)"
    assert NonfiniteOrigin("fc", "Linear", None, ("weight",)).describe() == (
        "`fc` (Linear), whose parameters are already non-finite"
    )
    assert NonfiniteOrigin("fc", "Linear", "addmm", ("bias",)).describe() == (
        "`fc` (Linear), whose parameters are already non-finite"
    )


class Log(nn.Module):
    def forward(self, x):
        return torch.log(x)


def _noisy_model() -> nn.Sequential:
    """Batch norm statistics and dropout's random draws: what a re-run would disturb."""
    torch.manual_seed(0)
    return nn.Sequential(nn.BatchNorm1d(4), nn.Dropout(0.5), Log())


def _buffers(model: nn.Module) -> list[torch.Tensor]:
    return [b.clone() for b in model.buffers()]


def test_a_diagnosis_leaves_the_random_state_and_the_buffers_as_they_were():
    model, batch = _noisy_model(), torch.randn(8, 4)
    buffers, rng = _buffers(model), torch.get_rng_state()
    origin = diagnose_without_side_effects(model, lambda: model(batch), inputs=batch)
    assert origin == NonfiniteOrigin("2", "Log", "log", ())
    assert torch.equal(torch.get_rng_state(), rng)
    for now, before in zip(model.buffers(), buffers, strict=True):
        assert torch.equal(now, before)
    assert model(batch).isnan().any()  # the model still runs, and is still training
    assert int(model[0].num_batches_tracked) == 1


def test_a_diagnosis_that_fails_gives_none_and_still_restores_the_buffers():
    model, batch = _noisy_model(), torch.randn(8, 4)
    buffers = _buffers(model)

    def run() -> None:
        model[0](batch)  # updates the running statistics, then fails
        raise RuntimeError("the re-run cannot finish")

    assert diagnose_without_side_effects(model, run) is None
    for now, before in zip(model.buffers(), buffers, strict=True):
        assert torch.equal(now, before)


def test_a_diagnosis_names_bad_inputs():
    model, batch = _noisy_model(), torch.full((8, 4), float("nan"))
    origin = diagnose_without_side_effects(model, lambda: model(batch), inputs=batch)
    assert origin.module_type == "input"


def test_models_with_sync_batch_norm_are_not_re_run():
    calls: list[int] = []
    model = nn.Sequential(nn.Linear(4, 4), nn.SyncBatchNorm(4))
    assert diagnose_without_side_effects(model, lambda: calls.append(1)) is None
    assert calls == []


@pytest.mark.skipif(not hasattr(torch.compiler, "set_stance"), reason="torch < 2.6")
def test_a_compiled_model_is_diagnosed_eagerly_without_compiling_again():
    torch._dynamo.reset()
    graphs, backend = recording_backend()
    net = nn.Sequential(nn.Linear(2, 2), Log())
    with torch.no_grad():
        net[0].weight.copy_(-torch.eye(2))
    compiled = torch.compile(net, backend=backend)
    batch = torch.ones(1, 2)
    compiled(batch)
    try:
        assert len(graphs) == 1
        origin = diagnose_without_side_effects(net, lambda: compiled(batch))
        assert origin == NonfiniteOrigin("1", "Log", "log", ())
        assert len(graphs) == 1  # the hooks and no_grad would otherwise make a new graph
    finally:
        torch._dynamo.reset()
