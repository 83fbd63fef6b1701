"""The reliability suite (issue 16, docs/reliability.md): shared data, runs and checks.

Every test that takes the ``model`` fixture runs once per row of the model table; a model
whose subtask does not exist yet is skipped with the reason, and a model whose subtasks exist
but that has no :class:`ModelKit` below fails, so a new model joins the suite on purpose.

Subprocess runs go through ``faultrun.py`` (the tltk CLI with one injected fault); in-process
runs go through click's ``CliRunner``.  ``pytest_terminal_summary`` prints the figures the
suite measured (kill points survived, fuzz and wrong-file cases, tracebacks seen).
"""

from __future__ import annotations

import collections
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FAULTRUN = HERE / "faultrun.py"
TRACEBACK = "Traceback (most recent call last)"
#: What the suite measured, printed at the end of the run (and written to $TLTK_RELIABILITY_REPORT).
STATS: collections.Counter[str] = collections.Counter({"tracebacks": 0})
#: Measured values that are not counts (printed and reported with STATS).
FIGURES: dict[str, float] = {}


def model_names() -> tuple[str, ...]:
    """The models the suite runs for: every row of the model table."""
    from tltk.models import MODELS

    return tuple(MODELS)


def has_subtask(model: str, subtask: str) -> bool:
    """Whether ``tltk <model> <subtask>`` exists (what ``tltk <model> --help`` lists)."""
    import click

    from tltk.cli.app import cli

    root = click.Context(cli)
    group = cli.get_command(root, model)
    if not isinstance(group, click.Group):
        return False
    return subtask in group.list_commands(click.Context(group, parent=root))


# ---- per-model kits ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelKit:
    """How to make tiny data and a training run of seconds for one model.

    Attributes:
        model: the model name (CLI group).
        data_format: ``tltk dataset synthesize --format``.
        num_images: synthetic images.
        image_size: ``(width, height)`` of the synthetic images.
        train_spec: the repository spec the tiny spec is derived from (copied next to ``data/``).
        train_overrides: ``--set`` overrides that make training take seconds: ``num_cycles``
            cycles, a checkpoint after every cycle, validation from cycle 2 on.
        num_cycles: cycles (epochs, or step cycles) of the tiny run.
        cycle_name: checkpoint folder prefix (``epoch``/``cycle``).
        convert_argvs: the ``dataset_convert`` argument lists (after the subtask name), with
            ``{data}`` for the synthetic dataset folder and ``{records}`` for the output folder.
        pretrained_field: the spec field naming a model file to start from.
        shard_glob: the shards the first conversion writes (a glob in ``{records}``).
        last_shard: regex of the last shard the first conversion renames into place.
        two_shards: arguments added to the first conversion to write two shards per partition.
        last_of_two: regex of the last shard renamed by that two-shard conversion.
        records_overrides: ``--set`` overrides pointing training at ``{records}`` (and ``{data}``).
        train_flags: flags every ``train`` command of the kit gets (MaskRCNN's CPU training is
            bit-reproducible only with ``--enable_determinism``, which the kill-and-resume
            comparison needs).
    """

    model: str
    data_format: str
    num_images: int
    image_size: tuple[int, int]
    train_spec: str
    train_overrides: tuple[str, ...]
    num_cycles: int
    cycle_name: str
    convert_argvs: tuple[tuple[str, ...], ...]
    pretrained_field: str
    shard_glob: str
    last_shard: str
    two_shards: tuple[str, ...]
    last_of_two: str
    records_overrides: tuple[str, ...]
    train_flags: tuple[str, ...] = ()


