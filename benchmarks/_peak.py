"""The machine's real limit, measured in the same run as the benchmark that quotes it.

Every inference benchmark reports each backend's achieved rate as a fraction of this machine's
dense peak.  The peak is not a datasheet number and not one library's GEMM: it is the **best of
several large square GEMMs timed now**, so a backend can never beat its yardstick because the
yardstick was slow (the old NumPy-only yardstick put ONNX Runtime at 113%).

* float32 peak: NumPy ``a @ b``, ONNX Runtime ``MatMul`` and TensorFlow ``tf.linalg.matmul`` at
  ``n = 2048`` and ``4096`` (2 n^3 FLOP each), best of ``repeats`` runs per candidate;
* INT8 peak: ONNX Runtime ``MatMulInteger`` (uint8 x int8 -> int32, the U8S8 kernels that
  ``QLinearConv``/``QLinearMatMul`` use) at the same sizes (2 n^3 OP), with ``b`` fed at run time
  and as a constant (which ONNX Runtime packs once, as it does a convolution's weights), and
  ``QLinearMatMul`` (uint8 output) with a constant ``b``.  ONNX Runtime ``MatMul`` is also timed
  with a constant ``b``.  On a 2-core AVX2 machine without VNNI the fed ``MatMulInteger`` alone
  (297 GOP/s) was slower than DetectNet_v2's ``QLinearConv``s (309 GOP/s, 104% of that peak);
* and the kernels the networks run: ONNX Runtime ``Conv`` (float32) and ``QLinearConv`` (uint8 x
  int8) 3x3, 256 -> 256 channels on a 64x64 map (:data:`CONV`), 2 x 9 x 256^2 x 64^2 = 4.83 GFLOP.
  Float32 GEMMs of a few seconds vary by 10% between runs on a shared 2-core machine, and
  ONNX Runtime's own convolution kernels came within 2% of the best of them (ResNet-18 at
  544x960, 178 vs 173 GFLOP/s): the convolution counts as a candidate too.

:func:`measure_peaks` returns both with every candidate's rate, :func:`peak_lines` formats them,
and :func:`fraction` turns an achieved rate into a percentage (flagged with ``!`` above 100%,
which would mean the yardstick is wrong, not that the backend is fast).  Benchmarks measure the
peaks before and after their timings and keep the better (:func:`merge`), so a busy moment does
not lower the yardstick.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

#: GEMM sizes tried (square, n x n times n x n).
SIZES = (2048, 4096)
#: The convolution candidate: (channels in = out, map height = width, kernel size).
CONV = (256, 64, 3)


@dataclass
class Peaks:
    """Best measured dense rates in GFLOP/s (float32) and GOP/s (INT8), with every candidate's rate."""

    float32: float = 0.0
    int8: float = 0.0
    candidates: dict[str, float] = field(default_factory=dict)

    def best_float32_source(self) -> str:
        """Name of the float32 candidate that set the peak."""
        return max((k for k in self.candidates if not k.startswith("int8")), key=self.candidates.__getitem__)


