"""Every field each writer writes, read back: TensorBoard event files (histogram min/max/num/
sum/sum_squares/bucket limits/counts, alert text, images, scalars), what the W&B writer hands to
``run.alert``/``run.log`` (level for warning vs critical, title, text, record), the alerts file
and the console."""

import json
import warnings

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from lightning_gradflow.core.alerts import Alert
from lightning_gradflow.core.sinks import ConsoleSink, GradFlowWarning
from lightning_gradflow.writers.alert_file import AlertFile
from lightning_gradflow.writers.logger import LoggerScalars
from lightning_gradflow.writers.tensorboard_writer import TensorBoardWriter

EDGES = np.array([-13.0, -12.0, -4.0, -3.0, -2.0, 4.0, 5.0])
COUNTS = np.array([0.0, 3.0, 0.0, 2.0, 1.0, 0.0])  # used buckets: 1, 3, 4


def alert(severity="warning", kind="vanishing", step=7):
    return Alert(
        kind,
        severity,
        step,
        1,
        ("net.0", "net.2"),
        2.5e-4,
        1e-3,
        "gradient norm falls from 1 to 2.5e-4",
        "use residuals",
        {"variant": "depth"},
    )


def _read(log_dir) -> EventAccumulator:
    events = EventAccumulator(
        str(log_dir), size_guidance={"histograms": 0, "images": 0, "scalars": 0, "tensors": 0}
    )
    events.Reload()
    return events


@pytest.fixture
def tb(tmp_path):
    summary = SummaryWriter(str(tmp_path))
    yield TensorBoardWriter(summary, scalars=True), summary, tmp_path
    summary.close()


def test_tensorboard_histogram_fields(tb):
    writer, summary, log_dir = tb
    writer.histograms(
        4, {"grad_hist/empty": (COUNTS * 0, EDGES), "grad_hist/net.0": (COUNTS, EDGES)}
    )
    summary.flush()
    events = _read(log_dir)
    assert events.Tags()["histograms"] == ["grad_hist/net.0"]  # an empty histogram is skipped
    [event] = events.Histograms("grad_hist/net.0")
    h = event.histogram_value
    centres = np.array([-12.5, -8.0, -3.5, -2.5, 1.0, 4.5])
    assert event.step == 4
    assert h.min == -12.0  # left edge of the first used bucket
    assert h.max == 4.0  # right edge of the last used bucket
    assert h.num == 6
    assert h.sum == pytest.approx(float((COUNTS * centres).sum()))  # 3*-8 + 2*-2.5 + 1 = -28
    assert h.sum == pytest.approx(-28.0)
    assert h.sum_squares == pytest.approx(3 * 64 + 2 * 6.25 + 1)
    assert list(h.bucket_limit) == [-12.0, -4.0, -3.0, -2.0, 4.0, 5.0]
    assert list(h.bucket) == [0.0, 3.0, 0.0, 2.0, 1.0, 0.0]


def test_tensorboard_histograms_of_different_edges_in_one_call(tb):
    """Log10 histograms share their edges and are summarised together; a linear histogram
    (edges of its own) written in the same call keeps its own statistics."""
    writer, summary, log_dir = tb
    linear_edges = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    writer.histograms(
        3,
        {
            "grad_hist/a": (COUNTS, EDGES),
            "grad_linear/a": (np.array([0.0, 1.0, 0.0, 3.0]), linear_edges),
            "grad_hist/b": (COUNTS[::-1].copy(), EDGES),
        },
    )
    summary.flush()
    events = _read(log_dir)
    assert events.Tags()["histograms"] == ["grad_hist/a", "grad_linear/a", "grad_hist/b"]
    a = events.Histograms("grad_hist/a")[0].histogram_value
    b = events.Histograms("grad_hist/b")[0].histogram_value
    linear = events.Histograms("grad_linear/a")[0].histogram_value
    assert (a.min, a.max, a.num, a.sum) == (-12.0, 4.0, 6, pytest.approx(-28.0))
    assert (b.min, b.max, b.num) == (-12.0, 4.0, 6)  # reversed: buckets 1, 2, 4 used
    assert b.sum == pytest.approx(1 * -8.0 + 2 * -3.5 + 3 * 1.0)
    assert list(b.bucket) == [0.0, 1.0, 2.0, 0.0, 3.0, 0.0]
    assert (linear.min, linear.max, linear.num) == (-1.0, 2.0, 4)
    assert (linear.sum, linear.sum_squares) == (pytest.approx(-0.5 + 3 * 1.5), 0.25 + 3 * 2.25)
    assert list(linear.bucket_limit) == [-1.0, 0.0, 1.0, 2.0]


