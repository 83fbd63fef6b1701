"""tao-converter flags -> BuildSettings, builder flags, and the exact trtexec command."""

from __future__ import annotations

import shlex

import pytest

from tltk.errors import UsageError
from tltk.tensorrt.converter_args import (
    BuildSettings,
    format_mem_pool_mib,
    precision_plan,
    settings_from_flags,
    shell_quote,
    trtexec_command,
)


def test_defaults_are_tao_converters():
    settings = settings_from_flags()
    assert settings == BuildSettings()
    assert settings.engine_file == "saved.engine"
    assert settings.cache_file == "cal.bin"
    assert settings.data_type == "fp32"
    assert settings.calib_batch_size == 8
    assert settings.max_batch_size == 16
    assert settings.workspace_bytes == 1073741824
    assert settings.input_order == "nchw"
    assert settings.profiles == () and settings.input_dims is None and settings.output_names == ()
    assert settings.strict_types is False and settings.dla_core is None


def test_flags_are_parsed():
    settings = settings_from_flags(engine_file="x.engine", data_type="INT8", cache_file="c.bin", calib_batch_size=1,
                                   max_batch_size=4, workspace="2147483648", input_order="NHWC",
                                   input_dims="544,960,3", outputs="output_cov/Sigmoid, output_bbox/BiasAdd",
                                   profiles=["input_1,1x544x960x3,2x544x960x3,4x544x960x3"], strict_types=True,
                                   dla_core=1)
    assert settings.data_type == "int8" and settings.input_order == "nhwc"
    assert settings.input_dims == (544, 960, 3)
    assert settings.output_names == ("output_cov/Sigmoid", "output_bbox/BiasAdd")
    assert settings.workspace_bytes == 2 * 1024 ** 3
    assert settings.profiles[0].opt == (2, 544, 960, 3)


@pytest.mark.parametrize("kwargs,prefix", [
    ({"data_type": "int4"}, "-t: unknown data type 'int4'"),
    ({"input_order": "chw"}, "-i: unknown input order 'chw'"),
    ({"calib_batch_size": 0}, "-b: the calibration batch size must be positive"),
    ({"max_batch_size": -2}, "-m: the maximum batch size must be positive"),
    ({"workspace": "1G"}, "-w: the workspace size is a positive number of bytes"),
    ({"workspace": "0"}, "-w: the workspace size is a positive number of bytes"),
    ({"dla_core": -1}, "-u: the DLA core index must be >= 0"),
    ({"outputs": " , "}, "-o: give the output tensor names"),
    ({"input_dims": "3,544"}, "-d: '3,544' has 2 dims"),
    ({"profiles": ["input_1,1x3"]}, "-p: 'input_1,1x3' must be"),
])
def test_bad_flags_name_the_flag(kwargs, prefix):
    with pytest.raises(UsageError) as info:
        settings_from_flags(**kwargs)
    assert info.value.message.startswith(prefix)


def test_precision_plan():
    plan = precision_plan(settings_from_flags())
    assert (plan.fp16, plan.int8, plan.use_calibrator, plan.obey_precision_constraints) == (False, False, False, False)
    plan = precision_plan(settings_from_flags(data_type="fp16"))
    assert (plan.fp16, plan.int8, plan.use_calibrator) == (True, False, False)
    # INT8 lets layers without an INT8 kernel fall back to FP16 unless -s.
    plan = precision_plan(settings_from_flags(data_type="int8"))
    assert (plan.fp16, plan.int8, plan.use_calibrator) == (True, True, True)
    plan = precision_plan(settings_from_flags(data_type="int8", strict_types=True))
    assert (plan.fp16, plan.int8, plan.use_calibrator, plan.obey_precision_constraints) == (False, True, True, True)
    plan = precision_plan(settings_from_flags(data_type="int8"), explicit_quantization=True)
    assert (plan.int8, plan.use_calibrator) == (True, False)


def test_mem_pool_sizes():
    assert format_mem_pool_mib(1 << 30) == "1024M"
    assert format_mem_pool_mib(1 << 30, suffix=False) == "1024"
    assert format_mem_pool_mib(2_000_000_000) == "1953125K"
    assert format_mem_pool_mib(2_000_000_000, suffix=False) == "1908"  # 1907.35 MiB rounded up
    assert format_mem_pool_mib(1536) == "2K"