def _best_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (allocations, kernel selection)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _ort_session(op: str, a_type: int, b_type: int, out_type: int, n: int,  # noqa: ANN202 - ort session
                 threads: int = 0, constant_b: np.ndarray | None = None):
    """A one-node ONNX Runtime session ``c = op(a, b)``; ``b`` a graph input or ``constant_b``.

    ``QLinearMatMul`` gets unit scales and zero points 0 (its speed does not depend on them)."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [] if constant_b is None else [numpy_helper.from_array(constant_b, "b")]
    inputs = [helper.make_tensor_value_info("a", a_type, [n, n])]
    if constant_b is None:
        inputs.append(helper.make_tensor_value_info("b", b_type, [n, n]))
    node_inputs = ["a", "b"]
    if op == "QLinearMatMul":
        inits += [numpy_helper.from_array(np.array(1.0, np.float32), "one"),
                  numpy_helper.from_array(np.array(0, np.uint8), "zero_u8"),
                  numpy_helper.from_array(np.array(0, np.int8), "zero_s8")]
        node_inputs = ["a", "one", "zero_u8", "b", "one", "zero_s8", "one", "zero_u8"]
    graph = helper.make_graph(
        [helper.make_node(op, node_inputs, ["c"])], f"peak_{op}", inputs,
        [helper.make_tensor_value_info("c", out_type, [n, n])], inits)
    return _one_node_session(graph, threads), TensorProto


def _one_node_session(graph, threads: int):  # noqa: ANN001, ANN202 - onnx graph, ort session
    """An ONNX Runtime CPU session of ``graph`` (opset 17), quiet, with ``threads`` intra-op threads (0: default)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, onnx.IR_VERSION)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def measure_peaks(sizes: Sequence[int] = SIZES, repeats: int = 3, tensorflow: bool = True,
                  threads: int = 0) -> Peaks:
    """Time every candidate GEMM now and keep the best float32 and INT8 rates.

    Args:
        sizes: square GEMM sizes.
        repeats: timed runs per candidate (the fastest counts: a peak is a best case).
        tensorflow: include TensorFlow's matmul (imports TensorFlow; its thread count is the
            one the process set before importing it, e.g. ``TF_NUM_INTRAOP_THREADS``).
        threads: CPU threads for the GEMMs (NumPy's BLAS through ``threadpoolctl``, ONNX
            Runtime's intra-op pool); 0 keeps each library's default (all cores).  A benchmark
            timed with N threads compares against the N-thread peak.

    Returns:
        The :class:`Peaks`; ``candidates`` maps ``"<library> <n>"`` to its rate.
    """
    from onnx import TensorProto

    rng = np.random.default_rng(0)
    peaks = Peaks()
    for n in sizes:
        flop = 2.0 * n ** 3
        a = rng.random((n, n), dtype=np.float32)
        b = rng.random((n, n), dtype=np.float32)
        if threads:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=threads):
                numpy_s = _best_seconds(lambda a=a, b=b: a @ b, repeats)
        else:
            numpy_s = _best_seconds(lambda a=a, b=b: a @ b, repeats)
        peaks.candidates[f"NumPy matmul {n}"] = flop / numpy_s / 1e9
        session, _ = _ort_session("MatMul", TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.FLOAT, n, threads)
        feeds = {"a": a, "b": b}
        peaks.candidates[f"ONNX Runtime MatMul {n}"] = flop / _best_seconds(lambda s=session, f=feeds: s.run(None, f),
                                                                           repeats) / 1e9
        session, _ = _ort_session("MatMul", TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.FLOAT, n, threads, b)
        peaks.candidates[f"ONNX Runtime MatMul {n} const b"] = flop / _best_seconds(
            lambda s=session, a=a: s.run(None, {"a": a}), repeats) / 1e9
        if tensorflow:
            import tensorflow as tf

            ta, tb = tf.constant(a), tf.constant(b)
            peaks.candidates[f"TensorFlow matmul {n}"] = flop / _best_seconds(
                lambda ta=ta, tb=tb: tf.linalg.matmul(ta, tb).numpy(), repeats) / 1e9
        qa = rng.integers(0, 256, (n, n), dtype=np.uint8)
        qb = rng.integers(-128, 128, (n, n), dtype=np.int8)
        session, _ = _ort_session("MatMulInteger", TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32, n,
                                  threads)
        qfeeds = {"a": qa, "b": qb}
        peaks.candidates[f"int8 ONNX Runtime MatMulInteger {n}"] = flop / _best_seconds(
            lambda s=session, f=qfeeds: s.run(None, f), repeats) / 1e9
        for op, out_type in (("MatMulInteger", TensorProto.INT32), ("QLinearMatMul", TensorProto.UINT8)):
            session, _ = _ort_session(op, TensorProto.UINT8, TensorProto.INT8, out_type, n, threads, qb)
            peaks.candidates[f"int8 ONNX Runtime {op} {n} const b"] = flop / _best_seconds(
                lambda s=session, qa=qa: s.run(None, {"a": qa}), repeats) / 1e9
    channels, size, k = CONV
    conv_flop = 2.0 * k * k * channels * channels * size * size
    x = rng.random((1, channels, size, size), dtype=np.float32)
    w = (rng.random((channels, channels, k, k), dtype=np.float32) - 0.5) * 0.1
    for name, session, feed in ((f"ONNX Runtime Conv {k}x{k} {channels}ch {size}x{size}",
                                 _conv_session(w, threads), x),
                                (f"int8 ONNX Runtime QLinearConv {k}x{k} {channels}ch {size}x{size}",
                                 _conv_session(np.rint(w * 600).astype(np.int8), threads),
                                 rng.integers(0, 256, x.shape, dtype=np.uint8))):
        peaks.candidates[name] = conv_flop / _best_seconds(lambda s=session, f=feed: s.run(None, {"x": f}),
                                                           repeats) / 1e9
    peaks.float32 = max(v for k, v in peaks.candidates.items() if not k.startswith("int8"))
    peaks.int8 = max(v for k, v in peaks.candidates.items() if k.startswith("int8"))
    return peaks


