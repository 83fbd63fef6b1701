"""INT8 calibration: histogram bookkeeping, the three amax methods, and a run on a real ONNX model."""

from __future__ import annotations

import numpy as np
import pytest

from tltk.errors import InvalidInputError, UsageError
from tltk.export.calibration import (
    NUM_BINS,
    AbsHistogram,
    activation_tensor_names,
    calibrate_onnx,
    collect_histograms,
    entropy_amax,
    percentile_amax,
    ranges_from_histograms,
)

# ---- pure numpy -----------------------------------------------------------------------------------


def test_minmax_is_the_exact_largest_magnitude() -> None:
    hist = AbsHistogram()
    hist.add(np.array([0.25, -3.5, 1.0, 0.0], dtype=np.float32))
    hist.add(np.array([[2.0, -1.5]], dtype=np.float32))
    assert hist.amax("minmax") == 3.5
    assert hist.total == 6 and hist.zeros == 1
    assert int(hist.counts.sum()) == 5


def test_histogram_range_doubles_and_keeps_counts() -> None:
    hist = AbsHistogram()
    hist.add(np.linspace(0.001, 1.0, 1000, dtype=np.float32))
    assert hist.range_max == pytest.approx(1.0)
    before = hist.counts.copy()
    hist.add(np.array([3.0], dtype=np.float32))  # needs 4x the range: two doublings
    assert hist.range_max == pytest.approx(4.0)
    assert int(hist.counts.sum()) == 1001
    # the first quarter of the new bins holds the old counts merged 4 by 4
    np.testing.assert_array_equal(hist.counts[: NUM_BINS // 4], before.reshape(-1, 4).sum(axis=1))
    assert hist.counts[int(3.0 / 4.0 * NUM_BINS)] == 1


def test_nan_is_rejected() -> None:
    with pytest.raises(InvalidInputError, match="NaN"):
        AbsHistogram().add(np.array([1.0, np.nan], dtype=np.float32))


def test_entropy_on_a_gaussian_clips_the_tail() -> None:
    sigma = 2.0
    values = np.random.default_rng(0).normal(0.0, sigma, 1_000_000).astype(np.float32)
    hist = AbsHistogram()
    for chunk in np.array_split(values, 4):
        hist.add(chunk)
    amax = hist.amax("entropy")
    assert 2.5 * sigma <= amax <= 5 * sigma
    assert amax <= hist.amax("minmax")


def test_entropy_on_a_uniform_keeps_almost_the_whole_range() -> None:
    values = np.random.default_rng(1).uniform(-1.0, 1.0, 200_000).astype(np.float32)
    hist = AbsHistogram()
    hist.add(values)
    # a flat distribution has no outliers: clipping only loses information
    assert hist.amax("entropy") >= 0.95 * hist.amax("minmax")


def test_entropy_with_few_occupied_bins_returns_the_top_edge() -> None:
    counts = np.zeros(NUM_BINS, dtype=np.int64)
    counts[:100] = 7
    # fewer than 128 occupied bins: nothing to merge, the whole range is kept
    assert entropy_amax(counts, bin_width=0.5) == 50.0
    assert entropy_amax(np.zeros(NUM_BINS), 0.5) == 0.0


def test_entropy_drops_a_lone_outlier() -> None:
    counts = np.zeros(NUM_BINS, dtype=np.int64)
    counts[:512] = np.round(100_000 * np.exp(-np.arange(512) / 100.0))  # dense, decaying part
    counts[2047] = 1  # one far outlier
    # keeping the outlier would merge 16 decaying bins per level; cutting at the dense part wins
    assert entropy_amax(counts, bin_width=1.0) == 512.0
    # a flat dense part merges without loss (Q == P), so there the full range costs nothing:
    # this is a property of the TensorRT algorithm, not a bug
    flat = np.zeros(NUM_BINS, dtype=np.int64)
    flat[:512] = 1000
    flat[2047] = 1
    assert entropy_amax(flat, bin_width=1.0) == 2048.0


def test_percentile_from_the_histogram() -> None:
    values = np.random.default_rng(2).uniform(-1.0, 1.0, 400_000).astype(np.float32)
    hist = AbsHistogram()
    hist.add(values)
    width = hist.bin_width
    assert abs(hist.amax("percentile", 50.0) - 0.5) < 0.01 + width
    assert abs(hist.amax("percentile", 99.0) - 0.99) < 0.01 + width
    assert hist.amax("percentile", 100.0) == hist.amax("minmax")


def test_percentile_counts_zeros() -> None:
    counts = np.zeros(8, dtype=np.int64)
    counts[[1, 3, 5, 7]] = 10  # 40 non-zero values in bins 1, 3, 5, 7 (width 1)
    # with 40 zeros, 50 % of 80 values are zeros: the 50th percentile is 0
    assert percentile_amax(counts, 1.0, 50.0, zeros=40) == 0.0
    # 75 % of 80 = 60 values: zeros + bins 1 and 3 -> upper edge of bin 3
    assert percentile_amax(counts, 1.0, 75.0, zeros=40) == 4.0
    with pytest.raises(UsageError):
        percentile_amax(counts, 1.0, 0.0)


def test_unknown_method() -> None:
    hist = AbsHistogram()
    hist.add(np.ones(3, np.float32))
    with pytest.raises(UsageError, match="unknown calibration method"):
        hist.amax("mse")
    with pytest.raises(UsageError):
        ranges_from_histograms({"x": hist}, "kl")


# ---- on an ONNX model ----------------------------------------------------------------------------------

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _conv_model() -> bytes:
    """input [N,2,8,8] -> Conv(3x3, 4) -> Relu -> Conv(1x1, 2) -> Sigmoid ('output_cov/Sigmoid')."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, 0.5, (4, 2, 3, 3)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.normal(0, 0.1, 4).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.5, (2, 4, 1, 1)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["input_1", "w1", "b1"], ["conv1:0"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["conv1:0"], ["relu1:0"], name="relu1"),
        helper.make_node("Conv", ["relu1:0", "w2"], ["logits:0"], name="conv2"),
        helper.make_node("Sigmoid", ["logits:0"], ["output_cov/Sigmoid"], name="sigmoid"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["batch", 2, 8, 8])],
        [helper.make_tensor_value_info("output_cov/Sigmoid", TensorProto.FLOAT, ["batch", 2, 8, 8])],
        [w1, b1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _batches(n: int = 3, size: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [rng.random((size, 2, 8, 8), dtype=np.float32) for _ in range(n)]


def _intermediates(model_bytes: bytes, x: np.ndarray) -> dict[str, np.ndarray]:
    model = onnx.load_from_string(model_bytes)
    for name in ("conv1:0", "relu1:0", "logits:0"):
        model.graph.output.append(onnx.ValueInfoProto(name=name))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"input_1": x}), strict=True))


def test_tensor_names_exist_in_the_graph() -> None:
    model = onnx.load_from_string(_conv_model())
    every = activation_tensor_names(model, "all")
    assert every == ["input_1", "conv1:0", "relu1:0", "logits:0", "output_cov/Sigmoid"]
    assert activation_tensor_names(model, "quantizable") == ["input_1", "relu1:0"]
    assert activation_tensor_names(model, "network") == every  # a plain CNN: the network is everything
    produced = {t for n in model.graph.node for t in n.output} | {"input_1"}
    assert set(every) <= produced
    with pytest.raises(UsageError):
        activation_tensor_names(model, "some")


def test_network_scope_stops_at_post_processing() -> None:
    """conv1 -> scores; TopK -> Gather picks rows of conv1's map -> Reshape -> conv2 (a second-stage head).

    The head's input is calibrated (it is what INT8 quantizes), the selection in between is not.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (4, 2, 1, 1)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.5, (3, 4, 1, 1)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.array([1, -1], np.int64), "flat"),
             numpy_helper.from_array(np.array([2], np.int64), "k"),
             numpy_helper.from_array(np.array([0.5], np.float32), "half"),
             numpy_helper.from_array(np.array([1, 4, 2, 1], np.int64), "head_shape")]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["features"]),                    # [1, 4, 4, 1]
        helper.make_node("Relu", ["features"], ["relu"]),
        helper.make_node("ReduceMax", ["relu"], ["score"], axes=[1, 3], keepdims=0),  # [1, 4]
        helper.make_node("TopK", ["score", "k"], ["top", "rows"]),               # 2 best rows
        helper.make_node("Squeeze", ["rows"], ["rows_1d"]),
        helper.make_node("Gather", ["relu", "rows_1d"], ["picked"], axis=2),    # [1, 4, 2, 1]
        helper.make_node("Mul", ["picked", "half"], ["scaled"]),
        helper.make_node("Reshape", ["scaled", "head_shape"], ["head_in"]),
        helper.make_node("Conv", ["head_in", "w2"], ["head_out"]),
        helper.make_node("Mul", ["top", "half"], ["top_scaled"]),               # decoding, float
    ]
    graph = helper.make_graph(nodes, "two_stage", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 1])],
                              [helper.make_tensor_value_info("head_out", TensorProto.FLOAT, [1, 3, 2, 1]),
                               helper.make_tensor_value_info("top_scaled", TensorProto.FLOAT, [1, 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    # relu only feeds the selection, so it gets no range; the head's input does
    assert activation_tensor_names(model, "network") == ["x", "features", "head_in", "head_out"]
    assert "top_scaled" in activation_tensor_names(model, "all")


def test_minmax_run_matches_numpy_exactly() -> None:
    model = _conv_model()
    batches = _batches()
    ranges = calibrate_onnx(model, batches, method="minmax", images_per_run=3)
    assert ranges.method == "minmax"
    assert list(ranges) == ["input_1", "conv1:0", "relu1:0", "logits:0", "output_cov/Sigmoid"]
    everything = np.concatenate(batches)
    inner = _intermediates(model, everything)
    assert ranges["input_1"] == float(np.abs(everything).max())
    for name in ("conv1:0", "relu1:0", "logits:0", "output_cov/Sigmoid"):
        assert ranges[name] == pytest.approx(float(np.abs(inner[name]).max()), rel=1e-6)


def test_methods_are_ordered_and_bounded() -> None:
    model = _conv_model()
    histograms, images = collect_histograms(model, _batches(), images_per_run=2)
    assert images == 12
    minmax = ranges_from_histograms(histograms, "minmax")
    entropy = ranges_from_histograms(histograms, "entropy")
    pct = ranges_from_histograms(histograms, "percentile", 99.0)
    for name in minmax:
        assert 0 < entropy[name] <= minmax[name]
        assert 0 < pct[name] <= minmax[name]


def test_max_batches_and_errors() -> None:
    model = _conv_model()
    _, images = collect_histograms(model, _batches(5), max_batches=2)
    assert images == 8
    with pytest.raises(InvalidInputError, match="no data"):
        calibrate_onnx(model, [])
    with pytest.raises(InvalidInputError, match="does not match"):
        calibrate_onnx(model, [np.zeros((2, 3, 8, 8), np.float32)])
    with pytest.raises(UsageError):
        calibrate_onnx(model, _batches(), method="mse")
