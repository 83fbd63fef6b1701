"""nvinfer configs: every key and value for DBSCAN/NMS/HYBRID and fp32/fp16/int8, YAML twin, labels."""

from __future__ import annotations

import configparser
import re
from types import SimpleNamespace

import pytest
import yaml

from tltk.deepstream.labels import detectnet_v2_labels, mask_rcnn_labels, write_labels
from tltk.deepstream.nvinfer import (
    ClassAttributes,
    NvinferConfig,
    NvinferProperties,
    class_attributes_from_clustering,
    detectnet_v2_class_attributes,
    detectnet_v2_nvinfer_config,
    engine_file_name,
    format_float,
    format_nvinfer_config,
    mask_rcnn_nvinfer_config,
    write_deepstream_files,
    write_nvinfer_config,
    write_nvinfer_yaml,
)
from tltk.errors import UsageError

# deploy_facts.md 7.2: the keys gst-nvinfer's property parser knows.
NVINFER_PROPERTY_KEYS = {
    "gie-unique-id", "process-mode", "interval", "labelfile-path", "gpu-id", "secondary-reinfer-interval",
    "output-tensor-meta", "enable-dla", "use-dla-core", "batch-size", "tensor-meta-pool-size", "network-mode",
    "model-engine-file", "int8-calib-file", "workspace-size", "output-blob-names", "is-classifier", "network-type",
    "force-implicit-batch-dim", "infer-dims", "output-io-formats", "layer-device-precision", "model-color-format",
    "net-scale-factor", "offsets", "mean-file", "maintain-aspect-ratio", "symmetric-padding", "scaling-filter",
    "scaling-compute-hw", "network-input-order", "input-tensor-from-meta", "custom-lib-path", "parse-bbox-func-name",
    "parse-bbox-instance-mask-func-name", "engine-create-func-name", "parse-classifier-func-name",
    "custom-network-config", "model-file", "proto-file", "uff-file", "uff-input-order", "input-dims",
    "uff-input-dims", "uff-input-blob-name", "tlt-encoded-model", "tlt-model-key", "onnx-file",
    "num-detected-classes", "enable-dbscan", "cluster-mode", "classifier-type", "classifier-threshold",
    "classifier-async-mode", "segmentation-threshold", "segmentation-output-order", "output-instance-mask",
    "input-object-min-width", "input-object-min-height", "input-object-max-width", "input-object-max-height",
    "operate-on-gie-id", "operate-on-class-ids", "filter-out-class-ids",
}
NVINFER_CLASS_KEYS = {
    "threshold", "pre-cluster-threshold", "post-cluster-threshold", "eps", "group-threshold", "minBoxes",
    "dbscan-min-score", "roi-top-offset", "roi-bottom-offset", "detected-min-w", "detected-min-h", "detected-max-w",
    "detected-max-h", "border-color", "bg-color", "nms-iou-threshold", "topk",
}

CLASSES = ["car", "cyclist", "pedestrian"]

#: The tensor names and preprocessing each model's Task passes (TAO's values).
DETECTNET_V2_TENSORS = {"input_blob_name": "input_1", "output_blob_names": ("output_cov/Sigmoid", "output_bbox/BiasAdd"),
                        "net_scale_factor": 1.0 / 255.0}
MASK_RCNN_TENSORS = {"input_blob_name": "Input", "output_blob_names": ("generate_detections", "mask_fcn_logits/BiasAdd"),
                     "net_scale_factor": 0.017507, "offsets": (123.675, 116.28, 103.53)}


def clustering(algorithm, eps=0.13, coverage=0.005, min_samples=1, dbscan_conf=0.9, nms_iou=0.5, nms_conf=0.2,
               min_height=20):
    return SimpleNamespace(clustering_algorithm=algorithm, coverage_threshold=coverage, dbscan_eps=eps,
                           dbscan_min_samples=min_samples, dbscan_confidence_threshold=dbscan_conf,
                           nms_iou_threshold=nms_iou, nms_confidence_threshold=nms_conf,
                           minimum_bounding_box_height=min_height, neighborhood_size=0)


