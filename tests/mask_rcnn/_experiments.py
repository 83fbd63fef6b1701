"""Tiny MaskRCNN experiments for the training, evaluation and inference tests (not collected).

* :func:`experiment` writes the battery's tiny spec (with field changes) next to a synthetic
  COCO set made by ``battery.make_dataset``;
* :func:`trained_model` trains one small model per test session (cached), exports it to ONNX
  and runs ``inference -l`` once, so that the evaluate, inference and parity tests share them.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"_mrcnn_{name}", _HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


battery = _load("battery")


def spec_text(**changes: Any) -> str:
    """The battery's tiny spec with top-level/``data_config``/``maskrcnn_config`` fields changed.

    A value of None removes the field; strings are quoted.  Fields not in the spec are added
    to the top level (``checkpoint="..."``) or to the block named by ``data_config__``/
    ``maskrcnn_config__`` prefixes (``maskrcnn_config__freeze_bn=True``).
    """
    text = battery.TINY_SPEC
    for key, value in changes.items():
        block, _, name = key.rpartition("__")
        rendered = None if value is None else (f'"{value}"' if isinstance(value, str) else
                                               str(value).lower() if isinstance(value, bool) else str(value))
        pattern = re.compile(rf"^(\s*){name}: .*$", re.MULTILINE)
        if pattern.search(text):
            text = pattern.sub("" if rendered is None else rf"\g<1>{name}: {rendered}", text, count=1)
        elif rendered is not None and block:
            text = text.replace(f"{block} {{\n", f"{block} {{\n  {name}: {rendered}\n", 1)
        elif rendered is not None:
            text = f"{name}: {rendered}\n" + text
    return text


def experiment(root: Path, num_images: int = 16, **changes: Any) -> Path:
    """Synthesize data under ``root`` (once) and write ``experiment.txt`` with ``changes``."""
    if not (root / "tfrecords").is_dir():
        battery.make_dataset(root, num_images=num_images)
    path = root / "experiment.txt"
    path.write_text(spec_text(**changes))
    return path


_TRAINED: dict[str, Any] = {}


def trained_model(tmp_path_factory: Any) -> dict[str, Any]:
    """One small trained model for the session: its run folder, ``.tlt``, ``.onnx`` and labels.

    The model trains for 8 steps (two evaluation periods of 4) from scratch: it localises nothing
    yet, but its detections have spread-out scores and non-empty masks, which is what the
    evaluate, inference and parity tests compare across backends.

    Returns:
        dict with ``root`` (data folder), ``spec``, ``run`` (the results folder), ``train_output``
        (the CLI's stdout: one JSON document), ``log_file``, ``tlt``, ``onnx`` and ``labels``
        (the folder ``tltk mask_rcnn inference -l -t 0`` wrote from the ``.tlt`` over the
        validation images).
    """
    if _TRAINED:
        return _TRAINED
    from click.testing import CliRunner

    from tltk.cli.app import cli

    root = tmp_path_factory.mktemp("mrcnn_trained")
    spec = experiment(root, total_steps=8, num_steps_per_eval=4, logging_frequency=2,
                      maskrcnn_config__test_detections_per_image=20)
    runner = CliRunner()
    env = {"TLTK_NO_PROGRESS": "1"}
    run, log_file = root / "run", root / "train.log"
    result = runner.invoke(cli, ["mask_rcnn", "train", "-e", str(spec), "-d", str(run), "--log_file", str(log_file),
                                 "--json"], env=env)
    assert result.exit_code == 0, result.output
    train_output = result.stdout
    tlt = run / "model.tlt"
    onnx = root / "model.onnx"
    result = runner.invoke(cli, ["mask_rcnn", "export", "-m", str(tlt), "-o", str(onnx), "-e", str(spec)], env=env)
    assert result.exit_code == 0, result.output
    labels = root / "labels"
    result = runner.invoke(cli, ["mask_rcnn", "inference", "-m", str(tlt), "-i", str(root / "coco" / "images" / "val"),
                                 "-o", str(root / "annotated"), "-l", str(labels), "-e", str(spec), "-t", "0"], env=env)
    assert result.exit_code == 0, result.output
    _TRAINED.update(root=root, spec=spec, run=run, train_output=train_output, log_file=log_file, tlt=tlt, onnx=onnx,
                    labels=labels)
    return _TRAINED
