#!/usr/bin/env bash
# `make demo`: the whole DetectNet_v2 workflow on synthetic KITTI data, as a user would type it.
#
#   synthesize -> validate_spec -> dataset_convert -> train (quickstart spec) -> evaluate
#   -> prune -> retrain the pruned model -> evaluate it -> export INT8 (ONNX, TensorRT
#   calibration cache, Q/DQ ONNX, DeepStream files) -> evaluate the exported models
#   -> inference through ONNX Runtime -> offline evaluation of the KITTI files it wrote.
#
# Usage: scripts/demo.sh [OUTPUT_DIR]   (default demo_run; an existing run resumes/reuses steps)
# Environment: DEMO_IMAGES (default 600), DEMO_EPOCHS (default: the quickstart spec's 16),
#              DEMO_RETRAIN_EPOCHS (default: the retrain spec's 12), DEMO_PRUNE_THRESHOLD (default 0.88).
# The full run takes about 35 minutes on 2 CPU cores; DEMO_IMAGES=64 DEMO_EPOCHS=1
# DEMO_RETRAIN_EPOCHS=1 runs every step in a few minutes (with a model that finds little).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:-demo_run}"
IMAGES="${DEMO_IMAGES:-600}"
PTH="${DEMO_PRUNE_THRESHOLD:-0.88}"
mkdir -p "$OUT"
cd "$OUT"
SPECS="$ROOT/specs/detectnet_v2"
epochs() {  # --set overrides for a shorter run: epochs, checkpoint and validation at the end
  if [[ -n "${1:-}" ]]; then
    echo --set "training_config.num_epochs=$1" --set "training_config.checkpoint_interval=$1" \
      --set "evaluation_config.first_validation_epoch=$1"
  fi
}

step() { printf '\n=== %s\n' "$*"; }
started=$(date +%s)

step "1. synthetic KITTI data: $IMAGES images of 960x544 (data/kitti)"
if [[ ! -f data/kitti/dataset_convert_spec.txt ]]; then
  tltk dataset synthesize --format kitti --output data/kitti --num_images "$IMAGES" --seed 42
fi

step "2. validate the specs before running anything"
tltk detectnet_v2 validate_spec -e data/kitti/dataset_convert_spec.txt
tltk detectnet_v2 validate_spec -e "$SPECS/quickstart_train.txt"

step "3. dataset_convert: TFRecords with TAO's shard names and keys (data/tfrecords)"
if ! ls data/tfrecords/kitti-fold-* >/dev/null 2>&1; then
  tltk detectnet_v2 dataset_convert -d data/kitti/dataset_convert_spec.txt -o data/tfrecords/kitti
fi

step "4. train resnet10 at 480x272 from scratch (results/train; resumes if interrupted)"
tltk detectnet_v2 train -e "$SPECS/quickstart_train.txt" -r results/train -n model $(epochs "${DEMO_EPOCHS:-}")

step "5. evaluate the trained model"
tltk detectnet_v2 evaluate -e "$SPECS/quickstart_train.txt" -m results/train/model.tlt -r results/evaluate

step "6. prune (pruning threshold $PTH) and retrain without regularization"
mkdir -p results/prune
rm -f results/prune/model_pruned.tlt
tltk detectnet_v2 prune -m results/train/model.tlt -o results/prune/model_pruned.tlt -pth "$PTH"
tltk detectnet_v2 train -e "$SPECS/retrain_pruned.txt" -r results/retrain -n model_retrained \
  $(epochs "${DEMO_RETRAIN_EPOCHS:-}")
tltk detectnet_v2 evaluate -e "$SPECS/quickstart_train.txt" -m results/retrain/model_retrained.tlt \
  -r results/evaluate_retrained

step "7. export INT8: ONNX, TensorRT calibration cache, Q/DQ ONNX, DeepStream config and labels"
tltk detectnet_v2 export -m results/retrain/model_retrained.tlt -o results/export/model.onnx \
  -e "$SPECS/quickstart_train.txt" --data_type int8 --batches 8 --batch_size 8 \
  --cal_cache_file results/export/cal.bin --gen_ds_config --force

step "8. evaluate the exported FP32 ONNX and the INT8 Q/DQ ONNX with ONNX Runtime"
tltk detectnet_v2 evaluate -e "$SPECS/quickstart_train.txt" -m results/export/model.onnx -r results/evaluate_onnx
QDQ=results/export/model_int8_qdq.onnx
tltk detectnet_v2 evaluate -e "$SPECS/quickstart_train.txt" -m "$QDQ" -r results/evaluate_int8

step "9. inference with the INT8 Q/DQ model through ONNX Runtime (results/inference)"
cat > results/export/inference_spec.txt <<EOF
inferencer_config {
  target_classes: "car"
  target_classes: "pedestrian"
  target_classes: "cyclist"
  image_width: 480
  image_height: 272
  image_channels: 3
  batch_size: 8
  tensorrt_config { etlt_model: "$(pwd)/$QDQ" }
}
bbox_handler_config {
  kitti_dump: true
  disable_overlay: false
  overlay_linewidth: 2
  classwise_bbox_handler_config {
    key: "default"
    value {
      confidence_model: "aggregate_cov"
      bbox_color { R: 0 G: 255 B: 0 }
      clustering_config { clustering_algorithm: NMS coverage_threshold: 0.005
        nms_iou_threshold: 0.5 nms_confidence_threshold: 0.1 minimum_bounding_box_height: 4 }
    }
  }
}
EOF
tltk detectnet_v2 inference -e results/export/inference_spec.txt -i data/kitti/image_2 -o results/inference

step "10. offline evaluation of the KITTI files inference wrote (the validation images' files)"
tltk detectnet_v2 evaluate -e "$SPECS/quickstart_train.txt" --predictions_dir results/inference/labels \
  -r results/evaluate_offline

elapsed=$(( $(date +%s) - started ))
step "done in ${elapsed}s; everything is under $(pwd)"
echo "  trained model:      results/train/model.tlt"
echo "  pruned + retrained: results/retrain/model_retrained.tlt"
echo "  exports:            $(ls results/export | tr '\n' ' ')"
echo "  inference:          results/inference/images_annotated, results/inference/labels"
