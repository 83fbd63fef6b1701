"""One worker of the two-process MaskRCNN MultiWorkerMirroredStrategy test (run by test_multiworker.py).

Usage: python multiworker_worker.py SPEC RESULTS_DIR WEIGHTS_OUT   (TF_CONFIG set by the caller)
"""

from __future__ import annotations

import logging
import sys

import keras
import numpy as np

from tltk.core.trainer import train
from tltk.models import load_spec, make_task


def main(spec: str, results_dir: str, weights_out: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    task = make_task("mask_rcnn", load_spec(spec, model="mask_rcnn", kind="experiment"))
    keras.utils.set_random_seed(task.random_seed())

    class Dump(keras.callbacks.Callback):
        def on_train_end(self, logs: object = None) -> None:
            np.savez(weights_out, **{w.path: np.asarray(w) for w in self.model.network.weights})

    task.callbacks = lambda: [Dump()]
    report = train(task, results_dir)
    print(f"worker done: {report.steps} steps, loss {report.final_metrics.get('loss')}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
