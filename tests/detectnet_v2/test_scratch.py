"""Training from scratch: the coverage head's prior-probability bias and the from-scratch spec warnings."""

from __future__ import annotations

import math
from types import SimpleNamespace as NS

import numpy as np
import pytest

from tltk.detectnet_v2.model import build_detectnet_v2_model, cov_prior_probability, prior_bias
from tltk.detectnet_v2.spec import DEFAULT_PRIOR_PROBABILITY
from tltk.errors import SpecError


def _model_config(**cov):
    return NS(arch="resnet", num_layers=10, use_batch_norm=True, all_projections=True,
              objective_set=NS(bbox=NS(input="", scale=35.0, offset=0.5), cov=NS(input="", **cov)))


def test_prior_bias_by_hand():
    # -ln((1 - p) / p): 0.5 is TAO's zero bias, 0.01 is -ln(99)
    assert prior_bias(0.5) == 0.0
    assert prior_bias(0.01) == pytest.approx(-4.59512, abs=1e-5)
    assert prior_bias(0.2) == pytest.approx(-math.log(4.0))
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(SpecError, match="prior_probability"):
            prior_bias(bad)


def test_untrained_network_predicts_the_prior():
    network = build_detectnet_v2_model(_model_config(prior_probability=0.01), 2, (3, 64, 96))
    head = network.get_layer("output_cov")
    np.testing.assert_allclose(head.bias.numpy(), [-math.log(99.0)] * 2, rtol=1e-6)
    assert not np.any(network.get_layer("output_bbox").bias.numpy())
    # with the kernel zeroed the head's output is sigmoid(bias) = 1 / (1 + 99) in every cell
    head.kernel.assign(np.zeros(head.kernel.shape, np.float32))
    images = np.random.default_rng(0).uniform(0, 1, (2, 3, 64, 96)).astype(np.float32)
    cov = network(images, training=False)["output_cov"].numpy()
    assert cov.shape == (2, 2, 4, 6)
    np.testing.assert_allclose(cov, 0.01, rtol=1e-5)


def test_prior_probability_comes_from_the_spec_or_the_proto_default():
    assert cov_prior_probability(_model_config()) == DEFAULT_PRIOR_PROBABILITY
    assert cov_prior_probability(_model_config(prior_probability=0.3)) == pytest.approx(0.3)
    tao = build_detectnet_v2_model(_model_config(prior_probability=0.5), 1, (3, 32, 32))
    assert not np.any(tao.get_layer("output_cov").bias.numpy())  # TAO's zero bias


# ---- batch-norm recalibration --------------------------------------------------------------------


def test_recalibration_sets_the_average_of_the_batch_statistics():
    import keras

    from tltk.detectnet_v2.task import recalibrate_batch_norm

    network = build_detectnet_v2_model(_model_config(), 2, (3, 64, 96))
    rng = np.random.default_rng(0)
    batches = [rng.uniform(0, 1, (4, 3, 64, 96)).astype(np.float32) for _ in range(3)]
    assert recalibrate_batch_norm(network, iter(batches)) == 3
    # bn_conv1 normalises conv1's output: its statistics are those of conv1 over each batch's
    # N, H, W, averaged over the three batches (conv1 sees no batch norm before it)
    conv1 = keras.Model(network.inputs[0], network.get_layer("conv1").output)
    outputs = [conv1(b).numpy() for b in batches]
    mean = np.mean([o.mean(axis=(0, 1, 2)) for o in outputs], axis=0)
    variance = np.mean([o.var(axis=(0, 1, 2)) for o in outputs], axis=0)
    bn = network.get_layer("bn_conv1")
    np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), variance, rtol=1e-4, atol=1e-7)
    # a frozen batch norm keeps its statistics; no batch changes nothing
    bn.trainable = False
    bn.moving_mean.assign(np.zeros_like(mean))
    recalibrate_batch_norm(network, iter(batches[:1]))
    assert not np.any(bn.moving_mean.numpy())
    before = network.get_layer("block_1a_bn_1").moving_mean.numpy().copy()
    assert recalibrate_batch_norm(network, iter([])) == 0
    np.testing.assert_array_equal(network.get_layer("block_1a_bn_1").moving_mean.numpy(), before)


# ---- from-scratch warnings -----------------------------------------------------------------------

TAO_VALUES = ["model_config.objective_set.cov.prior_probability=0.5",
              "cost_function_config.autoweighting_warmup_steps=0",
              "training_config.batch_norm_recalibration_images=0",
              "model_config.freeze_bn=true"]


