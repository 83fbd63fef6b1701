"""TensorFlow's native log lines are kept off the console (and in the debug log) while train and
export run; everything else written to stderr passes through unchanged and in order."""

from __future__ import annotations

import logging
import os

from tltk.console import NATIVE_LOG_LINE, native_log_to_debug

GRAPPLER = (b'W0000 00:00:1796670632.447965   24747 op_level_cost_estimator.cc:699] Error in PredictCost() '
            b'for the op: op: "CropAndResize"')


def test_native_log_lines_are_recognised_and_others_are_not() -> None:
    assert NATIVE_LOG_LINE.match(GRAPPLER)
    assert NATIVE_LOG_LINE.match(b"I0000 00:00:1796635829.969807    2697 devices.cc:67] Number of eligible GPUs")
    assert NATIVE_LOG_LINE.match(b"WARNING: All log messages before absl::InitializeLog() is called")
    assert not NATIVE_LOG_LINE.match(b"INFO: step 50/300: RPN score loss: 0.37910")
    assert not NATIVE_LOG_LINE.match(b"W0000 is not a log line without its source location")


def test_the_block_moves_native_lines_to_debug_and_passes_the_rest(capfd, caplog) -> None:
    root = logging.getLogger()
    console = logging.StreamHandler()
    console.setLevel(logging.INFO)  # not --verbose: the filter is on
    root.addHandler(console)
    try:
        with caplog.at_level(logging.DEBUG, logger="tltk.console"), native_log_to_debug():
            os.write(2, b"INFO: step 1/2\n" + GRAPPLER + b"\nINFO: step 2/2\n")
            os.write(2, b"progress 50%\r")
    finally:
        root.removeHandler(console)
    err = capfd.readouterr().err
    assert err == "INFO: step 1/2\nINFO: step 2/2\nprogress 50%\r"
    assert "Error in PredictCost()" in caplog.text and "TensorFlow native log" in caplog.text


def test_verbose_runs_see_native_lines_as_they_come(capfd) -> None:
    root = logging.getLogger()
    console = logging.StreamHandler()
    console.setLevel(logging.DEBUG)  # --verbose
    root.addHandler(console)
    try:
        with native_log_to_debug():
            os.write(2, GRAPPLER + b"\n")
    finally:
        root.removeHandler(console)
    assert "Error in PredictCost()" in capfd.readouterr().err
