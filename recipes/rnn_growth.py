"""Test the seed claims about recurrent gradients on the S&P 500 and NASDAQ input windows.

Measures, with :func:`~recipes.volatility.growth.gradient_growth`, how the norm of
``d yhat / d h_0`` (the forecast's gradient with respect to the state ``T`` days back; the loss
gradient is this times ``d loss / d yhat``, which does not depend on ``T``) changes with the
window ``T`` at initialisation:

- vanilla RNN with its recurrent matrix rescaled to spectral radius ``rho`` (``--rho``), with its
  tanh and with the identity in its place (same weights): the linear rate is ``rho``, the tanh rate
  is damped by ``tanh' = 1 - h^2``;
- PyTorch's default RNN init (``rho ~ 0.58``), an orthogonal recurrent init (``rho = 1``);
- the LSTM with PyTorch's init (forget gate ~ 0.5) and with forget-gate bias 1.

Every model is drawn with each of ``--seeds``; the table shows mean ± sd over them. With
``--sweep <dir of experiment=rnn_vs_lstm>`` the trained models (best checkpoints) are measured
too, next to their test scores.

Usage:
    python -m recipes.rnn_growth
    python -m recipes.rnn_growth --data sp500 --rho 0.5 3 --lengths 10 22 40 --seeds 0
    python -m recipes.train -m experiment=rnn_vs_lstm
    python -m recipes.rnn_growth --sweep outputs/rnn_vs_lstm/multiruns/<time>

Writes ``rnn_growth.md`` and ``rnn_growth.json`` to ``--out`` (default
``outputs/rnn_growth/<time>``) and prints the markdown.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

DEFAULT_RHOS = (0.5, 0.9, 1.0, 1.5, 3.0)
DEFAULT_LENGTHS = (10, 22, 40, 80, 120, 160)
DEFAULT_DATA = ("sp500", "nasdaq")
INIT_COLUMNS = (
    "data",
    "model",
    "cell",
    "rho",
    "mean_deriv",
    "rho_mean_deriv",
    "rho_rms_deriv",
    "rate",
    "log10_g_22",
    "log10_g_120",
    "seeds",
)
TRAINED_COLUMNS = (
    "run",
    "seeds",
    "rho",
    "mean_deriv",
    "rate",
    "log10_g_22",
    "log10_g_66",
    "ratio_har",
    "ratio_lhar",
    "dm_lhar",
    "grad_max",
    "alerts",
)


def input_windows(data: str | Any, length: int, count: int = 256) -> Any:
    """``count`` training-split input windows of ``length`` days (z-scored with training
    statistics), evenly spread over the training period, as a ``(count, length, features)``
    tensor. ``data``: a source name (default settings) or a data config to instantiate."""
    import numpy as np
    import torch
    from hydra.utils import instantiate

    from recipes.volatility import VolatilityDataModule

    if isinstance(data, str):
        dm = VolatilityDataModule(data, window=length, shuffle=False)
    else:
        dm = instantiate(data, window=length, shuffle=False, _convert_="all")
    dm.setup()
    dataset = dm.dataloader("train").dataset
    index = np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int)
    return torch.stack([dataset[int(i)][0] for i in index])


def init_models(
    rhos: Sequence[float], input_dim: int, hidden: int, seed: int
) -> Iterator[tuple[str, str, Any, bool]]:
    """``(model, cell, network, linear)`` for every initialisation the recipe measures."""
    import torch

    from recipes.volatility.models import LSTM, VanillaRNN

    def drawn(build: Callable[[], Any]) -> Any:
        torch.manual_seed(seed)
        return build()

    for rho in rhos:
        rnn = drawn(lambda r=rho: VanillaRNN(input_dim, hidden, recurrent_spectral_radius=r))
        yield f"rnn rho={rho:g}", "linear", rnn, True
        yield f"rnn rho={rho:g}", "tanh", rnn, False
    yield "rnn default init", "tanh", drawn(lambda: VanillaRNN(input_dim, hidden)), False
    orthogonal = drawn(lambda: VanillaRNN(input_dim, hidden, recurrent_init="orthogonal"))
    yield "rnn orthogonal", "linear", orthogonal, True
    yield "rnn orthogonal", "tanh", orthogonal, False
    yield "lstm default init", "lstm", drawn(lambda: LSTM(input_dim, hidden)), False
    opened = drawn(lambda: LSTM(input_dim, hidden, forget_bias=1.0))
    yield "lstm forget bias 1", "lstm", opened, False


def measure_init(
    data: Sequence[str],
    rhos: Sequence[float],
    lengths: Sequence[int],
    seeds: Sequence[int],
    hidden: int = 32,
    count: int = 256,
) -> list[dict[str, Any]]:
    """One record per data set, initialisation and seed (see :func:`init_models`)."""
    from recipes.volatility.growth import gradient_growth

    records = []
    for name in data:
        x = input_windows(name, max(lengths), count)
        for seed in seeds:
            for model, cell, net, linear in init_models(rhos, x.shape[-1], hidden, seed):
                growth = gradient_growth(net, x, lengths, linear=linear)
                records.append(
                    {"data": name, "model": model, "cell": cell, "seed": seed, **growth.as_dict()}
                )
    return records


def _mean_sd(values: Sequence[float | None], digits: int = 3) -> str:
    from recipes.compare import _fixed, mean_sd

    return mean_sd(values, _fixed, digits=digits)


def _at(record: dict[str, Any], length: int) -> float | None:
    lengths = list(record["lengths"])
    return record["log10_norm"][lengths.index(length)] if length in lengths else None


def init_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """The init table: records of the same data set, model and cell aggregated over seeds."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault((rec["data"], rec["model"], rec["cell"]), []).append(rec)
    rows = []
    for (data, model, cell), recs in groups.items():
        rho = [r["spectral_radius"] for r in recs]
        lstm = cell == "lstm"
        deriv = [r["forget_mean"] if lstm else r["deriv_mean"] for r in recs]
        rows.append(
            {
                "data": data,
                "model": model,
                "cell": cell,
                "rho": "" if lstm else _mean_sd(rho),
                "mean_deriv": _mean_sd(deriv),
                "rho_mean_deriv": ""
                if lstm
                else _mean_sd([r["spectral_radius"] * r["deriv_mean"] for r in recs]),
                "rho_rms_deriv": ""
                if lstm
                else _mean_sd([r["spectral_radius"] * r["deriv_rms"] for r in recs]),
                "rate": _mean_sd([r["rate"] for r in recs]),
                "log10_g_22": _mean_sd([_at(r, 22) for r in recs], 1),
                "log10_g_120": _mean_sd([_at(r, 120) for r in recs], 1),
                "seeds": str(len(recs)),
            }
        )
    return rows