def as_text(doc):
    """A parsed YAML document with every value spelt as in the INI file."""
    return {s: {k: format_float(v) if isinstance(v, float) else str(v) for k, v in keys.items()}
            for s, keys in doc.items()}


def parse_ini(path):
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # nvinfer keys are case-sensitive (minBoxes)
    parser.read(path, encoding="utf-8")
    return {section: dict(parser[section]) for section in parser.sections()}


def corpus_keys(corpus_dir):
    keys = set()
    for path in (corpus_dir / "deepstream").iterdir():
        if path.suffix not in (".txt", ".yml"):
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            match = re.match(r"^\s*([A-Za-z][A-Za-z0-9-]*)\s*[=:]", line)
            if match:
                keys.add(match.group(1))
    return keys


EXPECTED_CLASS_ATTRS = {
    "DBSCAN": {"pre-cluster-threshold": "0.005", "eps": "0.13", "minBoxes": "1", "dbscan-min-score": "0.9",
               "detected-min-h": "20"},
    # NMS: candidates above max(coverage 0.005, NMS confidence 0.2) enter NMS at IoU 0.5.
    "NMS": {"pre-cluster-threshold": "0.2", "nms-iou-threshold": "0.5"},
    "HYBRID": {"pre-cluster-threshold": "0.005", "eps": "0.13", "minBoxes": "1", "dbscan-min-score": "0.9",
               "detected-min-h": "20", "nms-iou-threshold": "0.5"},
}
CLUSTER_MODE = {"DBSCAN": "1", "NMS": "2", "HYBRID": "3"}
NETWORK_MODE = {"fp32": "0", "int8": "1", "fp16": "2"}


