"""TF Model Garden's Mask R-CNN as the benchmarks' peer: its virtual environment, settings and runner.

Used by ``benchmarks/mask_rcnn_inference.py`` and ``benchmarks/mask_rcnn_train.py``.  Model Garden
(``tf-models-official``) needs other TensorFlow and Keras versions than tltk, so it runs in a
virtual environment of its own; each benchmark sends it a script and a JSON document of settings
and reads one JSON line back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

PEER_PACKAGE = "tf-models-official"
DEFAULT_PEER_VENV = Path.home() / ".cache" / "tltk-bench" / "tf-models"

#: Script lines that build Model Garden's ``maskrcnn_resnetfpn_coco`` experiment with the network
#: of a tltk spec (the settings of :func:`model_settings` in ``s``); leaves ``params`` and ``model``.
MODEL_CONFIG = textwrap.dedent('''
    s = json.loads(sys.argv[1])
    params = exp_factory.get_exp_config("maskrcnn_resnetfpn_coco")
    model = params.task.model
    model.num_classes = s["num_classes"]
    model.input_size = [s["height"], s["width"], 3]
    model.backbone.resnet.model_id = s["depth"]
    model.min_level, model.max_level = s["min_level"], s["max_level"]
    model.anchor.num_scales = s["num_scales"]
    model.anchor.aspect_ratios = s["aspect_ratios"]
    model.anchor.anchor_size = s["anchor_scale"]
    model.rpn_head.num_convs = 1
    model.detection_head.num_convs = 0  # TAO's box head: two fully connected layers
    model.detection_head.num_fcs = 2
    model.detection_head.fc_dims = s["mlp_dim"]
''')


def model_settings(params: Any) -> dict[str, Any]:
    """The settings :data:`MODEL_CONFIG` reads, from a MaskRCNN task's resolved ``params``."""
    return {"depth": params.nlayers, "height": params.image_size[0], "width": params.image_size[1],
            "num_classes": params.num_classes, "min_level": params.min_level, "max_level": params.max_level,
            "num_scales": params.num_scales, "aspect_ratios": [x / y for x, y in params.aspect_ratios],
            "anchor_scale": params.anchor_scale, "mlp_dim": params.fast_rcnn_mlp_head_dim}


def peer_python(venv: Path) -> tuple[Path | None, str]:
    """The peer venv's python with tf-models-official installed, or (None, why not)."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import official.vision"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python, ""
    try:
        if not python.exists():
            venv.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        install = subprocess.run([str(python), "-m", "pip", "install", "--retries", "1", "--timeout", "15",
                                  PEER_PACKAGE], capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"could not create the virtual environment {venv}: {exc}"
    if install.returncode != 0:
        text = install.stdout + install.stderr
        offline = any(s in text for s in ("NewConnectionError", "Temporary failure in name resolution",
                                          "Network is unreachable", "No matching distribution found",
                                          "Could not find a version"))
        reason = "no network: pip could not install " + PEER_PACKAGE if offline else \
            f"pip install {PEER_PACKAGE} failed: {text.strip().splitlines()[-1] if text.strip() else 'no output'}"
        return None, reason
    if subprocess.run(check, capture_output=True).returncode != 0:
        return None, f"{PEER_PACKAGE} installed but official.vision does not import"
    return python, ""


def thread_env(threads: int) -> dict[str, str]:
    """Environment variables giving TensorFlow ``threads`` intra- and inter-op threads (0: none)."""
    if threads <= 0:
        return {}
    return {"TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": str(threads),
            "OMP_NUM_THREADS": str(threads)}


def run_script(python: Path, script: str, settings: dict[str, Any], threads: int,
               timeout: float) -> tuple[dict[str, Any] | None, str]:
    """Run ``script`` in the peer's python with ``settings`` as argv[1]: its last stdout line as JSON,
    or (None, why not)."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(script)
    try:
        done = subprocess.run([str(python), fh.name, json.dumps(settings)], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, **thread_env(threads)})
    finally:
        os.remove(fh.name)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"Model Garden run failed: {last}"
    return json.loads(done.stdout.strip().splitlines()[-1]), ""