def _scratch_warnings(repo_root, overrides):
    from tltk.models import check_spec

    report = check_spec(repo_root / "specs" / "detectnet_v2" / "tao_style_scratch.txt", model="detectnet_v2",
                        overrides=overrides)
    assert report.valid, report.errors
    return [w for w in report.warnings if "trains from scratch" in w]


def test_shipped_scratch_spec_has_no_from_scratch_warning(repo_root):
    assert _scratch_warnings(repo_root, []) == []


def test_tao_values_in_a_from_scratch_spec_warn_and_say_what_to_change(repo_root):
    warnings = "\n".join(_scratch_warnings(repo_root, TAO_VALUES))
    assert "cov.prior_probability: the spec trains from scratch" in warnings
    assert "leave prior_probability unset (0.01)" in warnings
    assert "auto-weighting after 0 steps cuts the coverage weight" in warnings
    assert "leave autoweighting_warmup_steps unset (1000) or set enable_autoweighting: false" in warnings
    assert "leave it unset (256 images)" in warnings
    assert "model_config.freeze_bn: the spec trains from scratch" in warnings
    assert len(_scratch_warnings(repo_root, TAO_VALUES)) == 4
    # auto-weighting off: the warm-up does not matter
    off = _scratch_warnings(repo_root, ["cost_function_config.enable_autoweighting=false",
                                        "cost_function_config.autoweighting_warmup_steps=0"])
    assert off == []


def test_tao_values_with_pretrained_weights_do_not_warn(repo_root):
    pretrained = ["model_config.pretrained_model_file=resnet18.hdf5"]
    assert _scratch_warnings(repo_root, TAO_VALUES + pretrained) == []


def test_validate_spec_and_train_print_the_warning(repo_root, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from tltk.cli.app import cli

    spec = str(repo_root / "specs" / "detectnet_v2" / "tao_style_scratch.txt")
    override = ["--set", "cost_function_config.autoweighting_warmup_steps=0"]
    checked = CliRunner().invoke(cli, ["detectnet_v2", "validate_spec", "-e", spec, *override])
    assert checked.exit_code == 0
    assert "cost_function_config.autoweighting_warmup_steps: the spec trains from scratch" in checked.output
    # train prints it before anything runs (here it then stops: the spec's data is not in tmp_path)
    monkeypatch.chdir(tmp_path)
    trained = CliRunner().invoke(cli, ["detectnet_v2", "train", "-e", spec, "-r", str(tmp_path / "r"), *override])
    assert trained.exit_code == 2
    assert "cost_function_config.autoweighting_warmup_steps: the spec trains from scratch" in trained.output


def test_training_recalibrates_only_before_validation_checkpoints_and_the_end(detectnet_v2_toy):
    from tltk.detectnet_v2.task import DetectNetV2Task
    from tltk.models import load_spec

    overrides = ["model_config.num_layers=10", "model_config.use_batch_norm=true", "training_config.num_epochs=6",
                 "training_config.checkpoint_interval=4", "evaluation_config.first_validation_epoch=3",
                 "evaluation_config.validation_period_during_training=10",
                 "training_config.batch_norm_recalibration_images=5"]
    task = DetectNetV2Task(load_spec(detectnet_v2_toy["experiment"], model="detectnet_v2", kind="experiment",
                                     overrides=overrides))
    plan = task.training_plan(1)
    assert plan.validate_after == frozenset({3, 6}) and plan.checkpoint_every == 4
    network = task.build_network()
    bn = network.get_layer("bn_conv1")
    used = {}
    for epoch in range(1, 7):
        bn.moving_mean.assign(np.zeros(bn.moving_mean.shape, np.float32))
        used[epoch] = (task.recalibrate_batch_norm(epoch), bool(np.any(bn.moving_mean.numpy())))
    # after validation (3), a checkpoint (4) and the last epoch (6): ceil(5 images / batch 3) = 2 batches
    assert used == {1: (0, False), 2: (0, False), 3: (2, True), 4: (2, True), 5: (0, False), 6: (2, True)}
    # a quantization-aware network keeps its statistics (and its fake-quantization ranges)
    qat = DetectNetV2Task(load_spec(detectnet_v2_toy["experiment"], model="detectnet_v2", kind="experiment",
                                    overrides=[*overrides, "training_config.enable_qat=true"]))
    qat.training_plan(1)
    qat.build_network()
    assert qat.recalibrate_batch_norm(6) == 0
