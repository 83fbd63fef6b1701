"""MaskRCNN DeepStream files: nvinfer_config.txt, its YAML twin and labels.txt, checked against
NVIDIA's PeopleSegNet/MRCNN configs and through ``tltk mask_rcnn export --gen_ds_config``."""

from __future__ import annotations

import configparser
import importlib.util
from pathlib import Path

import yaml

from tltk.core.task import DeepStreamRequest
from tltk.deepstream.nvinfer import write_deepstream_files
from tltk.mask_rcnn.categories import CategoryMap
from tltk.mask_rcnn.task import MaskRCNNTask

_spec = importlib.util.spec_from_file_location("_tiny_model", Path(__file__).with_name("_tiny_model.py"))
assert _spec is not None and _spec.loader is not None
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)

#: COCO category ids that are not contiguous: class indices 1, 2, 3 are ids 3, 7, 12.
CATEGORIES = {12: "dog", 3: "person", 7: "car"}

#: What the issue asks every MaskRCNN config to hold, with the value where it is fixed.
REQUIRED = {
    "network-type": "3", "output-instance-mask": "1", "cluster-mode": "4",
    "parse-bbox-instance-mask-func-name": "NvDsInferParseCustomMrcnnTLTV2",
    "output-blob-names": "generate_detections;mask_fcn_logits/BiasAdd", "net-scale-factor": "0.017507",
    "offsets": "123.675;116.28;103.53", "model-color-format": "0", "infer-dims": "3;256;448",
    "maintain-aspect-ratio": "1", "num-detected-classes": "5",
}

#: NVIDIA's configs for TAO MaskRCNN models with the V2 parser and TAO's output names.
REAL_CONFIGS = ("02_NVIDIA-AI-IOT__deepstream_tao_apps__pgie_peopleSegNet_tao_config.txt",
                "03_NVIDIA-AI-IOT__deepstream_tao_apps__pgie_peopleSegNetv2_tlt_config.txt",
                "33_NVIDIA-AI-IOT__deepstream_python_apps__dstest_segmask_config.txt")


def parse_ini(path: Path) -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path, encoding="utf-8")
    return {section: dict(parser[section]) for section in parser.sections()}


def _task() -> MaskRCNNTask:
    category_map = CategoryMap.from_categories(CATEGORIES, num_classes=5)
    return MaskRCNNTask(metadata={"input_shape": [3, 256, 448], "category_map": category_map.to_json(),
                                  "class_names": category_map.class_names[1:]})


def _model_file(path: Path, key: str | None, hw: tuple[int, int] = (256, 448)) -> None:
    """A one-node ONNX model with the exported network's input ``Input`` [B,3,256,448] (sealed as
    ``.etlt`` with ``key``): the config's infer-dims come from the model file."""
    import onnx
    from onnx import TensorProto, helper

    from tltk.modelfile.legacy import write_etlt

    graph = helper.make_graph([helper.make_node("Identity", ["Input"], ["out"])], "g",
                              [helper.make_tensor_value_info("Input", TensorProto.FLOAT, ["N", 3, *hw])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3, *hw])])
    payload = helper.make_model(graph).SerializeToString()
    if key:
        write_etlt(path, payload, key)
    else:
        onnx.save_model(onnx.load_from_string(payload), str(path))


def _write(tmp_path: Path, model_file: str, precision: str = "fp32", key: str | None = None,
           calib_cache: str | None = None, explicit: bool = False) -> dict[str, str]:
    task = _task()
    _model_file(tmp_path / model_file, key)
    request = DeepStreamRequest(model_file=str(tmp_path / model_file), precision=precision, key=key,
                                calib_cache=str(tmp_path / calib_cache) if calib_cache else None,
                                explicit_quantization=explicit, config_dir=str(tmp_path), batch_size=4,
                                class_names=tuple(task.class_names))
    config, labels = task.deepstream_config(request)
    return write_deepstream_files(tmp_path, config, labels)


def test_infer_dims_come_from_the_model_file_not_the_spec(tmp_path: Path) -> None:
    _model_file(tmp_path / "small.onnx", None, hw=(192, 320))
    task = _task()  # its spec size is 256x448
    request = DeepStreamRequest(model_file=str(tmp_path / "small.onnx"), precision="fp32", key=None,
                                calib_cache=None, explicit_quantization=False, config_dir=str(tmp_path), batch_size=1,
                                class_names=tuple(task.class_names))
    paths = write_deepstream_files(tmp_path, *task.deepstream_config(request))
    assert parse_ini(Path(paths["config"]))["property"]["infer-dims"] == "3;192;320"


def test_labels_are_bg_then_names_in_class_index_order(tmp_path: Path) -> None:
    _write(tmp_path, "model.onnx")
    # ids 3 < 7 < 12 are class indices 1, 2, 3; num_classes 5 leaves index 4 without a category
    assert (tmp_path / "labels.txt").read_text() == "BG\nperson\ncar\ndog\nclass_4\n"


