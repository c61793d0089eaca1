"""One alert, every sink: console (once), TensorBoard text, W&B alert + record, JSON lines."""

import json
import warnings

from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_gradflow import GradFlowWarning
from tests.helpers.wandb_records import (
    alerts,
    find_wandb_file,
    finish_wandb,
    history_rows,
    offline_wandb_env,
    read_finished_records,
)
from tests.helpers.zoo import PATHOLOGICAL

SIGMOID = PATHOLOGICAL[0]  # 20-layer sigmoid MLP: vanishing from step 9 on


def test_every_sink_gets_the_alert_once(tmp_path, monkeypatch):
    root = offline_wandb_env(monkeypatch, tmp_path / "wandb")
    loggers = [
        TensorBoardLogger(tmp_path, name="tb", version=0),
        WandbLogger(save_dir=str(root), offline=True, project="alerts"),
        CSVLogger(tmp_path, name="csv", version=0),
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = SIGMOID.run(logger=loggers, quiet=False)
    finish_wandb(loggers[1].experiment)
    monitor = run.monitor
    assert len(monitor.alerts) == 1 and monitor.alert_counts["vanishing"] == 11

    console = [w for w in caught if issubclass(w.category, GradFlowWarning)]
    assert len(console) == 1 and "[gradflow vanishing/" in str(console[0].message)

    [line] = (tmp_path / "tb" / "version_0" / "gradflow_alerts.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["kind"] == "vanishing" and record["step"] == 9 and record["count"] == 1
    assert record["layers"][0] == "net.layers.linear1" and record["hint"]

    events = EventAccumulator(str(tmp_path / "tb" / "version_0"), size_guidance={"tensors": 0})
    events.Reload()
    [text] = events.Tensors("alerts/vanishing/text_summary")
    assert text.step == 9
    assert b"falls from" in text.tensor_proto.string_val[0]
    active = events.Scalars("alerts/active_steps/vanishing")
    assert active[-1].value == 11 and active[-1].step == 19
    announced = events.Scalars("alerts/announced/vanishing")
    assert announced[0].step >= 9 and {e.value for e in announced} == {1.0}  # 1 shown, 11 held

    records = read_finished_records(root)
    [wandb_alert] = alerts(records)
    assert wandb_alert["title"] == "gradflow: vanishing at step 9"
    assert "Fix:" in wandb_alert["text"]
    [row] = [r for r in history_rows(records) if r.get("gradflow/alerts/_type") == "table-file"]
    assert row["gradflow/alerts/nrows"] == 1
    files = find_wandb_file(root).parent / "files"
    table = json.loads((files / row["gradflow/alerts/path"]).read_text())
    assert table["columns"][:3] == ["step", "kind", "severity"]
    [(step, kind, severity, layers, *_)] = table["data"]
    assert (step, kind, severity) == (9, "vanishing", monitor.alerts[0].severity)
    assert layers.startswith("net.layers.linear1")

    csv_header = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert "alerts/announced/vanishing" in csv_header
    finish_wandb()
