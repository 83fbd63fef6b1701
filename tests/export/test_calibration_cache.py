"""TensorRT calibration caches: exact text format, version headers, and byte-exact round trips."""

from __future__ import annotations

import struct

import pytest

from tltk.errors import InvalidInputError, UsageError
from tltk.export import calibration_cache as cc
from tltk.export.calibration_cache import (
    ActivationRanges,
    CacheHeader,
    amax_to_scale,
    format_calibration_cache,
    header_version_number,
    hex_to_scale,
    parse_calibration_cache,
    read_calibration_cache,
    scale_to_hex,
    version_from_header_number,
    write_calibration_cache,
)

CORPUS_CACHES = ["01_twlawrenceko__deepstream_lpr_gpio_app__usa_lpd_cal.bin",
                 "02_twlawrenceko__deepstream_lpr_gpio_app__ccpd_cal.bin",
                 "03_ppi-ai__edgepipes__calibration.bin"]


def test_hex_of_one_over_127_worked_by_hand():
    # 1/127 = 1.0078740157... * 2^-7: sign 0, biased exponent 127-7 = 120 = 0x78 -> 0x3c000000;
    # fraction 0.0078740157 * 2^23 = 66052.03 -> 66052 = 0x010204.  Bits: 0x3c010204.
    assert scale_to_hex(amax_to_scale(1.0)) == "3c010204"
    # 6/127 (a ReLU6 range) = 1.5118110 * 2^-5: exponent 122 = 0x7a -> 0x3d000000;
    # fraction 0.5118110 * 2^23 = 4293382.05 -> 4293382 = 0x418306.
    assert scale_to_hex(amax_to_scale(6.0)) == "3d418306"
    assert struct.unpack(">f", bytes.fromhex("3c010204"))[0] == amax_to_scale(1.0)


def test_decoding_matches_the_fact_sheet_examples():
    # deploy_facts.md 2.3: "Input: 3c948aaf" is scale 0.0181325, range 2.3028.
    assert hex_to_scale("3c948aaf") == pytest.approx(0.0181325, abs=1e-7)
    assert hex_to_scale("3c948aaf") * 127 == pytest.approx(2.3028, abs=1e-4)
    assert hex_to_scale("40227ce7") * 127 == pytest.approx(322.44, abs=1e-2)


def test_no_zero_padding_when_writing_and_left_padding_when_reading():
    tiny = struct.unpack(">f", struct.pack(">I", 0x1))[0]  # smallest subnormal float32
    assert scale_to_hex(tiny) == "1"
    assert hex_to_scale("1") == tiny
    assert scale_to_hex(0.0) == "0"
    ranges = ActivationRanges({"t": tiny * 127})
    text = format_calibration_cache(ranges, trt_version="8.6.1")
    assert text == "TRT-8601-EntropyCalibration2\nt: 1\n"
    assert parse_calibration_cache(text)[1].scale("t") == tiny


def test_hand_built_table_exact_text(tmp_path):
    ranges = ActivationRanges({"input_1:0": 1.0, "conv1/Relu6:0": 6.0, "output_cov/Sigmoid:0": 1.0})
    path = tmp_path / "sub" / "cal.bin"
    header = write_calibration_cache(path, ranges, trt_version="10.3.0")
    assert header == CacheHeader(100300, "EntropyCalibration2")
    assert path.read_bytes() == (b"TRT-100300-EntropyCalibration2\n"
                                 b"input_1:0: 3c010204\n"
                                 b"conv1/Relu6:0: 3d418306\n"
                                 b"output_cov/Sigmoid:0: 3c010204\n")
    read_header, read_ranges = read_calibration_cache(path)
    assert read_header == header and read_header.trt_version == "10.3.0"
    assert list(read_ranges) == list(ranges)
    assert read_ranges["conv1/Relu6:0"] == pytest.approx(6.0, rel=1e-7)


@pytest.mark.parametrize("version,number", [
    ("7.0.0", 7000), ("8.2.3", 8203), ("8.6.1", 8601), ("8.5.3.1", 8503),
    ("10.0", 100000), ("10.0.1", 100001), ("10.3.0.26", 100300), ("10.13.0", 101300),
    (8601, 8601), ("100300", 100300),
])
def test_header_version_numbers(version, number):
    assert header_version_number(version) == number


def test_default_header_version_without_tensorrt(monkeypatch):
    monkeypatch.setattr(cc, "installed_trt_version", lambda: None)
    assert header_version_number(None) == 100300
    assert format_calibration_cache(ActivationRanges({"x": 1.0})).startswith("TRT-100300-EntropyCalibration2\n")
    monkeypatch.setattr(cc, "installed_trt_version", lambda: "10.8.0.43")
    assert header_version_number(None) == 100800