def test_trtexec_command_for_the_tao_detectnet_example():
    settings = settings_from_flags(engine_file="out/resnet18_detector.engine", data_type="int8",
                                   cache_file="out/cal.bin",
                                   profiles=["input_1,1x3x544x960,8x3x544x960,16x3x544x960"])
    assert trtexec_command(settings, "out/model.onnx") == (
        "trtexec --onnx=out/model.onnx --saveEngine=out/resnet18_detector.engine "
        "--minShapes=input_1:1x3x544x960 --optShapes=input_1:8x3x544x960 --maxShapes=input_1:16x3x544x960 "
        "--memPoolSize=workspace:1024M --fp16 --int8 --calib=out/cal.bin")


def test_trtexec_command_quotes_names_with_colons_for_trtexec_and_the_shell():
    settings = settings_from_flags(profiles=["input_1:0,1x3x4x4,2x3x4x4,4x3x4x4", "b,1x2,1x2,1x2"])
    command = trtexec_command(settings, "my model.onnx")
    assert command == (
        "trtexec '--onnx=my model.onnx' --saveEngine=saved.engine "
        "\"--minShapes='input_1:0':1x3x4x4,b:1x2\" \"--optShapes='input_1:0':2x3x4x4,b:1x2\" "
        "\"--maxShapes='input_1:0':4x3x4x4,b:1x2\" --memPoolSize=workspace:1024M")
    # What trtexec receives after the shell has done its work.
    assert shlex.split(command)[1:4] == ["--onnx=my model.onnx", "--saveEngine=saved.engine",
                                         "--minShapes='input_1:0':1x3x4x4,b:1x2"]


def test_trtexec_command_qdq_strict_dla_timing_cache():
    settings = settings_from_flags(data_type="int8", strict_types=True, dla_core=0, workspace="536870912",
                                   timing_cache_file="t.cache")
    assert trtexec_command(settings, "q.onnx", explicit_quantization=True) == (
        "trtexec --onnx=q.onnx --saveEngine=saved.engine --memPoolSize=workspace:512M --int8 "
        "--precisionConstraints=obey --useDLACore=0 --allowGPUFallback --timingCacheFile=t.cache")
    assert trtexec_command(settings_from_flags(data_type="fp16"), "m.onnx") == (
        "trtexec --onnx=m.onnx --saveEngine=saved.engine --memPoolSize=workspace:1024M --fp16")


def test_trtexec_command_for_uff_payloads():
    settings = settings_from_flags(input_dims="3,544,960", outputs="output_cov/Sigmoid,output_bbox/BiasAdd",
                                   max_batch_size=1, data_type="int8", cache_file="cal.bin", calib_batch_size=1)
    assert trtexec_command(settings, "saved.uff", "uff", uff_input_name="input_1") == (
        "trtexec --uff=saved.uff --uffInput=input_1,3,544,960 --output=output_cov/Sigmoid,output_bbox/BiasAdd "
        "--maxBatch=1 --saveEngine=saved.engine --memPoolSize=workspace:1024 --fp16 --int8 --calib=cal.bin")
    nhwc = settings_from_flags(input_dims="544,960,3", input_order="nhwc", outputs="out")
    assert "--uffInput=Input,544,960,3 --uffNHWC --output=out" in trtexec_command(nhwc, "m.uff", "uff", uff_input_name="Input")
    with pytest.raises(UsageError, match="^-d: a UFF model needs the input dimensions"):
        trtexec_command(settings_from_flags(outputs="out"), "m.uff", "uff", uff_input_name="input_1")
    with pytest.raises(UsageError, match="^-o: a UFF model needs the output node names"):
        trtexec_command(settings_from_flags(input_dims="3,4,4"), "m.uff", "uff", uff_input_name="input_1")


def test_shell_quote():
    assert shell_quote("--onnx=a/b.onnx") == "--onnx=a/b.onnx"
    assert shell_quote("a b") == "'a b'"
    assert shell_quote("x'y") == "\"x'y\""
    assert shell_quote("it's $HOME") == shlex.quote("it's $HOME")
    assert shlex.split(shell_quote("it's $HOME")) == ["it's $HOME"]