def _conv_session(weight: np.ndarray, threads: int = 0):  # noqa: ANN202 - ort session
    """A one-node ONNX Runtime ``Conv`` (float32 ``weight``) or ``QLinearConv`` (int8 ``weight``,
    uint8 input and output, unit scales) with 'same' padding."""
    from onnx import TensorProto, helper, numpy_helper

    out_c, in_c, k, _ = weight.shape
    pads = [k // 2] * 4
    inits = [numpy_helper.from_array(weight, "w")]
    if weight.dtype == np.int8:
        elem = TensorProto.UINT8
        inits += [numpy_helper.from_array(np.array(1.0, np.float32), "one"),
                  numpy_helper.from_array(np.array(0, np.uint8), "zero_u8"),
                  numpy_helper.from_array(np.array(0, np.int8), "zero_s8")]
        node = helper.make_node("QLinearConv", ["x", "one", "zero_u8", "w", "one", "zero_s8", "one", "zero_u8"],
                                ["y"], pads=pads)
    else:
        elem = TensorProto.FLOAT
        node = helper.make_node("Conv", ["x", "w"], ["y"], pads=pads)
    graph = helper.make_graph([node], "peak_conv", [helper.make_tensor_value_info("x", elem, [1, in_c, None, None])],
                              [helper.make_tensor_value_info("y", elem, None)], inits)
    return _one_node_session(graph, threads)


def fraction(rate: float, peak: float) -> str:
    """``rate`` as a percentage of ``peak``, e.g. ``"41.3%"``.

    A value above 100% means the peak measured in this run is not the machine's limit (a busy
    machine slowed the GEMMs); it is printed with ``!`` so it is never mistaken for a result.
    """
    percent = 100.0 * rate / peak
    return f"{percent:.1f}%" if percent <= 100.0 else f"{percent:.0f}%!"


def merge(first: Peaks, second: Peaks) -> Peaks:
    """The better of two peak measurements (taken before and after the timings), candidate by candidate."""
    merged = Peaks(candidates={k: max(first.candidates.get(k, 0.0), second.candidates.get(k, 0.0))
                               for k in {**first.candidates, **second.candidates}})
    merged.float32 = max(v for k, v in merged.candidates.items() if not k.startswith("int8"))
    merged.int8 = max(v for k, v in merged.candidates.items() if k.startswith("int8"))
    return merged


def onnx_conv_flops(model_path: str, input_shape: Sequence[int], sample: np.ndarray | None = None) -> float:
    """FLOPs (2 x multiply-adds) of the Conv / ConvTranspose / Gemm / MatMul nodes of an ONNX model.

    Args:
        model_path: the model (float32; shapes are inferred with the input fixed to ``input_shape``).
        input_shape: the full input shape, batch included.
        sample: an input of ``input_shape``; when given, the shapes that static inference cannot
            work out (after a ``TopK`` / ``NonMaxSuppression``: MaskRCNN's proposal and detection
            heads; after a ``Reshape`` whose shape is computed from ``Shape``: its FPN's
            upsampling) are read from one ONNX Runtime run of the model on it, with those nodes'
            tensors added as outputs.  Without it such nodes count 0.

    Returns:
        FLOPs for one run at that shape.
    """
    import onnx
    from onnx import shape_inference

    model = onnx.load(model_path)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, input_shape, strict=True):
        dim.Clear()
        dim.dim_value = int(value)
    model = shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input)}
    shapes.update({i.name: list(i.dims) for i in model.graph.initializer})
    ops = ("Conv", "ConvTranspose", "Gemm", "MatMul")

    def known(name: str) -> bool:
        return bool(shapes.get(name)) and 0 not in shapes[name]

    missing = sorted({t for n in model.graph.node if n.op_type in ops
                      for t in (n.input[0], n.input[1], n.output[0]) if not known(t)})
    if missing and sample is not None:
        if list(sample.shape) != [int(v) for v in input_shape]:
            raise ValueError(f"sample shape {list(sample.shape)} differs from input_shape {list(input_shape)}")
        import onnxruntime as ort

        have = {o.name for o in model.graph.output}
        model.graph.output.extend(onnx.ValueInfoProto(name=t) for t in missing if t not in have)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        values = session.run(missing, {model.graph.input[0].name: sample})
        shapes.update({t: list(v.shape) for t, v in zip(missing, values, strict=True)})
    total = 0.0
    for node in model.graph.node:
        out, w = shapes.get(node.output[0]), shapes.get(node.input[1]) if len(node.input) > 1 else None
        if not out or not w or 0 in out or 0 in w:
            continue
        if node.op_type == "Conv":
            total += 2.0 * float(np.prod(out)) * float(np.prod(w[1:]))
        elif node.op_type == "ConvTranspose":
            x = shapes.get(node.input[0])
            total += 2.0 * float(np.prod(x)) * float(np.prod(w[1:])) if x and 0 not in x else 0.0
        elif node.op_type in ("Gemm", "MatMul"):
            x = shapes.get(node.input[0])
            total += 2.0 * float(np.prod(out)) * float(x[-1]) if x and 0 not in x else 0.0
    return total


def load_average() -> str:
    """``uptime``'s load averages (1, 5, 15 min) and the CPU count, for every table."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} CPUs"


def peak_lines(peaks: Peaks) -> list[str]:
    """Human-readable lines: every candidate, then the two peaks."""
    lines = [f"  {name:<36}{rate:>9.1f} {'GOP/s' if name.startswith('int8') else 'GFLOP/s'}"
             for name, rate in peaks.candidates.items()]
    lines.append(f"  float32 peak {peaks.float32:.1f} GFLOP/s ({peaks.best_float32_source()}); "
                 f"INT8 peak {peaks.int8:.1f} GOP/s ({peaks.int8 / peaks.float32:.2f}x float32)")
    return lines


__all__ = ["SIZES", "Peaks", "fraction", "load_average", "measure_peaks", "merge", "onnx_conv_flops", "peak_lines"]
