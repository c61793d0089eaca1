"""locate_nonfinite_origin: the first module, and the op in it, that made a NaN/Inf."""

import torch
from torch import nn

from lightning_gradflow.core.nan_origin import locate_nonfinite_origin


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
