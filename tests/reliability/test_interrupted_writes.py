"""Issue 16, item 2: SIGKILL while a subtask writes its outputs, and a full disk.

Each case kills a subtask at one of its writes (a temporary file being written, or a complete
temporary file about to be renamed to its final name), then checks that every output with a
final name is complete (it parses to its end), and that the same command run again completes
with every output present and complete.  The full-disk cases make a write fail with ENOSPC
(injected, and on a real small tmpfs in the long variant) and check the error names the path
and leaves the previous checkpoint intact.
"""

from __future__ import annotations

import configparser
import os
import shutil
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# ---- output checks: each reads a file to its end and raises when it is incomplete ----------------

def tfrecord_count(path: Path) -> int:
    """Records in a TFRecord file; raises ValueError when the framing is cut short."""
    data = path.read_bytes()
    pos = count = 0
    while pos < len(data):
        if pos + 12 > len(data):
            raise ValueError(f"{path}: truncated record header at byte {pos}")
        (length,) = struct.unpack_from("<Q", data, pos)
        pos += 12 + length + 4
        if pos > len(data):
            raise ValueError(f"{path}: truncated record at byte {pos}")
        count += 1
    return count


def check_onnx(path: Path) -> None:
    import onnx

    onnx.checker.check_model(onnx.load(str(path)))


def check_tensorfile(path: Path) -> None:
    from tltk.data.tensorfile import count_batches, read_tensorfile

    assert sum(1 for _ in read_tensorfile(path)) == count_batches(path) > 0


def check_cal_cache(path: Path) -> None:
    lines = path.read_text(encoding="ascii").splitlines()
    assert lines[0].startswith("TRT-") and len(lines) > 1, lines[:2]
    for line in lines[1:]:
        name, _, value = line.rpartition(": ")
        assert name and len(value) == 8 and int(value, 16) >= 0, line


def check_ini(path: Path) -> None:
    parser = configparser.ConfigParser()
    parser.read_string(path.read_text(encoding="utf-8"))
    assert parser.has_section("property"), path