@pytest.mark.parametrize(("used", "low", "high"), [(0, -13.0, -12.0), (5, 4.0, 5.0)])
def test_tensorboard_histogram_range_in_the_outer_buckets(tb, used, low, high):
    writer, summary, log_dir = tb
    counts = np.zeros(6)
    counts[used] = 5
    writer.histograms(0, {"grad_hist/x": (counts, EDGES)})
    summary.flush()
    h = _read(log_dir).Histograms("grad_hist/x")[0].histogram_value
    assert (h.min, h.max, h.num) == (low, high, 5)


def test_tensorboard_histogram_of_one_element(tb):
    """A layer with a single parameter (a scalar gate) still gets its histogram."""
    writer, summary, log_dir = tb
    counts = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    writer.histograms(2, {"grad_hist/gate": (counts, EDGES)})
    summary.flush()
    h = _read(log_dir).Histograms("grad_hist/gate")[0].histogram_value
    assert (h.min, h.max, h.num, h.sum, h.sum_squares) == (-4.0, -3.0, 1, -3.5, 12.25)


@pytest.mark.parametrize("severity", ["warning", "critical"])
def test_tensorboard_alert_text(tb, severity):
    writer, summary, log_dir = tb
    writer.alert(alert(severity), count=3)
    summary.flush()
    events = _read(log_dir)
    [tag] = [t for t in events.Tags()["tensors"] if t.startswith("alerts/")]
    assert tag.startswith("alerts/vanishing")
    [event] = events.Tensors(tag)
    text = event.tensor_proto.string_val[0].decode()
    assert event.step == 7
    assert text == (
        f"**{severity}** at step 7: gradient norm falls from 1 to 2.5e-4\n\n"
        "*threshold* 0.001, *value* 0.00025\n\n*fix:* use residuals"
    )


def test_tensorboard_scalars_and_image(tb):
    writer, summary, log_dir = tb
    writer.scalars(3, {"grad_norm/total": 0.5, "grad_norm/net.0": 0.25})
    image = np.zeros((4, 6, 3), dtype=np.uint8)
    image[1, 2] = (255, 0, 0)
    writer.image(3, "grad_flow", image)
    summary.flush()
    events = _read(log_dir)
    assert [(e.step, e.value) for e in events.Scalars("grad_norm/total")] == [(3, 0.5)]
    assert [(e.step, e.value) for e in events.Scalars("grad_norm/net.0")] == [(3, 0.25)]
    [img] = events.Images("grad_flow")
    assert (img.step, img.width, img.height) == (3, 6, 4)


def test_tensorboard_scalars_only_when_asked(tmp_path):
    summary = SummaryWriter(str(tmp_path))
    TensorBoardWriter(summary).scalars(0, {"grad_norm/total": 1.0})  # Lightning's logger does it
    summary.close()
    assert _read(tmp_path).Tags()["scalars"] == []


