"""One worker of the two-process MultiWorkerMirroredStrategy test (run by test_distribution.py).

Usage: python multiworker_worker.py RESULTS_DIR WEIGHTS_OUT   (TF_CONFIG set by the caller)
"""

from __future__ import annotations

import os
import sys

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from test_trainer import ToyTask  # noqa: E402

from tltk.core.trainer import train  # noqa: E402


class DumpingToyTask(ToyTask):
    def __init__(self, weights_out: str) -> None:
        super().__init__(num_cycles=2)
        self.weights_out = weights_out

    def callbacks(self):
        task = self

        class Dump(keras.callbacks.Callback):
            def on_train_end(self, logs=None):
                np.savez(task.weights_out, *[np.asarray(w) for w in self.model.network.get_weights()])

        return [Dump()]


if __name__ == "__main__":
    results_dir, weights_out = sys.argv[1], sys.argv[2]
    train(DumpingToyTask(weights_out), results_dir)
