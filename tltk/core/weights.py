"""Pretrained weights in: load by layer name from any model file tltk understands.

``load_weights_by_name`` copies weights into a built model, layer by layer, from

* Keras HDF5 files in the Keras 2 layout, full models (``model_weights/<layer>/<layer>/kernel:0``)
  or weights only (the same groups at the root) -- what TAO 5 ships as pretrained models and
  writes as trained/pruned ``.hdf5``;
* Keras 3 ``.keras`` archives and ``.weights.h5`` files;
* tltk ``.tlt`` containers (sealed with a key or not) and legacy TAO ``.tlt`` files (with the key),
  through ``tltk.modelfile.container``.

A layer is *loaded* when the source has a layer of the same name whose weights have the same
count and shapes; *skipped* when the source has no such layer; *mismatched* when the shapes or the
weight count differ (the layer keeps its initial weights).  Source layers with no counterpart are
listed as *unused*.  ``load_model_graph`` loads a whole model instead (``load_graph: true``, e.g.
pruned models).
"""

from __future__ import annotations

import io
import logging
import os
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tltk.errors import ModelFileError

logger = logging.getLogger(__name__)

# Keras 2 / Keras 3 spell a few variable names differently.
_WEIGHT_ALIASES = {"depthwise_kernel": "kernel"}

SourceWeights = dict[str, list[tuple[str, np.ndarray]]]


@dataclass
class MismatchedLayer:
    """A layer present in both models whose weights do not fit.

    Attributes:
        name: layer name.
        model_shapes: shapes of the model's weights, in the layer's weight order.
        source_shapes: shapes of the source's weights for that layer.
    """

    name: str
    model_shapes: list[tuple[int, ...]]
    source_shapes: list[tuple[int, ...]]

    def __str__(self) -> str:
        return f"{self.name}: model {self.model_shapes} vs file {self.source_shapes}"