def _events_with_values(log_dir) -> list[tuple[int, list[str]]]:
    """(step, tags) of every event in the run's event files that holds summary values."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    found = []
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            if event.HasField("summary") and event.summary.value:
                found.append((event.step, [v.tag for v in event.summary.value]))
    return found


def test_tensorboard_writes_a_steps_scalars_and_histograms_as_one_event_each(tb):
    """One event per tag would put ~300 events a logged step on the writer's 10-long queue."""
    writer, summary, log_dir = tb
    writer.scalars(5, {"a": 1.0, "b": 2.0, "c": 3.0})
    writer.histograms(
        5, {"h/0": (COUNTS, EDGES), "h/empty": (COUNTS * 0, EDGES), "h/1": (COUNTS, EDGES)}
    )
    writer.scalars(6, {"a": 4.0})
    writer.histograms(6, {"h/empty": (COUNTS * 0, EDGES)})  # nothing to write: no event
    summary.flush()
    assert _events_with_values(log_dir) == [(5, ["a", "b", "c"]), (5, ["h/0", "h/1"]), (6, ["a"])]
    events = _read(log_dir)
    assert [(e.step, e.value) for e in events.Scalars("a")] == [(5, 1.0), (6, 4.0)]
    assert [e.histogram_value.num for e in events.Histograms("h/1")] == [6.0]


