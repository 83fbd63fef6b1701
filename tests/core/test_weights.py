"""Loading pretrained weights by layer name: Keras 2 HDF5 (TAO 5 layout), Keras 3 files, tltk containers."""

from __future__ import annotations

import os

import h5py
import keras
import numpy as np
import pytest

from tltk.core.weights import load_model_graph, load_weights_by_name, read_h5_weights
from tltk.errors import InvalidInputError, ModelFileError, WrongKeyError


def small_model(name_suffix: str = "", first_filters: int = 4) -> keras.Model:
    """conv1 (3x3, 3->first_filters) + bn_conv1 + block_1a_conv_1 (3x3 -> 6) + block_1a_bn_1 + dw + head."""
    inputs = keras.Input((8, 8, 3), name="input_1")
    x = keras.layers.Conv2D(first_filters, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn_conv1")(x)
    x = keras.layers.Conv2D(6, 3, padding="same", name="block_1a_conv_1")(x)
    x = keras.layers.BatchNormalization(name="block_1a_bn_1")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="conv_dw_1")(x)
    x = keras.layers.Conv2D(2, 1, name="output_cov" + name_suffix)(x)
    return keras.Model(inputs, x)


def write_keras2_h5(
    path: str, layers: dict[str, list[tuple[str, np.ndarray]]], full_model: bool = True
) -> None:
    """Write weights the way Keras 2 (and so TAO 5) lays them out in an HDF5 file."""
    with h5py.File(path, "w") as f:
        if full_model:
            f.attrs["keras_version"] = b"2.2.4"
            f.attrs["backend"] = b"tensorflow"
            f.attrs["model_config"] = b'{"class_name": "Model", "config": {}}'
            group = f.create_group("model_weights")
        else:
            group = f
        group.attrs["layer_names"] = np.array([n.encode() for n in ["input_1", *layers]])
        group.create_group("input_1").attrs["weight_names"] = np.array([], dtype="S1")
        for layer_name, weights in layers.items():
            layer_group = group.create_group(layer_name)
            names = []
            for weight_name, array in weights:
                full = weight_name if "/" in weight_name else f"{layer_name}/{weight_name}:0"
                layer_group.create_dataset(full, data=array)
                names.append(full.encode())
            layer_group.attrs["weight_names"] = np.array(names)


def tao_like_weights(rng: np.random.Generator) -> dict[str, list[tuple[str, np.ndarray]]]:
    f = np.float32
    return {
        "conv1": [
            ("kernel", rng.normal(size=(3, 3, 3, 4)).astype(f)),
            ("bias", rng.normal(size=4).astype(f)),
        ],
        # BN weights deliberately stored out of order: matching is by weight name
        "bn_conv1": [
            ("moving_variance", rng.uniform(1, 2, size=4).astype(f)),
            ("beta", rng.normal(size=4).astype(f)),
            ("gamma", rng.normal(size=4).astype(f)),
            ("moving_mean", rng.normal(size=4).astype(f)),
        ],
        # wrong shape: 8 filters instead of 6
        "block_1a_conv_1": [("kernel", rng.normal(size=(3, 3, 4, 8)).astype(f)), ("bias", np.zeros(8, f))],
        # Keras 2 spells the depthwise kernel 'depthwise_kernel'
        "conv_dw_1": [
            ("depthwise_kernel", rng.normal(size=(3, 3, 6, 1)).astype(f)),
            ("bias", rng.normal(size=6).astype(f)),
        ],
        # not in the model
        "block_9z_conv_1": [("kernel", np.ones((1, 1, 2, 2), f)), ("bias", np.zeros(2, f))],
        "output_cov": [
            ("kernel", rng.normal(size=(1, 1, 6, 2)).astype(f)),
            ("bias", rng.normal(size=2).astype(f)),
        ],
    }


@pytest.mark.parametrize("full_model", [True, False], ids=["full-model", "weights-only"])
def test_keras2_hdf5_report_and_values(tmp_path, full_model):
    rng = np.random.default_rng(0)
    weights = tao_like_weights(rng)
    path = os.path.join(tmp_path, "resnet18.hdf5")
    write_keras2_h5(path, weights, full_model=full_model)
    model = small_model()
    untouched = model.get_layer("block_1a_conv_1").kernel.numpy().copy()

    report = load_weights_by_name(model, path)

    assert report.loaded == ["conv1", "bn_conv1", "conv_dw_1", "output_cov"]
    assert report.skipped == ["block_1a_bn_1"]
    assert [m.name for m in report.mismatched] == ["block_1a_conv_1"]
    assert report.mismatched[0].model_shapes == [(3, 3, 4, 6), (6,)]
    assert report.mismatched[0].source_shapes == [(3, 3, 4, 8), (8,)]
    assert report.unused == ["block_9z_conv_1"]
    assert report.excluded == []
    assert "4 layers loaded, 1 skipped (not in the file), 1 mismatched" in report.summary()

    np.testing.assert_array_equal(model.get_layer("conv1").kernel.numpy(), weights["conv1"][0][1])
    bn = model.get_layer("bn_conv1")
    by_name = dict(weights["bn_conv1"])
    for attr in ("gamma", "beta", "moving_mean", "moving_variance"):
        np.testing.assert_array_equal(getattr(bn, attr).numpy(), by_name[attr])
    np.testing.assert_array_equal(model.get_layer("conv_dw_1").kernel.numpy(), weights["conv_dw_1"][0][1])
    np.testing.assert_array_equal(model.get_layer("block_1a_conv_1").kernel.numpy(), untouched)


