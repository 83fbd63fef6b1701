"""``tltk detectnet_v2 dataset_convert`` and ``tltk detectnet_v2 calibration_tensorfile``.

Flags are TAO's (short and long spellings).  Exit codes: 0 ok, 1 failure, 2 invalid
spec/input or an existing output TensorFile, 130 interrupted.
"""

from __future__ import annotations

import json
import os

import click

from tltk import console
from tltk.cli.common import CommandResult, set_option, tltk_command


@tltk_command("dataset_convert",
              help="Convert KITTI folders or COCO JSON to DetectNet_v2 TFRecords (TAO's layout).\n\n"
                   "Shards are named <OUTPUT>-fold-PPP-of-NNN-shard-SSSSS-of-KKKKK. Bad data is reported "
                   "per file and line and skipped; the run fails only when no usable frame remains. "
                   "--json prints counts per partition and class, problems and shard files.")
@click.option("-d", "--dataset_export_spec", "--dataset-export-spec", "dataset_export_spec", required=True,
              type=click.Path(dir_okay=False), help="The dataset_convert spec (DatasetExportConfig).")
@click.option("-o", "--output_filename", "output_filename", required=True,
              help="Output prefix of the TFRecord shards (its folder is created).")
@click.option("-f", "--validation_fold", "--validation-fold", "validation_fold", type=int, default=None,
              help="Fold left out of sample modification (0-based).")
@click.option("-r", "--results_dir", "results_dir", default=None,
              help="Folder for status.json (the conversion report).")
@set_option()
def dataset_convert(dataset_export_spec: str, output_filename: str, validation_fold: int | None,
                    results_dir: str | None, overrides: tuple[str, ...]) -> CommandResult:
    from tltk.detectnet_v2.dataset_convert import convert_dataset
    from tltk.models import load_spec
    from tltk.spec import resolve_spec_path

    loaded = load_spec(dataset_export_spec, model="detectnet_v2", kind="dataset_convert", overrides=overrides)
    report = convert_dataset(loaded.message, output_filename, validation_fold=validation_fold,
                             resolve=lambda value: resolve_spec_path(loaded, value))
    data = report.to_dict()
    if results_dir:
        from tltk.fileio import atomic_write_text

        os.makedirs(results_dir, exist_ok=True)
        atomic_write_text(os.path.join(results_dir, "status.json"), json.dumps(data, indent=2) + "\n")
    n_problems = len(report.problems)
    folds = ", ".join(f"fold {p.index}: {p.num_frames}" for p in report.partitions)
    summary = (f"Wrote {report.num_frames} frames ({folds}) to {len(report.shards)} shard(s) at {report.output_prefix}"
               f"; {n_problems} data problem(s)"
               + (f", see {report.problems_file}" if report.problems_file else "")
               + (f"; removed {len(report.removed_stale)} shard(s) of an earlier conversion" if report.removed_stale
                  else "") + ".")
    return CommandResult(summary, data)


@tltk_command("calibration_tensorfile",
              help="Write preprocessed training (or validation) batches to a TensorFile for INT8 calibration.\n\n"
                   "The file is TAO's HDF5 TensorFile layout: NCHW float32 batches in [0, 1], no augmentation. "
                   "An existing output file is refused (exit 2) unless --force is given.")
@click.option("-e", "--experiment_spec_file", "--experiment_spec", "experiment_spec_file", required=True,
              type=click.Path(dir_okay=False), help="The training experiment spec.")
@click.option("-o", "--output_path", "output_path", required=True, help="The TensorFile to create.")
@click.option("-m", "--max_batches", "max_batches", type=int, default=-1, show_default=True,
              help="Number of batches; -1 = floor(number of images / batch_size_per_gpu).")
@click.option("--use_validation_set", is_flag=True, default=False,
              help="Use the validation data instead of the training data.")
@click.option("--force", is_flag=True, default=False, help="Overwrite an existing output file.")
@set_option()
def calibration_tensorfile(experiment_spec_file: str, output_path: str, max_batches: int, use_validation_set: bool,
                           force: bool, overrides: tuple[str, ...]) -> CommandResult:
    from tltk.data.tensorfile import TensorFileWriter
    from tltk.errors import InvalidInputError, UsageError

    if os.path.exists(output_path) and not force:
        raise InvalidInputError(f"output TensorFile already exists: {output_path}",
                                hint="choose another -o path, delete the file, or pass --force")
    from tltk.models import load_spec, make_task

    loaded = load_spec(experiment_spec_file, model="detectnet_v2", kind="experiment", overrides=overrides)
    task = make_task("detectnet_v2", loaded)
    data = task.data
    split = "val" if use_validation_set else "train"
    num_images = data.num_examples(split)
    batch = data.batch_size
    available = num_images // batch
    if available == 0:
        raise InvalidInputError(f"the {split} data has {num_images} image(s), fewer than one batch of {batch}",
                                hint="lower training_config.batch_size_per_gpu or add data")
    if max_batches == -1:
        max_batches = available
    elif max_batches <= 0:
        raise UsageError(f"--max_batches must be -1 or > 0, not {max_batches}")
    elif max_batches > available:
        raise UsageError(f"--max_batches {max_batches} is more than the {available} batch(es) of {batch} that the "
                         f"{num_images} {split} image(s) give")
    batches = task.calibration_batches(batch, max_batches, split)
    shape: tuple[int, ...] = ()
    with TensorFileWriter(output_path, overwrite=force) as writer:
        for array in console.progress(batches, total=max_batches, desc="calibration", unit="batch"):
            shape = tuple(array.shape)
            writer.write_batch(array)
    summary = f"Wrote {max_batches} batch(es) of shape {shape} from the {split} data to {output_path}."
    return CommandResult(summary, {"output_path": output_path, "batches": max_batches, "batch_shape": list(shape),
                                   "split": split, "num_images": num_images, "dtype": "float32"})
