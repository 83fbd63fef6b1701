"""The export engine behind ``tltk <model> export``: ONNX (or .etlt), INT8 ranges, cache, Q/DQ model.

:func:`export_model` does the whole job for any model; the model package only supplies the Keras
model, its TAO tensor names and (for INT8) preprocessed calibration batches:

1. Keras -> ONNX with TAO's names and a dynamic batch (:mod:`tltk.export.onnx_export`), written
   as ``.onnx`` or as a legacy ``.etlt`` with the key, followed by the Keras-vs-ONNX Runtime parity
   check.
2. ``data_type="int8"``: one table of activation ranges, either the QAT model's learned ranges
   (unless ``force_ptq``) or a calibration run of the FP32 ONNX model over the tensors of its
   convolutional network (:mod:`tltk.export.calibration`, scope ``"network"``: a detector's
   post-processing, e.g. MaskRCNN's NMS and box decoding, gets no range and stays in float).
3. From that table: the TensorRT calibration cache (``cal.bin``, for TensorRT 8-10 and DeepStream
   ``int8-calib-file``), the Q/DQ ONNX model (explicit quantization in TensorRT's placement, for
   TensorRT 10+/11), the CPU INT8 model (:mod:`tltk.export.cpu_int8`: uint8 activations placed for
   ONNX Runtime's integer kernels) and optionally TAO's ``{"tensor_scales": ...}`` JSON.

Calibration batch sources (:func:`calibration_batches_from_tensorfile`,
:func:`calibration_batches_from_images`, :func:`prepare_calibration_batches`) all yield NCHW
float32 arrays preprocessed exactly like inference input.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tltk.errors import InvalidInputError, UsageError
from tltk.export.calibration import CALIBRATION_METHODS, DEFAULT_PERCENTILE
from tltk.export.calibration_cache import ActivationRanges

if TYPE_CHECKING:  # pragma: no cover - typing only
    import keras

log = logging.getLogger(__name__)

#: Precisions accepted by ``--data_type``.
DATA_TYPES = ("fp32", "fp16", "int8")

#: Image extensions TAO's calibration image reader accepts.
CALIBRATION_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def default_cache_path(output_path: str | os.PathLike[str]) -> str:
    """``cal.bin`` next to the exported model.

    Args:
        output_path: the exported model file.

    Returns:
        ``<folder of output_path>/cal.bin``.
    """
    return str(Path(os.fspath(output_path)).parent / "cal.bin")


def default_qdq_path(output_path: str | os.PathLike[str]) -> str:
    """Where the Q/DQ model goes: ``<output path without extension>_int8_qdq.onnx``.

    Args:
        output_path: the exported model file (``.onnx`` or ``.etlt``).

    Returns:
        The Q/DQ ONNX path.
    """
    return str(Path(os.fspath(output_path)).with_suffix("")) + "_int8_qdq.onnx"


def default_cpu_int8_path(output_path: str | os.PathLike[str]) -> str:
    """Where the ONNX Runtime CPU INT8 model goes: ``<output path without extension>_int8_cpu.onnx``.

    Args:
        output_path: the exported model file (``.onnx`` or ``.etlt``).

    Returns:
        The CPU INT8 ONNX path.
    """
    return str(Path(os.fspath(output_path)).with_suffix("")) + "_int8_cpu.onnx"


def export_model(
    model: keras.Model,
    output_path: str | os.PathLike[str],
    input_name: str,
    output_names: Mapping[str, str],
    key: str | None = None,
    data_type: str = "fp32",
    calibration_batches: Iterable[np.ndarray] | None = None,
    cal_method: str = "entropy",
    percentile: float = DEFAULT_PERCENTILE,
    cal_cache_file: str | os.PathLike[str] | None = None,
    trt_version: str | int | None = None,
    qat_ranges: ActivationRanges | None = None,
    force_ptq: bool = False,
    qdq_output_path: str | os.PathLike[str] | None = None,
    cal_json_file: str | os.PathLike[str] | None = None,
    max_batches: int | None = None,
    opset: int = 17,
    dynamic_batch: bool = True,
    static_batch_size: int = 1,
    overwrite: bool = True,
    per_channel_weights: bool = True,
    qdq_activation_ops: tuple[str, ...] = (),
    cpu_int8_output_path: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Export a trained Keras model for deployment.

    Args:
        model: the trained model (NCHW input, TAO-named head layers).
        output_path: ``.onnx`` or ``.etlt`` (legacy container, needs ``key``).
        input_name: ONNX input name (``input_1`` / ``Input``).
        output_names: Keras output or layer name -> ONNX output name (see
            :func:`tltk.export.onnx_export.export_keras_to_onnx`).
        key: key string for ``.etlt`` output.
        data_type: ``fp32``, ``fp16`` (nothing more to write than the ONNX model: precision is
            chosen when the engine is built) or ``int8``.
        calibration_batches: preprocessed ``[N, C, H, W]`` float32 batches; needed for INT8 unless
            QAT ranges are used.
        cal_method: ``entropy``, ``minmax`` or ``percentile``.
        percentile: percentile for ``cal_method="percentile"``.
        cal_cache_file: TensorRT calibration cache to write; default ``cal.bin`` next to the
            output.
        trt_version: TensorRT version the cache is for (header); default the installed one, else
            10.3.0 (see :func:`tltk.export.calibration_cache.header_version_number`).
        qat_ranges: ranges learned by quantization-aware training, keyed by ONNX tensor name or
            by ``keras-layer:<consumer layer>`` as :func:`tltk.export.qat_export.qat_export_inputs`
            gives them (resolved against the converted graph).  A quantization-aware ``model`` is
            always exported as its float twin; its own ranges are used when none are given.
        force_ptq: calibrate even when ``qat_ranges`` are given.
        qdq_output_path: the Q/DQ ONNX model (TensorRT placement); default ``<output>_int8_qdq.onnx``.
        cal_json_file: also write TAO's ``{"tensor_scales": {name: amax}}`` JSON here.
        max_batches: calibrate on at most this many batches.
        opset: ONNX opset.
        dynamic_batch: symbolic batch dimension (otherwise ``static_batch_size``).
        static_batch_size: batch size when ``dynamic_batch`` is False.
        overwrite: replace existing output files.
        per_channel_weights: per-output-channel weight scales in the Q/DQ model.
        qdq_activation_ops: extra operator types to quantize in the Q/DQ model (see
            :func:`tltk.export.qdq.write_qdq_onnx`).
        cpu_int8_output_path: the INT8 model for ONNX Runtime on CPU (:mod:`tltk.export.cpu_int8`,
            same ranges); default ``<output>_int8_cpu.onnx``.

    Returns:
        A JSON-serialisable report: ``onnx`` (the :class:`ExportReport` dict), ``data_type``,
        and for INT8 ``calibration`` (method, number of tensors, images, source),
        ``cal_cache_file``, ``cache_header``, ``qdq_onnx``, ``qdq`` (node counts), ``cpu_int8_onnx``,
        ``cpu_int8`` (node counts), and
        ``cal_json_file`` when written.

    Raises:
        UsageError: unknown data type or method, INT8 without calibration data or QAT ranges,
            ``.etlt`` without a key.
    """
    from tltk.core.qat import is_quantized
    from tltk.export.calibration import activation_tensor_names, calibrate_onnx
    from tltk.export.calibration_cache import write_calibration_cache
    from tltk.export.cpu_int8 import quantize_for_cpu
    from tltk.export.onnx_export import export_keras_to_onnx, load_onnx_bytes
    from tltk.export.qat_export import has_layer_keys, qat_export_inputs, resolve_qat_ranges
    from tltk.export.qdq import quantize_onnx_model

    if data_type not in DATA_TYPES:
        raise UsageError(f"--data_type: unknown precision '{data_type}' (one of {', '.join(DATA_TYPES)})")
    if cal_method not in CALIBRATION_METHODS:
        raise UsageError(f"calibration method '{cal_method}' is not one of {', '.join(CALIBRATION_METHODS)}")
    if is_quantized(model):
        model, learned = qat_export_inputs(model)
        qat_ranges = learned if qat_ranges is None else qat_ranges
    use_qat = qat_ranges is not None and len(qat_ranges) > 0 and not force_ptq
    if data_type == "int8" and not use_qat and calibration_batches is None:
        raise UsageError("INT8 export needs calibration data",
                         hint="give --cal_data_file, --cal_image_dir, or -e with a spec whose training data "
                              "can be read (or export a QAT-trained model)")

    onnx_report = export_keras_to_onnx(model, output_path, input_name, output_names, opset=opset,
                                       dynamic_batch=dynamic_batch, static_batch_size=static_batch_size, key=key,
                                       overwrite=overwrite)
    report: dict[str, Any] = {"onnx": onnx_report.as_dict(), "data_type": data_type}
    if data_type != "int8":
        return report

    fp32_bytes = load_onnx_bytes(onnx_report.output_path, key)
    if use_qat:
        assert qat_ranges is not None
        ranges = qat_ranges
        if has_layer_keys(ranges):
            import onnx

            ranges = resolve_qat_ranges(model, onnx.load_from_string(fp32_bytes), ranges)
        report["calibration"] = {"method": ranges.method or "qat", "tensors": len(ranges), "images": 0,
                                 "source": "qat"}
    else:
        assert calibration_batches is not None
        counter = _CountingBatches(calibration_batches)
        import onnx

        # The convolutional network only: post-processing (NMS, top-k, box decoding) stays in float.
        tensors = activation_tensor_names(onnx.load_from_string(fp32_bytes), "network")
        ranges = calibrate_onnx(fp32_bytes, counter, method=cal_method, percentile=percentile,
                                tensor_names=tensors, max_batches=max_batches)
        report["calibration"] = {"method": cal_method, "tensors": len(ranges), "images": counter.images,
                                 "batches": counter.batches, "source": "calibration"}
        if cal_method == "percentile":
            report["calibration"]["percentile"] = percentile

    cache = os.fspath(cal_cache_file) if cal_cache_file else default_cache_path(onnx_report.output_path)
    if not overwrite and os.path.exists(cache):
        raise UsageError(f"{cache} already exists", hint="remove it or choose another --cal_cache_file")
    header = write_calibration_cache(cache, ranges, trt_version=trt_version)
    report["cal_cache_file"] = cache
    report["cache_header"] = header.line

    import onnx

    from tltk.export.onnx_export import save_onnx

    qdq_path = os.fspath(qdq_output_path) if qdq_output_path else default_qdq_path(onnx_report.output_path)
    quantized, summary = quantize_onnx_model(onnx.load_from_string(fp32_bytes), ranges,
                                             per_channel_weights=per_channel_weights,
                                             activation_ops=qdq_activation_ops)
    save_onnx(quantized, qdq_path)
    report["qdq_onnx"] = qdq_path
    report["qdq"] = summary.as_dict()
    cpu_path = os.fspath(cpu_int8_output_path) if cpu_int8_output_path \
        else default_cpu_int8_path(onnx_report.output_path)
    cpu_model, cpu_summary = quantize_for_cpu(onnx.load_from_string(fp32_bytes), ranges)
    save_onnx(cpu_model, cpu_path)
    report["cpu_int8_onnx"] = cpu_path
    report["cpu_int8"] = cpu_summary.as_dict()
    if cal_json_file:
        ranges.to_tensor_scales_json(cal_json_file)
        report["cal_json_file"] = os.fspath(cal_json_file)
    log.info("INT8: %d ranges (%s) -> cache %s (%s), Q/DQ model %s (TensorRT), CPU INT8 model %s "
             "(ONNX Runtime CPU)", len(ranges), report["calibration"]["source"], cache, header.line, qdq_path,
             cpu_path)
    return report