def check_text(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and text.strip(), path


def check_yaml(path: Path) -> None:
    import yaml

    assert isinstance(yaml.safe_load(path.read_text(encoding="utf-8")), dict)


def check_kitti(path: Path) -> None:
    from tltk.data.kitti import read_kitti_labels

    _, problems = read_kitti_labels(path)
    assert not problems, problems
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n"), f"{path} is cut short"


def check_image(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as image:
        image.load()


CHECKS: dict[str, Callable[[Path], None]] = {
    ".onnx": check_onnx, ".tensor": check_tensorfile, ".bin": check_cal_cache, ".txt": check_text,
    ".yml": check_yaml, ".png": check_image, ".jpg": check_image,
}


def check_output(path: Path, rel: Any) -> None:
    """Read one output to its end (raises when it is incomplete)."""
    if path.name == "nvinfer_config.txt":
        check_ini(path)
    elif path.suffix == ".tlt":
        rel.model_weights(path)
    elif path.parent.name == "labels" and path.suffix == ".txt":
        check_kitti(path)
    elif path.parent.name == "records":
        assert tfrecord_count(path) > 0
    else:
        CHECKS[path.suffix](path)


# ---- the cases ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class WriteCase:
    """A subtask, where it is killed, and which outputs it must leave complete or absent.

    Attributes:
        name: test id.
        subtask: the subtask killed (the case is skipped where it does not exist).
        argv: the command, given the model's context (``ctx``) and an output folder.
        fault: the faultrun.py fault.
        outputs: glob patterns (relative to the output folder) of the final outputs.
        long: run only in the ``reliability_long`` variant.
        long_for: models for which the case runs only in the long variant.
        models: the models the case is for (empty: every model with the subtask).
        rerun_xfail: reason the re-run is expected to fail today (a known bug, reported).
    """

    name: str
    subtask: str
    argv: Callable[[Any, Path], list[str]]
    fault: str
    outputs: tuple[str, ...]
    long: bool = False
    long_for: tuple[str, ...] = ()
    rerun_xfail: str = ""
    models: tuple[str, ...] = ()


def _convert(ctx: Any, out: Path) -> list[str]:
    kit = ctx.prepared.kit
    return ctx.rel.convert_argvs(kit, ctx.prepared.data, out / "records")[0]


def _export(ctx: Any, out: Path, *extra: str) -> list[str]:
    return [ctx.prepared.kit.model, "export", "-m", str(ctx.reference.model_file), "-o", str(out / "model.onnx"),
            "-e", str(ctx.reference.results / "experiment_spec.txt"), "--gen_ds_config", *extra]


def _export_int8(ctx: Any, out: Path) -> list[str]:
    return _export(ctx, out, "--data_type", "int8", "--cal_image_dir", str(ctx.images), "--batches", "2",
                   "--batch_size", "2", "--cal_data_file", str(out / "cal.tensor"), "--cal_cache_file",
                   str(out / "cal.bin"))


def _tensorfile(ctx: Any, out: Path) -> list[str]:
    argv = [ctx.prepared.kit.model, "calibration_tensorfile", "-e", str(ctx.prepared.spec), "-o",
            str(out / "cal.tensor"), "-m", "2"]
    for item in ctx.prepared.kit.train_overrides:
        argv += ["--set", item]
    return argv


def _prune(ctx: Any, out: Path) -> list[str]:
    return [ctx.prepared.kit.model, "prune", "-m", str(ctx.reference.model_file), "-o", str(out / "pruned.tlt"),
            "-pth", "0.3"]


def _inference(ctx: Any, out: Path) -> list[str]:
    return [ctx.prepared.kit.model, "inference", "-e", str(ctx.inference_spec), "-i", str(ctx.images), "-o",
            str(out / "inference")]


EXPORT_OUTPUTS = ("model.onnx", "nvinfer_config.txt", "nvinfer_config.yml", "labels.txt")
INT8_OUTPUTS = EXPORT_OUTPUTS + ("cal.tensor", "cal.bin", "*_qdq.onnx")
CASES = [
    WriteCase("dataset_convert: last shard about to be renamed", "dataset_convert", _convert, "kill|rename|{last_shard}",
              ("records/{shard_glob}",)),
    # TensorFlow writes shards from C++ (no Python event): kill when the 8th image is read, in the
    # middle of the second partition's shard (the first partition has 3 images).
    WriteCase("dataset_convert: a shard being written", "dataset_convert", _convert,
              r"kill|read|/image_2/[^/]*\.png$|8", ("records/{shard_glob}",), long=True, models=("detectnet_v2",)),
    # MaskRCNN's ONNX export takes about a minute on 2 cores: its export cases run in the long variant.
    WriteCase("export: ONNX complete, not yet renamed", "export", _export, r"kill|rename|/model\.onnx$", EXPORT_OUTPUTS,
              long_for=("mask_rcnn",)),
    WriteCase("export: ONNX bytes being written", "export", _export, r"kill|write|/\.model\.onnx\.[0-9a-f]+\.tmp$",
              EXPORT_OUTPUTS, long=True),
    WriteCase("export: DeepStream config about to be renamed", "export", _export, r"kill|rename|/nvinfer_config\.txt$",
              EXPORT_OUTPUTS, long=True),
    WriteCase("export int8: TensorFile about to be renamed", "export", _export_int8, r"kill|rename|/cal\.tensor$",
              INT8_OUTPUTS, long=True),
    WriteCase("export int8: calibration cache being written", "export", _export_int8, r"kill|write|/\.cal\.bin\.[0-9a-f]+\.tmp$",
              INT8_OUTPUTS, long=True),
    WriteCase("export int8: Q/DQ ONNX about to be renamed", "export", _export_int8, r"kill|rename|_qdq\.onnx$",
              INT8_OUTPUTS, long=True),
    WriteCase("calibration_tensorfile: about to be renamed", "calibration_tensorfile", _tensorfile, r"kill|rename|/cal\.tensor$",
              ("cal.tensor",), long=True),
    WriteCase("prune: container bytes being written", "prune", _prune, r"kill|write|/\.pruned\.tlt\.[0-9a-f]+\.tmp$",
              ("pruned.tlt",), long=True),
    WriteCase("prune: about to be renamed", "prune", _prune, r"kill|rename|/pruned\.tlt$", ("pruned.tlt",), long=True),
    WriteCase("inference: second label file being written", "inference", _inference, r"kill|write|/labels/[^/]*\.txt|2",
              ("inference/labels/*.txt", "inference/images_annotated/*"), long=True),
]


@dataclass
class Context:
    """What the cases need: the prepared project, the reference run, images, an inference spec."""

    prepared: Any
    reference: Any
    images: Path
    inference_spec: Path
    rel: Any


def make_context(model: str, rel: Any, workspace: Path) -> Context:
    """The model's project and reference run (made once per session)."""
    prepared = rel.prepare(model, workspace)
    reference = rel.reference_run(prepared)
    return Context(prepared, reference, prepared.images, rel.inference_spec_for(prepared, reference), rel)


@pytest.fixture
def ctx(model, workspace, rel) -> Context:
    return make_context(model, rel, workspace)


def _params() -> list[Any]:
    from tltk.models import MODELS

    params = []
    for model in MODELS:
        for case in CASES:
            if case.models and model not in case.models:
                continue
            long = case.long or model in case.long_for
            marks = [pytest.mark.reliability_long] if long else []
            params.append(pytest.param(model, case, id=f"{model}: {case.name}", marks=marks))
    return params


def _outputs(folder: Path, patterns: tuple[str, ...]) -> list[Path]:
    return sorted(p for pattern in patterns for p in folder.glob(pattern) if not p.name.startswith("."))


@pytest.mark.parametrize(("model", "case"), _params())
def test_kill_during_write_leaves_nothing_incomplete(model, case, workspace, rel, tmp_path, request):
    if not rel.has_subtask(model, case.subtask):
        pytest.skip(f"`tltk {model} {case.subtask}` does not exist yet")
    rel.require(model, "dataset_convert", "train")
    rel.expect_known_bug(request, model, case.subtask)
    ctx = make_context(model, rel, workspace)
    kit = ctx.prepared.kit
    argv = case.argv(ctx, tmp_path)
    fault = case.fault.format(last_shard=kit.last_shard)
    outputs = tuple(pattern.format(shard_glob=kit.shard_glob) for pattern in case.outputs)
    killed = rel.run(argv, ctx.prepared.root, fault=fault)
    assert killed.mark, f"the fault point was never reached\n{killed.stderr[-3000:]}"
    assert killed.killed, f"exit code {killed.returncode}\n{killed.stderr[-3000:]}"
    for path in _outputs(tmp_path, outputs):
        check_output(path, rel)  # a file with a final name is complete
    rel.STATS[f"interrupted writes survived ({model})"] += 1
    if case.rerun_xfail:
        request.applymarker(pytest.mark.xfail(strict=False, reason=case.rerun_xfail))
    again = rel.run(argv, ctx.prepared.root)
    rel.assert_run_ok(again, f"re-running {' '.join(argv[:2])} after the kill")
    written = _outputs(tmp_path, outputs)
    assert written, f"the re-run wrote none of {outputs}"
    for path in written:
        check_output(path, rel)


@pytest.mark.reliability_long
def test_incomplete_shard_set_is_refused(model, ctx, rel, tmp_path):
    """A conversion killed between two shard renames must not leave data that trains on a part silently.

    Training on the incomplete set must stop before its first step with exit code 2, naming the
    missing shard; a run that does not is killed at its first step (and the test fails).
    """
    kit = ctx.prepared.kit
    records = tmp_path / "records"
    argv = _convert(ctx, tmp_path) + list(kit.two_shards)
    killed = rel.run(argv, ctx.prepared.root, fault=f"kill|rename|{kit.last_of_two}")
    assert killed.killed and killed.mark, killed.stderr[-2000:]
    sets = [a for item in kit.records_overrides
            for a in ("--set", item.format(records=records, data=ctx.prepared.data))]
    result = rel.run(ctx.prepared.train_argv(tmp_path / "results", *sets), ctx.prepared.root, fault="kill|step||1")
    assert result.returncode == 2, f"training on an incomplete shard set: exit {result.returncode}\n{result.stderr[-3000:]}"
    assert "00001-of-00002" in result.stderr, f"the missing shard is not named\n{result.stderr[-3000:]}"


# ---- full disk -------------------------------------------------------------------------------------

def _results_at_cycle_one(reference: Any, cycle_name: str, target: Path) -> Path:
    shutil.copytree(reference.results, target, ignore=shutil.ignore_patterns("events", "plots"))
    for folder in (target / "checkpoints").iterdir():
        if folder.name != f"{cycle_name}-0001":
            shutil.rmtree(folder)
    (target / "model.tlt").unlink()
    return target


def _assert_full_disk_reported(result: Any, results: Path, rel: Any) -> None:
    assert result.returncode == 1, f"exit code {result.returncode}\n{result.stderr[-3000:]}"
    assert rel.TRACEBACK not in result.stderr, result.stderr[-3000:]
    assert "No space left on device" in result.stderr, result.stderr[-3000:]
    assert str(results) in result.stderr, f"the error does not name the path\n{result.stderr[-3000:]}"


def _assert_checkpoint_one_intact(results: Path, reference: Any, cycle_name: str, rel: Any) -> None:
    name = f"{cycle_name}-0001"
    names = sorted(p.name for p in (results / "checkpoints").iterdir())
    assert names == [name], f"checkpoints after the failed write: {names}"
    content = rel.checkpoint_content(results / "checkpoints" / name)
    assert rel.max_abs_diff(content["weights"], reference.checkpoints[name]) <= rel.WEIGHT_TOLERANCE


def test_full_disk_while_writing_a_checkpoint(model, prepared, reference, rel, tmp_path):
    cycle = prepared.kit.cycle_name
    results = _results_at_cycle_one(reference, cycle, tmp_path / "results")
    result = rel.run(prepared.train_argv(results), prepared.root, fault=rf"enospc|write|/checkpoints/\.{cycle}-0002")
    assert result.mark, result.stderr[-3000:]
    _assert_full_disk_reported(result, results, rel)
    _assert_checkpoint_one_intact(results, reference, cycle, rel)
    assert not (results / "model.tlt").exists()
    rel.STATS[f"full-disk cases ({model})"] += 1


@pytest.mark.reliability_long
def test_full_disk_while_exporting(model, ctx, rel, tmp_path, request):
    if not rel.has_subtask(model, "export"):
        pytest.skip(f"`tltk {model} export` does not exist yet")
    rel.expect_known_bug(request, model, "export")
    result = rel.run(_export(ctx, tmp_path), ctx.prepared.root, fault=r"enospc|write|/\.model\.onnx\.")
    assert result.mark, result.stderr[-3000:]
    _assert_full_disk_reported(result, tmp_path, rel)
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "the failed export left files behind"
    rel.STATS[f"full-disk cases ({model})"] += 1


def _mount_tmpfs(folder: Path, size: int) -> bool:
    folder.mkdir(parents=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    return done.returncode == 0


@pytest.mark.reliability_long
def test_real_full_disk_while_writing_a_checkpoint(model, prepared, reference, rel, tmp_path):
    """The results folder on a tmpfs that holds the first checkpoint but not the second."""
    cycle = prepared.kit.cycle_name
    staged = _results_at_cycle_one(reference, cycle, tmp_path / "staged")
    used = sum(p.stat().st_size for p in staged.rglob("*") if p.is_file())
    checkpoint = sum(p.stat().st_size for p in (staged / "checkpoints").rglob("*") if p.is_file())
    mount = tmp_path / "disk"
    if not _mount_tmpfs(mount, used + checkpoint // 2):
        pytest.skip("cannot mount a tmpfs here (needs root); the injected ENOSPC case covers this")
    try:
        results = mount / "results"
        shutil.copytree(staged, results)
        result = rel.run(prepared.train_argv(results), prepared.root)
        _assert_full_disk_reported(result, results, rel)
        _assert_checkpoint_one_intact(results, reference, cycle, rel)
        rel.STATS[f"full-disk cases ({model})"] += 1
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