@pytest.mark.parametrize("bad", ["abc", "10", "8.10.0", "10.3.100", "1.2.3.4.5", True])
def test_bad_versions(bad):
    with pytest.raises(UsageError, match="--trt_version"):
        header_version_number(bad)


def test_version_from_header_number():
    assert version_from_header_number(7000) == "7.0.0"
    assert version_from_header_number(8601) == "8.6.1"
    assert version_from_header_number(100300) == "10.3.0"
    assert version_from_header_number(101300) == "10.13.0"


@pytest.mark.parametrize("name", CORPUS_CACHES)
def test_real_caches_round_trip_byte_for_byte(corpus_dir, tmp_path, name):
    path = corpus_dir / "etlt" / name
    header, ranges = read_calibration_cache(path)
    assert header == CacheHeader(7000, "EntropyCalibration2")
    assert ranges.method == "trt-cache"
    out = tmp_path / "cal.bin"
    write_calibration_cache(out, ranges, header.algorithm, header.version)
    assert out.read_bytes() == path.read_bytes()


def test_real_cache_values(corpus_dir):
    header, ranges = read_calibration_cache(corpus_dir / "etlt" / CORPUS_CACHES[0])
    assert len(ranges) == 38
    # The input is RGB/255, so its range is 1: 0x3c010108 = (1 + 0x010108 / 2^23) * 2^-7
    # = 1.00784397 / 128 = 0.00787378, times 127 = 0.999970.
    assert ranges["input_1"] == pytest.approx(0.999970, abs=1e-6)
    # ReLU6 outputs saturate at 6: 0x3d41810e = (1 + 0x41810e / 2^23) * 2^-5 = 0.0472422, times 127 = 5.999762.
    assert ranges["activation_1/Relu6"] == pytest.approx(5.999762, abs=1e-6)
    assert list(ranges)[-1] == "block_4b_relu/Relu6"


def test_malformed_caches_name_the_line(tmp_path):
    with pytest.raises(InvalidInputError, match=r"cal\.bin:1: not a TensorRT calibration cache header"):
        parse_calibration_cache("TRT-EntropyCalibration2\nx: 3c010204\n", "cal.bin")
    with pytest.raises(InvalidInputError, match=r"cal\.bin:3: expected '<tensor name>: <hex>'"):
        parse_calibration_cache("TRT-8601-EntropyCalibration2\nx: 3c010204\ny 3c010204\n", "cal.bin")
    with pytest.raises(InvalidInputError, match=r"cal\.bin:2: not a hexadecimal float32"):
        parse_calibration_cache("TRT-8601-EntropyCalibration2\nx: 3c0102041\n", "cal.bin")
    with pytest.raises(InvalidInputError, match="invalid scale"):
        parse_calibration_cache("TRT-8601-EntropyCalibration2\nx: bf800000\n", "cal.bin")  # -1.0
    binary = tmp_path / "bin.bin"
    binary.write_bytes(b"TRT-8601-EntropyCalibration2\n\xff\n")
    with pytest.raises(InvalidInputError, match="not ASCII"):
        read_calibration_cache(binary)
    with pytest.raises(InvalidInputError, match="cannot read"):
        read_calibration_cache(tmp_path / "missing.bin")


def test_activation_ranges_validation_and_helpers(tmp_path):
    with pytest.raises(UsageError, match="amax must be finite and >= 0"):
        ActivationRanges({"x": -1.0})
    with pytest.raises(UsageError, match="invalid tensor name"):
        ActivationRanges({"a: b": 1.0})
    ranges = ActivationRanges({"input_1": 1.0}, method="minmax")
    ranges.set("out", 2.5)
    assert ranges.scale("out") == amax_to_scale(2.5)
    renamed = ranges.renamed({"input_1": "input_1:0"})
    assert list(renamed) == ["input_1:0", "out"] and renamed.method == "minmax"
    with pytest.raises(UsageError, match="unknown algorithm"):
        format_calibration_cache(ranges, algorithm="Percentile")
    assert format_calibration_cache(ranges, "MinMaxCalibration", "8.6.1").startswith("TRT-8601-MinMaxCalibration\n")


def test_tensor_scales_json_round_trip(tmp_path):
    ranges = ActivationRanges({"input_1": 1.0, "output_bbox/BiasAdd": 37.5})
    path = tmp_path / "scales.json"
    ranges.to_tensor_scales_json(path)
    back = ActivationRanges.from_tensor_scales_json(path)
    assert back.amax == ranges.amax and back.method == "qat"
    path.write_text('{"tensor_scales": {"x": "big"}}')
    with pytest.raises(InvalidInputError, match="tensor_scales.x: expected a number"):
        ActivationRanges.from_tensor_scales_json(path)
    path.write_text("{oops")
    with pytest.raises(InvalidInputError, match=r"scales\.json:1:2: not valid JSON"):
        ActivationRanges.from_tensor_scales_json(path)
