"""Choosing the ``tf.distribute`` strategy from the CLI flags and the environment."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any

from tltk.errors import MissingDependencyError, UsageError

log = logging.getLogger(__name__)


def make_strategy(gpus: int = 1, gpu_index: Sequence[int] | None = None) -> Any:
    """Return the distribution strategy for a training run.

    * ``TF_CONFIG`` set with more than one worker: ``MultiWorkerMirroredStrategy`` (each worker
      process runs the same command; rank 0 writes results).
    * ``--gpus N`` > 1 or ``--gpu_index``: ``MirroredStrategy`` over those GPUs.
    * otherwise TensorFlow's default strategy (one device).

    Args:
        gpus: number of GPUs requested (``--gpus``).
        gpu_index: explicit GPU ids (``--gpu_index``); overrides ``gpus``.

    Raises:
        MissingDependencyError: more GPUs were requested than this machine has (exit code 3).
        UsageError: ``gpus`` < 1.
    """
    import tensorflow as tf

    if gpus < 1:
        raise UsageError(f"--gpus must be >= 1, got {gpus}")
    tf_config = os.environ.get("TF_CONFIG")
    if tf_config:
        try:
            cluster = json.loads(tf_config).get("cluster", {})
        except ValueError as exc:
            raise UsageError(f"TF_CONFIG is not valid JSON: {exc}") from exc
        workers = len(cluster.get("worker", []))
        if workers > 1:
            log.info("multi-worker training over %d workers (TF_CONFIG)", workers)
            return tf.distribute.MultiWorkerMirroredStrategy()
    wanted = list(gpu_index) if gpu_index else (list(range(gpus)) if gpus > 1 else [])
    if not wanted:
        return tf.distribute.get_strategy()
    available = tf.config.list_physical_devices("GPU")
    missing = [i for i in wanted if i >= len(available)]
    if missing:
        raise MissingDependencyError(
            f"GPU(s) {missing} requested but this machine has {len(available)} GPU(s) visible to TensorFlow",
            hint="drop --gpus/--gpu_index to train on one device, or run on a machine with more GPUs")
    devices = [f"/gpu:{i}" for i in wanted]
    log.info("mirrored training over %s", ", ".join(devices))
    return tf.distribute.MirroredStrategy(devices=devices)


def is_chief(strategy: Any) -> bool:
    """Whether this process writes results (always true outside multi-worker training)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "cluster_spec", None):
        return True
    task_type = getattr(resolver, "task_type", None)
    task_id = getattr(resolver, "task_id", 0)
    if task_type in (None, "chief"):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief
