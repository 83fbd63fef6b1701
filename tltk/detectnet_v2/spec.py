"""DetectNet_v2 spec rules and typed accessors.

The three spec kinds (``experiment``, ``inference``, ``dataset_convert``) are described by
the tables below and collected in :data:`SCHEMAS`, which :mod:`tltk.spec` uses.  The rules
follow TAO's validator where it is sensible and deliberately differ where TAO is buggy:

* cost scaling values are only checked when cost scaling is enabled;
* ``dbscan_min_samples`` is a float weight (>= 0), not an int in [0, 1];
* HYBRID clustering is allowed in training/evaluation as well as inference;
* the cross-section relations TAO only discovers at run time (every cost-function class
  needs a rasterizer, post-processing, minimum-overlap and evaluation-box entry; every
  target of ``target_class_mapping`` must be a cost-function class; objectives are
  exactly ``cov`` and ``bbox``) are checked up front.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf.message import Message

from tltk._proto import detectnet_v2_pb2 as pb
from tltk.errors import SpecError
from tltk.spec.fieldpath import key_text
from tltk.spec.fields import spec_field
from tltk.spec.problems import Reporter
from tltk.spec.rules import (
    Check,
    DataPath,
    KindSchema,
    Required,
    Rule,
    between,
    multiple_of,
    non_empty,
    non_negative,
    one_of,
    positive,
    whole_number,
)

ARCHS = ("resnet", "vgg", "darknet", "mobilenet_v1", "mobilenet_v2", "squeezenet", "googlenet",
         "efficientnet_b0")
NUM_LAYERS = {"resnet": (10, 18, 34, 50, 101), "vgg": (16, 19), "darknet": (19, 53)}
OBJECTIVES = ("bbox", "cov")
IMAGE_EXTENSIONS = ("png", "jpg", "jpeg")
CONFIDENCE_MODELS = ("aggregate_cov", "mean_cov")
DEFAULT_CLASS_KEY = "default"

_DBSCAN_LIKE = (pb.ClusteringConfig.DBSCAN, pb.ClusteringConfig.HYBRID)
_NMS_LIKE = (pb.ClusteringConfig.NMS, pb.ClusteringConfig.HYBRID)


def _uses_dbscan(cfg: Message) -> bool:
    return cfg.clustering_algorithm in _DBSCAN_LIKE


def _uses_nms(cfg: Message) -> bool:
    return cfg.clustering_algorithm in _NMS_LIKE


def _clustering_rules(prefix: str) -> list[Rule]:
    p = prefix + ".clustering_config."
    return [
        Rule(p + "coverage_threshold", between(0, 1)),
        Rule(p + "minimum_bounding_box_height", non_negative()),
        Rule(p + "dbscan_eps", between(0, 1, lo_open=True), when=_uses_dbscan,
             when_text="when clustering_algorithm is DBSCAN or HYBRID"),
        Rule(p + "dbscan_min_samples", non_negative(),
             note="it is a coverage weight; TAO uses max(int(value), 1)"),
        Rule(p + "dbscan_confidence_threshold", non_negative()),
        Rule(p + "neighborhood_size", non_negative()),
        Rule(p + "nms_iou_threshold", between(0, 1), when=_uses_nms,
             when_text="when clustering_algorithm is NMS or HYBRID"),
        Rule(p + "nms_confidence_threshold", between(0, 1), when=_uses_nms,
             when_text="when clustering_algorithm is NMS or HYBRID"),
    ]


# ---- experiment ---------------------------------------------------------------------------

EXPERIMENT_REQUIRED = (
    Required("dataset_config"),
    Required("dataset_config.target_class_mapping",
             "map every TFRecords class to a cost-function class (e.g. car: car)"),
    Required("dataset_config.data_sources", "train and evaluate read the TFRecords listed here",
             severity="warning"),
    Required("augmentation_config"),
    Required("augmentation_config.preprocessing", "it sets the network input size"),
    Required("postprocessing_config"),
    Required("postprocessing_config.target_class_config"),
    Required("postprocessing_config.target_class_config[*].clustering_config"),
    Required("model_config"),
    Required("model_config.objective_set"),
    Required("model_config.objective_set.bbox", "write bbox { scale: 35.0 offset: 0.5 }"),
    Required("model_config.objective_set.cov", "write cov {}"),
    Required("evaluation_config"),
    Required("cost_function_config"),
    Required("cost_function_config.target_classes"),
    Required("cost_function_config.target_classes[*].objectives"),
    Required("training_config"),
    Required("training_config.learning_rate"),
    Required("training_config.optimizer", "write optimizer { adam { ... } }"),
    Required("bbox_rasterizer_config"),
    Required("bbox_rasterizer_config.target_class_config"),
)

_PRE = "augmentation_config.preprocessing."
_SPA = "augmentation_config.spatial_augmentation."
_COL = "augmentation_config.color_augmentation."
_SSA = "training_config.learning_rate.soft_start_annealing_schedule."
_ESA = "training_config.learning_rate.early_stopping_annealing_schedule."
_CS = "training_config.cost_scaling."
_LF = "loss_mask_label_filter.objective_label_filter_configs[*].label_filter."


_STRIDE_NOTE = ("the output grid has one cell per 16x16 pixels, so the last row/column of cells would be "
                "partial (TAO 5 rejects such sizes); round to a multiple of 16")
_KEEP_ASPECT_NOTE = ("keep-aspect dynamic input shapes are not supported by DetectNet_v2; "
                     "use output_image_width/height")


def _cost_scaling_enabled(cfg: Message) -> bool:
    return bool(cfg.enabled)


EXPERIMENT_RULES = [
    Rule("dataset_config.image_extension", non_empty(), note="png, jpg or jpeg"),
    Rule("dataset_config.data_sources[*].tfrecords_path", non_empty(), severity="warning",
         note="train and evaluate need it"),
    Rule("dataset_config.data_sources[*].image_directory_path", non_empty(), severity="warning",
         note="train and evaluate need it"),
    Rule("dataset_config.data_sources[*].source_weight", non_negative()),
    Rule("dataset_config.validation_data_source.tfrecords_path", non_empty(), severity="warning",
         note="evaluation needs it"),
    Rule("dataset_config.validation_data_source.source_weight", non_negative()),
    Rule(_PRE + "output_image_width", positive()),
    Rule(_PRE + "output_image_height", positive()),
    Rule(_PRE + "output_image_width", multiple_of(16), severity="warning", note=_STRIDE_NOTE),
    Rule(_PRE + "output_image_height", multiple_of(16), severity="warning", note=_STRIDE_NOTE),
    Rule(_PRE + "output_image_min", Check(lambda v: v == 0, "0"), note=_KEEP_ASPECT_NOTE),
    Rule(_PRE + "output_image_max", Check(lambda v: v == 0, "0"), note=_KEEP_ASPECT_NOTE),
    Rule(_PRE + "output_image_channel", one_of(1, 3)),
    Rule(_PRE + "min_bbox_width", non_negative()),
    Rule(_PRE + "min_bbox_height", non_negative()),
    Rule(_PRE + "scale_width", non_negative()),
    Rule(_PRE + "scale_height", non_negative()),
    Rule(_SPA + "hflip_probability", between(0, 1)),
    Rule(_SPA + "vflip_probability", between(0, 1)),
    Rule(_SPA + "zoom_min", positive()),
    Rule(_SPA + "zoom_max", positive()),
    Rule(_SPA + "translate_max_x", non_negative()),
    Rule(_SPA + "translate_max_y", non_negative()),
    Rule(_SPA + "rotate_rad_max", non_negative()),
    Rule(_SPA + "rotate_probability", between(0, 1)),
    Rule(_COL + "color_shift_stddev", between(0, 1)),
    Rule(_COL + "hue_rotation_max", between(0, 360)),
    Rule(_COL + "saturation_shift_max", between(0, 1)),
    Rule(_COL + "contrast_scale_max", between(0, 1)),
    Rule(_COL + "contrast_center", between(0, 1)),
    *_clustering_rules("postprocessing_config.target_class_config[*]"),
    Rule("model_config.arch", one_of(*ARCHS)),
    Rule("model_config.num_layers", non_negative()),
    Rule("model_config.dropout_rate", between(0, 1)),
    Rule("model_config.objective_set.bbox.scale", positive()),
    Rule("model_config.objective_set.bbox.offset", non_negative()),
    Rule("model_config.objective_set.cov.prior_probability", between(0, 1, lo_open=True, hi_open=True),
         note="the coverage head's bias starts at -ln((1 - p) / p); 0.5 is TAO's zero bias"),
    Rule("model_config.freeze_blocks[*]", non_negative() & whole_number()),
    Rule("model_config.training_precision.backend_floatx",
         Check(lambda v: v != pb.ModelConfig.TrainingPrecision.INVALID, "FLOAT32 or FLOAT16")),
    Rule("evaluation_config.validation_period_during_training", positive()),
    Rule("evaluation_config.first_validation_epoch", positive()),
    Rule("evaluation_config.minimum_detection_ground_truth_overlap[*]", between(0, 1, lo_open=True)),
    Rule("evaluation_config.evaluation_box_config[*].minimum_height", non_negative()),
    Rule("evaluation_config.evaluation_box_config[*].minimum_width", non_negative()),
    Rule("evaluation_config.evaluation_box_config[*].maximum_height", positive()),
    Rule("evaluation_config.evaluation_box_config[*].maximum_width", positive()),
    Rule("cost_function_config.target_classes[*].name", non_empty()),
    Rule("cost_function_config.target_classes[*].class_weight", positive()),
    Rule("cost_function_config.target_classes[*].coverage_foreground_weight",
         between(0, 1, lo_open=True, hi_open=True)),
    Rule("cost_function_config.target_classes[*].objectives[*].name", one_of(*OBJECTIVES)),
    Rule("cost_function_config.target_classes[*].objectives[*].initial_weight", non_negative()),
    Rule("cost_function_config.target_classes[*].objectives[*].weight_target", non_negative()),
    Rule("cost_function_config.max_objective_weight", non_negative()),
    Rule("cost_function_config.min_objective_weight", non_negative()),
    Rule("training_config.batch_size_per_gpu", positive()),
    Rule("training_config.num_epochs", positive()),
    Rule(_SSA + "min_learning_rate", positive()),
    Rule(_SSA + "max_learning_rate", positive()),
    Rule(_SSA + "soft_start", between(0, 1, hi_open=True)),
    Rule(_SSA + "annealing", between(0, 1, hi_open=True)),
    Rule(_ESA + "min_learning_rate", positive()),
    Rule(_ESA + "max_learning_rate", positive()),
    Rule(_ESA + "patience_steps", positive(), note="validation steps without improvement before annealing"),
    Rule("training_config.regularizer.weight", non_negative()),
    Rule("training_config.optimizer.adam.epsilon", positive()),
    Rule("training_config.optimizer.adam.beta1", between(0, 1, lo_open=True, hi_open=True)),
    Rule("training_config.optimizer.adam.beta2", between(0, 1, lo_open=True, hi_open=True)),
    Rule(_CS + "initial_exponent", positive(), when=_cost_scaling_enabled, when_text="when enabled"),
    Rule(_CS + "increment", positive(), when=_cost_scaling_enabled, when_text="when enabled"),
    Rule(_CS + "decrement", positive(), when=_cost_scaling_enabled, when_text="when enabled"),
    Rule("training_config.visualizer.target_class_config[*].coverage_threshold", between(0, 1)),
    Rule("bbox_rasterizer_config.target_class_config[*].cov_center_x", between(0, 1)),
    Rule("bbox_rasterizer_config.target_class_config[*].cov_center_y", between(0, 1)),
    Rule("bbox_rasterizer_config.target_class_config[*].cov_radius_x", between(0, 1)),
    Rule("bbox_rasterizer_config.target_class_config[*].cov_radius_y", between(0, 1)),
    Rule("bbox_rasterizer_config.target_class_config[*].bbox_min_radius", between(0, 1)),
    Rule("bbox_rasterizer_config.deadzone_radius", between(0, 1)),
    Rule("loss_mask_label_filter.mask_multiplier", non_negative()),
    Rule("loss_mask_label_filter.objective_label_filter_configs[*].objective_names[*]", one_of(*OBJECTIVES)),
    Rule(_LF + "bbox_dimensions_label_filter.min_width", non_negative()),
    Rule(_LF + "bbox_dimensions_label_filter.min_height", non_negative()),
    Rule(_LF + "bbox_dimensions_label_filter.max_width", non_negative()),
    Rule(_LF + "bbox_dimensions_label_filter.max_height", non_negative()),
    Rule(_LF + "bbox_crop_label_filter.crop_left", non_negative()),
    Rule(_LF + "bbox_crop_label_filter.crop_right", non_negative()),
    Rule(_LF + "bbox_crop_label_filter.crop_top", non_negative()),
    Rule(_LF + "bbox_crop_label_filter.crop_bottom", non_negative()),
    Rule(_LF + "source_class_label_filter.source_class_names", non_empty()),
]


def cost_function_classes(experiment: Message) -> list[str]:
    """Target class names in network output order (``cost_function_config.target_classes``).

    Args:
        experiment: a DetectNet_v2 ``Experiment``.

    Returns:
        The names, first output channel first.
    """
    return [tc.name for tc in experiment.cost_function_config.target_classes]


def image_extension(dataset_config: Message) -> str:
    """``dataset_config.image_extension`` normalised to a lower-case suffix with a dot (``.png``).

    Args:
        dataset_config: a DetectNet_v2 ``DatasetConfig``.

    Returns:
        ``".png"``, ``".jpg"``... (``""`` when unset).
    """
    ext = dataset_config.image_extension.strip().lower()
    if not ext:
        return ""
    return ext if ext.startswith(".") else "." + ext


def kitti_image_extension(kitti_config: Any) -> str:
    """``kitti_config.image_extension`` with a leading dot (TAO requires it; tltk adds it).

    Args:
        kitti_config: a ``KITTIConfig`` message (or an object with its field names); unset, the
            proto's default ``.png``.  A loaded spec never holds ``""`` here: TAO reads it as
            ``.png`` and the ``zero_means_default`` table below clears it.

    Raises:
        SpecError: the extension is empty (a config built in code, not loaded from a spec).
    """
    ext = str(spec_field(kitti_config, pb.KITTIConfig, "image_extension")).strip()
    if not ext:
        raise SpecError("kitti_config.image_extension: empty", hint='give the images\' extension, e.g. ".png"')
    return ext if ext.startswith(".") else "." + ext


def learning_rate_schedule(training_config: Message) -> tuple[str, Message]:
    """Which learning-rate schedule a training config uses, and its block.

    Args:
        training_config: a DetectNet_v2 ``TrainingConfig``.

    Returns:
        ``("soft_start_annealing_schedule", block)`` or ``("early_stopping_annealing_schedule",
        block)``; a training config without a learning_rate block (rejected by validation)
        gives the soft-start schedule with its documented defaults.
    """
    lr = training_config.learning_rate
    which = lr.WhichOneof("learning_rate") or "soft_start_annealing_schedule"
    return which, getattr(lr, which)


_SCRATCH = "the spec trains from scratch (no model_config.pretrained_model_file)"
#: ``model_config.objective_set.cov.prior_probability`` when a spec leaves it unset (the proto's default).
DEFAULT_PRIOR_PROBABILITY: float = (
    pb.ModelConfig.CovObjective.DESCRIPTOR.fields_by_name["prior_probability"].default_value)
#: ``cost_function_config.autoweighting_warmup_steps`` when a spec leaves it unset.
DEFAULT_AUTOWEIGHTING_WARMUP_STEPS: int = (
    pb.CostFunctionConfig.DESCRIPTOR.fields_by_name["autoweighting_warmup_steps"].default_value)
#: ``training_config.batch_norm_recalibration_images`` when a spec leaves it unset.
DEFAULT_BATCH_NORM_RECALIBRATION_IMAGES: int = (
    pb.TrainingConfig.DESCRIPTOR.fields_by_name["batch_norm_recalibration_images"].default_value)


def _from_scratch_checks(exp: Message, rep: Reporter) -> None:
    """Warnings for settings meant for pretrained weights in a spec that has none.

    Each one was measured on a from-scratch run (docs/training.md, "Training from scratch").
    """
    model = exp.model_config
    if model.freeze_bn:
        rep.warning("model_config.freeze_bn", f"{_SCRATCH}: frozen batch-norm layers keep their initial "
                                              "statistics (mean 0, variance 1) and never learn the data's; "
                                              "set freeze_bn: false")
    prior = model.objective_set.cov.prior_probability
    if prior >= 0.5:
        rep.warning("model_config.objective_set.cov.prior_probability",
                    f"{_SCRATCH}: a coverage head that starts at {prior:g} spends the first epoch learning "
                    "that most cells are background; leave prior_probability unset "
                    f"({DEFAULT_PRIOR_PROBABILITY:g})")
    cfc = exp.cost_function_config
    if cfc.enable_autoweighting and cfc.autoweighting_warmup_steps < DEFAULT_AUTOWEIGHTING_WARMUP_STEPS:
        rep.warning("cost_function_config.autoweighting_warmup_steps",
                    f"{_SCRATCH}: auto-weighting after {cfc.autoweighting_warmup_steps} steps cuts the "
                    "coverage weight 10- to 30-fold while Adam still remembers the larger gradients, and "
                    "the coverage loss stops falling; leave autoweighting_warmup_steps unset "
                    f"({DEFAULT_AUTOWEIGHTING_WARMUP_STEPS}) or set enable_autoweighting: false")
    if model.use_batch_norm and exp.training_config.batch_norm_recalibration_images == 0:
        rep.warning("training_config.batch_norm_recalibration_images",
                    f"{_SCRATCH}: with 0, validation and the saved model normalise with moving averages "
                    "that start at mean 0 and variance 1 and lag the training by about 100 steps; leave "
                    f"it unset ({DEFAULT_BATCH_NORM_RECALIBRATION_IMAGES} images)")


def _experiment_checks(exp: Message, rep: Reporter) -> None:
    classes = cost_function_classes(exp)
    class_set = set(classes)
    seen: set[str] = set()
    for i, tc in enumerate(exp.cost_function_config.target_classes):
        path = f"cost_function_config.target_classes[{i}]"
        if tc.name in seen:
            rep.error(path + ".name", f"class {tc.name!r} is listed twice")
        seen.add(tc.name)
        names = [o.name for o in tc.objectives]
        if tc.objectives and sorted(names) != sorted(OBJECTIVES):
            rep.error(path + ".objectives", f"objectives must be exactly cov and bbox (once each); found "
                                            f"{', '.join(names) or 'none'}")
        if tc.objectives and sum(o.initial_weight for o in tc.objectives) <= 0:
            rep.error(path + ".objectives", "the initial_weight values must add up to more than 0")
        if tc.objectives and sum(o.weight_target for o in tc.objectives) <= 0:
            rep.error(path + ".objectives", "the weight_target values must add up to more than 0")
    cfc = exp.cost_function_config
    if exp.HasField("cost_function_config") and cfc.min_objective_weight > cfc.max_objective_weight:
        rep.error("cost_function_config.min_objective_weight",
                  f"min_objective_weight ({cfc.min_objective_weight:g}) is above max_objective_weight "
                  f"({cfc.max_objective_weight:g})")
    if cfc.enable_autoweighting and cfc.max_objective_weight == 0:
        rep.error("cost_function_config.max_objective_weight",
                  "is 0 with enable_autoweighting: every objective weight would be clamped to 0 "
                  "(set e.g. 0.9999)")

    sections = [
        ("bbox_rasterizer_config", "bbox_rasterizer_config.target_class_config",
         exp.bbox_rasterizer_config.target_class_config),
        ("postprocessing_config", "postprocessing_config.target_class_config",
         exp.postprocessing_config.target_class_config),
        ("evaluation_config", "evaluation_config.minimum_detection_ground_truth_overlap",
         exp.evaluation_config.minimum_detection_ground_truth_overlap),
        ("evaluation_config", "evaluation_config.evaluation_box_config",
         exp.evaluation_config.evaluation_box_config),
    ]
    for block, path, mapping in sections:
        if not exp.HasField(block) or not classes:
            continue
        missing = [c for c in classes if c not in mapping]
        if missing:
            rep.error(path, "no entry for cost-function class(es) " + ", ".join(repr(c) for c in missing))
        for extra in sorted(set(mapping) - class_set):
            rep.warning(path + key_text(extra), f"{extra!r} is not a cost-function class; the entry is ignored")

    mapping = exp.dataset_config.target_class_mapping
    if exp.HasField("dataset_config") and classes:
        for source in sorted(mapping):
            target = mapping[source]
            folded = {c.lower(): c for c in classes}
            if target not in class_set and target.lower() in folded:
                rep.warning(f"dataset_config.target_class_mapping{key_text(source)}",
                            f"maps {source!r} to {target!r}: tltk matches it to cost-function class "
                            f"{folded[target.lower()]!r} (it ignores case), TAO compares exactly; write "
                            f"{folded[target.lower()]!r} for the spec to work in TAO too")
            elif target not in class_set:
                rep.error(f"dataset_config.target_class_mapping{key_text(source)}",
                          f"maps {source!r} to {target!r}, which is not a cost-function class "
                          f"({', '.join(classes)})")
            if source != source.lower():
                rep.warning(f"dataset_config.target_class_mapping{key_text(source)}",
                            f"dataset_convert writes lower-case class names: tltk matches {source!r} to "
                            f"{source.lower()!r} (it ignores case), TAO compares exactly; write "
                            f"{source.lower()!r} for the spec to work in TAO too")
        targets = set(mapping.values())
        for c in classes:
            if mapping and c not in targets:
                rep.warning("dataset_config.target_class_mapping",
                            f"no source class maps to cost-function class {c!r}; it gets no ground truth")
        ext = exp.dataset_config.image_extension.strip().lower().lstrip(".")
        if ext and ext not in IMAGE_EXTENSIONS:
            rep.error("dataset_config.image_extension",
                      f"{exp.dataset_config.image_extension!r} is not supported; use png, jpg or jpeg")

    pre = exp.augmentation_config.preprocessing
    if exp.augmentation_config.HasField("preprocessing"):
        crops = (pre.crop_left, pre.crop_top, pre.crop_right, pre.crop_bottom)
        if any(crops) and (pre.crop_right <= pre.crop_left or pre.crop_bottom <= pre.crop_top):
            rep.error(_PRE + "crop_right", f"crop box ({pre.crop_left}, {pre.crop_top}, {pre.crop_right}, "
                                           f"{pre.crop_bottom}) is empty: need crop_right > crop_left and "
                                           "crop_bottom > crop_top")
    spa = exp.augmentation_config.spatial_augmentation
    if exp.augmentation_config.HasField("spatial_augmentation") and spa.zoom_min > spa.zoom_max:
        rep.error(_SPA + "zoom_min", f"zoom_min ({spa.zoom_min:g}) is above zoom_max ({spa.zoom_max:g})")

    for key in sorted(exp.evaluation_config.evaluation_box_config):
        box = exp.evaluation_config.evaluation_box_config[key]
        path = f"evaluation_config.evaluation_box_config{key_text(key)}"
        if box.minimum_height > box.maximum_height:
            rep.error(path, f"minimum_height ({box.minimum_height}) is above maximum_height ({box.maximum_height})")
        if box.minimum_width > box.maximum_width:
            rep.error(path, f"minimum_width ({box.minimum_width}) is above maximum_width ({box.maximum_width})")

    model = exp.model_config
    if exp.HasField("model_config"):
        arch = model.arch
        if arch in NUM_LAYERS and model.num_layers not in NUM_LAYERS[arch]:
            rep.error("model_config.num_layers", f"{arch} supports num_layers "
                      f"{', '.join(str(n) for n in NUM_LAYERS[arch])}; got {model.num_layers}")
        if arch == "resnet" and model.use_pooling:
            rep.warning("model_config.use_pooling", "with resnet, use_pooling: true changes the output stride "
                                                    "from 16; DetectNet_v2 needs use_pooling: false")
        if arch == "darknet":
            rep.warning("model_config.arch", "darknet backbones have stride 32; DetectNet_v2 expects 16")
        if not model.pretrained_model_file:
            for name in ("load_graph", "freeze_pretrained_layers", "freeze_blocks"):
                value = getattr(model, name)
                if value if isinstance(value, bool) else len(value):
                    rep.warning(f"model_config.{name}", "has no effect without pretrained_model_file; train "
                                                        "needs one to load or freeze pretrained layers")
            _from_scratch_checks(exp, rep)

    tc = exp.training_config
    if exp.HasField("training_config"):
        lr = tc.learning_rate
        if tc.HasField("learning_rate"):
            which = lr.WhichOneof("learning_rate")
            if which is None:
                rep.error("training_config.learning_rate", "choose a schedule: soft_start_annealing_schedule "
                                                           "{ ... } or early_stopping_annealing_schedule { ... }")
            else:
                sched = getattr(lr, which)
                if sched.min_learning_rate > sched.max_learning_rate:
                    rep.error(f"training_config.learning_rate.{which}.min_learning_rate",
                              f"min_learning_rate ({sched.min_learning_rate:g}) is above max_learning_rate "
                              f"({sched.max_learning_rate:g})")
                if which == "soft_start_annealing_schedule" and sched.soft_start > sched.annealing:
                    rep.error(f"training_config.learning_rate.{which}.annealing",
                              f"annealing ({sched.annealing:g}) must not come before soft_start "
                              f"({sched.soft_start:g})")
                if which == "early_stopping_annealing_schedule" and sched.annealing_epochs < sched.soft_start_epochs:
                    rep.error(f"training_config.learning_rate.{which}.annealing_epochs",
                              f"annealing_epochs ({sched.annealing_epochs}) is before soft_start_epochs "
                              f"({sched.soft_start_epochs})")
        if tc.HasField("optimizer") and tc.optimizer.WhichOneof("optimizer") is None:
            rep.error("training_config.optimizer", "choose an optimizer: adam { ... }")
        if exp.HasField("evaluation_config") and exp.evaluation_config.first_validation_epoch > tc.num_epochs:
            rep.warning("evaluation_config.first_validation_epoch",
                        f"is after the last epoch ({tc.num_epochs}); validation runs once, after the last epoch")

    if exp.HasField("loss_mask_label_filter"):
        for i, cfg in enumerate(exp.loss_mask_label_filter.objective_label_filter_configs):
            path = f"loss_mask_label_filter.objective_label_filter_configs[{i}]"
            if not cfg.HasField("label_filter") or cfg.label_filter.WhichOneof("label_filter_params") is None:
                rep.error(path + ".label_filter", "choose a filter: bbox_dimensions_label_filter, "
                                                  "bbox_crop_label_filter or source_class_label_filter")
            for name in cfg.target_class_names:
                if classes and name not in class_set:
                    rep.error(path + ".target_class_names", f"{name!r} is not a cost-function class")
            dims = cfg.label_filter.bbox_dimensions_label_filter
            if cfg.label_filter.HasField("bbox_dimensions_label_filter"):
                if dims.max_width and dims.min_width > dims.max_width:
                    rep.error(path + ".label_filter.bbox_dimensions_label_filter",
                              "min_width is above max_width")
                if dims.max_height and dims.min_height > dims.max_height:
                    rep.error(path + ".label_filter.bbox_dimensions_label_filter",
                              "min_height is above max_height")
            crop = cfg.label_filter.bbox_crop_label_filter
            if cfg.label_filter.HasField("bbox_crop_label_filter"):
                values = (crop.crop_left, crop.crop_right, crop.crop_top, crop.crop_bottom)
                if any(values) and (crop.crop_right <= crop.crop_left or crop.crop_bottom <= crop.crop_top):
                    rep.error(path + ".label_filter.bbox_crop_label_filter",
                              "empty crop: need crop_right > crop_left and crop_bottom > crop_top")
    if len(exp.dataset_export_config):
        rep.warning("dataset_export_config", "is ignored by train/evaluate (use a dataset_convert spec)")


def _experiment_paths(exp: Message) -> Iterable[DataPath]:
    ds = exp.dataset_config
    for i, src in enumerate(ds.data_sources):
        yield DataPath(f"dataset_config.data_sources[{i}].tfrecords_path", src.tfrecords_path, "glob")
        yield DataPath(f"dataset_config.data_sources[{i}].image_directory_path", src.image_directory_path, "dir")
    if ds.HasField("validation_data_source"):
        src = ds.validation_data_source
        yield DataPath("dataset_config.validation_data_source.tfrecords_path", src.tfrecords_path, "glob")
        yield DataPath("dataset_config.validation_data_source.image_directory_path", src.image_directory_path,
                       "dir")
    yield DataPath("model_config.pretrained_model_file", exp.model_config.pretrained_model_file, "file")


# ---- inference ------------------------------------------------------------------------------

_IC = "inferencer_config."
_BH = "bbox_handler_config."

INFERENCE_REQUIRED = (
    Required("inferencer_config"),
    Required("inferencer_config.target_classes", "list the class names in network output order"),
    Required("bbox_handler_config"),
    Required("bbox_handler_config.classwise_bbox_handler_config",
             "add an entry per class, or a \"default\" entry"),
    Required("bbox_handler_config.classwise_bbox_handler_config[*].clustering_config"),
)

INFERENCE_RULES = [
    Rule(_IC + "batch_size", positive()),
    Rule(_IC + "image_height", positive(), note="the model input height"),
    Rule(_IC + "image_width", positive(), note="the model input width"),
    Rule(_IC + "image_channels", one_of(1, 3)),
    Rule(_IC + "gpu_index", non_negative()),
    Rule(_IC + "stride", positive()),
    Rule(_IC + "target_classes[*]", non_empty()),
    Rule(_IC + "tlt_config.model", non_empty(), severity="warning", note="inference needs the model file"),
    Rule(_IC + "tensorrt_config.calibrator_config.n_batches", positive()),
    Rule(_IC + "tensorrt_config.calibrator_config.batch_size", non_negative()),
    Rule(_BH + "overlay_linewidth", non_negative()),
    Rule(_BH + "classwise_bbox_handler_config[*].confidence_model", one_of(*CONFIDENCE_MODELS)),
    Rule(_BH + "classwise_bbox_handler_config[*].confidence_threshold", non_negative()),
    Rule(_BH + "classwise_bbox_handler_config[*].bbox_color.R", between(0, 255)),
    Rule(_BH + "classwise_bbox_handler_config[*].bbox_color.G", between(0, 255)),
    Rule(_BH + "classwise_bbox_handler_config[*].bbox_color.B", between(0, 255)),
    *_clustering_rules(_BH + "classwise_bbox_handler_config[*]"),
]


def classwise_config(inference: Message, class_name: str) -> Message | None:
    """The ``classwise_bbox_handler_config`` entry used for a class: its own, else ``default``.

    Args:
        inference: a DetectNet_v2 ``Inference`` spec.
        class_name: a target class.

    Returns:
        The ``ClasswiseBboxHandlerConfig`` message, or None when neither exists.
    """
    table = inference.bbox_handler_config.classwise_bbox_handler_config
    if class_name in table:
        return table[class_name]
    if DEFAULT_CLASS_KEY in table:
        return table[DEFAULT_CLASS_KEY]
    return None


def _inference_checks(inf: Message, rep: Reporter) -> None:
    ic = inf.inferencer_config
    classes = list(ic.target_classes)
    if inf.HasField("inferencer_config"):
        if ic.WhichOneof("model_config_type") is None:
            rep.error("inferencer_config", "choose the model: tlt_config { model: ... } or tensorrt_config { ... }")
        dupes = sorted({c for c in classes if classes.count(c) > 1})
        if dupes:
            rep.error("inferencer_config.target_classes", "listed twice: " + ", ".join(repr(d) for d in dupes))
        if ic.HasField("tensorrt_config"):
            trt = ic.tensorrt_config
            base = "inferencer_config.tensorrt_config"
            if trt.parser == trt.ETLT and not trt.etlt_model and not trt.trt_engine:
                rep.warning(base + ".etlt_model", "neither etlt_model nor trt_engine is set; inference needs "
                                                  "one (an exported .etlt/.onnx model or an engine)")
            if trt.parser in (trt.UFF, trt.CAFFE):
                name = pb.TensorRTConfig.Parser.Name(trt.parser)
                rep.warning(base + ".parser", f"{name} models cannot be run by tltk (export the model to ONNX "
                                              "and use parser: ETLT with etlt_model)")
            if trt.parser == trt.CAFFE and not (trt.caffemodel and trt.prototxt):
                rep.error(base, "parser CAFFE needs caffemodel and prototxt")
            if trt.parser == trt.UFF and not trt.uff_model:
                rep.error(base + ".uff_model", "parser UFF needs uff_model")
            if trt.backend_data_type == trt.INT8 and not trt.calibrator_config.calibration_cache:
                rep.warning(base + ".calibrator_config", "INT8 without a calibration_cache: building the engine "
                                                         "needs one (or an existing trt_engine)")
    table = inf.bbox_handler_config.classwise_bbox_handler_config
    if inf.HasField("bbox_handler_config") and table and classes:
        if DEFAULT_CLASS_KEY not in table:
            missing = [c for c in classes if c not in table]
            if missing:
                rep.error("bbox_handler_config.classwise_bbox_handler_config",
                          "no entry for class(es) " + ", ".join(repr(m) for m in missing)
                          + " and no \"default\" entry")
        for key in sorted(table):
            if key != DEFAULT_CLASS_KEY and key not in classes:
                rep.warning(f"bbox_handler_config.classwise_bbox_handler_config{key_text(key)}",
                            f"{key!r} is not in inferencer_config.target_classes; the entry is ignored")
        for name in inf.bbox_handler_config.postproc_classes:
            if name not in classes:
                rep.error("bbox_handler_config.postproc_classes",
                          f"{name!r} is not in inferencer_config.target_classes")


def _inference_paths(inf: Message) -> Iterable[DataPath]:
    ic = inf.inferencer_config
    if ic.HasField("tlt_config"):
        yield DataPath("inferencer_config.tlt_config.model", ic.tlt_config.model, "file")
    if ic.HasField("tensorrt_config"):
        trt = ic.tensorrt_config
        base = "inferencer_config.tensorrt_config."
        if trt.parser == trt.ETLT:
            yield DataPath(base + "etlt_model", trt.etlt_model, "file")
        if trt.parser == trt.CAFFE:
            yield DataPath(base + "caffemodel", trt.caffemodel, "file")
            yield DataPath(base + "prototxt", trt.prototxt, "file")
        if trt.parser == trt.UFF:
            yield DataPath(base + "uff_model", trt.uff_model, "file")


# ---- dataset_convert ------------------------------------------------------------------------

_KC = "kitti_config."
_CC = "coco_config."

DATASET_CONVERT_RULES = [
    Rule(_KC + "root_directory_path", non_empty()),
    Rule(_KC + "image_dir_name", non_empty()),
    Rule(_KC + "label_dir_name", non_empty()),
    Rule(_KC + "partition_mode", one_of("random", "sequence")),
    Rule(_KC + "val_split", between(0, 100, hi_open=True), note="a percentage of the frames"),
    Rule(_KC + "image_extension", non_empty()),
    Rule(_CC + "root_directory_path", non_empty()),
    Rule(_CC + "img_dir_names", non_empty()),
    Rule(_CC + "num_partitions", positive()),
    Rule(_CC + "num_shards[*]", positive()),
    Rule("sample_modifier_config.minimum_target_class_imbalance[*]", positive()),
]


def _dataset_convert_checks(cfg: Message, rep: Reporter) -> None:
    which = cfg.WhichOneof("convert_config_type")
    if which is None:
        rep.error(None, "choose the input format: kitti_config { ... } or coco_config { ... }")
        return
    if which == "kitti_config":
        k = cfg.kitti_config
        if k.partition_mode == "random" and k.num_partitions != 2:
            rep.warning(_KC + "num_partitions", f"random partitioning always writes 2 folds (train and val); "
                                                f"num_partitions {k.num_partitions} is ignored")
        if k.partition_mode == "sequence":
            if not k.kitti_sequence_to_frames_file:
                rep.error(_KC + "kitti_sequence_to_frames_file", "partition_mode sequence needs the JSON file "
                                                                 "that maps sequences to frames")
            if k.num_partitions < 1:
                rep.error(_KC + "num_partitions", "must be at least 1")
        if k.image_extension and not k.image_extension.startswith("."):
            rep.warning(_KC + "image_extension", f"TAO expects the dot ('.{k.image_extension}'); tltk adds it")
    else:
        c = cfg.coco_config
        n_dirs, n_ann = len(c.img_dir_names), len(c.annotation_files)
        if n_dirs != n_ann:
            rep.error(_CC + "annotation_files", f"{n_ann} annotation file(s) for {n_dirs} image folder(s); "
                                                "give one per partition")
        if c.num_partitions and c.num_partitions != n_dirs:
            rep.error(_CC + "num_partitions", f"is {c.num_partitions} but {n_dirs} img_dir_names are listed")
        if len(c.num_shards) not in (0, 1, n_dirs):
            rep.error(_CC + "num_shards", f"give one value for all partitions or one per partition "
                                          f"({n_dirs}); got {len(c.num_shards)}")


def _dataset_convert_paths(cfg: Message) -> Iterable[DataPath]:
    if cfg.HasField("kitti_config"):
        k = cfg.kitti_config
        yield DataPath(_KC + "root_directory_path", k.root_directory_path, "dir")
        if k.root_directory_path:
            yield DataPath(_KC + "image_dir_name", k.image_dir_name, "dir", k.root_directory_path)
            yield DataPath(_KC + "label_dir_name", k.label_dir_name, "dir", k.root_directory_path)
            yield DataPath(_KC + "kitti_sequence_to_frames_file", k.kitti_sequence_to_frames_file, "file",
                           k.root_directory_path)
    if cfg.HasField("coco_config"):
        c = cfg.coco_config
        yield DataPath(_CC + "root_directory_path", c.root_directory_path, "dir")
        if c.root_directory_path:
            for i, name in enumerate(c.img_dir_names):
                yield DataPath(f"{_CC}img_dir_names[{i}]", name, "dir", c.root_directory_path)
            for i, name in enumerate(c.annotation_files):
                yield DataPath(f"{_CC}annotation_files[{i}]", name, "file", c.root_directory_path)


SCHEMAS: dict[str, KindSchema] = {
    "experiment": KindSchema(
        model="detectnet_v2", kind="experiment", message_class=pb.Experiment,
        description="DetectNet_v2 training/evaluation spec",
        required=EXPERIMENT_REQUIRED, rules=EXPERIMENT_RULES, checks=(_experiment_checks,),
        data_paths=_experiment_paths,
        zero_means_default=(
            "dataset_config.data_sources[*].source_weight",
            "dataset_config.validation_data_source.source_weight",
            "augmentation_config.spatial_augmentation.rotate_probability",
            "augmentation_config.preprocessing.scale_width",
            "augmentation_config.preprocessing.scale_height",
            # tltk reads training-spec NMS thresholds like TAO's inference path (0 -> 0.3 / 0.1).
            "postprocessing_config.target_class_config[*].clustering_config.nms_iou_threshold",
            "postprocessing_config.target_class_config[*].clustering_config.nms_confidence_threshold",
            "model_config.num_layers",
            "training_config.checkpoint_interval",
            "training_config.visualizer.scalar_logging_frequency",
            "training_config.visualizer.infrequent_logging_frequency",
        ),
    ),
    "inference": KindSchema(
        model="detectnet_v2", kind="inference", message_class=pb.Inference,
        description="DetectNet_v2 inference spec",
        required=INFERENCE_REQUIRED, rules=INFERENCE_RULES, checks=(_inference_checks,),
        data_paths=_inference_paths,
        zero_means_default=(
            "inferencer_config.stride",
            "inferencer_config.tensorrt_config.calibrator_config.n_batches",
            "bbox_handler_config.classwise_bbox_handler_config[*].clustering_config.nms_iou_threshold",
            "bbox_handler_config.classwise_bbox_handler_config[*].clustering_config.nms_confidence_threshold",
        ),
    ),
    "dataset_convert": KindSchema(
        model="detectnet_v2", kind="dataset_convert", message_class=pb.DatasetExportConfig,
        description="DetectNet_v2 dataset_convert spec",
        rules=DATASET_CONVERT_RULES, checks=(_dataset_convert_checks,), data_paths=_dataset_convert_paths,
        zero_means_default=("kitti_config.image_extension",),
    ),
}
