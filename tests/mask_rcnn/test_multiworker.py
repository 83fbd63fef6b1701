"""MaskRCNN under MultiWorkerMirroredStrategy: two local CPU worker processes end with identical weights."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest


def _experiments() -> Any:
    name = "_mrcnn_experiments"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("_experiments.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_workers_train_maskrcnn_to_identical_weights(tmp_path: Path) -> None:
    # 2 cycles of 2 steps, global batch 2 x 2 workers; no validation (the chief alone would run it).
    spec = _experiments().experiment(tmp_path / "data", num_images=12, total_steps=4, num_steps_per_eval=2,
                                     data_config__validation_file_pattern=None)
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    script = Path(__file__).with_name("multiworker_worker.py")
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
                   TLTK_NO_PROGRESS="1", CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="2")
        procs.append(subprocess.Popen([sys.executable, str(script), str(spec), str(tmp_path / f"run{index}"),
                                       str(tmp_path / f"w{index}.npz")], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-4000:]
        assert re.search(r"worker done: 4 steps, loss \d", out), out[-2000:]
    w0, w1 = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    assert sorted(w0.files) == sorted(w1.files) and len(w0.files) > 100
    # Gradients are all-reduced: every trained weight is the same on both workers.  BatchNorm's
    # moving statistics follow each worker's own images (as with TAO's Horovod); the chief's are saved.
    statistics = [n for n in w0.files if n.endswith(("/moving_mean", "/moving_variance"))]
    assert len(statistics) > 20
    for name in sorted(set(w0.files) - set(statistics)):
        np.testing.assert_allclose(w0[name], w1[name], rtol=0, atol=1e-6, err_msg=name)
    from tltk.mask_rcnn import load_layers
    from tltk.modelfile.container import load_keras_model

    load_layers()
    saved, _ = load_keras_model(tmp_path / "run0" / "model.tlt")
    for weight in saved.weights:
        np.testing.assert_array_equal(np.asarray(weight), w0[weight.path], err_msg=weight.path)
    # Only the chief (worker 0) writes the run's files.
    assert (tmp_path / "run0" / "model.tlt").is_file()
    assert not (tmp_path / "run1" / "model.tlt").exists()
    status = [json.loads(line) for line in (tmp_path / "run0" / "status.json").read_text().splitlines()]
    assert status[-1]["status"] == "SUCCESS"
    logs = [line for line in outputs[0].splitlines() if "samples/sec" in line]
    assert logs and "step 4/4" in logs[-1]
