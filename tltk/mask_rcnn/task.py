"""The MaskRCNN :class:`~tltk.core.task.Task`: spec, data, model, losses, COCO evaluation, deployment.

Step-based training on the shared trainer: a *cycle* is ``num_steps_per_eval`` steps; a
checkpoint is written and COCO bbox+segm validation runs after every cycle (and after the last
step); the run has ``ceil(total_steps / num_steps_per_eval)`` cycles.  The training forward is
the training graph of :func:`tltk.mask_rcnn.model.build_mask_rcnn` (ROIs sampled from the
ground truth inside the step); the inference network (input ``Input``, outputs
``generate_detections`` and ``mask_fcn_logits/BiasAdd``) is what is saved and exported.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tltk import __version__
from tltk.core.schedules import WarmupStepDecaySchedule
from tltk.core.task import CostScaling, DeepStreamRequest, Evaluation, ExportSignature, Predict, TrainingPlan
from tltk.data.images import Preprocessing
from tltk.errors import InvalidInputError, SpecError, UsageError
from tltk.mask_rcnn import spec as mrcnn_spec
from tltk.mask_rcnn.categories import CategoryMap
from tltk.mask_rcnn.losses import LOSS_NAMES, mask_rcnn_loss
from tltk.mask_rcnn.model import (
    DETECTIONS_LAYER,
    INPUT_NAME,
    MASK_OUTPUT_LAYER,
    ONNX_OUTPUT_NAMES,
    build_mask_rcnn,
    tao_weight_decay,
    training_inputs,
)
from tltk.mask_rcnn.params import MaskRCNNParams
from tltk.mask_rcnn.results import image_results
from tltk.mask_rcnn.sampling import RoiSampler
from tltk.spec import LoadedSpec, resolve_spec_path, resolved_text

log = logging.getLogger(__name__)

MODEL_KIND = "mask_rcnn"

#: TAO's MaskRCNN normalisation in 8-bit units: mean 255 * (0.485, 0.456, 0.406), std 255 * 0.224.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (57.12, 57.12, 57.12)

#: Layers whose output channels pruning keeps (TAO's list): the prediction layers of every head and
#: the FPN outputs (every level stays at 256 channels for the shared RPN head and the ROIAlign).
PROTECTED_LAYERS = ("rpn-class", "rpn-box", "class-predict", "box-predict", "mask_fcn_logits",
                    "post_hoc_d2", "post_hoc_d3", "post_hoc_d4", "post_hoc_d5", "p6", "p7", "p8")


class MaskRCNNTask:
    """The MaskRCNN :class:`~tltk.core.task.Task`.

    Args:
        spec: the loaded experiment spec, or None (prune, export without calibration, inference
            with a model that records its classes).
        key: key for sealed pretrained models.
        metadata: a model file's metadata (class names, category map, input shape).

    Raises:
        SpecError: not an experiment spec, or invalid settings.
        UsageError: neither a spec nor model metadata with the input shape.
    """

    model_kind = MODEL_KIND

    def __init__(self, spec: LoadedSpec | None = None, key: str | None = None,
                 metadata: Mapping[str, Any] | None = None) -> None:
        self.spec = spec
        self.key = key
        self.metadata = dict(metadata or {})
        self._data: Any = None
        self._training_model: keras.Model | None = None
        self._plan: TrainingPlan | None = None
        self.params: MaskRCNNParams | None = None
        self._category_map: CategoryMap | None = None
        if self.metadata.get("category_map"):
            self._category_map = CategoryMap.from_json(self.metadata["category_map"])
        if spec is None:
            shape = self.metadata.get("input_shape")
            if not shape:
                raise UsageError("MaskRCNN: this needs the experiment spec (-e) or a model file that records its "
                                 "input shape")
            c, h, w = (int(d) for d in shape)
            self.input_shape = (c, h, w)
            return
        if spec.kind != "experiment":
            raise SpecError(f"{spec.path} is a {spec.kind} spec; this needs an experiment spec")
        self.experiment = spec.message
        self.params = MaskRCNNParams.from_experiment(self.experiment)
        h, w = self.params.image_size
        self.input_shape = (3, int(h), int(w))

    # ---- spec and data ------------------------------------------------------------------------
    @property
    def data(self) -> Any:
        """The spec's :class:`~tltk.mask_rcnn.dataloader.MaskRCNNData` (UsageError without a spec)."""
        if self.spec is None:
            raise UsageError("MaskRCNN: this needs the experiment spec (-e/--experiment_spec) for its data")
        if self._data is None:
            from tltk.mask_rcnn.dataloader import MaskRCNNData

            self._data = MaskRCNNData(self.experiment, spec_dir=self.spec.spec_dir,
                                      category_map=self._category_map)
        return self._data

    @property
    def category_map(self) -> CategoryMap:
        """COCO category id <-> class index, from the model file or the spec's ``val_json_file``."""
        if self._category_map is None:
            self._category_map = self.data.category_map
        return self._category_map

    @property
    def class_names(self) -> list[str]:
        """Class names by class index without the background."""
        if self._category_map is None and self.spec is None:
            return [str(n) for n in self.metadata.get("class_names") or ()]
        return list(self.category_map.class_names[1:])

    def _require_params(self) -> MaskRCNNParams:
        if self.params is None:
            raise UsageError("MaskRCNN: this needs the experiment spec (-e/--experiment_spec)")
        return self.params

    def random_seed(self) -> int:
        return int(self.experiment.seed)

    # ---- training -------------------------------------------------------------------------------
    def training_plan(self, num_replicas: int) -> TrainingPlan:
        """Cycles of ``num_steps_per_eval`` steps covering ``total_steps`` (or epochs x examples)."""
        exp = self.experiment
        total = mrcnn_spec.total_steps(exp)
        per_eval = int(exp.num_steps_per_eval) or total
        per_cycle = min(per_eval, total)
        cycles = max(math.ceil(total / per_cycle), 1)
        if cycles * per_cycle != total:
            log.warning("total_steps %d is not a multiple of num_steps_per_eval %d: training runs %d steps "
                        "(%d evaluation periods)", total, per_cycle, cycles * per_cycle, cycles)
        has_val = bool(exp.data_config.validation_file_pattern) and bool(exp.data_config.val_json_file)
        self._plan = TrainingPlan(steps_per_cycle=per_cycle, num_cycles=cycles, checkpoint_every=1,
                                  validate_after=frozenset(range(1, cycles + 1)) if has_val else frozenset(),
                                  cycle_name="cycle", batch_size=int(exp.train_batch_size) * max(num_replicas, 1),
                                  log_every_steps=int(exp.logging_frequency),
                                  loss_display_names=self.loss_display_names())
        return self._plan

    def loss_display_names(self) -> tuple[tuple[str, str], ...]:
        """TAO's names of the logged losses, in TAO's order: ``(log key, name)`` pairs.

        ``regularization_loss`` is TAO's ``L2 loss`` (``L1 loss`` or ``L1+L2 loss`` when
        ``l1_weight_decay`` is set); ``Mask loss`` appears with the mask head only.
        """
        exp = self.experiment
        l1, l2 = float(exp.l1_weight_decay) > 0, float(exp.l2_weight_decay) > 0
        decay = "L1+L2 loss" if l1 and l2 else "L1 loss" if l1 else "L2 loss"
        names = [("rpn_score_loss", "RPN score loss"), ("rpn_box_loss", "RPN box loss"),
                 ("fast_rcnn_class_loss", "FastRCNN class loss"), ("fast_rcnn_box_loss", "FastRCNN box loss")]
        if self._require_params().include_mask:
            names.append(("mask_loss", "Mask loss"))
        names += [("regularization_loss", decay), ("loss", "Total loss")]
        return tuple(names)

    def build_network(self) -> keras.Model:
        """Build the model: from ``pruned_model_path`` (a pruned model's layers, widths and weights),
        or from the spec with ``checkpoint`` weights loaded by layer name."""
        from tltk.core.weights import load_weights_by_name

        params = self._require_params()
        exp = self.experiment
        regularizer = tao_weight_decay(float(exp.l1_weight_decay), float(exp.l2_weight_decay))
        if exp.pruned_model_path:
            inference, training = self._pruned_network(params, regularizer)
            self._training_model = training
            return inference
        inference, training = build_mask_rcnn(params, kernel_regularizer=regularizer)
        source = exp.checkpoint
        if source:
            path = resolve_spec_path(self.spec, str(source)) if self.spec is not None else str(source)
            exclude = self._skipped_layers(inference)
            report = load_weights_by_name(inference, path, key=self.key, exclude=exclude)
            log.info("%s: %d layers loaded, %d skipped (skip_checkpoint_variables), %d mismatched, %d not in the file",
                     path, len(report.loaded), len(report.excluded), len(report.mismatched), len(report.skipped))
        self._training_model = training
        return inference

    def _pruned_network(self, params: MaskRCNNParams, regularizer: Any) -> tuple[keras.Model, keras.Model]:
        """Both graphs around the layers of the ``pruned_model_path`` model (``tltk mask_rcnn prune``)."""
        from tltk.mask_rcnn.model import rebuild_mask_rcnn
        from tltk.modelfile.container import load_keras_model

        exp = self.experiment
        path = resolve_spec_path(self.spec, str(exp.pruned_model_path)) if self.spec is not None \
            else str(exp.pruned_model_path)
        network, info = load_keras_model(path, key=self.key)
        kind = info.get("model_kind") if isinstance(info, Mapping) else None
        if kind not in (None, MODEL_KIND) or DETECTIONS_LAYER not in {layer.name for layer in network.layers}:
            raise SpecError(f"pruned_model_path: {path} is not a MaskRCNN model ({kind or network.name})",
                            hint="give the .tlt that `tltk mask_rcnn prune` wrote")
        if exp.checkpoint:
            log.warning("checkpoint %s is not loaded: pruned_model_path %s holds the weights", exp.checkpoint, path)
        try:
            inference, training = rebuild_mask_rcnn(network, params, kernel_regularizer=regularizer)
        except SpecError as exc:
            raise SpecError(f"pruned_model_path {path}: {exc.message}", hint=exc.hint) from exc
        log.info("%s: retraining the pruned model (%d parameters)", path, inference.count_params())
        return inference, training

    def _skipped_layers(self, network: keras.Model) -> list[str]:
        pattern = str(self.experiment.skip_checkpoint_variables)
        if not pattern:
            return []
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise SpecError(f"skip_checkpoint_variables: {pattern!r} is not a regular expression ({exc})") from exc
        # TAO searches variable names ("class-predict/kernel"); a layer is skipped when its name
        # or the path of one of its weights matches.
        return [layer.name for layer in network.layers
                if regex.search(layer.name) or any(regex.search(w.path) for w in layer.weights)]

    def training_forward(self, network: keras.Model, images: Any, targets: Any, training: bool) -> Any:
        """The training graph (same weights as ``network``): proposals, ROI sampling, heads."""
        if self._training_model is None:
            raise UsageError("MaskRCNN: build_network() must run before training")
        return self._training_model(training_inputs(images, targets), training=training)

    def train_dataset(self, start_cycle: int, global_batch_size: int) -> tf.data.Dataset:
        """The training stream from ``start_cycle`` on, in global batches.

        Under a multi-worker strategy every worker builds this same deterministic stream and
        keeps its share of each global batch (DATA sharding): file sharding would fail with
        fewer TFRecord files than workers and would change the stream with the worker count.
        """
        plan = self._plan or self.training_plan(1)
        skip = start_cycle * plan.steps_per_cycle * global_batch_size
        dataset = self.data.dataset("train", batch_size=global_batch_size, training=True, repeat=True, shuffle=True,
                                    skip=skip, output="targets")
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return dataset.with_options(options)

    def loss_names(self) -> list[str]:
        return list(LOSS_NAMES)

    def compute_loss(self, outputs: Any, targets: Any) -> tuple[Any, dict[str, Any]]:
        return mask_rcnn_loss(outputs, targets, self._require_params())

    def build_optimizer(self, plan: TrainingPlan) -> keras.optimizers.Optimizer:
        """SGD with ``momentum``; linear warm-up, then ``init_learning_rate`` x each decay level."""
        exp = self.experiment
        init = float(exp.init_learning_rate)
        steps = mrcnn_spec.learning_rate_steps(exp)
        levels = [init * float(v) for v in mrcnn_spec.learning_rate_decay_levels(exp)]
        if len(steps) != len(levels):
            raise SpecError(f"learning_rate_steps has {len(steps)} entries but learning_rate_decay_levels has "
                            f"{len(levels)}")
        schedule = WarmupStepDecaySchedule(init, int(exp.warmup_steps), float(exp.warmup_learning_rate), steps, levels)
        clip = float(exp.global_gradient_clip_ratio)
        optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=float(exp.momentum),
                                         global_clipnorm=clip if clip > 0 else None)
        if self._training_model is not None:
            # The ROI sampling order follows the checkpointed step count, so resumed runs are exact.
            for layer in self._training_model.layers:
                if isinstance(layer, RoiSampler):
                    layer.use_step_counter(optimizer.iterations)
        return optimizer

    def cost_scaling(self) -> CostScaling | None:
        return None

    def extra_state(self) -> dict[str, Any]:
        return {}

    def restore_extra_state(self, state: dict[str, Any]) -> None:
        return None

    def callbacks(self) -> list[Any]:
        return []

    def model_metadata(self) -> dict[str, Any]:
        pre = self.preprocessing()
        return {
            "model_kind": MODEL_KIND,
            "class_names": self.class_names,
            "category_map": self.category_map.to_json(),
            "input_shape": list(self.input_shape),
            "input_name": INPUT_NAME,
            "output_names": dict(ONNX_OUTPUT_NAMES),
            "preprocessing": {"mean": list(pre.mean), "std": list(pre.std), "letterbox": pre.letterbox},
            "spec": resolved_text(self.experiment),
            "tltk_version": __version__,
        }

    # ---- evaluation and inference -------------------------------------------------------------
    def keras_predictor(self, network: keras.Model) -> Predict:
        """Run a Keras network; outputs under TAO's ONNX names."""
        names = {DETECTIONS_LAYER: ONNX_OUTPUT_NAMES[DETECTIONS_LAYER],
                 "mask_fcn_logits": ONNX_OUTPUT_NAMES[MASK_OUTPUT_LAYER]}

        @tf.function(reduce_retracing=True, autograph=False)
        def run(images: tf.Tensor) -> Any:
            out = network(images, training=False)
            return {k: tf.cast(v, tf.float32) for k, v in out.items()}

        def predict(images: np.ndarray) -> dict[str, np.ndarray]:
            out = run(tf.convert_to_tensor(images))
            return {names.get(k, k): v.numpy() for k, v in out.items()}

        return predict

    def predictions(self, predict: Predict, split: str, batch_size: int | None = None) -> tuple[list[dict[str, Any]],
                                                                                                list[int], float]:
        """COCO results of ``predict`` over a split (original pixels, the dataset's category ids).

        Returns:
            ``(results, image_ids, seconds_per_image)``.
        """
        data = self.data
        size = int(self.experiment.eval_batch_size) if batch_size is None else batch_size
        dataset = data.dataset(split, batch_size=size, training=False, repeat=False, shuffle=False,
                               output="inference")
        results: list[dict[str, Any]] = []
        image_ids: list[int] = []
        seconds = 0.0
        from tltk import console

        for images, info in console.progress(dataset.as_numpy_iterator(), desc=f"evaluate {split}", unit="batch"):
            started = time.perf_counter()
            out = predict(np.asarray(images, np.float32))
            seconds += time.perf_counter() - started
            dets = np.asarray(out[ONNX_OUTPUT_NAMES[DETECTIONS_LAYER]])
            masks = out.get(ONNX_OUTPUT_NAMES[MASK_OUTPUT_LAYER])
            for i in range(dets.shape[0]):
                image_info = info["image_info"][i]
                image_id = int(info["source_ids"][i])
                image_ids.append(image_id)
                rows, _ = image_results(dets[i], None if masks is None else np.asarray(masks[i]), image_id,
                                        float(image_info[2]), (int(image_info[3]), int(image_info[4])),
                                        self.category_map.category_id_of)
                results.extend(rows)
        return results, image_ids, seconds / max(len(image_ids), 1)

    def evaluate(self, predict: Predict, split: str, batch_size: int | None = None,
                 model_metadata: Mapping[str, Any] | None = None) -> Evaluation:
        """COCO bbox (and segm with masks) metrics of ``predict`` on a split, against ``val_json_file``."""
        from tltk.metrics.coco import evaluate_coco, format_coco_table

        if split != "val":
            raise UsageError("MaskRCNN evaluates the validation split (val_json_file holds its ground truth)")
        results, image_ids, per_image = self.predictions(predict, split, batch_size)
        if not image_ids:
            raise InvalidInputError("the validation split holds no image",
                                    hint="check data_config.validation_file_pattern")
        iou_types = ("bbox", "segm") if self._require_params().include_mask else ("bbox",)
        gt = resolve_spec_path(self.spec, str(self.experiment.data_config.val_json_file)) if self.spec else ""
        coco = evaluate_coco(gt, results, iou_types=iou_types, image_ids=image_ids)

        def pr_curves(path: str) -> Any:
            from types import SimpleNamespace

            from tltk.viz.plots import plot_pr_curves

            curves = SimpleNamespace(pr_curves=coco.pr_curves("bbox"), ap_per_class=coco.per_category["bbox"],
                                     mean_ap=coco.metrics["AP"], mode="COCO")
            return plot_pr_curves(curves, path, title="bbox precision-recall at IoU 0.5 (legend: AP@[.5:.95])")

        return Evaluation(dict(coco.metrics), format_coco_table(coco), len(image_ids),
                          details={"per_category": coco.per_category, "num_detections": len(results),
                                   "seconds_per_image": per_image, "coco": coco, "results": results},
                          plots={"pr_curves": pr_curves})

    def validate(self, network: keras.Model) -> tuple[dict[str, float], str]:
        evaluation = self.evaluate(self.keras_predictor(network), "val")
        return evaluation.metrics, evaluation.report

    def preprocessing(self) -> Preprocessing:
        """Letterboxed RGB, ``(pixel - 255 * (0.485, 0.456, 0.406)) / (255 * 0.224)``, as TAO's MaskRCNN."""
        return Preprocessing(self.input_shape, mean=PIXEL_MEAN, std=PIXEL_STD, letterbox=True)

    # ---- deployment -----------------------------------------------------------------------------
    def export_signature(self, network: keras.Model) -> ExportSignature:
        """``Input`` [N, 3, H, W] -> ``generate_detections`` [K, 6], ``mask_fcn_logits/BiasAdd`` [K, C, 28, 28]."""
        c, h, w = (int(d) for d in network.inputs[0].shape[1:])
        names = {n: ONNX_OUTPUT_NAMES[n] for n in network.output_names if n in ONNX_OUTPUT_NAMES}
        shapes: dict[str, tuple[int, ...]] = {}
        for output, name in zip(network.outputs, network.output_names, strict=True):
            if name in names:
                shapes[names[name]] = tuple(int(d) for d in output.shape[1:])
        return ExportSignature(INPUT_NAME, (c, h, w), names, shapes)

    def calibration_batches(self, batch_size: int, batches: int, split: str = "train") -> Iterator[np.ndarray]:
        """Letterboxed, normalised images of a split (no augmentation; training data shuffled)."""
        ds = self.data.dataset(split, batch_size=batch_size, training=False, repeat=True, shuffle=split == "train",
                               output="images").take(batches)
        return (np.asarray(b, np.float32) for b in ds.as_numpy_iterator())

    def deepstream_config(self, request: DeepStreamRequest) -> tuple[Any, list[str]]:
        """nvinfer instance-segmentation config for DeepStream's MaskRCNN parser, labels with ``BG`` first."""
        from tltk.deepstream.labels import mask_rcnn_labels
        from tltk.deepstream.nvinfer import mask_rcnn_nvinfer_config
        from tltk.runtime.backends import onnx_input_chw

        pre = self.preprocessing()
        input_chw = onnx_input_chw(request.model_file, request.key, fallback_hw=self.input_shape[1:])
        config = mask_rcnn_nvinfer_config(
            request.model_file, list(request.class_names), input_chw, precision=request.precision,
            key=request.key, calib_cache=request.calib_cache, explicit_quantization=request.explicit_quantization,
            input_blob_name=INPUT_NAME, output_blob_names=tuple(ONNX_OUTPUT_NAMES.values()),
            # TAO's spelling 0.017507 (1 / 57.12 = 0.0175070028..., 1.6e-7 relative difference)
            net_scale_factor=round(pre.net_scale_factor, 6), offsets=pre.offsets, batch_size=request.batch_size,
            config_dir=request.config_dir)
        return config, mask_rcnn_labels(list(request.class_names))

    def pruning_protected_layers(self, network: keras.Model) -> tuple[str, ...]:
        names = {layer.name for layer in network.layers}
        return tuple(n for n in PROTECTED_LAYERS if n in names)

    def check_model(self, network: keras.Model, source: str) -> None:
        names = {layer.name for layer in network.layers}
        if DETECTIONS_LAYER not in names:
            raise InvalidInputError(f"{source} is not a MaskRCNN model: it has no {DETECTIONS_LAYER} layer")
