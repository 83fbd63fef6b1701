"""The DetectNet_v2 :class:`~tltk.core.task.Task`: wires spec, data, model, cost and validation.

Epoch-based: ``steps_per_epoch = ceil(ceil(N_train / batch_size_per_gpu) / replicas)``,
checkpoints every ``checkpoint_interval`` epochs (0 -> 10), validation after epoch ``e`` when
``e >= first_validation_epoch`` and ``(e - first_validation_epoch) % validation_period == 0``,
and always after the last epoch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tltk import __version__
from tltk.core.qat import FakeQuant, is_quantized, quantize_model
from tltk.core.schedules import SoftStartAnnealingSchedule
from tltk.core.task import CostScaling, DeepStreamRequest, Evaluation, ExportSignature, Predict, TrainingPlan
from tltk.data.images import Preprocessing
from tltk.detectnet_v2.cost import CostParams, DetectNetCost
from tltk.detectnet_v2.dataloader import DetectNetV2Data
from tltk.detectnet_v2.evaluation import bbox_scale_offset, evaluate_split
from tltk.detectnet_v2.inference import split_outputs
from tltk.detectnet_v2.model import (
    BBOX_NAME,
    COV_NAME,
    HEAD_NAMES,
    INPUT_NAME,
    OUTPUT_NAMES,
    OUTPUT_STRIDE,
    build_or_load_detectnet_v2_model,
)
from tltk.errors import InvalidInputError, SpecError, UsageError
from tltk.metrics.detection_ap import format_ap_table
from tltk.spec import LoadedSpec, resolve_spec_path, resolved_text

log = logging.getLogger(__name__)

MODEL_KIND = "detectnet_v2"


def regularizers(training_config: Any) -> tuple[Any, Any]:
    """Keras kernel and bias regularizers for ``training_config.regularizer`` (NO_REG/L1/L2)."""
    reg = training_config.regularizer
    kind = int(reg.type)
    weight = float(reg.weight)
    if kind == 0 or weight == 0.0:
        return None, None
    make = keras.regularizers.L1 if kind == 1 else keras.regularizers.L2
    return make(weight), make(weight)


def recalibrate_batch_norm(network: keras.Model, batches: Iterable[np.ndarray]) -> int:
    """Re-estimate the moving statistics of every learning batch-norm layer from ``batches``.

    The network runs in training mode, so each batch-norm layer normalises with the batch's
    statistics, exactly as in a training step; its ``moving_mean`` and ``moving_variance``
    become the average of those per-batch means and variances.  Frozen layers (not
    trainable, or :class:`~tltk.backbones.layers.FrozenStatsBatchNormalization`) keep theirs.
    Only moving statistics change; a training step never reads them, so training goes on as
    before.

    Args:
        network: the DetectNet_v2 network (input NCHW float32 in [0, 1]).
        batches: image batches, each (B, C, H, W) float32.

    Returns:
        The number of batches used (0 when there was none or the network has no such layer;
        then nothing changes).
    """
    from tltk.backbones.layers import FrozenStatsBatchNormalization

    layers = [layer for layer in network.layers if isinstance(layer, keras.layers.BatchNormalization)
              and layer.trainable and not isinstance(layer, FrozenStatsBatchNormalization)]
    if not layers:
        return 0
    probe = keras.Model(network.inputs[0], [layer.input for layer in layers])
    sums: list[list[Any]] = [[0.0, 0.0] for _ in layers]
    count = 0
    for images in batches:
        outputs = probe(tf.convert_to_tensor(images), training=True)
        for layer, x, acc in zip(layers, outputs, sums):
            axes = [a for a in range(len(x.shape)) if a != int(layer.axis) % len(x.shape)]
            mean, variance = tf.nn.moments(tf.cast(x, tf.float32), axes=axes)
            acc[0] += mean
            acc[1] += variance
        count += 1
    if count:
        for layer, (mean_sum, variance_sum) in zip(layers, sums):
            layer.moving_mean.assign(tf.cast(mean_sum / count, layer.moving_mean.dtype))
            layer.moving_variance.assign(tf.cast(variance_sum / count, layer.moving_variance.dtype))
    return count


class DetectNetV2Task:
    """The DetectNet_v2 :class:`~tltk.core.task.Task`.

    Args:
        spec: the loaded experiment spec (``tltk.models.load_spec(..., kind="experiment")``), or
            None for the subtasks that need no data (prune, export without calibration, inference).
        key: key for encrypted pretrained models.
        metadata: a model file's metadata (class names, input shape, trained objective weights);
            used when there is no spec, and to evaluate a saved model with its own weights.

    Raises:
        SpecError: not an experiment spec, or inconsistent target classes.
        UsageError: neither a spec nor model metadata with class names and input shape.
    """

    model_kind = MODEL_KIND

    def __init__(self, spec: LoadedSpec | None = None, key: str | None = None,
                 metadata: Mapping[str, Any] | None = None) -> None:
        self.spec = spec
        self.key = key
        self.metadata = dict(metadata or {})
        self.cost: DetectNetCost | None = None
        self.network: keras.Model | None = None
        self._plan: TrainingPlan | None = None
        self._data: DetectNetV2Data | None = None
        if spec is None:
            shape = self.metadata.get("input_shape")
            if not shape:
                raise UsageError("DetectNet_v2: this needs the experiment spec (-e) or a model file that records its "
                                 "input shape")
            self.class_names = [str(n) for n in self.metadata.get("class_names") or ()]
            c, h, w = (int(d) for d in shape)
            self.input_shape = (c, h, w)
            return
        if spec.kind != "experiment":
            raise SpecError(f"{spec.path} is a {spec.kind} spec; this needs an experiment spec")
        self.experiment = spec.message
        self._data = DetectNetV2Data(self.experiment, spec_dir=spec.spec_dir)
        self.class_names = list(self._data.class_names)
        self.cost_params = CostParams.from_config(self.experiment.cost_function_config)
        if list(self.cost_params.class_names) != self.class_names:
            raise SpecError("cost_function_config.target_classes and the data's target classes differ",
                            [f"cost function: {list(self.cost_params.class_names)}", f"data: {self.class_names}"])
        pre = self._data.augmentation.preprocessing
        self.input_shape = (pre.output_channels, pre.output_height, pre.output_width)
        self.training_config = self.experiment.training_config

    @property
    def data(self) -> DetectNetV2Data:
        """The spec's data loader (UsageError without a spec)."""
        if self._data is None:
            raise UsageError("DetectNet_v2: this needs the experiment spec (-e/--experiment_spec) for its data")
        return self._data

    def random_seed(self) -> int:
        return int(self.experiment.random_seed)

    # ---- plan -----------------------------------------------------------------------------
    def training_plan(self, num_replicas: int) -> TrainingPlan:
        tc = self.training_config
        batch = int(tc.batch_size_per_gpu)
        self.data.check_target_objects("train")
        n_train = self.data.num_examples("train")
        steps = math.ceil(math.ceil(n_train / batch) / max(num_replicas, 1))
        epochs = int(tc.num_epochs)
        ev = self.experiment.evaluation_config
        first = int(ev.first_validation_epoch)  # both > 0: the spec rules check them
        period = int(ev.validation_period_during_training)
        validate = frozenset({e for e in range(first, epochs + 1) if (e - first) % period == 0} | {epochs}) \
            if self.data.has_validation() else frozenset()
        self._plan = TrainingPlan(steps_per_cycle=steps, num_cycles=epochs,
                                  checkpoint_every=int(tc.checkpoint_interval), validate_after=validate,
                                  cycle_name="epoch", batch_size=batch * max(num_replicas, 1))
        return self._plan

    # ---- model and data --------------------------------------------------------------------
    def build_network(self) -> keras.Model:
        kreg, breg = regularizers(self.training_config)
        model_config = self.experiment.model_config
        pretrained = model_config.pretrained_model_file
        if pretrained:
            model_config = type(model_config)()
            model_config.CopyFrom(self.experiment.model_config)
            model_config.pretrained_model_file = resolve_spec_path(self.spec, pretrained)
        network, report = build_or_load_detectnet_v2_model(model_config, len(self.class_names), self.input_shape,
                                                           key=self.key, kernel_regularizer=kreg,
                                                           bias_regularizer=breg)
        if report is not None:
            log.info("pretrained weights: %d layers loaded, %d skipped, %d mismatched",
                     len(report.loaded), len(report.skipped), len(report.mismatched))
        network = self._apply_qat(network)
        self.cost = DetectNetCost(self.cost_params)
        self.network = network
        return network

    def _apply_qat(self, network: keras.Model) -> keras.Model:
        """``training_config.enable_qat``: fake INT8 quantization after the network is built or loaded."""
        if is_quantized(network):
            if self.training_config.enable_qat:
                log.info("enable_qat: the loaded model is already quantization-aware; training it as it is")
            else:
                log.warning("the loaded model is quantization-aware although enable_qat is false; training keeps "
                            "its fake quantization (export with --force_ptq to calibrate instead of using its ranges)")
            return network
        if not self.training_config.enable_qat:
            return network
        quantized = quantize_model(network)
        log.info("enable_qat: quantization-aware training, %d fake-quantized activation tensors (INT8, ranges "
                 "tracked by moving average) and per-channel INT8 weights",
                 sum(isinstance(layer, FakeQuant) for layer in quantized.layers))
        return quantized

    def train_dataset(self, start_cycle: int, global_batch_size: int) -> tf.data.Dataset:
        plan = self._plan or self.training_plan(1)
        # The stream is a deterministic function of the seed; skipping the examples of the
        # completed epochs makes a resumed run see exactly the batches of an uninterrupted one.
        skip = start_cycle * plan.steps_per_cycle * global_batch_size
        return self.data.dataset("train", batch_size=global_batch_size, training=True, output="targets",
                                 repeat=True, shuffle=True, skip=skip)

    def training_forward(self, network: keras.Model, images: Any, targets: Any, training: bool) -> Any:
        """DetectNet_v2 trains its inference network as it is: ``network(images)``."""
        return network(images, training=training)

    def loss_names(self) -> list[str]:
        return [f"cost_{n}_{o}" for n in self.class_names for o in ("cov", "bbox")]

    def compute_loss(self, outputs: Any, targets: Any) -> tuple[Any, dict[str, Any]]:
        assert self.cost is not None, "build_network() must run first"
        return self.cost(outputs[COV_NAME], outputs[BBOX_NAME], _cost_targets(targets))

    def build_optimizer(self, plan: TrainingPlan) -> keras.optimizers.Optimizer:
        lr_cfg = self.training_config.learning_rate
        which = lr_cfg.WhichOneof("learning_rate")
        if which != "soft_start_annealing_schedule":
            raise SpecError("training_config.learning_rate: only soft_start_annealing_schedule is supported for "
                            f"DetectNet_v2 training (got {which})",
                            hint="replace it with soft_start_annealing_schedule { ... }")
        s = lr_cfg.soft_start_annealing_schedule
        schedule = SoftStartAnnealingSchedule(plan.total_steps, s.min_learning_rate, s.max_learning_rate,
                                              s.soft_start, s.annealing)
        adam = self.training_config.optimizer.adam
        return keras.optimizers.Adam(learning_rate=schedule, beta_1=float(adam.beta1), beta_2=float(adam.beta2),
                                     epsilon=float(adam.epsilon))

    def cost_scaling(self) -> CostScaling | None:
        cs = self.training_config.cost_scaling
        if not cs.enabled:
            return None
        return CostScaling(float(cs.initial_exponent), float(cs.increment), float(cs.decrement))

    def extra_state(self) -> dict[str, Any]:
        return self.cost.get_state() if self.cost is not None else {}

    def restore_extra_state(self, state: dict[str, Any]) -> None:
        if self.cost is not None:
            self.cost.set_state(state)

    def callbacks(self) -> list[Any]:
        task = self

        class AutoWeighting(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                if task.cost is not None and task.cost_params.autoweighting:
                    weights = task.cost.end_epoch((epoch + 1) * task.training_plan_steps())
                    if logs is not None:
                        for i, name in enumerate(task.class_names):
                            logs[f"autoweight_{name}_cov"] = float(weights[i, 0])
                            logs[f"autoweight_{name}_bbox"] = float(weights[i, 1])

        class BatchNormRecalibration(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                task.recalibrate_batch_norm(epoch + 1)

        return [AutoWeighting(), BatchNormRecalibration()]

    def training_plan_steps(self) -> int:
        """Optimizer steps per epoch of the current plan."""
        return (self._plan or self.training_plan(1)).steps_per_cycle

    def recalibrate_batch_norm(self, epochs_done: int) -> int:
        """``training_config.batch_norm_recalibration_images``: new moving statistics before a save.

        Runs after epoch ``epochs_done`` (1-based) when validation, a checkpoint or the final
        model follows it (the plan's rule), on the first ``ceil(images / batch_size_per_gpu)``
        batches of the training split without augmentation, in file order, so a resumed run
        gets the same statistics.  Quantization-aware networks are left alone: a training-mode
        pass would also move their fake-quantization ranges.

        Returns:
            The number of batches used (0 when nothing was done).
        """
        images = int(self.training_config.batch_norm_recalibration_images)
        plan = self._plan
        if images == 0 or self.network is None or plan is None or is_quantized(self.network):
            return 0
        if not (epochs_done in plan.validate_after or epochs_done % plan.checkpoint_every == 0
                or epochs_done == plan.num_cycles):
            return 0
        batch = int(self.training_config.batch_size_per_gpu)
        ds = self.data.dataset("train", batch_size=batch, training=False, output="images", repeat=True,
                               shuffle=False).take(math.ceil(images / batch))
        used = recalibrate_batch_norm(self.network, (np.asarray(b, np.float32) for b in ds.as_numpy_iterator()))
        log.debug("batch-norm statistics re-estimated from %d batches of %d training images", used, batch)
        return used

    # ---- evaluation and inference -----------------------------------------------------------
    def keras_predictor(self, network: keras.Model) -> Predict:
        """Run a Keras network; outputs under TAO's names (``output_cov/Sigmoid``, ``output_bbox/BiasAdd``)."""

        @tf.function(reduce_retracing=True, autograph=False)
        def run(images: tf.Tensor) -> Any:
            out = network(images, training=False)
            return tf.cast(out[COV_NAME], tf.float32), tf.cast(out[BBOX_NAME], tf.float32)

        def predict(images: np.ndarray) -> dict[str, np.ndarray]:
            cov, bbox = run(tf.convert_to_tensor(images))
            return {OUTPUT_NAMES[COV_NAME]: cov.numpy(), OUTPUT_NAMES[BBOX_NAME]: bbox.numpy()}

        return predict

    def cost_fn(self, cost_state: dict[str, Any] | None = None) -> Any:
        """``(cov, bbox, targets) -> float`` evaluating the task cost (validation cost).

        Args:
            cost_state: objective weights saved with a model (``model_metadata()["cost_state"]``);
                without it the current training state, or the spec's initial weights, are used.
        """
        cost = self.cost or DetectNetCost(self.cost_params)
        if cost_state:
            cost = DetectNetCost(self.cost_params)
            cost.set_state(cost_state)

        def fn(cov: np.ndarray, bbox: np.ndarray, targets: dict[str, Any]) -> float:
            total, _ = cost(tf.constant(cov), tf.constant(bbox), _cost_targets(targets))
            return float(total)

        return fn

    def evaluate(self, predict: Predict, split: str, batch_size: int | None = None,
                 model_metadata: Mapping[str, Any] | None = None) -> Evaluation:
        """TAO's AP (``evaluation_config``) of ``predict`` on a split, clustered with ``postprocessing_config``.

        The validation cost uses the objective weights stored with the model (``cost_state``)
        when ``model_metadata`` has them, else the spec's.
        """
        saved = (model_metadata or {}).get("cost_state") or None
        evaluation = evaluate_split(lambda images: split_outputs(predict(images)), self.data, split,
                                    batch_size=batch_size, cost_fn=self.cost_fn(saved))
        result = evaluation.result
        metrics = {"mAP": float(result.mean_ap)}
        metrics.update({f"AP_{name}": float(ap) for name, ap in result.ap_per_class.items()})
        if evaluation.validation_cost is not None:
            metrics["validation_cost"] = float(evaluation.validation_cost)

        def pr_curves(path: str) -> Any:
            from tltk.viz.plots import plot_pr_curves

            return plot_pr_curves(result, path)

        return Evaluation(metrics, format_ap_table(result, validation_cost=evaluation.validation_cost),
                          int(result.num_images), details={"result": result,
                                                           "validation_cost": evaluation.validation_cost},
                          plots={"pr_curves": pr_curves})

    def validate(self, network: keras.Model) -> tuple[dict[str, float], str]:
        evaluation = self.evaluate(self.keras_predictor(network), "val")
        return evaluation.metrics, evaluation.report

    def preprocessing(self) -> Preprocessing:
        """RGB (or grey) stretched to the network size and divided by 255, as TAO's DetectNet_v2."""
        c = self.input_shape[0]
        return Preprocessing(self.input_shape, mean=(0.0,) * c, std=(255.0,) * c, letterbox=False)

    # ---- deployment ---------------------------------------------------------------------------
    def export_signature(self, network: keras.Model) -> ExportSignature:
        """``input_1`` [N, C, H, W] -> ``output_cov/Sigmoid`` [K, H/16, W/16], ``output_bbox/BiasAdd`` [4K, ...]."""
        c, h, w = (int(d) for d in network.inputs[0].shape[1:])
        k = len(self.class_names)
        grid = (h // OUTPUT_STRIDE, w // OUTPUT_STRIDE)
        keras_names = [n for n in network.output_names if n in OUTPUT_NAMES]
        ordered = {n: OUTPUT_NAMES[n] for n in keras_names} if len(keras_names) == 2 else dict(OUTPUT_NAMES)
        return ExportSignature(INPUT_NAME, (c, h, w), ordered,
                               {OUTPUT_NAMES[COV_NAME]: (k, *grid), OUTPUT_NAMES[BBOX_NAME]: (4 * k, *grid)})

    def calibration_batches(self, batch_size: int, batches: int, split: str = "train") -> Iterator[np.ndarray]:
        """Images of a split without augmentation, preprocessed as inference does (training data shuffled)."""
        ds = self.data.dataset(split, batch_size=batch_size, training=False, output="images", repeat=True,
                               shuffle=split == "train").take(batches)
        return (np.asarray(b, np.float32) for b in ds.as_numpy_iterator())

    def deepstream_config(self, request: DeepStreamRequest) -> tuple[Any, list[str]]:
        """nvinfer detector config (clustering from ``postprocessing_config`` when a spec is given).

        ``infer-dims`` are the input size of the model file nvinfer loads, which may differ from
        the spec's ``augmentation_config`` size.
        """
        from tltk.deepstream.labels import detectnet_v2_labels
        from tltk.deepstream.nvinfer import detectnet_v2_nvinfer_config
        from tltk.detectnet_v2.postprocess import params_from_postprocessing_config
        from tltk.runtime.backends import onnx_input_chw

        clustering = (params_from_postprocessing_config(self.experiment.postprocessing_config)
                      if self.spec is not None else None)
        pre = self.preprocessing()
        input_chw = onnx_input_chw(request.model_file, request.key, fallback_hw=self.input_shape[1:])
        config = detectnet_v2_nvinfer_config(
            request.model_file, list(request.class_names), input_chw, precision=request.precision,
            key=request.key, calib_cache=request.calib_cache, explicit_quantization=request.explicit_quantization,
            clustering=clustering, config_dir=request.config_dir, batch_size=request.batch_size,
            input_blob_name=INPUT_NAME, output_blob_names=tuple(OUTPUT_NAMES.values()),
            net_scale_factor=pre.net_scale_factor, offsets=pre.offsets)
        return config, detectnet_v2_labels(list(request.class_names))

    def pruning_protected_layers(self, network: keras.Model) -> tuple[str, ...]:
        """The coverage and bbox heads keep one output channel per class (and 4 per class)."""
        return HEAD_NAMES

    def check_model(self, network: keras.Model, source: str) -> None:
        names = {layer.name for layer in network.layers}
        missing = [name for name in HEAD_NAMES if name not in names]
        if missing:
            raise InvalidInputError(f"{source} is not a DetectNet_v2 model: it has no {' / '.join(missing)} layer")

    def model_metadata(self) -> dict[str, Any]:
        scale, offset = bbox_scale_offset(self.experiment)
        return {
            "model_kind": MODEL_KIND,
            "class_names": self.class_names,
            "input_shape": list(self.input_shape),
            "input_name": INPUT_NAME,
            "output_names": {"cov": OUTPUT_NAMES[COV_NAME], "bbox": OUTPUT_NAMES[BBOX_NAME]},
            "stride": 16,
            "bbox_scale": scale,
            "bbox_offset": offset,
            "image_range": [0.0, 1.0],
            # The auto-weighted objective weights at the end of training, so that evaluate's
            # validation cost matches the one printed during training.
            "cost_state": self.extra_state(),
            "spec": resolved_text(self.experiment),
            "tltk_version": __version__,
        }


def _cost_targets(targets: dict[str, Any]) -> dict[str, Any]:
    """Map the loader's target dict onto the cost function's (per-objective masks)."""
    out = {"cov": targets["cov"], "bbox": targets["bbox"], "cov_norm": targets["cov_norm"]}
    if "cov_mask" in targets:
        out["cov_mask"] = targets["cov_mask"]
    if "bbox_mask" in targets:
        out["bbox_mask"] = targets["bbox_mask"]
    return out