class _OwnWriter:
    """A writer object that is not torch's SummaryWriter (tensorboardX's, a user's own)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def add_scalar(self, tag, value, global_step=None):
        self.calls.append(("scalar", tag, value, global_step))

    def add_histogram_raw(self, tag, global_step=None, **fields):
        self.calls.append(("histogram", tag, fields["num"], fields["min"], global_step))


def test_another_writer_gets_one_call_per_tag_under_the_prefix():
    own = _OwnWriter()
    writer = TensorBoardWriter(own, scalars=True, prefix="train")
    writer.scalars(2, {"a": 1.0, "b": 0.5})
    writer.histograms(2, {"h/0": (COUNTS, EDGES), "h/empty": (COUNTS * 0, EDGES)})
    assert own.calls == [
        ("scalar", "train-a", 1.0, 2),
        ("scalar", "train-b", 0.5, 2),
        ("histogram", "h/0", 6.0, -12.0, 2),
    ]


@pytest.mark.parametrize("prefix", ["", "fit"])
def test_a_tensorboard_loggers_scalars_are_named_as_the_logger_names_them(tmp_path, prefix):
    from pytorch_lightning.loggers import TensorBoardLogger

    logger = TensorBoardLogger(str(tmp_path), name="run", version=0, prefix=prefix)
    logger.log_metrics({"by_logger": 1.0}, step=0)
    TensorBoardWriter.for_logger(logger).scalars(0, {"by_writer": 2.0})
    logger.experiment.flush()
    tags = sorted(_read(tmp_path / "run" / "version_0").Tags()["scalars"])
    join = f"{prefix}-" if prefix else ""
    assert tags == [f"{join}by_logger", f"{join}by_writer"]


def test_a_logger_without_a_prefix_gets_its_tags_as_they_are(tmp_path):
    """``for_logger`` takes any object with an ``experiment`` (a user's own logger)."""

    class Bare:
        experiment = SummaryWriter(str(tmp_path))

    TensorBoardWriter.for_logger(Bare()).scalars(1, {"by_writer": 2.0})
    Bare.experiment.close()
    assert [(e.step, e.value) for e in _read(tmp_path).Scalars("by_writer")] == [(1, 2.0)]
    assert _read(tmp_path).Tags()["scalars"] == ["by_writer"]


class FakeRun:
    def __init__(self):
        self.alerts, self.logged = [], []

    def alert(self, **kwargs):
        self.alerts.append(kwargs)

    def log(self, data):
        self.logged.append(data)


@pytest.mark.parametrize(("severity", "level"), [("warning", "WARN"), ("critical", "ERROR")])
def test_wandb_alert_level_title_text_and_record(severity, level):
    wandb = pytest.importorskip("wandb")
    from lightning_gradflow.writers.wandb_writer import WandbWriter

    run = FakeRun()
    sent = alert(severity)
    WandbWriter(run).alert(sent, count=2)
    [call] = run.alerts
    assert call["level"] == getattr(wandb.AlertLevel, level)
    assert call["title"] == "gradflow: vanishing at step 7"
    assert call["text"] == (
        "gradient norm falls from 1 to 2.5e-4\nThreshold 0.001. Fix: use residuals"
    )
    assert call["wait_duration"] == 0
    [logged] = run.logged
    assert logged["trainer/global_step"] == 7
    table = logged["gradflow/alerts"]
    assert table.columns == [
        "step",
        "kind",
        "severity",
        "layers",
        "value",
        "threshold",
        "message",
        "hint",
    ]
    assert table.data == [
        [7, "vanishing", severity, "net.0, net.2", 2.5e-4, 1e-3, sent.message, "use residuals"]
    ]


def test_wandb_alert_table_keeps_every_alert_and_the_summary_takes_the_run_numbers():
    pytest.importorskip("wandb")
    from lightning_gradflow.writers.wandb_writer import WandbWriter

    run = FakeRun()
    run.summary = {}
    writer = WandbWriter(run)
    writer.alert(alert("warning"), count=1)
    writer.alert(alert("critical", kind="nonfinite", step=9), count=1)
    assert [row[:2] for row in run.logged[-1]["gradflow/alerts"].data] == [
        [7, "vanishing"],
        [9, "nonfinite"],
    ]
    writer.finish({"grad_flow/gamma": 0.5, "alerts/announced/vanishing": 1.0})
    assert run.summary == {"grad_flow/gamma": 0.5, "alerts/announced/vanishing": 1.0}


def test_wandb_scalars_histograms_and_image():
    wandb = pytest.importorskip("wandb")
    from lightning_gradflow.writers.wandb_writer import WandbWriter

    run = FakeRun()
    writer = WandbWriter(run, scalars=True)
    writer.scalars(5, {"grad_norm/total": 0.5})
    writer.histograms(6, {"grad_hist/net.0": (COUNTS, EDGES)})
    writer.histograms(6, {})
    writer.image(8, "grad_flow", np.zeros((4, 6, 3), dtype=np.uint8))
    scalars, hists, image = run.logged
    assert scalars == {"grad_norm/total": 0.5, "trainer/global_step": 5}
    assert set(hists) == {"grad_hist/net.0", "trainer/global_step"}
    assert hists["trainer/global_step"] == 6
    assert hists["grad_hist/net.0"].histogram == COUNTS.tolist()
    assert hists["grad_hist/net.0"].bins == EDGES.tolist()
    assert image["trainer/global_step"] == 8 and isinstance(image["grad_flow"], wandb.Image)
    quiet = FakeRun()
    WandbWriter(quiet).scalars(0, {"a": 1.0})
    assert quiet.logged == []  # by default Lightning's logger logs the scalars


def test_alert_file_line_holds_every_field_and_the_count(tmp_path):
    path = tmp_path / "logs" / "gradflow_alerts.jsonl"
    sink = AlertFile(str(path))
    sink.alert(alert("critical"), count=4)
    sink.alert(alert(step=9), count=5)
    first, second = (json.loads(line) for line in path.read_text().splitlines())
    assert first == {**alert("critical").to_dict(), "count": 4}
    assert (second["step"], second["count"], second["severity"]) == (9, 5, "warning")
    assert Alert.from_dict({k: v for k, v in first.items() if k != "count"}) == alert("critical")


def test_logger_scalars_and_console():
    calls = []

    class Logger:
        def log_metrics(self, metrics, step=None):
            calls.append((step, metrics))

    LoggerScalars(Logger()).scalars(2, {"grad_norm/total": 1.5})
    assert calls == [(2, {"grad_norm/total": 1.5})]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ConsoleSink().alert(alert(), count=1)
    [warning] = caught
    assert warning.category is GradFlowWarning and str(warning.message) == alert().format()


@pytest.mark.parametrize(
    ("bins", "max_bins"), [(5, 4), (6, 4), (10, 4), (513, 512), (514, 512), (1002, 512)]
)
def test_wandb_merge_bins_keeps_outer_bins_and_total(bins, max_bins):
    from lightning_gradflow.writers.wandb_writer import merge_bins

    counts = np.arange(1.0, bins + 1)
    edges = np.linspace(-13.0, 5.0, bins + 1)
    merged, merged_edges = merge_bins(counts, edges, max_bins)
    assert len(merged) <= max_bins and len(merged_edges) == len(merged) + 1
    assert merged.sum() == counts.sum()
    assert (merged[0], merged[-1]) == (counts[0], counts[-1])
    assert (merged_edges[0], merged_edges[1]) == (edges[0], edges[1])
    assert (merged_edges[-2], merged_edges[-1]) == (edges[-2], edges[-1])
    assert set(merged_edges) <= set(edges) and np.all(np.diff(merged_edges) > 0)
    # each merged inner bin holds exactly the counts between its edges
    index = {e: i for i, e in enumerate(edges)}
    for k, count in enumerate(merged):
        lo, hi = index[merged_edges[k]], index[merged_edges[k + 1]]
        assert count == counts[lo:hi].sum()


@pytest.mark.parametrize(
    ("bins", "counts", "edges"),
    [
        (5, [0, 3, 3, 4], [0, 1, 3, 4, 5]),  # inner 1,2,3 in runs of 2
        (10, [0, 10, 26, 9], [0, 1, 5, 9, 10]),  # inner 1..8 in runs of 4, not 5 or 6
    ],
)
def test_wandb_merge_bins_uses_the_shortest_run_that_fits(bins, counts, edges):
    from lightning_gradflow.writers.wandb_writer import merge_bins

    merged, merged_edges = merge_bins(np.arange(float(bins)), np.arange(bins + 1.0), 4)
    assert merged.tolist() == counts and merged_edges.tolist() == edges


def test_wandb_merge_bins_leaves_small_histograms_alone():
    from lightning_gradflow.writers.wandb_writer import merge_bins

    counts, edges = np.ones(4), np.arange(5.0)
    merged, merged_edges = merge_bins(counts, edges, 4)
    assert merged is counts and merged_edges is edges


def test_alert_file_through_fsspec_keeps_earlier_lines():
    pytest.importorskip("fsspec")
    from lightning_gradflow.writers.alert_file import is_url, join

    url = join("memory://runs/a/", "gradflow_alerts.jsonl")
    assert url == "memory://runs/a/gradflow_alerts.jsonl" and is_url(url)
    sink = AlertFile(url)
    sink.alert(alert(step=1), count=1)
    sink.alert(alert(step=2), count=2)
    import fsspec

    with fsspec.open(url, "r") as f:
        lines = [json.loads(line) for line in f.read().splitlines()]
    assert [(line["step"], line["count"]) for line in lines] == [(1, 1), (2, 2)]
    assert sink.name == url


@pytest.mark.parametrize(
    ("directory", "expected", "url"),
    [
        ("runs/a", "runs/a/f.jsonl", False),
        ("file:///tmp/runs", "/tmp/runs/f.jsonl", False),
        ("s3://bucket/runs", "s3://bucket/runs/f.jsonl", True),
        ("gs://bucket/runs/", "gs://bucket/runs/f.jsonl", True),
        ("s3://bucket/runX", "s3://bucket/runX/f.jsonl", True),
    ],
)
def test_alert_file_paths(directory, expected, url):
    from lightning_gradflow.writers.alert_file import is_url, join

    assert join(directory, "f.jsonl") == expected
    assert is_url(directory) == url


def test_alert_file_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    AlertFile("gradflow_alerts.jsonl").alert(alert(), count=1)
    assert [p.name for p in tmp_path.iterdir()] == ["gradflow_alerts.jsonl"]


def test_alert_file_in_a_log_dir(tmp_path):
    sink = AlertFile.in_dir(tmp_path / "run")  # a Path, as loggers give their log_dir
    assert sink.name == str(tmp_path / "run" / "gradflow_alerts.jsonl")
    sink.alert(alert(), count=1)
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["gradflow_alerts.jsonl"]
    assert (
        AlertFile.in_dir("s3://bucket/runs/a/").name == "s3://bucket/runs/a/gradflow_alerts.jsonl"
    )