@pytest.mark.parametrize("algorithm", ["DBSCAN", "NMS", "HYBRID"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_detectnet_v2_every_key(tmp_path, algorithm, precision):
    out = tmp_path / "export"
    params = {"car": clustering(algorithm), "cyclist": clustering(algorithm),
              "pedestrian": clustering(algorithm, eps=0.2)}
    config = detectnet_v2_nvinfer_config(
        str(out / "model.onnx"), CLASSES, (3, 384, 1248), precision=precision,
        calib_cache=str(out / "cal.bin") if precision == "int8" else None, clustering=params,
        batch_size=4, config_dir=str(out), **DETECTNET_V2_TENSORS)
    paths = write_deepstream_files(out, config, detectnet_v2_labels(CLASSES))
    ini = parse_ini(paths["config"])
    expected_property = {
        "gpu-id": "0",
        "net-scale-factor": "0.00392156862745098",
        "offsets": "0.0;0.0;0.0",
        "model-color-format": "0",
        "onnx-file": "model.onnx",
        "model-engine-file": f"model.onnx_b4_gpu0_{precision}.engine",
        "labelfile-path": "labels.txt",
        "infer-dims": "3;384;1248",
        "batch-size": "4",
        "process-mode": "1",
        "network-mode": NETWORK_MODE[precision],
        "network-type": "0",
        "num-detected-classes": "3",
        "output-blob-names": "output_cov/Sigmoid;output_bbox/BiasAdd",
        "cluster-mode": CLUSTER_MODE[algorithm],
        "maintain-aspect-ratio": "0",
        "interval": "0",
        "gie-unique-id": "1",
    }
    if precision == "int8":
        expected_property["int8-calib-file"] = "cal.bin"
    assert ini["property"] == expected_property
    assert ini["class-attrs-all"] == EXPECTED_CLASS_ATTRS[algorithm]
    # Only the class that differs from class-attrs-all gets its own section.
    if algorithm == "NMS":
        assert set(ini) == {"property", "class-attrs-all"}  # eps does not matter for NMS
    else:
        assert set(ini) == {"property", "class-attrs-all", "class-attrs-2"}
        assert ini["class-attrs-2"] == {**EXPECTED_CLASS_ATTRS[algorithm], "eps": "0.2"}
    # The YAML twin holds exactly the same keys and values.
    doc = yaml.safe_load((out / "nvinfer_config.yml").read_text())
    assert as_text(doc) == ini
    assert (out / "labels.txt").read_text() == "car\ncyclist\npedestrian\n"
    assert abs(float(ini["property"]["net-scale-factor"]) * 255 - 1) < 1e-15


def test_every_written_key_is_a_real_nvinfer_key(corpus_dir, tmp_path):
    real = corpus_keys(corpus_dir)
    written: set[str] = set()
    configs = [
        detectnet_v2_nvinfer_config("m.onnx", CLASSES, (3, 544, 960), "int8", calib_cache="cal.bin",
                                    clustering={"default": clustering("HYBRID")}, topk=20, **DETECTNET_V2_TENSORS),
        detectnet_v2_nvinfer_config("m.etlt", ["face"], (1, 80, 80), "fp16", key="nvidia_tlt", etlt_payload="uff", **DETECTNET_V2_TENSORS),
        mask_rcnn_nvinfer_config("m.etlt", ["person"], (3, 576, 960), "int8", key="nvidia_tlt", calib_cache="c.bin",
                                 etlt_payload="uff", **MASK_RCNN_TENSORS),
    ]
    for index, config in enumerate(configs):
        write_nvinfer_config(tmp_path / f"{index}.txt", config)
        for section, keys in parse_ini(tmp_path / f"{index}.txt").items():
            known = NVINFER_PROPERTY_KEYS if section == "property" else NVINFER_CLASS_KEYS
            for key in keys:
                assert key in known, f"{key} is not an nvinfer key"
                written.add(key)
    # Almost everything tltk writes also appears in NVIDIA's and users' real configs.
    assert written - real <= {"symmetric-padding"}
    assert {"onnx-file", "tlt-encoded-model", "cluster-mode", "output-instance-mask", "minBoxes", "topk"} <= written


def test_matches_the_peoplenet_sample_where_it_should(corpus_dir, tmp_path):
    """The values NVIDIA's PeopleNet sample uses for DetectNet_v2 preprocessing and outputs."""
    sample = parse_ini(corpus_dir / "deepstream" / "09_NVIDIA-AI-IOT__deepstream_tao_apps__config_infer_primary_peoplenet.txt")
    config = detectnet_v2_nvinfer_config("resnet34_peoplenet_int8.onnx", ["Person", "Bag", "Face"], (3, 544, 960),
                                         "fp16", clustering={"default": clustering("NMS", nms_conf=0.2, nms_iou=0.5)}, topk=20,
                                         **{**DETECTNET_V2_TENSORS,
                                            "output_blob_names": ("output_bbox/BiasAdd:0", "output_cov/Sigmoid:0")})
    write_nvinfer_config(tmp_path / "c.txt", config)
    ours = parse_ini(tmp_path / "c.txt")
    for key in ("model-color-format", "network-mode", "num-detected-classes", "cluster-mode", "output-blob-names",
                "process-mode", "gpu-id", "interval", "gie-unique-id"):
        assert ours["property"][key] == sample["property"][key], key
    assert sample["property"]["onnx-file"].endswith("/" + ours["property"]["onnx-file"])
    assert float(ours["property"]["net-scale-factor"]) == pytest.approx(float(sample["property"]["net-scale-factor"]))
    assert ours["class-attrs-all"] == sample["class-attrs-all"]  # topk 20, IoU 0.5, pre-cluster 0.2


def test_mask_rcnn_keys_match_the_peoplesegnet_sample(corpus_dir, tmp_path):
    sample = parse_ini(corpus_dir / "deepstream" / "33_NVIDIA-AI-IOT__deepstream_python_apps__dstest_segmask_config.txt")
    config = mask_rcnn_nvinfer_config(str(tmp_path / "peoplesegnet_resnet50.etlt"), ["person"], (3, 576, 960), "fp16",
                                      key="nvidia_tlt", etlt_payload="uff", score_threshold=0.8,
                                      config_dir=str(tmp_path), **MASK_RCNN_TENSORS)
    paths = write_deepstream_files(tmp_path, config, mask_rcnn_labels(["person"]))
    ours = parse_ini(paths["config"])
    assert ours["property"] == {
        "gpu-id": "0", "net-scale-factor": "0.017507", "offsets": "123.675;116.28;103.53", "model-color-format": "0",
        "tlt-encoded-model": "peoplesegnet_resnet50.etlt", "tlt-model-key": "nvidia_tlt",
        "uff-input-blob-name": "Input", "uff-input-order": "0",
        "model-engine-file": "peoplesegnet_resnet50.etlt_b1_gpu0_fp16.engine", "labelfile-path": "labels.txt",
        "infer-dims": "3;576;960", "batch-size": "1", "process-mode": "1", "network-mode": "2", "network-type": "3",
        "num-detected-classes": "2", "output-blob-names": "generate_detections;mask_fcn_logits/BiasAdd",
        "cluster-mode": "4", "maintain-aspect-ratio": "1", "symmetric-padding": "0", "output-instance-mask": "1",
        "parse-bbox-instance-mask-func-name": "NvDsInferParseCustomMrcnnTLTV2",
        "custom-lib-path": "/opt/nvidia/deepstream/deepstream/lib/libnvds_infercustomparser.so",
        "interval": "0", "gie-unique-id": "1"}
    for key in ("net-scale-factor", "model-color-format", "tlt-model-key", "network-type", "num-detected-classes",
                "uff-input-blob-name", "output-blob-names", "cluster-mode", "output-instance-mask",
                "parse-bbox-instance-mask-func-name", "custom-lib-path", "network-mode", "infer-dims"):
        assert ours["property"][key] == sample["property"][key], key
    assert [float(v) for v in ours["property"]["offsets"].split(";")] == \
        [float(v) for v in sample["property"]["offsets"].split(";")]
    assert ours["class-attrs-all"] == sample["class-attrs-all"] == {"pre-cluster-threshold": "0.8"}
    assert (tmp_path / "labels.txt").read_text() == "BG\nperson\n"
    doc = yaml.safe_load((tmp_path / "nvinfer_config.yml").read_text())
    assert as_text(doc) == ours


def test_mask_rcnn_int8_onnx(tmp_path):
    config = mask_rcnn_nvinfer_config("m.onnx", ["BG", "person", "car"], (3, 832, 1344), "int8", calib_cache="cal.bin", **MASK_RCNN_TENSORS)
    props = config.properties
    assert (props.onnx_file, props.int8_calib_file, props.network_mode, props.num_detected_classes) == \
        ("m.onnx", "cal.bin", 1, 3)
    assert props.uff_input_blob_name is None and props.tlt_model_key is None
    qdq = mask_rcnn_nvinfer_config("m.onnx", ["person"], (3, 832, 1344), "int8", explicit_quantization=True, **MASK_RCNN_TENSORS)
    assert qdq.properties.int8_calib_file is None and qdq.properties.network_mode == 1


def test_etlt_and_precision_errors():
    with pytest.raises(UsageError, match="needs the INT8 calibration cache"):
        detectnet_v2_nvinfer_config("m.onnx", CLASSES, (3, 544, 960), "int8", **DETECTNET_V2_TENSORS)
    qdq = detectnet_v2_nvinfer_config("m.onnx", CLASSES, (3, 544, 960), "int8", explicit_quantization=True, **DETECTNET_V2_TENSORS)
    assert qdq.properties.int8_calib_file is None and qdq.properties.network_mode == 1
    with pytest.raises(UsageError, match="its key"):
        detectnet_v2_nvinfer_config("m.etlt", CLASSES, (3, 544, 960), **DETECTNET_V2_TENSORS)
    with pytest.raises(UsageError, match="unknown precision 'int4'"):
        detectnet_v2_nvinfer_config("m.onnx", CLASSES, (3, 544, 960), "int4", **DETECTNET_V2_TENSORS)
    with pytest.raises(UsageError, match="substrings 'cov' and 'bbox'"):
        detectnet_v2_nvinfer_config("m.onnx", CLASSES, (3, 544, 960), **{**DETECTNET_V2_TENSORS, "output_blob_names": ("a", "b")})
    with pytest.raises(UsageError, match=r"must be \.onnx or \.etlt"):
        detectnet_v2_nvinfer_config("m.uff", CLASSES, (3, 544, 960), **DETECTNET_V2_TENSORS)
    with pytest.raises(UsageError, match="class 'cyclist' has no clustering parameters"):
        detectnet_v2_nvinfer_config("m.onnx", CLASSES, (3, 544, 960),
                                    clustering={"car": clustering("NMS"), "pedestrian": clustering("NMS")}, **DETECTNET_V2_TENSORS)


def test_uff_etlt_and_grayscale_keys():
    config = detectnet_v2_nvinfer_config("usa_pruned.etlt", ["lpd"], (1, 480, 640), "fp32", key="nvidia_tlt",
                                         etlt_payload="uff", clustering=[clustering("NMS")], **DETECTNET_V2_TENSORS)
    props = config.properties
    assert (props.tlt_encoded_model, props.tlt_model_key, props.uff_input_blob_name, props.uff_input_order) == \
        ("usa_pruned.etlt", "nvidia_tlt", "input_1", 0)
    assert props.onnx_file is None
    assert (props.model_color_format, props.offsets, props.infer_dims) == (2, (0.0,), (1, 480, 640))
    assert props.model_engine_file == "usa_pruned.etlt_b1_gpu0_fp32.engine"


def test_clustering_mapping_details():
    # NMS: TAO's inference defaults for unset (0) values: IoU 0.3, confidence 0.1.
    attrs = class_attributes_from_clustering(clustering("NMS", nms_iou=0, nms_conf=0, coverage=0.05))
    assert (attrs.pre_cluster_threshold, attrs.nms_iou_threshold, attrs.topk, attrs.eps) == (0.1, 0.3, None, None)
    attrs = class_attributes_from_clustering(clustering("DBSCAN", min_samples=0, min_height=0))
    assert (attrs.min_boxes, attrs.detected_min_h) == (1, None)
    # Enum members, proto numbers and names are all accepted.
    assert class_attributes_from_clustering(SimpleNamespace(algorithm=SimpleNamespace(name="nms"))).nms_iou_threshold == 0.3
    assert class_attributes_from_clustering(clustering(2)).eps == 0.13
    with pytest.raises(UsageError, match="is not DBSCAN, NMS or HYBRID"):
        class_attributes_from_clustering(clustering("MEANSHIFT"))


def test_mixed_algorithms_use_the_most_common_one(caplog):
    mode, base, specific = detectnet_v2_class_attributes(
        CLASSES, [clustering("NMS"), clustering("DBSCAN"), clustering("DBSCAN", eps=0.3)])
    assert mode == 1
    assert base.eps == 0.13 and base.min_boxes == 1
    assert set(specific) == {2} and specific[2].eps == 0.3
    assert "using DBSCAN for every class" in caplog.text and "car" in caplog.text


def test_default_entry_becomes_class_attrs_all():
    mode, base, specific = detectnet_v2_class_attributes(
        CLASSES, {"default": clustering("NMS", nms_conf=0.3), "car": clustering("NMS", nms_conf=0.6)})
    assert mode == 2
    assert base.pre_cluster_threshold == 0.3
    assert specific == {0: ClassAttributes(pre_cluster_threshold=0.6, nms_iou_threshold=0.5)}


def test_formatting_helpers(tmp_path):
    assert format_float(1 / 255) == "0.00392156862745098"
    assert format_float(1e-5) == "0.00001"
    assert format_float(2e20) == "200000000000000000000.0"
    assert engine_file_name("models/m.onnx", 16, "INT8", 1) == "models/m.onnx_b16_gpu1_int8.engine"
    config = NvinferConfig(NvinferProperties(tlt_model_key="123", onnx_file="a b.onnx", offsets=(1e-7, 0.5)),
                           ClassAttributes(pre_cluster_threshold=1e-5))
    write_nvinfer_yaml(tmp_path / "c.yml", config)
    write_nvinfer_config(tmp_path / "c.txt", config)
    doc = yaml.safe_load((tmp_path / "c.yml").read_text())
    assert doc["property"]["tlt-model-key"] == "123"  # quoted so it stays a string
    assert doc["property"]["offsets"] == "0.0000001;0.5"
    assert doc["property"]["onnx-file"] == "a b.onnx"
    assert doc["class-attrs-all"]["pre-cluster-threshold"] == 0.00001
    ini = parse_ini(tmp_path / "c.txt")
    assert as_text(doc) == ini
    # GKeyFile has no inline comments: every comment is on a line of its own.
    for line in format_nvinfer_config(config).splitlines():
        assert line.startswith("#") or "#" not in line


def test_labels():
    assert detectnet_v2_labels(["Person", "Bag", "Face"]) == ["Person", "Bag", "Face"]
    assert mask_rcnn_labels(["person"]) == ["BG", "person"]
    assert mask_rcnn_labels(["BG", "person"]) == ["BG", "person"]
    with pytest.raises(UsageError, match="invalid name"):
        detectnet_v2_labels(["car", "bad\nname"])
    with pytest.raises(UsageError, match="at least one class"):
        detectnet_v2_labels([])


def test_labels_file_matches_real_deepstream_labels(corpus_dir, tmp_path):
    for corpus_name, names in [("11_NVIDIA-AI-IOT__deepstream_tao_apps__labels_peoplenet.txt", ["Person", "Bag", "Face"]),
                               ("12_NVIDIA-AI-IOT__deepstream_tao_apps__labels_trafficnet.txt",
                                ["Car", "Bicycle", "Person", "Roadsign"])]:
        real = (corpus_dir / "deepstream" / corpus_name).read_text()
        if real.split() != names:
            pytest.skip(f"unexpected corpus labels in {corpus_name}")
        write_labels(tmp_path / "labels.txt", detectnet_v2_labels(names))
        assert (tmp_path / "labels.txt").read_text().split("\n")[:-1] == real.split()
    real = (corpus_dir / "deepstream" / "14_NVIDIA-AI-IOT__deepstream_tao_apps__peopleSegNet_labels.txt").read_text()
    write_labels(tmp_path / "m.txt", mask_rcnn_labels(["people"]))
    assert (tmp_path / "m.txt").read_text().split() == real.split() == ["BG", "people"]


def test_accepts_detectnet_v2_clustering_params():
    postprocess = pytest.importorskip("tltk.detectnet_v2.postprocess")
    params = postprocess.ClusteringParams(algorithm="HYBRID", coverage_threshold=0.01, dbscan_eps=0.2,
                                          dbscan_min_samples=2.0, dbscan_confidence_threshold=0.9,
                                          minimum_bounding_box_height=4, nms_iou_threshold=0.5)
    assert class_attributes_from_clustering(params) == ClassAttributes(
        pre_cluster_threshold=0.01, eps=0.2, min_boxes=2, dbscan_min_score=0.9, nms_iou_threshold=0.5,
        detected_min_h=4)
