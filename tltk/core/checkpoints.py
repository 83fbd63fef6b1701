"""Atomic training checkpoints and automatic resume.

A checkpoint is a folder ``<results>/checkpoints/epoch-0007/`` holding the network weights
(``network.weights.h5``), the optimizer variables (``optimizer.npz``) and ``state.json``
(cycle, step, task state).  It is written under a temporary name and renamed when complete,
and ``state.json`` is written last, so an interrupted write never looks like a checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from typing import Any

import numpy as np

from tltk.fileio import atomic_output

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(?P<kind>[a-z]+)-(?P<cycle>\d{4,})$")
STATE_FILE = "state.json"
WEIGHTS_FILE = "network.weights.h5"
OPTIMIZER_FILE = "optimizer.npz"


@dataclass(frozen=True)
class CheckpointInfo:
    """A complete checkpoint on disk.

    Attributes:
        path: the checkpoint folder.
        cycle: cycles completed when it was written (1-based epoch number for DetectNet_v2).
        step: optimizer steps completed.
        state: the full ``state.json`` content.
    """

    path: str
    cycle: int
    step: int
    state: dict[str, Any]


def checkpoint_dir(results_dir: str) -> str:
    """Folder holding the checkpoints of a run."""
    return os.path.join(results_dir, "checkpoints")


def save_checkpoint(results_dir: str, cycle: int, step: int, network: Any, optimizer: Any,
                    task_state: dict[str, Any], cycle_name: str = "epoch", keep: int | None = None) -> str:
    """Write a checkpoint atomically.

    Args:
        results_dir: the run's results folder.
        cycle: cycles completed.
        step: optimizer steps completed.
        network: the Keras network (its weights are saved).
        optimizer: the Keras optimizer (all its variables are saved, iterations included).
        task_state: JSON-able task state (auto-weighting, cost-scaling exponent...).
        cycle_name: "epoch" or "cycle", used in the folder name.
        keep: keep only this many newest checkpoints (None keeps all).

    Returns:
        The checkpoint folder.
    """
    base = checkpoint_dir(results_dir)
    os.makedirs(base, exist_ok=True)
    final = os.path.join(base, f"{cycle_name}-{cycle:04d}")
    with atomic_output(final, directory=True) as tmp:
        network.save_weights(os.path.join(tmp, WEIGHTS_FILE))
        opt_vars = {f"v{i:05d}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)}
        np.savez(os.path.join(tmp, OPTIMIZER_FILE), **opt_vars)
        state = {"cycle": int(cycle), "step": int(step), "cycle_name": cycle_name,
                 "num_optimizer_variables": len(opt_vars), "task_state": task_state}
        with open(os.path.join(tmp, STATE_FILE), "w", encoding="utf-8") as fh:
            json.dump(state, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
    if keep is not None:
        for old in list_checkpoints(results_dir)[:-keep]:
            shutil.rmtree(old.path, ignore_errors=True)
    log.debug("checkpoint written: %s", final)
    return final


def list_checkpoints(results_dir: str) -> list[CheckpointInfo]:
    """Complete checkpoints of a run, oldest first (partial or damaged ones are skipped)."""
    base = checkpoint_dir(results_dir)
    if not os.path.isdir(base):
        return []
    found = []
    for name in os.listdir(base):
        if not _NAME.match(name):
            continue
        path = os.path.join(base, name)
        state_path = os.path.join(path, STATE_FILE)
        if not (os.path.isfile(state_path) and os.path.isfile(os.path.join(path, WEIGHTS_FILE))):
            log.warning("ignoring incomplete checkpoint %s", path)
            continue
        try:
            with open(state_path, encoding="utf-8") as fh:
                state = json.load(fh)
        except (OSError, ValueError) as exc:
            log.warning("ignoring damaged checkpoint %s (%s)", path, exc)
            continue
        found.append(CheckpointInfo(path=path, cycle=int(state["cycle"]), step=int(state["step"]), state=state))
    return sorted(found, key=lambda c: c.step)


def latest_checkpoint(results_dir: str) -> CheckpointInfo | None:
    """The newest complete checkpoint, or None."""
    found = list_checkpoints(results_dir)
    return found[-1] if found else None


def restore_checkpoint(info: CheckpointInfo, network: Any, optimizer: Any) -> dict[str, Any]:
    """Load weights and optimizer variables from ``info``.

    The optimizer must already be built for ``network.trainable_variables`` so that its
    variable list matches the saved one.

    Returns:
        The saved task state.
    """
    network.load_weights(os.path.join(info.path, WEIGHTS_FILE))
    with np.load(os.path.join(info.path, OPTIMIZER_FILE)) as data:
        saved = [data[k] for k in sorted(data.files)]
    variables = list(optimizer.variables)
    if len(saved) != len(variables):
        raise ValueError(
            f"checkpoint {info.path} has {len(saved)} optimizer variables, the optimizer has {len(variables)}; "
            "was the spec changed since the run started?")
    for var, value in zip(variables, saved):
        var.assign(value)
    return dict(info.state.get("task_state", {}))
