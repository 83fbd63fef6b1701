"""The DetectNet_v2 :class:`~tltk.core.task.Task`: wires spec, data, model, cost and validation.

Epoch-based: ``steps_per_epoch = ceil(ceil(N_train / batch_size_per_gpu) / replicas)``,
checkpoints every ``checkpoint_interval`` epochs (0 -> 10), validation after epoch ``e`` when
``e >= first_validation_epoch`` and ``(e - first_validation_epoch) % validation_period == 0``,
and always after the last epoch.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tltk import __version__
from tltk.core.qat import FakeQuant, is_quantized, quantize_model
from tltk.core.schedules import SoftStartAnnealingSchedule
from tltk.core.task import CostScaling, TrainingPlan
from tltk.detectnet_v2.cost import CostParams, DetectNetCost
from tltk.detectnet_v2.dataloader import DetectNetV2Data
from tltk.detectnet_v2.evaluation import bbox_scale_offset, evaluate_split
from tltk.detectnet_v2.model import BBOX_NAME, COV_NAME, build_or_load_detectnet_v2_model
from tltk.errors import SpecError
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


class DetectNetV2Task:
    """DetectNet_v2 training/validation driven by a loaded experiment spec.

    Args:
        spec: the loaded experiment spec (``tltk.spec.load_spec(..., kind="experiment")``).
        key: key for encrypted pretrained models.
    """

    model_kind = MODEL_KIND

    def __init__(self, spec: LoadedSpec, key: str | None = None) -> None:
        if spec.kind != "experiment":
            raise SpecError(f"{spec.path} is a {spec.kind} spec; training needs an experiment spec")
        self.spec = spec
        self.experiment = spec.message
        self.key = key
        self.data = DetectNetV2Data(self.experiment, spec_dir=spec.spec_dir)
        self.class_names = list(self.data.class_names)
        self.cost_params = CostParams.from_config(self.experiment.cost_function_config)
        if list(self.cost_params.class_names) != self.class_names:
            raise SpecError("cost_function_config.target_classes and the data's target classes differ",
                            [f"cost function: {list(self.cost_params.class_names)}", f"data: {self.class_names}"])
        self.cost: DetectNetCost | None = None
        pre = self.data.augmentation.preprocessing
        self.input_shape = (pre.output_channels, pre.output_height, pre.output_width)
        self.training_config = self.experiment.training_config
        self._plan: TrainingPlan | None = None

    # ---- plan -----------------------------------------------------------------------------
    def training_plan(self, num_replicas: int) -> TrainingPlan:
        tc = self.training_config
        batch = int(tc.batch_size_per_gpu)
        n_train = self.data.num_examples("train")
        steps = math.ceil(math.ceil(n_train / batch) / max(num_replicas, 1))
        epochs = int(tc.num_epochs)
        ev = self.experiment.evaluation_config
        first = max(int(ev.first_validation_epoch), 1)
        period = max(int(ev.validation_period_during_training), 1)
        validate = frozenset(e for e in range(first, epochs + 1) if (e - first) % period == 0) \
            if self.data.has_validation() else frozenset()
        self._plan = TrainingPlan(steps_per_cycle=steps, num_cycles=epochs,
                                  checkpoint_every=int(tc.checkpoint_interval) or 10, validate_after=validate,
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
        return keras.optimizers.Adam(learning_rate=schedule, beta_1=float(adam.beta1) or 0.9,
                                     beta_2=float(adam.beta2) or 0.999, epsilon=float(adam.epsilon) or 1e-8)

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
                    weights = task.cost.end_epoch()
                    if logs is not None:
                        for i, name in enumerate(task.class_names):
                            logs[f"autoweight_{name}_cov"] = float(weights[i, 0])
                            logs[f"autoweight_{name}_bbox"] = float(weights[i, 1])

        return [AutoWeighting()]

    # ---- validation ------------------------------------------------------------------------
    def predictor(self, network: keras.Model) -> Any:
        """A ``predict(images) -> (cov, bbox)`` function for a Keras network."""

        @tf.function(reduce_retracing=True, autograph=False)
        def run(images: tf.Tensor) -> Any:
            out = network(images, training=False)
            return tf.cast(out[COV_NAME], tf.float32), tf.cast(out[BBOX_NAME], tf.float32)

        def predict(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            cov, bbox = run(tf.convert_to_tensor(images))
            return cov.numpy(), bbox.numpy()

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

    def validate(self, network: keras.Model) -> tuple[dict[str, float], str]:
        evaluation = evaluate_split(self.predictor(network), self.data, "val", cost_fn=self.cost_fn())
        result = evaluation.result
        metrics = {"mAP": float(result.mean_ap)}
        metrics.update({f"AP_{name}": float(ap) for name, ap in result.ap_per_class.items()})
        if evaluation.validation_cost is not None:
            metrics["validation_cost"] = float(evaluation.validation_cost)
        return metrics, format_ap_table(result, validation_cost=evaluation.validation_cost)

    def model_metadata(self) -> dict[str, Any]:
        scale, offset = bbox_scale_offset(self.experiment)
        return {
            "model_kind": MODEL_KIND,
            "class_names": self.class_names,
            "input_shape": list(self.input_shape),
            "input_name": "input_1",
            "output_names": {"cov": "output_cov/Sigmoid", "bbox": "output_bbox/BiasAdd"},
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
