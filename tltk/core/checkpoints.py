"""Atomic training checkpoints and automatic resume.

A checkpoint is a folder ``<results>/checkpoints/epoch-0007/`` holding the network weights
(``network.weights.h5``), the optimizer variables (``optimizer.npz``) and ``state.json``
(cycle, step, task state and the network's :func:`network_signature`).  It is written under a
temporary name and renamed when complete, and ``state.json`` is written last, so an
interrupted write never looks like a checkpoint.

Before a run resumes, the signature of the checkpoint is compared with the network the spec
builds now (:func:`check_signature`): a results folder reused with another spec (other classes,
another backbone or input size) stops with a sentence saying what differs, not with Keras'
weight-loading errors.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tltk.errors import InvalidInputError
from tltk.fileio import atomic_output

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(?P<kind>[a-z]+)-(?P<cycle>\d{4,})$")
STATE_FILE = "state.json"
WEIGHTS_FILE = "network.weights.h5"
OPTIMIZER_FILE = "optimizer.npz"


class CheckpointMismatchError(InvalidInputError):
    """The results folder holds checkpoints of another network than the one built now (exit code 2)."""


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


def _shape_text(shape: Sequence[Any]) -> str:
    return "x".join("?" if d is None else str(int(d)) for d in shape)


def network_signature(network: Any, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """What identifies a network's architecture, for comparing a checkpoint with a new network.

    Args:
        network: a built Keras model.
        class_names: the task's class names (``model_metadata()["class_names"]``), if any.

    Returns:
        JSON-able ``{"input": "CxHxW", "outputs": ["CxHxW", ...], "num_weights": int,
        "parameters": int, "weights_sha256": hex digest of the weight shapes in order,
        "class_names": [...] or None}``.
    """
    # Shapes in order, not names: Keras numbers unnamed layers per process.
    weights = [tuple(int(d) for d in w.shape) for w in network.weights]
    digest = hashlib.sha256("\n".join(_shape_text(s) for s in weights).encode("utf-8")).hexdigest()
    return {
        "input": _shape_text(network.inputs[0].shape[1:]),
        "outputs": [_shape_text(t.shape[1:]) for t in network.outputs],
        "num_weights": len(weights),
        "parameters": int(sum(int(np.prod(s)) for s in weights)),
        "weights_sha256": digest,
        "class_names": [str(c) for c in class_names] if class_names else None,
    }


def check_signature(info: CheckpointInfo, current: Mapping[str, Any], results_dir: str) -> None:
    """Stop when a checkpoint was written by another network than the one built now.

    Args:
        info: the checkpoint to resume from.
        current: :func:`network_signature` of the network the spec builds now.
        results_dir: the results folder, for the message.

    Raises:
        CheckpointMismatchError: the classes, the input size, the output shapes or the weights differ
            (exit code 2); the message says what differs and how to start over.
    """
    saved = info.state.get("signature")
    if not isinstance(saved, dict):
        return  # written before signatures were recorded: restore_checkpoint checks what it can
    differences = []
    if saved.get("class_names") and current.get("class_names") and saved["class_names"] != current["class_names"]:
        differences.append(f"classes {', '.join(saved['class_names'])} there, {', '.join(current['class_names'])} "
                           "in this spec")
    if saved.get("input") != current.get("input"):
        differences.append(f"input {saved.get('input')} (C x H x W) there, {current.get('input')} in this spec")
    if saved.get("outputs") != current.get("outputs"):
        differences.append(f"outputs {', '.join(saved.get('outputs') or [])} there, "
                           f"{', '.join(current.get('outputs') or [])} in this spec")
    if not differences and saved.get("weights_sha256") != current.get("weights_sha256"):
        differences.append(f"another architecture ({saved.get('num_weights')} weight tensors, "
                           f"{saved.get('parameters')} parameters there; {current.get('num_weights')} and "
                           f"{current.get('parameters')} in this spec)")
    if differences:
        raise CheckpointMismatchError(
            f"{results_dir} holds checkpoints of a different network than this spec builds ({'; '.join(differences)})",
            hint="train into another folder (-r), or pass --no_resume to start over in this one (its checkpoints "
                 "are removed)")


def save_checkpoint(results_dir: str, cycle: int, step: int, network: Any, optimizer: Any,
                    task_state: dict[str, Any], cycle_name: str = "epoch", keep: int | None = None,
                    signature: Mapping[str, Any] | None = None) -> str:
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
        signature: the network's :func:`network_signature`, checked before resuming.

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
        if signature is not None:
            state["signature"] = dict(signature)
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


def remove_checkpoints(results_dir: str) -> int:
    """Delete every checkpoint of a run (``--no_resume``); returns how many were removed."""
    found = list_checkpoints(results_dir)
    for info in found:
        shutil.rmtree(info.path, ignore_errors=True)
    return len(found)


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

    Raises:
        CheckpointMismatchError: the weights or optimizer variables do not fit (a checkpoint of
            another network; exit code 2).
    """
    hint = ("train into another folder (-r), or pass --no_resume to start over in this one (its checkpoints are "
            "removed)")
    try:
        network.load_weights(os.path.join(info.path, WEIGHTS_FILE))
    except ValueError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointMismatchError(f"checkpoint {info.path} does not fit the network this spec builds ({first})",
                                      hint=hint) from exc
    with np.load(os.path.join(info.path, OPTIMIZER_FILE)) as data:
        saved = [data[k] for k in sorted(data.files)]
    variables = list(optimizer.variables)
    if len(saved) != len(variables) or any(tuple(v.shape) != s.shape for v, s in zip(variables, saved)):
        raise CheckpointMismatchError(
            f"checkpoint {info.path} has {len(saved)} optimizer variables that do not fit this spec's optimizer "
            f"({len(variables)} variables); the spec changed since the run started", hint=hint)
    for var, value in zip(variables, saved):
        var.assign(value)
    return dict(info.state.get("task_state", {}))