KITS: dict[str, ModelKit] = {
    "detectnet_v2": ModelKit(
        model="detectnet_v2", data_format="kitti", num_images=16, image_size=(240, 144),
        train_spec="specs/detectnet_v2/quickstart_train.txt",
        train_overrides=(
            "training_config.num_epochs=3",
            "training_config.checkpoint_interval=1",
            "training_config.batch_size_per_gpu=4",
            "augmentation_config.preprocessing.output_image_width=240",
            "augmentation_config.preprocessing.output_image_height=144",
            "evaluation_config.first_validation_epoch=2",
            "evaluation_config.validation_period_during_training=1",
        ),
        num_cycles=3, cycle_name="epoch",
        convert_argvs=(("-d", "{data}/dataset_convert_spec.txt", "-o", "{records}/kitti"),),
        pretrained_field="model_config.pretrained_model_file",
        shard_glob="kitti-fold-*", last_shard=r"/kitti-fold-001-of-002[^/]*$",
        two_shards=("--set", "kitti_config.num_shards=2"), last_of_two=r"/kitti-fold-001-of-002-shard-00001-of-00002$",
        records_overrides=("dataset_config.data_sources[0].tfrecords_path={records}/kitti-fold-*",
                           "dataset_config.data_sources[0].image_directory_path={data}"),
    ),
    "mask_rcnn": ModelKit(
        model="mask_rcnn", data_format="coco", num_images=12, image_size=(128, 128),
        train_spec="specs/mask_rcnn/default_train.txt",
        train_overrides=(
            "total_steps=6", "num_steps_per_eval=2", "warmup_steps=1", "learning_rate_steps=[5]",
            "learning_rate_decay_levels=[0.1]", "train_batch_size=2", "eval_batch_size=2", "logging_frequency=1",
            "checkpoint=", "data_config.image_size=(128, 128)", "data_config.eval_samples=2",
            "data_config.training_file_pattern=data/tfrecords/train-*.tfrecord",
            "data_config.validation_file_pattern=data/tfrecords/val-*.tfrecord",
            "data_config.val_json_file=data/coco/annotations/instances_val.json", "data_config.num_classes=4",
            "data_config.max_num_instances=16", "maskrcnn_config.nlayers=10", "maskrcnn_config.freeze_blocks=[]",
            "maskrcnn_config.freeze_bn=false", "maskrcnn_config.gt_mask_size=28",
            "maskrcnn_config.rpn_batch_size_per_im=64", "maskrcnn_config.batch_size_per_im=32",
            "maskrcnn_config.fast_rcnn_mlp_head_dim=64", "maskrcnn_config.train_rpn_pre_nms_topn=200",
            "maskrcnn_config.train_rpn_post_nms_topn=50", "maskrcnn_config.test_rpn_pre_nms_topn=100",
            "maskrcnn_config.test_rpn_post_nms_topn=50", "maskrcnn_config.test_detections_per_image=10",
            "maskrcnn_config.anchor_scale=4",
        ),
        num_cycles=3, cycle_name="cycle",
        convert_argvs=tuple(("-i", "{data}/images/" + split, "-a", "{data}/annotations/instances_" + split + ".json",
                             "-o", "{records}", "-t", split, "-s", "1", "--workers", "1") for split in ("train", "val")),
        pretrained_field="checkpoint",
        shard_glob="train-*.tfrecord", last_shard=r"/train-00000-of-00001\.tfrecord$",
        two_shards=("-s", "2"), last_of_two=r"/train-00001-of-00002\.tfrecord$",
        records_overrides=("data_config.training_file_pattern={records}/train-*.tfrecord",),
        train_flags=("--enable_determinism",),
    ),
}


#: Bugs the suite found in code outside it, by (model, area): the affected cases are expected to
#: fail (xfail, not strict) until the owner fixes them; delete the entry with the fix.
KNOWN_BUGS: dict[tuple[str, str], str] = {
}


def expect_known_bug(request: pytest.FixtureRequest, model: str, area: str) -> None:
    """Mark the running test xfail when (model, area) is a known bug of :data:`KNOWN_BUGS`."""
    reason = KNOWN_BUGS.get((model, area))
    if reason:
        request.applymarker(pytest.mark.xfail(strict=False, reason=reason))


@dataclass
class Prepared:
    """A model's tiny project: synthetic data, converted data and the training command.

    Attributes:
        kit: the kit it was made from.
        root: folder holding ``train_spec.txt`` and ``data/`` (relative spec paths resolve here).
        spec: the training spec (the kit's spec copied next to ``data/``).
        data: the synthetic dataset folder.
        records: the converted data's folder.
    """

    kit: ModelKit
    root: Path
    spec: Path
    data: Path
    records: Path

    @property
    def images(self) -> Path:
        """A folder of the dataset's images (KITTI ``image_2``, COCO ``images/val``)."""
        return self.data / ("image_2" if self.kit.data_format == "kitti" else "images/val")

    def train_argv(self, results: Path, *extra: str) -> list[str]:
        """``tltk <model> train`` arguments for the tiny run into ``results``."""
        argv = [self.kit.model, "train", "-e", str(self.spec), "-r", str(results), *self.kit.train_flags]
        for item in self.kit.train_overrides:
            argv += ["--set", item]
        return argv + list(extra)