@dataclass
class WeightLoadReport:
    """What ``load_weights_by_name`` did.

    Attributes:
        source: the file the weights came from.
        loaded: model layers whose weights were set from the file.
        skipped: model layers with weights that the file does not have (they keep their
            initial values).
        mismatched: layers present in both with different weight shapes or counts (kept as
            initialised).
        excluded: model layers left alone on request (e.g. DetectNet_v2 heads).
        unused: layers with weights in the file that the model does not have.
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    mismatched: list[MismatchedLayer] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: counts of loaded, skipped, mismatched, excluded and unused layers.

        Returns:
            e.g. ``"weights from resnet18.hdf5: 41 layers loaded, 2 skipped, 0 mismatched, ..."``.
        """
        return (
            f"weights from {os.path.basename(self.source)}: {len(self.loaded)} layers loaded, "
            f"{len(self.skipped)} skipped (not in the file), {len(self.mismatched)} mismatched, "
            f"{len(self.excluded)} excluded, {len(self.unused)} unused in the file"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (for ``--json`` output and status files).

        Returns:
            dict with ``source``, ``loaded``, ``skipped``, ``excluded``, ``unused`` (lists of layer
            names) and ``mismatched`` (list of ``{name, model_shapes, source_shapes}``).
        """
        return {
            "source": self.source,
            "loaded": list(self.loaded),
            "skipped": list(self.skipped),
            "mismatched": [
                {
                    "name": m.name,
                    "model_shapes": [list(s) for s in m.model_shapes],
                    "source_shapes": [list(s) for s in m.source_shapes],
                }
                for m in self.mismatched
            ],
            "excluded": list(self.excluded),
            "unused": list(self.unused),
        }


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _short_weight_name(weight_name: str) -> str:
    short = weight_name.split("/")[-1].split(":")[0]
    return _WEIGHT_ALIASES.get(short, short)


def _read_keras2_layout(root: Any) -> SourceWeights:
    """Keras 2 (and Keras 3 legacy ``.h5``) layout: ``layer_names``/``weight_names`` attributes."""
    group = root["model_weights"] if "model_weights" in root else root
    weights: SourceWeights = {}
    for raw_layer in group.attrs["layer_names"]:
        layer_name = _text(raw_layer)
        if layer_name not in group:
            continue
        layer_group = group[layer_name]
        for raw_weight in layer_group.attrs.get("weight_names", []):
            weight_name = _text(raw_weight)
            parts = weight_name.split("/")
            # Nested models store "<inner layer>/<weight>:0" inside the outer layer's group.
            owner = parts[-2] if len(parts) >= 2 else layer_name
            weights.setdefault(owner, []).append(
                (_short_weight_name(weight_name), np.asarray(layer_group[weight_name]))
            )
    return weights


def _iter_keras3_vars(group: Any) -> Iterator[tuple[str, list[np.ndarray]]]:
    for key in group:
        item = group[key]
        if not hasattr(item, "keys"):
            continue
        if key == "vars":
            name = item.attrs.get("name")
            arrays = [
                np.asarray(item[k]) for k in sorted(item.keys(), key=lambda k: int(k) if k.isdigit() else -1)
            ]
            if name is not None and arrays:
                yield _text(name), arrays
        else:
            yield from _iter_keras3_vars(item)


def _read_keras3_layout(root: Any, source: str) -> SourceWeights:
    """Keras 3 ``.weights.h5`` layout: ``layers/<auto name>/vars/<i>`` with a ``name`` attribute."""
    weights: SourceWeights = {}
    for layer_name, arrays in _iter_keras3_vars(root):
        if layer_name in weights:
            logger.warning("%s: two layers are named %s; using the first", source, layer_name)
            continue
        # Keras 3 weight files store no variable names; the order is the layer's weight order.
        weights[layer_name] = [("", a) for a in arrays]
    if not weights and "layers" in root:
        raise ModelFileError(
            f"{source}: this Keras 3 weights file does not record layer names",
            hint="save the model as .keras (or .tlt) instead, or load it whole with load_graph",
        )
    return weights


def read_h5_weights(data: bytes | str | os.PathLike[str], source: str | None = None) -> SourceWeights:
    """Read per-layer weights from a Keras HDF5 file (Keras 2 layout or Keras 3 ``.weights.h5``).

    Args:
        data: file bytes or a path.
        source: name used in messages (defaults to the path).

    Returns:
        ``{layer_name: [(weight_name, array), ...]}`` in the layer's weight order; weight names are
        short (``kernel``, ``bias``, ``gamma``, ``moving_mean``...), empty for Keras 3 files.

    Raises:
        ModelFileError: not an HDF5 file, or an HDF5 file without Keras weights.
    """
    import h5py

    label = source or (os.fspath(data) if not isinstance(data, bytes) else "<bytes>")
    handle: Any = io.BytesIO(data) if isinstance(data, bytes) else os.fspath(data)
    try:
        with h5py.File(handle, "r") as root:
            if "layer_names" in root.attrs or (
                "model_weights" in root and "layer_names" in root["model_weights"].attrs
            ):
                return _read_keras2_layout(root)
            if "layers" in root or "vars" in root:
                return _read_keras3_layout(root, label)
    except OSError as exc:
        raise ModelFileError(f"{label}: not a readable HDF5 file ({exc})") from exc
    raise ModelFileError(
        f"{label}: HDF5 file without Keras weights (no 'layer_names' or 'layers' entries)",
        hint="pass a Keras model/weights file such as a TAO pretrained .hdf5",
    )


def _weights_from_model(model: Any) -> SourceWeights:
    weights: SourceWeights = {}
    for layer in _flat_layers(model):
        if layer.weights and layer.name not in weights:
            weights[layer.name] = [(_short_weight_name(w.name), np.asarray(w.numpy())) for w in layer.weights]
    return weights


def _keras_zip_weights(blob: bytes, source: str) -> SourceWeights | None:
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            if "model.weights.h5" not in zf.namelist():
                return None
            inner = zf.read("model.weights.h5")
    except zipfile.BadZipFile as exc:
        raise ModelFileError(f"{source}: damaged .keras archive ({exc})") from exc
    try:
        return read_h5_weights(inner, source)
    except ModelFileError:
        return None


def read_source_weights(path: str | os.PathLike[str], key: str | None = None) -> SourceWeights:
    """Read every layer's weights from a model or weights file, whatever its kind.

    Args:
        path: ``.hdf5``/``.h5`` (Keras 2 layout), ``.weights.h5``, ``.keras``, tltk ``.tlt``, or a
            legacy TAO ``.tlt`` (needs ``key``).
        key: key of a sealed or legacy encrypted file.

    Returns:
        ``{layer_name: [(weight_name, array), ...]}`` (see ``read_h5_weights``).

    Raises:
        InvalidInputError: the file does not exist.
        WrongKeyError: the file is encrypted and the key is missing or wrong.
        ModelFileError: damaged file or a kind without Keras weights (ONNX, UFF...).
    """
    from tltk.modelfile.container import find_keras_member, load_any_model_file, load_keras_model

    source = os.fspath(path)
    kind, content, info = load_any_model_file(source, key)
    if kind == "hdf5":
        assert isinstance(content, bytes)
        return read_h5_weights(content, source)
    blob: bytes | None = None
    if kind == "keras":
        assert isinstance(content, bytes)
        blob = content
    elif kind == "tltk":
        assert isinstance(content, dict)
        member = find_keras_member(content, info, source)
        blob = content[member]
        if not member.endswith(".keras"):
            return read_h5_weights(blob, source)
    else:
        raise ModelFileError(
            f"{source}: holds a {kind.upper()} model, which has no Keras weights to load",
            hint="pretrained_model_file must be a Keras model or weights file (.hdf5, .h5, .keras, .tlt)",
        )
    weights = _keras_zip_weights(blob, source)
    if weights is not None:
        return weights
    model, _ = load_keras_model(source, key)
    return _weights_from_model(model)


def _flat_layers(model: Any) -> Iterator[Any]:
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _flat_layers(layer)
        else:
            yield layer


def _match(layer: Any, source: list[tuple[str, np.ndarray]]) -> list[np.ndarray] | None:
    """The source arrays in the layer's weight order, or None when they do not fit."""
    targets = list(layer.weights)
    if len(targets) != len(source):
        return None
    by_name = {name: array for name, array in source if name}
    target_names = [_short_weight_name(w.name) for w in targets]
    if len(by_name) == len(source) and all(n in by_name for n in target_names):
        arrays = [by_name[n] for n in target_names]
    else:
        arrays = [array for _, array in source]
    for variable, array in zip(targets, arrays, strict=True):
        if tuple(variable.shape) != tuple(array.shape):
            return None
    return arrays


def load_weights_by_name(
    model: Any,
    source_path: str | os.PathLike[str],
    key: str | None = None,
    exclude: Iterable[str] = (),
) -> WeightLoadReport:
    """Copy weights into ``model`` from a file, matching layers by name and checking shapes.

    Weight values are set as stored; Conv2D kernels are (kh, kw, in, out) in Keras whatever the
    data format, so TAO's channels-first weights fit tltk's channels-last layers unchanged.

    Args:
        model: a built Keras model (tltk backbone names = TAO names).
        source_path: the pretrained file (see ``read_source_weights`` for the kinds).
        key: key of a sealed tltk or legacy TAO file.
        exclude: model layer names to leave untouched (listed as ``excluded``).

    Returns:
        WeightLoadReport with the loaded, skipped, mismatched, excluded and unused layers; its
        summary is logged at INFO, each mismatch at WARNING.

    Raises:
        InvalidInputError, WrongKeyError, ModelFileError: see ``read_source_weights``.
    """
    source = os.fspath(source_path)
    source_weights = read_source_weights(source, key)
    excluded = set(exclude)
    report = WeightLoadReport(source=source)
    seen: set[str] = set()
    for layer in _flat_layers(model):
        if not layer.weights or layer.name in seen:
            continue
        seen.add(layer.name)
        if layer.name in excluded:
            report.excluded.append(layer.name)
            continue
        if layer.name not in source_weights:
            report.skipped.append(layer.name)
            continue
        arrays = _match(layer, source_weights[layer.name])
        if arrays is None:
            mismatch = MismatchedLayer(
                name=layer.name,
                model_shapes=[tuple(int(d) for d in w.shape) for w in layer.weights],
                source_shapes=[tuple(int(d) for d in a.shape) for _, a in source_weights[layer.name]],
            )
            report.mismatched.append(mismatch)
            logger.warning(
                "pretrained weights: layer %s not loaded, shapes differ (%s)", layer.name, mismatch
            )
            continue
        for variable, array in zip(layer.weights, arrays, strict=True):
            variable.assign(np.asarray(array, dtype=variable.dtype))
        report.loaded.append(layer.name)
    report.unused = [name for name in source_weights if name not in seen]
    logger.info("%s", report.summary())
    if report.skipped:
        logger.debug("layers not in %s: %s", source, ", ".join(report.skipped))
    return report


def load_model_graph(
    path: str | os.PathLike[str], key: str | None = None, custom_objects: dict[str, Any] | None = None
) -> Any:
    """Load a whole model, architecture and weights (``load_graph: true``, e.g. a pruned model).

    Args:
        path: tltk ``.tlt``, ``.keras``, or Keras ``.hdf5``/``.h5`` full model (legacy TAO ``.tlt``
            with its key).
        key: key of a sealed tltk or legacy TAO file.
        custom_objects: custom Keras objects needed to rebuild the model.

    Returns:
        The ``keras.Model``.

    Raises:
        InvalidInputError, WrongKeyError, ModelFileError: missing, encrypted without the right key,
            damaged, weights-only, or not rebuildable by Keras.
    """
    from tltk.modelfile.container import load_keras_model

    model, _ = load_keras_model(path, key, custom_objects=custom_objects)
    return model
