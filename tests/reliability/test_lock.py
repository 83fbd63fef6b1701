"""Issue 16, item 6: two ``train`` runs pointed at the same results folder.

While one run trains into a folder, a second ``train -r SAME_FOLDER`` must refuse at once with
exit code 2 and a message that says the folder is locked and names it, instead of both writing
checkpoints.
"""

from __future__ import annotations

import signal
import time


def _longer(prepared) -> list[str]:
    """Overrides that make the first run train far longer than the test lasts."""
    field = {"epoch": "training_config.num_epochs=200", "cycle": "total_steps=2000"}[prepared.kit.cycle_name]
    return ["--set", field]


def _shorter(prepared) -> list[str]:
    """Overrides that keep the second run short should it not be refused."""
    field = {"epoch": "training_config.num_epochs=1", "cycle": "total_steps=2"}[prepared.kit.cycle_name]
    return ["--set", field]


def test_second_train_on_the_same_results_folder_is_refused(model, prepared, rel, tmp_path):
    results = tmp_path / "results"
    log = tmp_path / "first.log"
    first = rel.start(prepared.train_argv(results, *_longer(prepared)), prepared.root, log=log)
    try:
        deadline = time.monotonic() + 120
        status = results / "status.json"
        while not (status.exists() and "STARTED" in status.read_text(encoding="utf-8")):
            assert first.poll() is None, f"the first run ended early: {log.read_text(encoding='utf-8')[-3000:]}"
            assert time.monotonic() < deadline, "the first run did not start training within 120 s"
            time.sleep(0.2)
        # One epoch: without a lock the second run would otherwise train the whole schedule.
        second = rel.run(prepared.train_argv(results, *_shorter(prepared)), prepared.root,
                         timeout=180)
        assert first.poll() is None, "the first run must still be training"
        assert second.returncode == 2, f"exit code {second.returncode}\n{second.stderr[-3000:]}"
        assert "locked" in second.stderr and str(results) in second.stderr, second.stderr[-3000:]
        assert rel.TRACEBACK not in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