@dataclass
class Run:
    """A finished subprocess run: exit code, output, and the fault mark (if any)."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    mark: str = ""
    seconds: float = 0.0

    @property
    def killed(self) -> bool:
        """Ended by SIGKILL."""
        return self.returncode == -signal.SIGKILL


@dataclass
class Reference:
    """An uninterrupted training run: what every interrupted run must end with."""

    results: Path
    model_file: Path
    weights: dict[str, Any]
    checkpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    states: dict[str, dict[str, Any]] = field(default_factory=dict)


# ---- running the CLI -------------------------------------------------------------------------------

def subprocess_env() -> dict[str, str]:
    """The environment of CLI subprocesses: this checkout's tltk, quiet TensorFlow, no GPU."""
    import tltk

    env = dict(os.environ)
    package_root = str(Path(tltk.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([package_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.update({"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "-1", "PYTHONUNBUFFERED": "1"})
    env.pop("TLTK_FAULT", None)
    env.pop("TLTK_KEY", None)
    return env


def start(argv: list[str], cwd: Path, fault: str | None = None, mark: Path | None = None,
          log: Path | None = None) -> subprocess.Popen[str]:
    """Start ``tltk argv...`` (through faultrun.py) without waiting.

    Output goes to pipes (read them with ``communicate``), or to the file ``log`` for a process
    left running while the test does other things (a full pipe would stall it).
    """
    env = subprocess_env()
    if fault:
        env["TLTK_FAULT"] = fault
    if mark is not None:
        env["TLTK_FAULT_MARK"] = str(mark)
    if log is not None:
        with open(log, "w", encoding="utf-8") as sink:
            return subprocess.Popen([sys.executable, str(FAULTRUN), *argv], cwd=cwd, env=env, text=True,
                                    stdout=sink, stderr=subprocess.STDOUT)
    return subprocess.Popen([sys.executable, str(FAULTRUN), *argv], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run(argv: list[str], cwd: Path, fault: str | None = None, timeout: float = 300) -> Run:
    """Run ``tltk argv...`` in a subprocess with an optional fault; returns the finished :class:`Run`."""
    mark = None
    if fault:
        mark = cwd / f".fault-mark-{os.getpid()}-{time.monotonic_ns()}"
    began = time.monotonic()
    proc = start(argv, cwd, fault, mark)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"tltk {' '.join(argv)} ran past {timeout}s\n{err[-3000:]}")
    text = ""
    if mark is not None and mark.exists():
        text = mark.read_text(encoding="utf-8")
        mark.unlink()
    return Run(argv, proc.returncode, out, err, text, time.monotonic() - began)


def run_inprocess(argv: list[str], cwd: Path | None = None) -> Any:
    """Run the CLI in this process (click's CliRunner) from ``cwd`` (default: a fresh scratch folder,
    so default output folders such as ``results/`` never land in the checkout); returns the click
    ``Result``."""
    import tempfile

    from click.testing import CliRunner

    from tltk.cli.app import cli

    previous = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="tltk-reliability-") as scratch:
        os.chdir(cwd or scratch)
        try:
            return CliRunner().invoke(cli, argv, catch_exceptions=True)
        finally:
            os.chdir(previous)


def assert_clean_failure(result: Any, expected_code: int, *needles: str, what: str = "") -> str:
    """Check an in-process CLI result: the documented exit code, no traceback, messages present.

    Args:
        result: click's ``Result``.
        expected_code: the documented exit code.
        *needles: strings the output must contain (the file name, what was expected).
        what: a description of the case for failure messages.

    Returns:
        The combined output.
    """
    output = (result.stdout or "") + (result.stderr or "")
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit):
        import traceback

        STATS["tracebacks"] += 1
        pytest.fail(f"{what}: uncaught {type(exc).__name__}: {exc}\n"
                    + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-3000:])
    if TRACEBACK in output:
        STATS["tracebacks"] += 1
        pytest.fail(f"{what}: a traceback was printed\n{output[-3000:]}")
    assert result.exit_code == expected_code, f"{what}: exit code {result.exit_code}, expected {expected_code}\n{output[-3000:]}"
    for needle in needles:
        assert needle in output, f"{what}: the message does not mention {needle!r}\n{output[-3000:]}"
    return output


def assert_run_ok(result: Run, what: str = "") -> None:
    """A subprocess run ended with exit code 0 and printed no traceback."""
    if TRACEBACK in result.stderr:
        STATS["tracebacks"] += 1
    assert result.returncode == 0 and TRACEBACK not in result.stderr, (
        f"{what or ' '.join(result.argv)}: exit code {result.returncode}\n{result.stderr[-4000:]}")


# ---- reading results without TensorFlow -----------------------------------------------------------

def h5_arrays(source: str | Path | bytes) -> dict[str, Any]:
    """Every dataset of an HDF5 file (path or bytes), by its path inside the file."""
    import h5py

    handle = h5py.File(io.BytesIO(source) if isinstance(source, bytes) else str(source), "r")
    arrays: dict[str, Any] = {}
    with handle:
        handle.visititems(lambda name, obj: arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return arrays


def model_weights(path: str | Path, key: str | None = None) -> dict[str, Any]:
    """The weights stored in a tltk ``.tlt`` (its ``model.keras`` member), by HDF5 path.

    Raises:
        tltk.errors.ModelFileError: the file is damaged, truncated or not a container.
    """
    from tltk.modelfile.container import find_keras_member, read_container

    members, meta = read_container(path, key)
    keras_zip = members[find_keras_member(members, meta, str(path))]
    with zipfile.ZipFile(io.BytesIO(keras_zip)) as zf:
        return h5_arrays(zf.read("model.weights.h5"))


def checkpoint_content(folder: Path) -> dict[str, Any]:
    """Read a checkpoint folder completely: state, network weights, optimizer variables.

    Raises:
        OSError, ValueError, KeyError: a part is missing, truncated or not what its name says.
    """
    import numpy as np

    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    weights = h5_arrays(folder / "network.weights.h5")
    with np.load(folder / "optimizer.npz", allow_pickle=False) as data:
        optimizer = {k: data[k] for k in data.files}
    if int(state["num_optimizer_variables"]) != len(optimizer):
        raise ValueError(f"{folder}: state.json says {state['num_optimizer_variables']} optimizer variables, "
                         f"optimizer.npz holds {len(optimizer)}")
    if not weights:
        raise ValueError(f"{folder}: network.weights.h5 holds no weights")
    return {"state": state, "weights": weights, "optimizer": optimizer}


def max_abs_diff(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Largest absolute difference between two same-named sets of arrays (inf when names differ)."""
    import numpy as np

    if a.keys() != b.keys():
        return float("inf")
    worst = 0.0
    for name in a:
        x, y = np.asarray(a[name]), np.asarray(b[name])
        if x.shape != y.shape:
            return float("inf")
        if x.size and x.dtype.kind in "fiu":
            worst = max(worst, float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))))
        elif x.size and not np.array_equal(x, y):
            return float("inf")
    return worst


FINAL_CHECKPOINT = re.compile(r"^(?P<kind>[a-z]+)-(?P<cycle>\d{4,})$")
#: Weights of an interrupted-then-resumed run may differ from the uninterrupted run's by float
#: round-off only (TensorFlow's CPU kernels are deterministic here; this leaves room for BLAS
#: thread scheduling).
WEIGHT_TOLERANCE = 1e-5


# ---- fixtures ---------------------------------------------------------------------------------------

def long_enabled(config: pytest.Config) -> bool:
    """Whether the long variants run (``-m reliability_long`` or TLTK_RELIABILITY_LONG=1)."""
    return "reliability_long" in (config.option.markexpr or "") or os.environ.get("TLTK_RELIABILITY_LONG") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The long variants run only when asked for (see :func:`long_enabled`)."""
    if long_enabled(config):
        return
    skip = pytest.mark.skip(reason="long reliability variant: run with -m reliability_long (docs/reliability.md)")
    for item in items:
        if "reliability_long" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", params=model_names())
def model(request: pytest.FixtureRequest) -> str:
    """Each model of the model table in turn."""
    return str(request.param)


def require(model: str, *subtasks: str) -> ModelKit:
    """The model's kit; skips when a subtask does not exist yet, fails when a kit is missing."""
    for subtask in subtasks:
        if not has_subtask(model, subtask):
            pytest.skip(f"`tltk {model} {subtask}` does not exist yet (not listed by `tltk {model} --help`)")
    if model not in KITS:
        pytest.fail(f"{model} has the subtasks {', '.join(subtasks)} but no ModelKit in tests/reliability/conftest.py; "
                    "add one so the reliability suite covers it")
    return KITS[model]


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The suite's scratch folder."""
    return tmp_path_factory.mktemp("reliability")


_PREPARED: dict[str, Prepared] = {}
_REFERENCES: dict[str, Reference] = {}


def convert_argvs(kit: ModelKit, data: Path, records: Path) -> list[list[str]]:
    """The ``tltk <model> dataset_convert`` command lines that convert ``data`` into ``records``."""
    return [[kit.model, "dataset_convert"] + [a.format(data=data, records=records) for a in argv]
            for argv in kit.convert_argvs]


def prepare(model: str, workspace: Path) -> Prepared:
    """Synthesize and convert the model's tiny dataset once per session."""
    if model in _PREPARED:
        return _PREPARED[model]
    kit = require(model, "dataset_convert", "train")
    root = workspace / model
    data = root / "data" / kit.data_format
    records = root / "data" / "tfrecords"
    result = run_inprocess(["dataset", "synthesize", "--format", kit.data_format, "-o", str(data), "-n",
                            str(kit.num_images), "--image_size", f"{kit.image_size[0]}x{kit.image_size[1]}",
                            "--seed", "7", "--workers", "1"])
    assert_clean_failure(result, 0, what="synthesize")
    for argv in convert_argvs(kit, data, records):
        assert_clean_failure(run_inprocess(argv), 0, what=" ".join(argv))
    spec = root / "train_spec.txt"
    spec.write_text((REPO / kit.train_spec).read_text(encoding="utf-8"), encoding="utf-8")
    _PREPARED[model] = Prepared(kit, root, spec, data, records)
    return _PREPARED[model]


@pytest.fixture(scope="session")
def prepared(model: str, workspace: Path) -> Prepared:
    """The model's tiny project (synthetic data converted, training spec in place)."""
    return prepare(model, workspace)


def reference_run(prep: Prepared) -> Reference:
    """Train once without interruption; every interrupted run must end with these weights."""
    model = prep.kit.model
    if model in _REFERENCES:
        return _REFERENCES[model]
    results = prep.root / "reference"
    result = run(prep.train_argv(results), prep.root)
    assert_run_ok(result, "reference training run")
    model_file = results / "model.tlt"
    ref = Reference(results, model_file, model_weights(model_file))
    for folder in sorted((results / "checkpoints").iterdir()):
        if FINAL_CHECKPOINT.match(folder.name):
            content = checkpoint_content(folder)
            ref.checkpoints[folder.name] = content["weights"]
            ref.states[folder.name] = content["state"]
    assert len(ref.checkpoints) == prep.kit.num_cycles, sorted(ref.checkpoints)
    _REFERENCES[model] = ref
    return ref


@pytest.fixture(scope="session")
def reference(prepared: Prepared) -> Reference:
    """The model's uninterrupted reference training run."""
    return reference_run(prepared)


def inference_spec_for(prepared: Prepared, reference: Reference) -> Path:
    """A DetectNet_v2 inference spec for the reference model (its classes and input size), written for
    models that have an ``inference`` subtask."""
    from tltk.modelfile.container import read_metadata

    spec = prepared.root / "inference_spec.txt"
    if not spec.exists() and has_subtask(prepared.kit.model, "inference"):
        classes = read_metadata(reference.model_file)["class_names"]
        w, h = prepared.kit.image_size
        lines = ["inferencer_config {"] + [f'  target_classes: "{c}"' for c in classes] + [
            f"  image_width: {w}", f"  image_height: {h}", "  image_channels: 3", "  batch_size: 4",
            f'  tlt_config {{ model: "{reference.model_file}" }}', "}", "bbox_handler_config {",
            "  kitti_dump: true", "  disable_overlay: false", "  overlay_linewidth: 2",
            '  classwise_bbox_handler_config { key: "default" value { confidence_model: "aggregate_cov"',
            "    bbox_color { R: 255 G: 0 B: 0 }",
            "    clustering_config { clustering_algorithm: NMS coverage_threshold: 0.005 nms_iou_threshold: 0.4",
            "      nms_confidence_threshold: 0.2 minimum_bounding_box_height: 4 } } }", "}"]
        spec.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return spec




@pytest.fixture(scope="session")
def inference_spec(prepared: Prepared, reference: Reference) -> Path:
    """:func:`inference_spec_for` the model's reference run."""
    return inference_spec_for(prepared, reference)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.section("reliability figures")
    for name in sorted(STATS):
        terminalreporter.write_line(f"{name}: {STATS[name]}")
    for name in sorted(FIGURES):
        terminalreporter.write_line(f"{name}: {FIGURES[name]:.3g}")
    target = os.environ.get("TLTK_RELIABILITY_REPORT")
    if target:
        report = {**dict(sorted(STATS.items())), **dict(sorted(FIGURES.items()))}
        Path(target).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


@pytest.fixture(scope="session")
def rel() -> Any:
    """This module: the suite's helpers (``rel.run``, ``rel.run_inprocess``, ``rel.assert_clean_failure``...)."""
    return sys.modules[__name__]