def test_onnx_fp32_config_holds_every_key_and_its_yaml_twin_agrees(tmp_path: Path, corpus_dir: Path) -> None:
    paths = _write(tmp_path, "model.onnx")
    ours = parse_ini(Path(paths["config"]))
    props = ours["property"]
    assert {k: props[k] for k in REQUIRED} == REQUIRED
    assert props["onnx-file"] == "model.onnx" and "tlt-encoded-model" not in props
    assert props["custom-lib-path"].endswith("libnvds_infercustomparser.so")
    assert props["labelfile-path"] == "labels.txt" and props["network-mode"] == "0"
    assert props["batch-size"] == "4"
    assert float(ours["class-attrs-all"]["pre-cluster-threshold"]) > 0
    doc = yaml.safe_load(Path(paths["yaml"]).read_text())
    assert {k: str(v) for k, v in doc["property"].items()} == props
    assert {k: str(v) for k, v in doc["class-attrs-all"].items()} == ours["class-attrs-all"]
    # every key NVIDIA's MaskRCNN configs set is set here too, except those of the old UFF/.etlt payload
    # and settings of their own deployment (workspace, ROI offsets)
    uff_only = {"uff-input-blob-name", "tlt-encoded-model", "tlt-model-key", "int8-calib-file", "workspace-size"}
    for name in REAL_CONFIGS:
        real = parse_ini(corpus_dir / "deepstream" / name)
        assert set(real["property"]) - uff_only <= set(props), name
        for key in ("network-type", "cluster-mode", "output-instance-mask", "model-color-format",
                    "net-scale-factor", "parse-bbox-instance-mask-func-name", "output-blob-names"):
            assert props[key] == real["property"][key].split()[0], (name, key)
        assert [float(v) for v in props["offsets"].split(";")] == \
            [float(v) for v in real["property"]["offsets"].split(";")]


def test_etlt_int8_and_qdq_variants(tmp_path: Path) -> None:
    etlt = parse_ini(Path(_write(tmp_path, "model.etlt", "int8", key="nvidia_tlt", calib_cache="cal.bin")["config"]))
    props = etlt["property"]
    assert (props["tlt-encoded-model"], props["tlt-model-key"], props["int8-calib-file"], props["network-mode"]) == \
        ("model.etlt", "nvidia_tlt", "cal.bin", "1")
    assert "onnx-file" not in props and "uff-input-blob-name" not in props
    qdq = parse_ini(Path(_write(tmp_path, "model_int8_qdq.onnx", "int8", explicit=True)["config"]))["property"]
    assert qdq["onnx-file"] == "model_int8_qdq.onnx" and qdq["network-mode"] == "1" and "int8-calib-file" not in qdq
    fp16 = parse_ini(Path(_write(tmp_path, "model.onnx", "fp16")["config"]))["property"]
    assert fp16["network-mode"] == "2" and fp16["model-engine-file"] == "model.onnx_b4_gpu0_fp16.engine"


def test_export_gen_ds_config_writes_files_that_parse(tmp_path: Path) -> None:
    """The whole command on a tiny model: .etlt with a key, INT8 from an image folder."""
    from click.testing import CliRunner
    from PIL import Image

    from tltk.cli.app import cli
    from tltk.mask_rcnn.model import build_mask_rcnn
    from tltk.modelfile.container import save_keras_model

    params = tiny.tiny_params()
    inference, _ = build_mask_rcnn(params)
    category_map = CategoryMap.from_categories({1: "a", 5: "b"}, num_classes=3)
    save_keras_model(tmp_path / "model.tlt", inference, {
        "model_kind": "mask_rcnn", "input_shape": [3, 128, 128], "category_map": category_map.to_json(),
        "class_names": category_map.class_names[1:]})
    images = tmp_path / "cal"
    images.mkdir()
    for i in range(2):
        Image.new("RGB", (160, 96), (40 * i, 90, 200)).save(images / f"{i}.png")
    out = tmp_path / "export" / "model.etlt"
    result = CliRunner().invoke(cli, ["mask_rcnn", "export", "-m", str(tmp_path / "model.tlt"), "-o", str(out),
                                      "-k", "key1", "--data_type", "int8", "--cal_image_dir", str(images),
                                      "--batches", "1", "--batch_size", "2", "--gen_ds_config", "--force_ptq"])
    assert result.exit_code == 0, result.output
    assert "Keras vs ONNX Runtime max |diff|" in result.stderr
    assert "has no QAT" in result.stderr
    folder = out.parent
    props = parse_ini(folder / "nvinfer_config.txt")["property"]
    assert (props["tlt-encoded-model"], props["tlt-model-key"], props["int8-calib-file"]) == \
        ("model.etlt", "key1", "cal.bin")
    assert (props["infer-dims"], props["num-detected-classes"]) == ("3;128;128", "3")
    assert yaml.safe_load((folder / "nvinfer_config.yml").read_text())["property"]["tlt-model-key"] == "key1"
    assert (folder / "labels.txt").read_text() == "BG\na\nb\n"
    assert (folder / "cal.bin").read_text().splitlines()[1].startswith("Input: ")

