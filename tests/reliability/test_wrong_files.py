"""Issue 16, item 4: wrong files everywhere, and damaged datasets.

Every file-taking flag of every subtask (``-m``, ``-e``, ``-d``, ``-i``, ``--cal_data_file``,
``--cal_cache_file``, ``-k``, the converter's and model tools' inputs, and the model file an
inference spec or ``pretrained_model_file`` names) is given a folder, a missing path, an empty
file, a text file, an image, truncated or tampered model files, the other model's file and
specs of the wrong kind.  Each case runs the CLI in this process and must end with exit code 2
(invalid input, docs/exit_codes.md), a message naming the file, and no traceback.

Datasets with corrupt images, 0-byte files, bad label lines and bad COCO JSON must be counted
and named in the conversion report, never dropped silently.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tltk.models import MODELS

KEY = "reliability-key"
WRONG_KEY = "not-the-key"


# ---- the wrong files --------------------------------------------------------------------------------

def _tiny_onnx() -> bytes:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["input_1"], ["out"])], "tiny",
                              [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 4, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def _flip(data: bytes, at: float = 0.5) -> bytes:
    index = int(len(data) * at)
    return data[:index] + bytes([data[index] ^ 0x5A]) + data[index + 1:]


@dataclass
class BadFiles:
    """Every wrong file, by kind, made once per session."""

    root: Path
    paths: dict[str, Path]

    def __getitem__(self, kind: str) -> Path:
        return self.paths[kind]


MODEL_KINDS = ("folder", "missing", "empty", "text", "image", "garbage.tlt", "truncated.tlt", "tampered.tlt",
               "tampered_sealed.tlt", "sealed_no_key.tlt", "other_model.tlt", "relabeled.tlt", "onnx_as_keras.onnx",
               "truncated.onnx", "truncated.hdf5", "weights_only.hdf5", "truncated.etlt", "lambda.keras")
SPEC_KINDS = ("folder", "missing", "empty", "text", "image", "binary.txt", "half_spec.txt", "other_model_spec.txt")
INPUT_KINDS = ("missing", "empty_image.png", "text_as_image.png", "truncated_image.png", "folder_without_images")
TENSORFILE_KINDS = ("folder", "missing", "empty", "text", "image", "truncated.hdf5", "h5_without_count.tensor")


def make_bad_files(root: Path, prepared: Any, reference: Any) -> BadFiles:
    from PIL import Image

    from tltk.modelfile.container import read_container, write_container
    from tltk.modelfile.legacy import encode_etlt

    root.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        paths[name] = root / name
        paths[name].write_bytes(data)

    (root / "a_folder").mkdir(exist_ok=True)
    paths["folder"] = root / "a_folder"
    paths["missing"] = root / "no_such_file.tlt"
    put("empty", b"")
    put("text", b"this is a text file, not what was asked for\n")
    image = sorted(prepared.images.iterdir())[0]
    put("image", image.read_bytes())
    put("garbage.tlt", bytes(range(256)) * 64)
    model = reference.model_file.read_bytes()
    put("truncated.tlt", model[: len(model) // 2])
    put("tampered.tlt", _flip(model))
    members, meta = read_container(reference.model_file)
    meta = {k: v for k, v in meta.items() if k not in ("container", "created", "tltk_version")}
    write_container(root / "sealed.tlt", members, meta, key=KEY)
    paths["sealed_no_key.tlt"] = root / "sealed.tlt"
    put("tampered_sealed.tlt", _flip((root / "sealed.tlt").read_bytes(), 0.6))
    other = next((m for m in MODELS if m != prepared.kit.model), "another_model")
    write_container(root / "relabeled.tlt", members, {**meta, "model_kind": other})
    paths["relabeled.tlt"] = root / "relabeled.tlt"
    onnx_bytes = _tiny_onnx()
    put("onnx_as_keras.onnx", onnx_bytes)
    put("truncated.onnx", onnx_bytes[: len(onnx_bytes) // 2])
    weights = (reference.results / "checkpoints" / f"{prepared.kit.cycle_name}-0001" / "network.weights.h5").read_bytes()
    put("weights_only.hdf5", weights)
    put("truncated.hdf5", weights[: len(weights) // 3])
    etlt = encode_etlt(onnx_bytes, KEY)
    put("truncated.etlt", etlt[: len(etlt) // 2])
    put("lambda.keras", _lambda_keras(root))
    # specs and annotation files
    put("binary.txt", bytes(range(256)))
    put("broken.json", b'{"images": [\n  {"id": 1,, }\n]}\n')
    put("list.json", b"[1, 2, 3]\n")
    spec_text = prepared.spec.read_bytes()
    put("half_spec.txt", spec_text[: len(spec_text) // 2])
    # images
    put("empty_image.png", b"")
    put("text_as_image.png", b"not an image\n")
    put("truncated_image.png", image.read_bytes()[:200])
    (root / "no_images").mkdir(exist_ok=True)
    (root / "no_images" / "notes.txt").write_text("no images here\n")
    paths["folder_without_images"] = root / "no_images"
    # tensorfiles
    import h5py

    with h5py.File(root / "no_count.tensor", "w") as handle:
        handle.create_dataset("x", data=[1, 2, 3])
    paths["h5_without_count.tensor"] = root / "no_count.tensor"
    Image.new("RGB", (4, 4)).save(root / "unused.png")
    return BadFiles(root, paths)


def _lambda_keras(root: Path) -> bytes:
    import keras

    inputs = keras.Input((3, 8, 8), name="input_1")
    outputs = keras.layers.Lambda(lambda x: x * 2.0, name="evil")(inputs)
    keras.Model(inputs, outputs).save(root / "lambda_src.keras")
    return (root / "lambda_src.keras").read_bytes()


# ---- slots: where a wrong file can go -------------------------------------------------------------

@dataclass(frozen=True)
class Slot:
    """A file-taking flag of a subtask.

    Attributes:
        name: test id prefix.
        subtask: the subtask (skipped where it does not exist).
        argv: the command line, given the context and the wrong file.
        kinds: the wrong files to give it.
        xfail: kind -> reason, for wrong files a known bug still mishandles (reported).
        models: the models the slot is for (empty: every model that has the subtask).
        long: kinds that take seconds each (the model is loaded first): only in the long variant.
    """

    name: str
    subtask: str
    argv: Callable[[Any, Path], list[str]]
    kinds: tuple[str, ...]
    xfail: tuple[tuple[str, str], ...] = ()
    models: tuple[str, ...] = ()
    long: tuple[str, ...] = ()



def _sets(ctx: Any) -> list[str]:
    return [a for item in ctx.prepared.kit.train_overrides for a in ("--set", item)]


def _inference_sets(model_path: Path | str) -> list[str]:
    return ["--set", f"inferencer_config.tlt_config.model={model_path}"]


SLOTS = (
    Slot("validate_spec -e", "validate_spec", lambda c, f: [c.model, "validate_spec", "-e", str(f)],
         ("folder", "missing", "empty", "text", "image", "binary.txt", "half_spec.txt", "other_model_spec.txt")),
    Slot("train -e", "train", lambda c, f: [c.model, "train", "-e", str(f), "-r", str(c.out / "train")],
         SPEC_KINDS + ("inference_spec", "convert_spec")),
    Slot("train pretrained_model_file", "train",
         lambda c, f: [c.model, "train", "-e", str(c.prepared.spec), "-r", str(c.out / "train"), *_sets(c),
                       "--set", f"{c.prepared.kit.pretrained_field}={f}"],
         ("missing", "empty", "text", "image", "garbage.tlt", "truncated.tlt", "tampered.tlt", "tampered_sealed.tlt",
          "truncated.hdf5", "truncated.etlt", "lambda.keras")),
    Slot("evaluate -e", "evaluate", lambda c, f: [c.model, "evaluate", "-e", str(f), "-m", str(c.reference.model_file)],
         SPEC_KINDS + ("inference_spec", "convert_spec")),
    Slot("evaluate -m", "evaluate", lambda c, f: [c.model, "evaluate", "-e", str(c.prepared.spec), "-m", str(f),
                                                   *_sets(c)], MODEL_KINDS),
    Slot("inference -e", "inference", lambda c, f: [c.model, "inference", "-e", str(f), "-i", str(c.images), "-o",
                                                     str(c.out / "inference")],
         SPEC_KINDS + ("train_spec", "convert_spec"), models=("detectnet_v2",)),
    Slot("inference -i", "inference", lambda c, f: [c.model, "inference", "-e", str(c.inference_spec), "-i", str(f),
                                                     "-o", str(c.out / "inference")], INPUT_KINDS, models=("detectnet_v2",)),
    Slot("inference spec model", "inference",
         lambda c, f: [c.model, "inference", "-e", str(c.inference_spec), "-i", str(c.images), "-o",
                       str(c.out / "inference"), *_inference_sets(f)], MODEL_KINDS,
         models=("detectnet_v2",)),
    # MaskRCNN's inference takes the model with -m and the spec is optional (TAO's flags).
    Slot("inference -m", "inference", lambda c, f: [c.model, "inference", "-i", str(c.images), "-o",
                                                     str(c.out / "inference"), "-m", str(f)],
         MODEL_KINDS, models=("mask_rcnn",)),
    Slot("inference -i", "inference", lambda c, f: [c.model, "inference", "-i", str(f), "-o", str(c.out / "inference"),
                                                     "-m", str(c.reference.model_file)], INPUT_KINDS,
         models=("mask_rcnn",)),
    Slot("inference -e", "inference", lambda c, f: [c.model, "inference", "-i", str(c.images), "-o",
                                                     str(c.out / "inference"), "-m", str(c.reference.model_file),
                                                     "-e", str(f)], SPEC_KINDS + ("inference_spec", "convert_spec"),
         models=("mask_rcnn",)),
    Slot("inference -c", "inference", lambda c, f: [c.model, "inference", "-i", str(c.images), "-o",
                                                     str(c.out / "inference"), "-m", str(c.reference.model_file),
                                                     "-c", str(f)], ("folder", "missing", "empty", "image", "binary.txt"),
         models=("mask_rcnn",)),
    Slot("export -m", "export", lambda c, f: [c.model, "export", "-m", str(f), "-o", str(c.out / "model.onnx")],
         MODEL_KINDS),
    Slot("export -e", "export", lambda c, f: [c.model, "export", "-m", str(c.reference.model_file), "-o",
                                               str(c.out / "model.onnx"), "-e", str(f)],
         SPEC_KINDS + ("inference_spec", "convert_spec")),
    Slot("export --cal_data_file", "export",
         lambda c, f: [c.model, "export", "-m", str(c.reference.model_file), "-o", str(c.out / "model.onnx"),
                       "--data_type", "int8", "--cal_data_file", str(f)], TENSORFILE_KINDS,
         long=tuple(k for k in TENSORFILE_KINDS if k != "text")),
    Slot("export --cal_cache_file", "export",
         lambda c, f: [c.model, "export", "-m", str(c.reference.model_file), "-o", str(c.out / "model.onnx"),
                       "--data_type", "int8", "--cal_image_dir", str(c.images), "--batches", "1", "--batch_size", "2",
                       "--cal_cache_file", str(f)], ("folder",), long=("folder",)),
    Slot("export -k", "export", lambda c, f: [c.model, "export", "-m", str(f), "-o", str(c.out / "model.onnx"),
                                               "-k", WRONG_KEY], ("sealed_no_key.tlt",)),
    Slot("prune -m", "prune", lambda c, f: [c.model, "prune", "-m", str(f), "-o", str(c.out / "pruned.tlt")],
         MODEL_KINDS),
    Slot("prune -k", "prune", lambda c, f: [c.model, "prune", "-m", str(f), "-o", str(c.out / "pruned.tlt"),
                                             "-k", WRONG_KEY], ("sealed_no_key.tlt",)),
    Slot("calibration_tensorfile -e", "calibration_tensorfile",
         lambda c, f: [c.model, "calibration_tensorfile", "-e", str(f), "-o", str(c.out / "cal.tensor")],
         SPEC_KINDS + ("inference_spec", "convert_spec")),
    Slot("dataset_convert -d", "dataset_convert",
         lambda c, f: [c.model, "dataset_convert", "-d", str(f), "-o", str(c.out / "records")],
         SPEC_KINDS + ("train_spec", "inference_spec"), models=("detectnet_v2",)),
    Slot("dataset_convert -a", "dataset_convert",
         lambda c, f: [c.model, "dataset_convert", "-i", str(c.images), "-a", str(f), "-o", str(c.out / "records")],
         ("folder", "missing", "empty", "text", "image", "binary.txt", "broken.json", "list.json"),
         models=("mask_rcnn",)),
    Slot("dataset_convert -i", "dataset_convert",
         lambda c, f: [c.model, "dataset_convert", "-i", str(f), "-a", str(c.annotations), "-o",
                       str(c.out / "records")], ("missing", "text", "folder_without_images"), models=("mask_rcnn",)),
    Slot("converter input", "converter", lambda c, f: [c.model, "converter", str(f), "-k", KEY],
         ("folder", "missing", "empty", "text", "image", "truncated.onnx", "truncated.etlt", "garbage.tlt")),
    Slot("model inspect", "", lambda c, f: ["model", "inspect", str(f)],
         ("folder", "missing", "empty", "text", "garbage.tlt", "truncated.tlt", "tampered.tlt")),
    Slot("model decode", "", lambda c, f: ["model", "decode", str(f), "-o", str(c.out / "decoded"), "-k", KEY],
         ("folder", "missing", "empty", "text", "truncated.etlt", "garbage.tlt", "tampered_sealed.tlt")),
)


@dataclass
class Context:
    model: str
    prepared: Any
    reference: Any
    images: Path
    annotations: Path
    inference_spec: Path
    bad: BadFiles
    out: Path
    workspace: Path


_BAD: dict[str, BadFiles] = {}


def _wrong_file(ctx: Context, kind: str, rel: Any) -> Path:
    specs = {"inference_spec": rel.REPO / "specs" / "detectnet_v2" / "hybrid_inference.txt",
             "train_spec": ctx.prepared.spec, "convert_spec": ctx.prepared.data / "dataset_convert_spec.txt"}
    if kind in specs:
        return specs[kind]
    if kind == "other_model_spec.txt":
        others = [m for m in rel.model_names() if m != ctx.model]
        if not others:
            pytest.skip("the model table has a single model")
        folder = rel.REPO / "specs" / others[0]
        return sorted(folder.glob("*.txt"))[0]
    if kind == "other_model.tlt":
        others = [m for m in rel.model_names() if m != ctx.model and m in rel.KITS and rel.has_subtask(m, "train")]
        if not others:
            pytest.skip("no other model of the table can train a model file yet")
        return rel.reference_run(rel.prepare(others[0], ctx.workspace)).model_file
    return ctx.bad[kind]


def _params() -> list[Any]:
    params = []
    for model in MODELS:
        for slot in SLOTS:
            if slot.models and model not in slot.models:
                continue
            xfails = dict(slot.xfail)
            for kind in slot.kinds:
                marks = [pytest.mark.xfail(strict=False, reason=xfails[kind])] if kind in xfails else []
                if kind in slot.long:
                    marks.append(pytest.mark.reliability_long)
                params.append(pytest.param(model, slot, kind, id=f"{model}: {slot.name} <- {kind}", marks=marks))
    return params


def make_context(model: str, rel: Any, workspace: Path, out: Path) -> Context:
    """The model's project, reference run, wrong files and an output folder for one case."""
    prepared = rel.prepare(model, workspace)
    reference = rel.reference_run(prepared)
    if model not in _BAD:
        _BAD[model] = make_bad_files(prepared.root / "wrong_files", prepared, reference)
    annotations = prepared.data / "annotations" / "instances_val.json"
    return Context(model, prepared, reference, prepared.images, annotations,
                   rel.inference_spec_for(prepared, reference), _BAD[model], out, workspace)


