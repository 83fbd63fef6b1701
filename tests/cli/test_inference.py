"""``tltk detectnet_v2 inference`` end to end on the toy project (hand-set network, known boxes)."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner
from PIL import Image

from tltk.cli.app import cli


def _json(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_inference_writes_kitti_files_with_confidence_and_overlays(detectnet_v2_toy, tmp_path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["detectnet_v2", "inference", "-e", str(detectnet_v2_toy["inference"]),
                                      "-i", str(detectnet_v2_toy["images"]), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    data = _json(result)
    layout = detectnet_v2_toy["layout"]
    blocks = [b for image_blocks, _ in layout for b in image_blocks]
    assert data["images"] == len(layout) and data["backend"] == "keras"
    assert data["detections"] == {"car": sum(b[2] == 0 for b in blocks), "pedestrian": sum(b[2] == 1 for b in blocks)}
    assert data["labels_dir"] == str(out / "labels") and data["annotated_dir"] == str(out / "images_annotated")
    for index, (image_blocks, _) in enumerate(layout):
        rows = [line.split() for line in (out / "labels" / f"{index:06d}.txt").read_text().splitlines()]
        assert len(rows) == len(image_blocks)  # written even when empty
        assert all(len(r) == 16 and r[0] in ("car", "pedestrian") and 0.5 < float(r[15]) < 1.0 for r in rows)
        found = sorted((r[0], *(float(v) for v in r[4:8])) for r in rows)
        expected = sorted((("car", "pedestrian")[c], 16.0 * x, 16.0 * y, 16.0 * x + 16, 16.0 * y + 16)
                          for x, y, c, *_ in image_blocks)
        assert found == expected
        overlay = np.asarray(Image.open(out / "images_annotated" / f"{index:06d}.png").convert("RGB"))
        for x, y, c, *_ in image_blocks:  # left border (below the label text): car green, default magenta
            assert tuple(overlay[16 * y + 14, 16 * x]) == ((0, 255, 0), (255, 0, 255))[c]


def test_inference_flags_and_errors(detectnet_v2_toy, tmp_path) -> None:
    runner = CliRunner()
    base = ["detectnet_v2", "inference", "-e", str(detectnet_v2_toy["inference"])]
    one = str(detectnet_v2_toy["images"] / "000003.png")
    ok = runner.invoke(cli, base + ["-i", one, "-r", str(tmp_path / "r"), "--batch_size", "1"])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "r" / "labels" / "000003.txt").read_text().split()[0] == "pedestrian"
    no_output = runner.invoke(cli, base + ["-i", one])
    assert no_output.exit_code == 2 and "-o/--inference_output" in no_output.output
    missing_input = runner.invoke(cli, base + ["-i", str(tmp_path / "nothing"), "-o", str(tmp_path / "x")])
    assert missing_input.exit_code == 2 and "no such image file or folder" in missing_input.output
    spec = tmp_path / "missing_model.txt"
    spec.write_text(detectnet_v2_toy["inference_template"] % {"width": 64, "height": 64,
                                                              "model": 'tlt_config { model: "gone.tlt" }'})
    missing_model = runner.invoke(cli, ["detectnet_v2", "inference", "-e", str(spec), "-i", one,
                                        "-o", str(tmp_path / "y")])
    assert missing_model.exit_code == 2 and "gone.tlt" in missing_model.output
