"""``tltk dataset synthesize``: options, JSON report, exit codes."""

from __future__ import annotations

import json
import os

from click.testing import CliRunner

from tltk.cli.app import cli


def _invoke(*args: str):
    return CliRunner().invoke(cli, ["dataset", "synthesize", *args])


def test_kitti_json_report_matches_the_files(tmp_path):
    out = tmp_path / "kitti"
    res = _invoke("--format", "kitti", "--output", str(out), "--num_images", "6", "--image_size", "320x180",
                  "--seed", "3", "--val_fraction", "0.5", "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["format"] == "kitti" and doc["num_images"] == 6 and doc["image_size"] == [320, 180]
    assert (doc["num_train"], doc["num_val"]) == (3, 3)
    assert doc["output_dir"] == str(out) and doc["files"]["spec"] == str(out / "dataset_convert_spec.txt")
    assert "val_split: 50\n" in (out / "dataset_convert_spec.txt").read_text()
    rows = [line.split()[0] for name in os.listdir(out / "label_2")
            for line in (out / "label_2" / name).read_text().splitlines()]
    assert {k: rows.count(k) for k in doc["objects_per_class"]} == doc["objects_per_class"]
    assert rows.count("DontCare") == doc["num_dontcare"]
    assert "tltk dataset synthesize: OK" in res.stderr and "6 KITTI images (3 train, 3 val)" in res.stderr


def test_coco_with_kebab_flags_and_short_options(tmp_path):
    out = tmp_path / "coco"
    res = _invoke("--format", "COCO", "-o", str(out), "-n", "4", "--image-size", "128x96", "--val-fraction", "0.25",
                  "--workers", "1")
    assert res.exit_code == 0, res.stderr
    assert sorted(os.listdir(out / "images" / "val")) == ["000000.png"]
    assert len(os.listdir(out / "images" / "train")) == 3
    doc = json.loads((out / "annotations" / "instances_train.json").read_text())
    assert [c["id"] for c in doc["categories"]] == [1, 2, 3]
    assert "iscrowd" in res.stderr


def test_non_empty_output_needs_overwrite(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    res = _invoke("--format", "kitti", "-o", str(out), "-n", "1", "--image_size", "64x48", "--json")
    assert res.exit_code == 2
    assert "not empty" in json.loads(res.stdout)["error"]
    assert not (out / "image_2").exists()
    res = _invoke("--format", "kitti", "-o", str(out), "-n", "1", "--image_size", "64x48", "--overwrite")
    assert res.exit_code == 0, res.stderr
    assert sorted(os.listdir(out)) == ["dataset_convert_spec.txt", "image_2", "keep.txt", "label_2"]


def test_bad_values_are_usage_errors(tmp_path):
    for args in (["--image_size", "960by544"], ["--val_fraction", "1"], ["--num_images", "0"],
                 ["--format", "voc"], ["--image_size", "8x8"]):
        base = ["--format", "kitti", "-o", str(tmp_path / "x")]
        if args[0] == "--format":
            base = ["-o", str(tmp_path / "x")]
        res = _invoke(*base, *args)
        assert res.exit_code == 2, (args, res.output)
    res = _invoke("-o", str(tmp_path / "y"))
    assert res.exit_code == 2 and "--format" in res.output