@pytest.mark.parametrize(("model_name", "slot", "kind"), _params())
def test_wrong_file_gives_a_clear_error(model_name, slot, kind, rel, workspace, tmp_path, request):
    if slot.subtask and not rel.has_subtask(model_name, slot.subtask):
        pytest.skip(f"`tltk {model_name} {slot.subtask}` does not exist yet")
    rel.expect_known_bug(request, model_name, slot.subtask)
    rel.require(model_name, "dataset_convert", "train")
    ctx = make_context(model_name, rel, workspace, tmp_path)
    wrong = _wrong_file(ctx, kind, rel)
    argv = slot.argv(ctx, wrong)
    result = rel.run_inprocess(argv, ctx.out)
    rel.assert_clean_failure(result, 2, what=f"{' '.join(argv)}")
    output = (result.stdout or "") + (result.stderr or "")
    assert wrong.name in output or str(wrong) in output, f"the message does not name {wrong.name}\n{output[-2000:]}"
    rel.STATS["wrong-file cases"] += 1
    rel.STATS[f"wrong-file cases ({model_name})"] += 1


# ---- damaged datasets ---------------------------------------------------------------------------------

def _damaged_kitti(source: Path, target: Path) -> dict[str, str]:
    """A copy of a KITTI dataset with one of each kind of damage; returns file stem -> damage."""
    shutil.copytree(source, target)
    images, labels = target / "image_2", target / "label_2"
    stems = sorted(p.stem for p in images.glob("*.png"))
    damage = {stems[0]: "corrupt image", stems[1]: "0-byte image", stems[2]: "bad label line",
              stems[3]: "0-byte label", stems[4]: "missing label", stems[5]: "non-UTF-8 label"}
    (images / f"{stems[0]}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    (images / f"{stems[1]}.png").write_bytes(b"")
    with open(labels / f"{stems[2]}.txt", "a", encoding="utf-8") as fh:
        fh.write("Car 0.00 0 0.00 10 10 zz 40 0 0 0 0 0 0 0\n")
    (labels / f"{stems[3]}.txt").write_bytes(b"")
    (labels / f"{stems[4]}.txt").unlink()
    (labels / f"{stems[5]}.txt").write_bytes(b"Car \xff\xfe 0 0 1 2 3 4 0 0 0 0 0 0 0\n")
    return damage


def test_damaged_kitti_dataset_problems_are_counted_and_named(model, prepared, rel, tmp_path):
    kit = prepared.kit
    if kit.data_format != "kitti":
        pytest.skip(f"{model} converts {kit.data_format} data (see the COCO test)")
    damage = _damaged_kitti(prepared.data, tmp_path / "kitti")
    argv = rel.convert_argvs(kit, tmp_path / "kitti", tmp_path / "records")[0]
    result = rel.run_inprocess(argv[:2] + ["--json"] + argv[2:])
    rel.assert_clean_failure(result, 0, what="converting a damaged dataset")
    report = json.loads(result.stdout)
    problems = json.dumps(report.get("problems"))
    unnamed = {stem: what for stem, what in damage.items() if stem not in problems and what != "0-byte label"}
    assert not unnamed, f"damaged files not named in the report: {unnamed}\n{problems[:2000]}"
    frames = sum(p["num_frames"] for p in report["partitions"])
    assert frames == kit.num_images - 5, (frames, kit.num_images)
    rel.STATS["damaged-dataset files named"] += len(damage) - 1


def _damaged_coco(source: Path, target: Path) -> dict[str, str]:
    """A copy of a COCO dataset (train split) with damaged images and annotations; file -> damage."""
    shutil.copytree(source, target)
    images = target / "images" / "train"
    ann_path = target / "annotations" / "instances_train.json"
    data = json.loads(ann_path.read_text(encoding="utf-8"))
    names = [img["file_name"] for img in data["images"]]
    damage = {names[0]: "corrupt image", names[1]: "0-byte image", names[2]: "missing image"}
    (images / names[0]).write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    (images / names[1]).write_bytes(b"")
    (images / names[2]).unlink()
    data["annotations"].append({"id": 999001, "image_id": data["images"][3]["id"], "category_id": 1,
                                "bbox": "1234", "area": 1, "iscrowd": 0})
    data["annotations"].append({"id": 999002, "image_id": 424242, "category_id": 1, "bbox": [1, 2, 3, 4],
                                "area": 12, "iscrowd": 0})
    damage["id 999001"] = "malformed bbox"
    damage["id 999002"] = "unknown image"
    ann_path.write_text(json.dumps(data), encoding="utf-8")
    return damage


def test_damaged_coco_dataset_problems_are_counted_and_named(model, prepared, rel, tmp_path):
    kit = prepared.kit
    if kit.data_format != "coco":
        pytest.skip(f"{model} converts {kit.data_format} data (see the KITTI test)")
    damage = _damaged_coco(prepared.data, tmp_path / "coco")
    argv = rel.convert_argvs(kit, tmp_path / "coco", tmp_path / "records")[0]
    result = rel.run_inprocess(argv[:2] + ["--json"] + argv[2:])
    rel.assert_clean_failure(result, 0, what="converting a damaged dataset")
    problems = json.dumps(json.loads(result.stdout).get("problems"))
    unnamed = {name: what for name, what in damage.items() if name not in problems}
    assert not unnamed, f"damaged data not named in the report: {unnamed}\n{problems[:3000]}"
    rel.STATS["damaged-dataset files named"] += len(damage)


@pytest.mark.parametrize("model", ["detectnet_v2"])
def test_bad_coco_json_names_file_and_line(model, rel, tmp_path):
    """DetectNet_v2's converter reads COCO too (coco_config); MaskRCNN's -a is covered by the wrong-file cases."""
    rel.require(model, "dataset_convert")
    (tmp_path / "images").mkdir()
    bad = tmp_path / "instances.json"
    bad.write_text('{"images": [{"id": 1, "file_name": "a.png", "width": 4, "height": 4}],\n'
                   '  "annotations": [ {"id": 1,, } ]\n}\n', encoding="utf-8")
    spec = tmp_path / "convert.txt"
    spec.write_text(f'coco_config {{ root_directory_path: "{tmp_path}" img_dir_names: ["images"] '
                    f'annotation_files: ["{bad.name}"] num_partitions: 1 num_shards: [1] }}\n', encoding="utf-8")
    result = rel.run_inprocess([model, "dataset_convert", "-d", str(spec), "-o", str(tmp_path / "records")])
    rel.assert_clean_failure(result, 2, f"{bad}:2:", "not valid JSON", what="COCO JSON with a syntax error")


@pytest.mark.parametrize("content", [
    pytest.param(b"", id="empty file"),
    pytest.param(b"\xff\xfe{}", id="not UTF-8"),
    pytest.param(b"[1, 2, 3]", id="a list"),
    pytest.param(b'{"images": "abc", "categories": [{"id": 1, "name": "car"}], "annotations": [1]}', id="images a string"),
    pytest.param(b'{"images": [{"id": 1}], "categories": [{"id": 1, "name": "car"}], "annotations": [{}]}',
                 id="image without file_name"),
    pytest.param(b'{"images": [{"id": 1, "file_name": "a.png", "width": 4, "height": 4}], '
                 b'"categories": [7], "annotations": [{"id": 1}]}', id="category not an object"),
])
def test_malformed_coco_file_is_reported(content, rel, tmp_path):
    from tltk.data.coco import read_coco
    from tltk.errors import InvalidInputError

    path = tmp_path / "instances.json"
    path.write_bytes(content)
    with pytest.raises(InvalidInputError) as info:
        read_coco(path)
    assert str(path) in str(info.value)
    rel.STATS["wrong-file cases"] += 1


def test_bad_coco_annotations_are_counted_not_dropped(tmp_path, rel):
    from tltk.data.coco import read_coco

    path = tmp_path / "instances.json"
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 40}],
        "categories": [{"id": 3, "name": "car"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 2, 3, 4]},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": "1234"},
            {"id": 3, "image_id": 1, "category_id": 3, "bbox": [1, 2, float("nan"), 4]},
            {"id": 4, "image_id": 9, "category_id": 3, "bbox": [1, 2, 3, 4]},
            {"id": 5, "image_id": 1, "category_id": 8, "bbox": [1, 2, 3, 4]},
            {"id": 6, "image_id": 1, "category_id": 3, "bbox": [1, 2, -3, 4]},
            "not an object",
        ]}), encoding="utf-8")
    data = read_coco(path)
    assert [a.id for a in data.images[0].annotations] == [1]
    assert [p.kind for p in data.problems] == ["malformed_annotation", "malformed_annotation", "unknown_image",
                                               "unknown_category", "malformed_annotation", "malformed_annotation"]
    assert all(p.path == str(path) for p in data.problems)
    assert "annotations[1] (id 2)" in str(data.problems[0]) and "annotations[6]" in str(data.problems[-1])