def _trained_model(job: Path, metrics: dict[str, Any]) -> tuple[Any, Any]:
    """The job's config and its network with the best checkpoint's weights."""
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    import recipes  # noqa: F401  (the gf.* resolvers of the saved config)

    cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
    model = instantiate(cfg.model.net, _convert_="all")
    checkpoint = metrics["training"].get("best_checkpoint")
    if checkpoint:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
        prefix = "net."  # the forecaster's network; its own buffers (target_loc ...) stay
        model.load_state_dict(
            {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        )
    return cfg, model


def measure_sweep(
    sweep_dir: Path, lengths: Sequence[int], count: int = 256
) -> list[dict[str, Any]]:
    """Per RNN/LSTM job of a sweep: the trained model's growth and its test scores."""
    from recipes.compare import collect, labels
    from recipes.volatility.growth import gradient_growth
    from recipes.volatility.models import LSTM, VanillaRNN

    records = collect(sweep_dir)
    windows: dict[str, Any] = {}
    out = []
    for label, metrics in zip(labels(records), records, strict=True):
        if metrics.get("status") == "failed":
            continue
        job = Path(metrics["run"]["output_dir"])
        cfg, model = _trained_model(job, metrics)
        if not isinstance(model, VanillaRNN | LSTM):
            continue
        data = str(cfg.data.source)
        if data not in windows:  # the job's own data settings, longer windows
            windows[data] = input_windows(cfg.data, max(lengths), count)
        growth = gradient_growth(model, windows[data], lengths)
        out.append(
            {
                "run": label,
                "job": str(job),
                "data": data,
                "window": int(cfg.data.window),
                "test": metrics.get("test", {}),
                "alerts": metrics.get("alerts", {}),
                "grad_norm_max": metrics.get("gradient", {}).get("grad_norm_max"),
                **growth.as_dict(),
            }
        )
    return out


def trained_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """The trained-model table: one row per sweep label (seeds aggregated)."""
    from recipes.compare import _alerts, _sci, mean_sd

    groups: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault(rec["run"], []).append(rec)
    rows = []
    for label, recs in groups.items():
        lstm = recs[0]["forget_mean"] is not None
        alerts: dict[str, int] = {}
        for rec in recs:
            for kind, n in rec["alerts"].items():
                alerts[kind] = alerts.get(kind, 0) + n
        rows.append(
            {
                "run": label,
                "seeds": str(len(recs)),
                "rho": "" if lstm else _mean_sd([r["spectral_radius"] for r in recs]),
                "mean_deriv": _mean_sd(
                    [r["forget_mean"] if lstm else r["deriv_mean"] for r in recs]
                ),
                "rate": _mean_sd([r["rate"] for r in recs]),
                "log10_g_22": _mean_sd([_at(r, 22) for r in recs], 1),
                "log10_g_66": _mean_sd([_at(r, 66) for r in recs], 1),
                "ratio_har": _mean_sd([r["test"].get("qlike_ratio_har") for r in recs]),
                "ratio_lhar": _mean_sd([r["test"].get("qlike_ratio_lhar") for r in recs]),
                "dm_lhar": _mean_sd([r["test"].get("dm_t_lhar") for r in recs], 2),
                "grad_max": mean_sd([r["grad_norm_max"] for r in recs], _sci),
                "alerts": _alerts(alerts),
            }
        )
    return rows


INIT_NOTE = (
    "`rate`: fitted per-step factor of |d yhat / d h_0| over T in {lengths}; `mean_deriv`: "
    "E[tanh'] (1 for linear) or, for the LSTM, the mean forget gate E[f]; `rho_mean_deriv`, "
    "`rho_rms_deriv`: rho times the mean and the root mean square of tanh'; `log10_g_T`: "
    "log10 |d yhat / d h_0| with the state T days back (geometric mean over {count} training "
    "windows); mean ± sd over {seeds} seeds."
)


def report(
    init: Sequence[dict[str, Any]],
    trained: Sequence[dict[str, Any]] | None,
    *,
    lengths: Sequence[int],
    count: int,
    seeds: int,
) -> str:
    """The markdown of both tables."""
    from recipes.volatility import format_table

    text = [
        "# RNN gradient growth at initialisation",
        "",
        format_table(init_rows(init), INIT_COLUMNS),
        "",
        INIT_NOTE.format(lengths=list(lengths), count=count, seeds=seeds),
    ]
    if trained:
        text += [
            "",
            "# After training (best checkpoints of the sweep)",
            "",
            format_table(trained_rows(trained), TRAINED_COLUMNS),
            "",
            "`mean_deriv`: E[tanh'] (RNN) or E[f] (LSTM) on the training windows; test scores "
            "on the single split; `grad_max`: largest raw gradient norm during training.",
        ]
    return "\n".join(text) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m recipes.rnn_growth``: measure, write and print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", nargs="+", default=list(DEFAULT_DATA))
    parser.add_argument("--rho", nargs="+", type=float, default=list(DEFAULT_RHOS))
    parser.add_argument("--lengths", nargs="+", type=int, default=list(DEFAULT_LENGTHS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--windows", type=int, default=256, help="input windows per data set")
    parser.add_argument("--sweep", type=Path, help="an experiment=rnn_vs_lstm sweep directory")
    parser.add_argument("--out", type=Path, help="default: outputs/rnn_growth/<time>")
    parser.add_argument("--num-threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.num_threads)
    start = time.perf_counter()
    init = measure_init(args.data, args.rho, args.lengths, args.seeds, args.hidden, args.windows)
    trained_lengths = sorted({*args.lengths, 22, 66})
    trained = measure_sweep(args.sweep, trained_lengths, args.windows) if args.sweep else None
    out = args.out or Path("outputs/rnn_growth") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    text = report(init, trained, lengths=args.lengths, count=args.windows, seeds=len(args.seeds))
    result = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "init": init,
        "trained": trained,
        "wall_time_s": time.perf_counter() - start,
    }
    (out / "rnn_growth.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "rnn_growth.md").write_text(text)
    print(text, f"\nwritten to {out} in {result['wall_time_s']:.1f} s", flush=True)
    return result


if __name__ == "__main__":
    main()