def test_exclude_leaves_heads_alone(tmp_path):
    path = os.path.join(tmp_path, "w.hdf5")
    write_keras2_h5(path, tao_like_weights(np.random.default_rng(1)))
    model = small_model()
    head_before = model.get_layer("output_cov").kernel.numpy().copy()
    report = load_weights_by_name(model, path, exclude=["output_cov"])
    assert report.excluded == ["output_cov"]
    assert "output_cov" not in report.loaded
    np.testing.assert_array_equal(model.get_layer("output_cov").kernel.numpy(), head_before)
    assert report.to_dict()["mismatched"] == [
        {"name": "block_1a_conv_1", "model_shapes": [[3, 3, 4, 6], [6]], "source_shapes": [[3, 3, 4, 8], [8]]}
    ]


def test_nested_weight_paths_are_attributed_to_inner_layers(tmp_path):
    # A Keras 2 model with a nested sub-model stores "<inner layer>/<weight>:0" inside the outer group.
    rng = np.random.default_rng(2)
    kernel = rng.normal(size=(3, 3, 3, 4)).astype("float32")
    bias = rng.normal(size=4).astype("float32")
    path = os.path.join(tmp_path, "nested.hdf5")
    write_keras2_h5(path, {"resnet18_nopool_bn": [("conv1/kernel:0", kernel), ("conv1/bias:0", bias)]})
    weights = read_h5_weights(path)
    assert list(weights) == ["conv1"]
    model = small_model()
    report = load_weights_by_name(model, path)
    assert report.loaded == ["conv1"]
    np.testing.assert_array_equal(model.get_layer("conv1").bias.numpy(), bias)


def test_keras3_files_and_tltk_container(tmp_path):
    from tltk.modelfile.container import save_keras_model

    source = small_model()
    source.get_layer("conv1").kernel.assign(np.full((3, 3, 3, 4), 0.5, "float32"))
    source.get_layer("bn_conv1").moving_mean.assign(np.arange(4, dtype="float32"))
    keras_path = os.path.join(tmp_path, "src.keras")
    weights_path = os.path.join(tmp_path, "src.weights.h5")
    legacy_path = os.path.join(tmp_path, "src.h5")
    tlt_path = os.path.join(tmp_path, "src.tlt")
    sealed_path = os.path.join(tmp_path, "sealed.tlt")
    source.save(keras_path)
    source.save_weights(weights_path)
    source.save(legacy_path)
    save_keras_model(tlt_path, source, {"model_kind": "test"})
    save_keras_model(sealed_path, source, {"model_kind": "test"}, key="tlt_encode")

    for path, key in (
        (keras_path, None),
        (weights_path, None),
        (legacy_path, None),
        (tlt_path, None),
        (sealed_path, "tlt_encode"),
    ):
        target = small_model(first_filters=5)  # conv1, bn_conv1 and block_1a_conv_1 (input) shapes differ now
        report = load_weights_by_name(target, path, key=key)
        assert report.loaded == ["block_1a_bn_1", "conv_dw_1", "output_cov"], path
        assert sorted(m.name for m in report.mismatched) == ["block_1a_conv_1", "bn_conv1", "conv1"], path
        assert report.skipped == [] and report.unused == [], path
        x = np.random.default_rng(3).uniform(size=(1, 8, 8, 6)).astype("float32")
        np.testing.assert_array_equal(
            target.get_layer("conv_dw_1")(x).numpy(), source.get_layer("conv_dw_1")(x).numpy()
        )
        same = small_model()
        report = load_weights_by_name(same, path, key=key)
        assert len(report.loaded) == 6 and not report.mismatched, path
        np.testing.assert_array_equal(
            same.get_layer("bn_conv1").moving_mean.numpy(), np.arange(4, dtype="float32")
        )
        np.testing.assert_array_equal(
            same.get_layer("conv1").kernel.numpy(), np.full((3, 3, 3, 4), 0.5, "float32")
        )

    with pytest.raises(WrongKeyError):
        load_weights_by_name(small_model(), sealed_path, key="wrong")


def test_load_model_graph_round_trip(tmp_path):
    model = small_model()
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = load_model_graph(path)
    x = np.random.default_rng(4).uniform(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    # a weights-only file has no graph
    weights_only = os.path.join(tmp_path, "w.hdf5")
    write_keras2_h5(weights_only, tao_like_weights(np.random.default_rng(5)), full_model=False)
    with pytest.raises(ModelFileError):
        load_model_graph(weights_only)


def test_bad_sources(tmp_path):
    with pytest.raises(InvalidInputError):
        load_weights_by_name(small_model(), os.path.join(tmp_path, "missing.hdf5"))
    not_keras = os.path.join(tmp_path, "data.h5")
    with h5py.File(not_keras, "w") as f:
        f.create_dataset("images", data=np.zeros((2, 2)))
    with pytest.raises(ModelFileError) as err:
        load_weights_by_name(small_model(), not_keras)
    assert "without Keras weights" in str(err.value)