class _CountingBatches:
    """Iterable wrapper that counts batches and images as they pass."""

    def __init__(self, batches: Iterable[np.ndarray]) -> None:
        self._batches = batches
        self.batches = 0
        self.images = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        for batch in self._batches:
            self.batches += 1
            self.images += int(np.shape(batch)[0])
            yield batch


# ---- calibration data sources ------------------------------------------------------------------------

def calibration_batches_from_tensorfile(path: str | os.PathLike[str], batch_size: int | None = None,
                                        batches: int | None = None) -> Iterator[np.ndarray]:
    """Batches from a TAO TensorFile (``--cal_data_file``), as TAO's TensorFile calibrator reads them.

    Args:
        path: the TensorFile (HDF5; one record = one ``[N, C, H, W]`` batch).
        batch_size: cut each record to its first ``batch_size`` images (a smaller record is an
            error, as in TAO); None keeps records whole.
        batches: stop after this many records (None: all).

    Returns:
        An iterator of float32 ``[N, C, H, W]`` arrays.

    Raises:
        InvalidInputError: the file is not a TensorFile, a record is not a 4-D array or is
            smaller than ``batch_size``.
    """
    from tltk.data.tensorfile import read_tensorfile

    source = os.fspath(path)
    for index, record in enumerate(read_tensorfile(source)):
        if batches is not None and index >= batches:
            return
        if not isinstance(record, np.ndarray) or record.ndim != 4:
            raise InvalidInputError(f"{source}: record {index} is not an [N, C, H, W] array")
        if batch_size is not None:
            if record.shape[0] < batch_size:
                raise InvalidInputError(f"{source}: record {index} holds {record.shape[0]} images, fewer than "
                                        f"--batch_size {batch_size}")
            record = record[:batch_size]
        yield np.ascontiguousarray(record, dtype=np.float32)


