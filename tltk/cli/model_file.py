"""``tltk model decode`` and ``tltk model inspect``: open legacy TAO files and tltk containers.

``decode`` writes the plain model inside a legacy TAO ``.etlt``/``.tlt`` (ONNX, UFF, Keras HDF5 or
a checkpoint zip) so that old TAO models can be built with current TensorRT; ``inspect`` says
what a model file is and what it holds.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from typing import Any

import click

from tltk import console
from tltk.cli.common import CommandResult, key_option, tltk_command
from tltk.errors import ModelFileError, UsageError, WrongKeyError

log = logging.getLogger(__name__)

_EXTENSIONS = {"onnx": ".onnx", "uff": ".uff", "hdf5": ".hdf5", "zip": ".zip", "keras": ".keras"}
_ALIASES = {".h5": ".hdf5", ".ckzip": ".zip"}
_KIND_NAMES = {"onnx": "ONNX", "uff": "UFF", "hdf5": "Keras HDF5", "zip": "zip archive",
               "keras": "Keras (.keras)"}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _output_path(output: str, input_path: str, kind: str) -> str:
    ext = _EXTENSIONS[kind]
    if os.path.isdir(output) or output.endswith(("/", os.sep)):
        stem = os.path.splitext(os.path.basename(input_path))[0] or "model"
        return os.path.join(output, stem + ext)
    given = os.path.splitext(output)[1].lower()
    if not given:
        return output + ext
    if _ALIASES.get(given, given) != ext:
        raise UsageError(f"-o {output}: the payload is {_KIND_NAMES[kind]}, but the name ends in {given}, which says "
                         "another format",
                         hint=f"name it {os.path.splitext(output)[0] + ext} (or give a folder or a name without an "
                              "extension: the extension is then chosen from the payload)")
    return output


def _next_step(kind: str, output: str) -> str:
    if kind == "onnx":
        return f"build a TensorRT engine: trtexec --onnx={output} --saveEngine=model.engine"
    if kind == "uff":
        return ("UFF models need TensorRT 8.6 or older (TensorRT 10 has no UFF parser); to use TensorRT 10, "
                "retrain or re-export the model to ONNX")
    if kind == "hdf5":
        return "a Keras HDF5 model: usable as pretrained_model_file (weights are matched by layer name)"
    if kind == "keras":
        return f"a Keras 3 model: keras.models.load_model({output!r})"
    return "a checkpoint archive: unzip it to see the TensorFlow checkpoint files"


@tltk_command("decode", help=(
    "Decode a legacy TAO .etlt/.tlt to plain ONNX, UFF or HDF5.\n\n"
    "Also writes the Keras model of a tltk .tlt container.  "
    "The payload (ONNX, UFF, Keras HDF5 or a checkpoint zip) is written to OUTPUT; a folder or a name "
    "without extension gets the extension of what the payload is, and an extension that says another "
    "format is refused (exit 2).  Use it to move old TAO models to current TensorRT (trtexec --onnx=...)."))
@click.argument("input_file", metavar="INPUT")
@key_option()
@click.option("-o", "--output_file", "output", required=True, metavar="OUTPUT",
              help="Output file, or a folder (the file is then named after INPUT).")
@click.option("--force", is_flag=True, default=False, help="Overwrite OUTPUT if it exists.")
def decode(input_file: str, key: str | None, output: str, force: bool) -> CommandResult:
    """Decode a legacy TAO model file (see the command help)."""
    from tltk.fileio import atomic_write_bytes
    from tltk.modelfile.container import find_keras_member, load_any_model_file, sniff_model_file
    from tltk.modelfile.reading import read_model_bytes

    data = read_model_bytes(input_file)
    found = sniff_model_file(data)
    if found in _EXTENSIONS:
        raise UsageError(f"{input_file}: already a plain {_KIND_NAMES[found]} file; there is nothing to decode",
                         hint="use it as it is, or run `tltk model inspect` on it")
    kind, content, info = load_any_model_file(input_file, key)
    member = None
    if kind == "tltk":
        assert isinstance(content, dict)
        member = find_keras_member(content, info, input_file)
        payload = content[member]
        ext = os.path.splitext(member)[1].lower()
        kind = "hdf5" if ext in (".h5", ".hdf5") else "keras"
        container = "tltk-sealed" if found == "tltk-sealed" else "tltk"
        input_name = None
    else:
        assert isinstance(content, bytes)
        payload = content
        container = info["container"]
        input_name = info["input_name"]
    out = _output_path(output, input_file, kind)
    if os.path.isdir(out):
        raise UsageError(f"{out}: is a folder; give a file name with -o")
    if os.path.exists(out) and not force:
        raise UsageError(f"{out}: already exists; pass --force to overwrite it")
    atomic_write_bytes(out, payload)
    doc = {
        "input": input_file,
        "input_bytes": len(data),
        "input_sha256": _sha256(data),
        "container": container,
        "kind": kind,
        "input_name": input_name,
        "member": member,
        "output": out,
        "output_bytes": len(payload),
        "output_sha256": _sha256(payload),
        "next_step": _next_step(kind, out),
    }
    console.echo(f"input:   {input_file} ({len(data)} bytes, {container})")
    if input_name is not None:
        console.echo(f"header:  input node name {input_name!r}" if input_name else
                     "header:  no input node name (length 0: ONNX payload)")
    console.echo(f"payload: {_KIND_NAMES[kind]}, {len(payload)} bytes, sha256 {doc['output_sha256']}")
    console.echo(f"written: {out}")
    console.echo(f"next:    {doc['next_step']}")
    return CommandResult(summary=f"Wrote the {_KIND_NAMES[kind]} payload to {out}.", data=doc)


# ---- inspect -----------------------------------------------------------------------------------

def _dims(value_info: Any) -> list[int | str]:
    dims: list[int | str] = []
    for dim in value_info.type.tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or "?")
    return dims


def _describe_onnx(payload: bytes) -> dict[str, Any]:
    import onnx

    model = onnx.load_model_from_string(payload)
    graph = model.graph
    initialisers = {init.name for init in graph.initializer}

    def tensor(vi: Any) -> dict[str, Any]:
        elem = vi.type.tensor_type.elem_type
        return {"name": vi.name, "shape": _dims(vi),
                "dtype": onnx.TensorProto.DataType.Name(elem).lower() if elem else "undefined"}

    opsets = {op.domain or "ai.onnx": int(op.version) for op in model.opset_import}
    return {
        "ir_version": int(model.ir_version),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "opset": opsets,
        "nodes": len(graph.node),
        "parameters": int(sum(_numel(t.dims) for t in graph.initializer)),
        "inputs": [tensor(vi) for vi in graph.input if vi.name not in initialisers],
        "outputs": [tensor(vi) for vi in graph.output],
    }


def _numel(dims: Any) -> int:
    total = 1
    for d in dims:
        total *= int(d)
    return total


def _attr_text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _keras_config_summary(config: dict[str, Any]) -> dict[str, Any]:
    inner = config.get("config", {}) if isinstance(config, dict) else {}
    layers = inner.get("layers", []) if isinstance(inner, dict) else []
    inputs = inner.get("input_layers", []) if isinstance(inner, dict) else []
    outputs = inner.get("output_layers", []) if isinstance(inner, dict) else []

    def names(entries: Any) -> list[str]:
        if isinstance(entries, list) and entries and isinstance(entries[0], str):
            return [entries[0]]
        return [e[0] for e in entries if isinstance(e, list) and e and isinstance(e[0], str)]

    return {"class_name": config.get("class_name"), "name": inner.get("name"), "layers": len(layers),
            "input_layers": names(inputs), "output_layers": names(outputs)}


def _describe_hdf5(payload: bytes) -> dict[str, Any]:
    import h5py

    with h5py.File(io.BytesIO(payload), "r") as h5:
        attrs = {k: _attr_text(v) for k, v in h5.attrs.items() if k in ("keras_version", "backend", "model_config")}
        doc: dict[str, Any] = {"keras_version": attrs.get("keras_version"), "backend": attrs.get("backend"),
                               "has_training_config": "training_config" in h5.attrs,
                               "has_optimizer_weights": "optimizer_weights" in h5}
    if "model_config" in attrs:
        doc["model"] = _keras_config_summary(json.loads(attrs["model_config"]))
    return doc


def _describe_keras(payload: bytes) -> dict[str, Any]:
    import zipfile

    with zipfile.ZipFile(io.BytesIO(payload)) as zf:
        meta = json.loads(zf.read("metadata.json")) if "metadata.json" in zf.namelist() else {}
        config = json.loads(zf.read("config.json"))
    return {"keras_version": meta.get("keras_version"), "date_saved": meta.get("date_saved"),
            "model": _keras_config_summary(config)}


def _describe_payload(kind: str, payload: bytes) -> dict[str, Any]:
    try:
        if kind == "onnx":
            return _describe_onnx(payload)
        if kind == "hdf5":
            return _describe_hdf5(payload)
        if kind == "keras":
            return _describe_keras(payload)
        if kind == "zip":
            import zipfile

            with zipfile.ZipFile(io.BytesIO(payload)) as zf:
                return {"members": [{"name": i.filename, "bytes": i.file_size} for i in zf.infolist()]}
    except Exception as exc:  # a description failure must not hide what the file is
        return {"error": f"cannot describe the {kind} payload: {type(exc).__name__}: {exc}"}
    return {}


def _echo_report(report: dict[str, Any]) -> None:
    console.echo(f"file:     {report['path']} ({report['bytes']} bytes, sha256 {report['sha256']})")
    console.echo(f"format:   {report['description']}")
    if report.get("input_name"):
        console.echo(f"header:   input node name {report['input_name']!r}")
    if "payload_kind" in report:
        console.echo(f"payload:  {_KIND_NAMES[report['payload_kind']]}, {report['payload_bytes']} bytes, "
                     f"sha256 {report['payload_sha256']}")
    if report.get("note"):
        console.echo(f"note:     {report['note']}")
    meta = report.get("metadata")
    if meta:
        shown = {k: v for k, v in meta.items() if k not in ("container", "spec")}
        for k, v in shown.items():
            console.echo(f"  {k}: {json.dumps(v) if not isinstance(v, str) else v}")
        if isinstance(meta.get("spec"), str):
            console.echo(f"  spec: {len(meta['spec'].splitlines())} lines (see --json)")
    for m in report.get("members", []):
        console.echo(f"  member {m['name']}: {m['bytes']} bytes")
    details = report.get("details", {})
    for side in ("inputs", "outputs"):
        for t in details.get(side, []):
            console.echo(f"  {side[:-1]:6s} {t['name']}: {t['dtype']} {t['shape']}")
    model = details.get("model")
    if isinstance(model, dict):
        console.echo(f"  keras:  {model.get('class_name')} {model.get('name')!r}, {model.get('layers')} layers, "
                     f"inputs {model.get('input_layers')}, outputs {model.get('output_layers')}")
    if "error" in details:
        console.echo(f"  {details['error']}")


@tltk_command("inspect", help=(
    "Say what a model file is and what it holds.\n\n"
    "Recognises tltk containers (sealed or not), legacy TAO .etlt/.tlt, ONNX, UFF, Keras and HDF5.  "
    "Shows the metadata of tltk containers and the input/output names and shapes of ONNX models.  "
    "Encrypted files need -k/--key (or TLTK_KEY) to show their content."))
@click.argument("model_file", metavar="FILE")
@key_option()
def inspect(model_file: str, key: str | None) -> CommandResult:
    """Describe a model file (see the command help)."""
    from tltk.modelfile.container import container_info, read_container, sniff_model_file
    from tltk.modelfile.legacy import decode_legacy, find_published_key
    from tltk.modelfile.reading import read_model_bytes

    data = read_model_bytes(model_file)
    found = sniff_model_file(data)
    report: dict[str, Any] = {"path": model_file, "bytes": len(data), "sha256": _sha256(data), "format": found}
    if found == "empty":
        raise ModelFileError(f"{model_file}: the file is empty (0 bytes); it is not a model")
    if found == "damaged-zip":
        raise ModelFileError(f"{model_file}: damaged or truncated: it starts like a zip archive but cannot be read")
    if found in ("tltk", "tltk-sealed"):
        report["format"] = "tltk"
        info = container_info(model_file) or {}
        report["sealed"] = found == "tltk-sealed"
        report["container"] = info
        if report["sealed"] and not key:
            report["description"] = "tltk model container, encrypted (AES-256-GCM, scrypt)"
            report["note"] = "the metadata and model are encrypted; pass -k/--key or set TLTK_KEY to see them"
        else:
            members, meta = read_container(model_file, key)
            report["description"] = ("tltk model container, encrypted (AES-256-GCM, scrypt)" if report["sealed"]
                                     else "tltk model container, not encrypted")
            report["metadata"] = meta
            report["members"] = [{"name": n, "bytes": len(b)} for n, b in members.items()]
            keras_name = meta.get("keras_model")
            if isinstance(keras_name, str) and keras_name in members:
                kind = "hdf5" if keras_name.lower().endswith((".h5", ".hdf5")) else "keras"
                report["details"] = _describe_payload(kind, members[keras_name])
    elif found == "unknown":
        if not key:
            opener = find_published_key(data, model_file)
            hint = (f"it opens with the published key '{opener}': pass -k {opener}" if opener
                    else "pass -k/--key or set TLTK_KEY")
            raise WrongKeyError(f"{model_file}: not a plain model file; if it is a legacy TAO .etlt/.tlt it is "
                                "encrypted and needs its key", hint=hint)
        legacy = decode_legacy(data, key, source=model_file)
        report["format"] = f"legacy-{legacy.layout}"
        report["description"] = (f"legacy TAO .{legacy.layout} (encrypted with the TAO codec: PBKDF2 + AES-CTR, "
                                 "no integrity check)")
        report["input_name"] = legacy.input_name
        report["payload_kind"] = legacy.kind
        report["payload_bytes"] = len(legacy.payload)
        report["payload_sha256"] = _sha256(legacy.payload)
        report["details"] = _describe_payload(legacy.kind, legacy.payload)
    else:
        if key:
            log.info("%s is a plain %s file; the key is not needed", model_file, _KIND_NAMES[found])
        report["description"] = f"plain {_KIND_NAMES[found]} file"
        report["details"] = _describe_payload(found, data)
        if found == "uff":
            report["note"] = "UFF models need TensorRT 8.6 or older"
    _echo_report(report)
    return CommandResult(summary=f"{model_file}: {report['description']}.", data=report)
