"""KITTI label reading/writing: columns, scores, DontCare, malformed lines with line numbers."""

from __future__ import annotations

import pytest

from tltk.data.kitti import (
    KittiObject,
    format_kitti_line,
    parse_kitti_line,
    read_kitti_calibration,
    read_kitti_labels,
    write_kitti_labels,
)


def test_parse_15_and_16_columns():
    obj = parse_kitti_line("Car 0.00 0 -1.57 599.41 156.40 629.75 189.25 2.85 2.63 12.34 0.47 1.49 69.44 -1.56")
    assert obj.type == "Car" and obj.occluded == 0 and obj.score is None
    assert obj.bbox == (599.41, 156.40, 629.75, 189.25)
    assert obj.dimensions == (2.85, 2.63, 12.34) and obj.location == (0.47, 1.49, 69.44)
    assert obj.rotation_y == -1.56 and obj.width == pytest.approx(30.34)
    scored = parse_kitti_line("no-mask 0.00 0 0.00 390.465 118.072 508.064 259.151 0 0 0 0 0 0 0 47.049")
    assert scored.score == 47.049 and scored.type == "no-mask"
    with pytest.raises(ValueError, match="expected 15 columns, found 16"):
        parse_kitti_line("car 0 0 0 1 2 3 4 0 0 0 0 0 0 0 0.5", allow_score=False)


def test_dontcare_sentinels_parse():
    obj = parse_kitti_line("DontCare -1 -1 -10 503.89 169.71 590.61 190.13 -1 -1 -1 -1000 -1000 -1000 -10")
    assert obj.type == "DontCare" and obj.occluded == -1 and obj.truncated == -1.0 and obj.location[0] == -1000


def test_malformed_lines_are_reported_with_line_numbers(tmp_path):
    path = tmp_path / "000001.txt"
    path.write_text("Car 0 0 0 1 2 30 40 0 0 0 0 0 0 0\n\n"
                    "Car 0 0 0 1 2 3\n"
                    "Car 0 x 0 1 2 30 40 0 0 0 0 0 0 0\n"
                    "Car 0 1.5 0 1 2 30 40 0 0 0 0 0 0 0\n"
                    "Van 0 1 0 5 6 70 80 0 0 0 0 0 0 0\n")
    objects, problems = read_kitti_labels(path)
    assert [o.type for o in objects] == ["Car", "Van"] and [o.line for o in objects] == [1, 6]
    assert [(p.line, p.kind) for p in problems] == [(3, "malformed_line"), (4, "malformed_line"), (5, "malformed_line")]
    assert "expected 15 or 16 columns, found 7" in problems[0].message
    assert "column 3 is 'x'" in problems[1].message
    assert "not an integer" in problems[2].message
    assert str(problems[0]).startswith(f"{path}:3: ")


def test_write_read_round_trip(tmp_path):
    objs = [KittiObject("car", (1.0, 2.5, 30.25, 40.0), score=0.875),
            KittiObject("Pedestrian", (5, 6, 7, 8), truncated=0.5, occluded=2, alpha=-0.3)]
    path = tmp_path / "out" / "a.txt"
    write_kitti_labels(path, objs)
    back, problems = read_kitti_labels(path)
    assert not problems
    assert back[0].bbox == (1.0, 2.5, 30.25, 40.0) and back[0].score == 0.875
    assert back[1].occluded == 2 and back[1].truncated == 0.5 and back[1].score is None
    assert format_kitti_line(objs[1]) == "Pedestrian 0.50 2 -0.30 5.00 6.00 7.00 8.00 0.00 0.00 0.00 0.00 0.00 0.00 0.00"


def test_corpus_labels_parse(corpus_dir):
    folder = corpus_dir / "kitti_labels"
    total = 0
    for path in sorted(folder.glob("*.txt")):
        if "000000.txt" in path.name and "05_" in path.name:
            continue  # the calibration file
        objects, problems = read_kitti_labels(path)
        assert not problems, problems
        total += len(objects)
    assert total >= 20


def test_calibration_matrices(tmp_path):
    path = tmp_path / "calib.txt"
    path.write_text("P0: 0 0 0 0 0 0 0 0 0 0 0 0\n"
                    "P2: 2 0 0 1 0 2 0 0 0 0 1 0\n"
                    "R0_rect: 1 0 0 0 1 0 0 0 1\n"
                    "Tr_velo_to_cam: 0 -1 0 0 0 0 -1 0 1 0 0 -0.5\n")
    calib = read_kitti_calibration(path)
    t = calib.lidar_to_camera()
    assert t[:4] == [0, -1, 0, 0] and t[8:12] == [1, 0, 0, -0.5] and t[12:] == [0, 0, 0, 1]
    p = calib.lidar_to_image()
    # P2 @ T: row 0 = 2*T_row0 + 1*T_row3 = (0, -2, 0, 1).
    assert p[:4] == [0, -2, 0, 1]
    (tmp_path / "bad.txt").write_text("P2: 1 2 3\n")
    with pytest.raises(ValueError, match="'P2' has 3 values"):
        read_kitti_calibration(tmp_path / "bad.txt")
