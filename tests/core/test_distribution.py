"""Strategy selection, and multi-worker training with two local CPU worker processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tltk.core.distribution import is_chief, make_strategy
from tltk.errors import MissingDependencyError, UsageError


def test_default_strategy_on_one_device(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = make_strategy(1, None)
    assert strategy.num_replicas_in_sync == 1
    assert is_chief(strategy)


def test_more_gpus_than_available_is_exit_code_3(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has GPUs")
    with pytest.raises(MissingDependencyError) as err:
        make_strategy(2, None)
    assert err.value.exit_code == 3
    with pytest.raises(MissingDependencyError):
        make_strategy(1, [0])


def test_bad_values(monkeypatch):
    with pytest.raises(UsageError):
        make_strategy(0, None)
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(UsageError, match="TF_CONFIG"):
        make_strategy(1, None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_workers_end_with_identical_weights(tmp_path):
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    script = Path(__file__).with_name("multiworker_worker.py")
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
                   TLTK_NO_PROGRESS="1", CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="2")
        procs.append(subprocess.Popen([sys.executable, str(script), str(tmp_path / f"run{index}"),
                                       str(tmp_path / f"w{index}.npz")], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    w0 = np.load(tmp_path / "w0.npz")
    w1 = np.load(tmp_path / "w1.npz")
    assert len(w0.files) == len(w1.files) > 0
    for name in w0.files:
        np.testing.assert_allclose(w0[name], w1[name], rtol=0, atol=1e-6)
    # Only the chief (worker 0) writes the run's files.
    assert (tmp_path / "run0" / "model.tlt").is_file()
    assert not (tmp_path / "run1" / "model.tlt").exists()
