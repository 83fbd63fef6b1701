"""The MaskRCNN hyper-parameters the model, its targets and its losses need, read from a spec.

``MaskRCNNParams.from_experiment(exp)`` reads a loaded ``tltk.mask_rcnn.Experiment``; unset
fields take the schema's ``[default = ...]`` values (the only home of defaults), and string
fields are parsed by :mod:`tltk.mask_rcnn.spec`.  Everything is a plain Python value, so the
object can be logged, compared and rebuilt with ``MaskRCNNParams(**params.as_dict())``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from tltk.errors import SpecError
from tltk.mask_rcnn import spec
from tltk.mask_rcnn.anchors import AnchorConfig


@dataclass(frozen=True)
class MaskRCNNParams:
    """MaskRCNN model, sampling, post-processing and loss settings (TAO field names).

    Attributes:
        image_size: network input ``(height, width)``, divisible by ``2**max_level``.
        num_classes: classes including the background (index 0).
        max_num_instances: ground-truth rows per image (M of the data contract).
        gt_mask_size: side S of the cropped ground-truth masks (stored as S+4 with a 2 px border).
        arch: backbone family (``resnet``).
        nlayers: backbone depth 10/18/34/50/101.
        freeze_blocks: backbone blocks whose convolutions do not train (0 = conv1, 1..4 stages).
        freeze_bn: backbone BNs normalise with moving statistics; gamma/beta still train (TAO).
        min_level: lowest FPN level.
        max_level: highest FPN level.
        num_scales: anchor octaves per level.
        aspect_ratios: anchor ``(x_factor, y_factor)`` pairs.
        anchor_scale: base anchor size in strides.
        rpn_batch_size_per_im: anchors sampled per image for the RPN loss (its normaliser).
        rpn_min_size: proposals with a side (+1) below this many input pixels are dropped.
        train_rpn_pre_nms_topn: proposals per level scored before NMS (training).
        train_rpn_post_nms_topn: proposals kept in total (training).
        train_rpn_nms_threshold: RPN NMS IoU (training).
        test_rpn_pre_nms_topn: proposals per level scored before NMS (inference).
        test_rpn_post_nms_topn: proposals kept in total (inference).
        test_rpn_nms_thresh: RPN NMS IoU (inference).
        batch_size_per_im: ROIs sampled per image for the second stage.
        fg_fraction: largest foreground share of the sampled ROIs.
        fg_thresh: foreground when the best IoU with a ground-truth box is above this.
        bg_thresh_hi: background when the best IoU is below this ...
        bg_thresh_lo: ... and at least this.
        fast_rcnn_mlp_head_dim: width of ``fc6``/``fc7``.
        bbox_reg_weights: ``(wy, wx, wh, ww)`` of the second-stage box coder.
        include_mask: build the mask head.
        mrcnn_resolution: mask head output side (28); ROIAlign sizes are /4 (box) and /2 (mask).
        test_detections_per_image: detections per image (K).
        test_nms: detection NMS IoU (per class).
        rpn_box_loss_weight: weight of the RPN box loss.
        fast_rcnn_box_loss_weight: weight of the Fast R-CNN box loss.
        mrcnn_weight_loss_mask: weight of the mask loss.
        l1_weight_decay: TAO's L1 factor (see ``tltk.mask_rcnn.model.tao_weight_decay``).
        l2_weight_decay: TAO's L2 factor.
        seed: random seed (ROI sampling).
    """

    image_size: tuple[int, int]
    num_classes: int
    max_num_instances: int
    gt_mask_size: int
    arch: str
    nlayers: int
    freeze_blocks: tuple[int, ...]
    freeze_bn: bool
    min_level: int
    max_level: int
    num_scales: int
    aspect_ratios: tuple[tuple[float, float], ...]
    anchor_scale: float
    rpn_batch_size_per_im: int
    rpn_min_size: float
    train_rpn_pre_nms_topn: int
    train_rpn_post_nms_topn: int
    train_rpn_nms_threshold: float
    test_rpn_pre_nms_topn: int
    test_rpn_post_nms_topn: int
    test_rpn_nms_thresh: float
    batch_size_per_im: int
    fg_fraction: float
    fg_thresh: float
    bg_thresh_hi: float
    bg_thresh_lo: float
    fast_rcnn_mlp_head_dim: int
    bbox_reg_weights: tuple[float, float, float, float]
    include_mask: bool
    mrcnn_resolution: int
    test_detections_per_image: int
    test_nms: float
    rpn_box_loss_weight: float
    fast_rcnn_box_loss_weight: float
    mrcnn_weight_loss_mask: float
    l1_weight_decay: float
    l2_weight_decay: float
    seed: int

    @classmethod
    def from_experiment(cls, exp: Message) -> MaskRCNNParams:
        """Read the parameters from a loaded MaskRCNN ``Experiment``.

        Args:
            exp: a ``tltk.mask_rcnn.Experiment`` message (defaults from the schema apply).

        Returns:
            The parameters.

        Raises:
            SpecError: a string field is malformed, ``num_classes`` < 2, or the FPN levels do
                not fit the ResNet (min_level 2..5, max_level above it).
        """
        dc, mc = exp.data_config, exp.maskrcnn_config
        try:
            image_size = spec.image_size(exp)
            aspect_ratios = spec.aspect_ratios(exp)
            bbox_reg_weights = spec.bbox_reg_weights(exp)
            freeze_blocks = spec.freeze_blocks(exp)
        except ValueError as exc:
            raise SpecError(str(exc), hint="see tltk mask_rcnn validate_spec for every problem at once") from exc
        if dc.num_classes < 2:
            raise SpecError(f"data_config.num_classes is {dc.num_classes}; it must count the categories plus "
                            "the background (> 1)")
        if not 2 <= mc.min_level <= 5 or mc.max_level <= mc.min_level:
            raise SpecError(f"maskrcnn_config.min_level/max_level = {mc.min_level}/{mc.max_level}: the ResNet "
                            "FPN needs 2 <= min_level <= 5 < ... and max_level > min_level",
                            hint="TAO uses min_level: 2, max_level: 6")
        return cls(
            image_size=(int(image_size[0]), int(image_size[1])),
            num_classes=int(dc.num_classes),
            max_num_instances=int(dc.max_num_instances),
            gt_mask_size=int(mc.gt_mask_size),
            arch=str(mc.arch),
            nlayers=int(mc.nlayers),
            freeze_blocks=tuple(int(b) for b in freeze_blocks),
            freeze_bn=bool(mc.freeze_bn),
            min_level=int(mc.min_level),
            max_level=int(mc.max_level),
            num_scales=int(mc.num_scales),
            aspect_ratios=tuple((float(x), float(y)) for x, y in aspect_ratios),
            anchor_scale=float(mc.anchor_scale),
            rpn_batch_size_per_im=int(mc.rpn_batch_size_per_im),
            rpn_min_size=float(mc.rpn_min_size),
            train_rpn_pre_nms_topn=int(mc.train_rpn_pre_nms_topn),
            train_rpn_post_nms_topn=int(mc.train_rpn_post_nms_topn),
            train_rpn_nms_threshold=float(mc.train_rpn_nms_threshold),
            test_rpn_pre_nms_topn=int(mc.test_rpn_pre_nms_topn),
            test_rpn_post_nms_topn=int(mc.test_rpn_post_nms_topn),
            test_rpn_nms_thresh=float(mc.test_rpn_nms_thresh),
            batch_size_per_im=int(mc.batch_size_per_im),
            fg_fraction=float(mc.fg_fraction),
            fg_thresh=float(mc.fg_thresh),
            bg_thresh_hi=float(mc.bg_thresh_hi),
            bg_thresh_lo=float(mc.bg_thresh_lo),
            fast_rcnn_mlp_head_dim=int(mc.fast_rcnn_mlp_head_dim),
            bbox_reg_weights=(float(bbox_reg_weights[0]), float(bbox_reg_weights[1]),
                              float(bbox_reg_weights[2]), float(bbox_reg_weights[3])),
            include_mask=bool(mc.include_mask),
            mrcnn_resolution=int(mc.mrcnn_resolution),
            test_detections_per_image=int(mc.test_detections_per_image),
            test_nms=float(mc.test_nms),
            rpn_box_loss_weight=float(mc.rpn_box_loss_weight),
            fast_rcnn_box_loss_weight=float(mc.fast_rcnn_box_loss_weight),
            mrcnn_weight_loss_mask=float(mc.mrcnn_weight_loss_mask),
            l1_weight_decay=float(exp.l1_weight_decay),
            l2_weight_decay=float(exp.l2_weight_decay),
            seed=int(exp.seed),
        )

    def replace(self, **changes: Any) -> MaskRCNNParams:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict (``MaskRCNNParams(**d)`` rebuilds the object)."""
        return dataclasses.asdict(self)

    @property
    def anchor_config(self) -> AnchorConfig:
        """The anchor layout (shared with the data pipeline's RPN targets)."""
        return AnchorConfig(
            min_level=self.min_level,
            max_level=self.max_level,
            num_scales=self.num_scales,
            aspect_ratios=list(self.aspect_ratios),
            anchor_scale=self.anchor_scale,
            image_size=self.image_size,
        )

    @property
    def anchors_per_location(self) -> int:
        """A = num_scales * len(aspect_ratios)."""
        return self.num_scales * len(self.aspect_ratios)

    @property
    def box_roi_size(self) -> int:
        """ROIAlign output side of the box head: ``mrcnn_resolution // 4`` (7)."""
        return self.mrcnn_resolution // 4

    @property
    def mask_roi_size(self) -> int:
        """ROIAlign output side of the mask head: ``mrcnn_resolution // 2`` (14)."""
        return self.mrcnn_resolution // 2

    @property
    def mask_rois_per_image(self) -> int:
        """ROIs the mask head trains on per image: ``floor(fg_fraction * batch_size_per_im)`` (128),
        at least 1; foreground first, the rest carry zero weight."""
        return max(1, int(self.fg_fraction * self.batch_size_per_im))