def list_calibration_images(image_dir: str | os.PathLike[str]) -> list[str]:
    """Image files (``.jpg``, ``.jpeg``, ``.png``, any case) directly in a folder, sorted.

    Args:
        image_dir: the ``--cal_image_dir`` folder.

    Returns:
        Paths, sorted by name.

    Raises:
        InvalidInputError: the folder does not exist.
    """
    folder = os.fspath(image_dir)
    if not os.path.isdir(folder):
        raise InvalidInputError(f"--cal_image_dir: {folder} is not a folder")
    return sorted(os.path.join(folder, name) for name in os.listdir(folder)
                  if name.lower().endswith(CALIBRATION_IMAGE_EXTENSIONS))


def calibration_batches_from_images(
    image_dir: str | os.PathLike[str],
    preprocess: Callable[[str], np.ndarray],
    batch_size: int,
    batches: int,
    seed: int = 0,
) -> Iterator[np.ndarray]:
    """Batches of preprocessed images from a folder (``--cal_image_dir``).

    ``batches * batch_size`` images are drawn at random (seeded) as TAO does; when the folder has
    fewer, all full batches that fit are used, with a warning.

    Args:
        image_dir: the folder.
        preprocess: image path -> ``[C, H, W]`` float32, exactly the inference preprocessing of
            the model (DetectNet_v2: RGB, resize to the network size, / 255).
        batch_size: images per batch.
        batches: number of batches.
        seed: random seed for the image draw.

    Returns:
        An iterator of ``[batch_size, C, H, W]`` float32 arrays.

    Raises:
        InvalidInputError: the folder is missing or holds fewer than ``batch_size`` images.
    """
    if batch_size < 1 or batches < 1:
        raise UsageError(f"--batch_size and --batches must be >= 1 (got {batch_size}, {batches})")
    images = list_calibration_images(image_dir)
    wanted = batch_size * batches
    if len(images) < batch_size:
        raise InvalidInputError(f"--cal_image_dir {os.fspath(image_dir)}: {len(images)} images (jpg/jpeg/png), "
                                f"fewer than one batch of {batch_size}")
    if len(images) < wanted:
        log.warning("--cal_image_dir has %d images, fewer than --batches x --batch_size = %d; using %d batches",
                    len(images), wanted, len(images) // batch_size)
    chosen = random.Random(seed).sample(images, min(wanted, len(images) // batch_size * batch_size))
    for start in range(0, len(chosen), batch_size):
        yield np.stack([np.asarray(preprocess(p), dtype=np.float32) for p in chosen[start:start + batch_size]])


def write_calibration_tensorfile(batches: Iterable[np.ndarray], path: str | os.PathLike[str],
                                 overwrite: bool = False) -> int:
    """Store calibration batches in a TAO TensorFile (readable by TAO and tltk).

    Args:
        batches: ``[N, C, H, W]`` float32 arrays.
        path: the TensorFile to write.
        overwrite: replace an existing file.

    Returns:
        The number of batches written.
    """
    from tltk.data.tensorfile import TensorFileWriter

    count = 0
    with TensorFileWriter(path, overwrite=overwrite) as writer:
        for batch in batches:
            writer.write_batch(np.ascontiguousarray(batch, dtype=np.float32))
            count += 1
    return count


def prepare_calibration_batches(
    cal_data_file: str | os.PathLike[str] | None,
    cal_image_dir: str | os.PathLike[str] | None,
    batch_size: int,
    batches: int,
    preprocess: Callable[[str], np.ndarray] | None = None,
    loader: Callable[[int, int], Iterator[np.ndarray]] | None = None,
) -> Iterator[np.ndarray] | None:
    """Pick the calibration source the way ``export`` does.

    * ``cal_data_file`` and ``cal_image_dir``: the TensorFile is written from the images when it
      does not exist yet, then read;
    * ``cal_data_file`` only: the TensorFile is read (it must exist);
    * ``cal_image_dir`` only: the images are read directly;
    * neither: ``loader(batch_size, batches)`` (the Task's training data), or None without one.

    Args:
        cal_data_file: ``--cal_data_file`` or None/empty.
        cal_image_dir: ``--cal_image_dir`` or None/empty.
        batch_size: ``--batch_size``.
        batches: ``--batches``.
        preprocess: image path -> ``[C, H, W]`` float32 (needed with ``cal_image_dir``).
        loader: ``(batch_size, batches) -> batches`` from the training data (the Task's
            ``calibration_batches``), used when neither file nor folder is given.

    Returns:
        An iterator of ``[batch_size, C, H, W]`` float32 batches, or None.

    Raises:
        UsageError: images without a preprocessing function.
        InvalidInputError: a missing TensorFile without an image folder to build it from.
    """
    data_file = os.fspath(cal_data_file) if cal_data_file else None
    image_dir = os.fspath(cal_image_dir) if cal_image_dir else None
    if image_dir is not None and preprocess is None:
        raise UsageError("calibration from --cal_image_dir needs the model's preprocessing function")
    if data_file is not None:
        if not os.path.exists(data_file):
            if image_dir is None:
                raise InvalidInputError(f"--cal_data_file {data_file} does not exist",
                                        hint="give --cal_image_dir too, to build it from images")
            assert preprocess is not None
            written = write_calibration_tensorfile(
                calibration_batches_from_images(image_dir, preprocess, batch_size, batches), data_file)
            log.info("wrote calibration TensorFile %s (%d batches of %d)", data_file, written, batch_size)
        elif image_dir is not None:
            log.info("--cal_data_file %s exists; using it instead of --cal_image_dir", data_file)
        return calibration_batches_from_tensorfile(data_file, batch_size, batches)
    if image_dir is not None:
        assert preprocess is not None
        return calibration_batches_from_images(image_dir, preprocess, batch_size, batches)
    return loader(batch_size, batches) if loader is not None else None


__all__ = [
    "CALIBRATION_IMAGE_EXTENSIONS",
    "DATA_TYPES",
    "calibration_batches_from_images",
    "calibration_batches_from_tensorfile",
    "default_cache_path",
    "default_cpu_int8_path",
    "default_qdq_path",
    "export_model",
    "list_calibration_images",
    "prepare_calibration_batches",
    "write_calibration_tensorfile",
]