@pytest.mark.parametrize("model", ["detectnet_v2"])
def test_corrupt_coco_images_are_counted(model, rel, tmp_path):
    rel.require(model, "dataset_convert")
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (40, 40), (90, 20, 20)).save(images / "good.png")
    (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(50))
    (images / "empty.png").write_bytes(b"")
    records = [{"id": i + 1, "file_name": name, "width": 40, "height": 40}
               for i, name in enumerate(["good.png", "corrupt.png", "empty.png"])]
    anns = [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [5, 5, 20, 20], "area": 400, "iscrowd": 0}
            for i in range(3)]
    (tmp_path / "instances.json").write_text(json.dumps({"images": records, "annotations": anns,
                                                         "categories": [{"id": 1, "name": "car"}]}))
    spec = tmp_path / "convert.txt"
    spec.write_text(f'coco_config {{ root_directory_path: "{tmp_path}" img_dir_names: ["images"] '
                    'annotation_files: ["instances.json"] num_partitions: 1 num_shards: [1] }\n', encoding="utf-8")
    result = rel.run_inprocess([model, "dataset_convert", "--json", "-d", str(spec), "-o", str(tmp_path / "records")])
    rel.assert_clean_failure(result, 0, what="COCO conversion with corrupt images")
    problems = json.dumps(json.loads(result.stdout).get("problems"))
    assert "corrupt.png" in problems and "empty.png" in problems, problems[:2000]


@pytest.mark.parametrize("damage", ["truncated", "count is text", "count too large"])
def test_damaged_tensorfile_is_reported(damage, tmp_path, rel):
    import h5py
    import numpy as np

    from tltk.data.tensorfile import TensorFileWriter, read_tensorfile
    from tltk.errors import InvalidInputError

    path = tmp_path / "cal.tensor"
    with TensorFileWriter(path) as writer:
        for seed in range(3):
            writer.write_batch(np.random.default_rng(seed).random((2, 3, 16, 16), dtype=np.float32))
    if damage == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * 0.6)])
    else:
        with h5py.File(path, "a") as handle:
            handle.attrs["count"] = "three" if damage == "count is text" else 7
    with pytest.raises(InvalidInputError) as info:
        for _ in read_tensorfile(path):
            pass
    assert str(path) in str(info.value)
    rel.STATS["wrong-file cases"] += 1
