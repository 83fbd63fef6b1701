"""DetectNet_v2 model: NCHW interface, TAO head names, parameter counts, pretrained weights, load_graph."""

from __future__ import annotations

import os
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from tltk.detectnet_v2.model import build_detectnet_v2_model, build_or_load_detectnet_v2_model
from tltk.errors import SpecError


def model_config(**overrides) -> SimpleNamespace:
    fields = dict(
        arch="resnet",
        num_layers=18,
        use_batch_norm=True,
        use_pooling=False,
        all_projections=False,
        dropout_rate=0.0,
        freeze_blocks=[],
        freeze_bn=False,
        pretrained_model_file="",
        load_graph=False,
        allow_loaded_model_modification=False,
        objective_set=SimpleNamespace(
            cov=SimpleNamespace(input=""), bbox=SimpleNamespace(input="", scale=35.0, offset=0.5)
        ),
    )
    fields.update(overrides)
    return SimpleNamespace(**fields)


def test_resnet18_shapes_names_and_params():
    model = build_detectnet_v2_model(model_config(), 3, (3, 272, 480))
    assert model.name == "resnet18_nopool_bn_detectnet_v2"
    assert model.inputs[0].name == "input_1"
    assert tuple(model.inputs[0].shape) == (None, 3, 272, 480)
    assert set(model.output) == {"output_cov", "output_bbox"}
    assert tuple(model.output["output_cov"].shape) == (None, 3, 17, 30)
    assert tuple(model.output["output_bbox"].shape) == (None, 12, 17, 30)
    cov, bbox = model.get_layer("output_cov"), model.get_layer("output_bbox")
    assert cov.filters == 3 and cov.activation is keras.activations.sigmoid and cov.kernel_size == (1, 1)
    assert bbox.filters == 12 and bbox.activation is keras.activations.linear and bbox.use_bias
    # Backbone by hand: conv1 9,728 (with BN) + block1 153,152 + block2 527,488 + block3 2,103,552
    # + block4 8,401,408 = 11,195,328; heads 512*3+3 + 512*12+12 = 7,695.
    assert model.count_params() == 11_203_023
    with_projections = build_detectnet_v2_model(model_config(all_projections=True), 3, (3, 272, 480))
    # + 1x1 shortcut conv and BN on block_1b..block_4b: sum(c*c + c + 4c) for c in 64..512 = 352,960
    assert with_projections.count_params() == 11_555_983


def test_outputs_are_nchw_transposes_of_the_heads_and_sigmoid_range():
    model = build_detectnet_v2_model(model_config(num_layers=10), 2, (3, 64, 96))
    heads = keras.Model(
        model.input, [model.get_layer("output_cov").output, model.get_layer("output_bbox").output]
    )
    x = np.random.default_rng(0).uniform(size=(2, 3, 64, 96)).astype("float32")
    out = model(x, training=False)
    cov_nhwc, bbox_nhwc = heads(x, training=False)
    np.testing.assert_array_equal(out["output_cov"].numpy(), np.transpose(cov_nhwc.numpy(), (0, 3, 1, 2)))
    np.testing.assert_array_equal(out["output_bbox"].numpy(), np.transpose(bbox_nhwc.numpy(), (0, 3, 1, 2)))
    cov = out["output_cov"].numpy()
    assert cov.shape == (2, 2, 4, 6) and cov.dtype == np.float32
    assert cov.min() >= 0.0 and cov.max() <= 1.0
    assert out["output_bbox"].numpy().shape == (2, 8, 4, 6)
    # NCHW input really is read as channels: changing only channel 0 of pixel (0, 0) changes the output
    x2 = x.copy()
    x2[:, 0, :16, :16] += 1.0
    assert not np.allclose(model(x2, training=False)["output_cov"].numpy(), cov)


def test_defaults_gray_input_and_other_families():
    unset = model_config()
    del unset.arch, unset.num_layers  # fields a namespace lacks read the proto's defaults
    model = build_detectnet_v2_model(unset, 1, (1, 32, 48))
    assert model.name == "resnet18_nopool_bn_detectnet_v2"
    # TAO's "num_layers 0 means 18" is applied when a spec is loaded, not by the model builder.
    with pytest.raises(SpecError, match="num_layers: resnet has no 0-layer variant"):
        build_detectnet_v2_model(model_config(num_layers=0), 1, (1, 32, 48))
    assert tuple(model.get_layer("conv1").kernel.shape) == (7, 7, 1, 64)
    for arch, name in (
        ("mobilenet_v2", "mobilenet_v2_bn_detectnet_v2"),
        ("vgg", "vgg16_nopool_bn_detectnet_v2"),
    ):
        m = build_detectnet_v2_model(model_config(arch=arch, num_layers=16), 4, (3, 32, 32))
        assert m.name == name
        assert tuple(m.output["output_bbox"].shape) == (None, 16, 2, 2)


def test_spec_errors():
    with pytest.raises(SpecError, match="multiple of 16"):
        build_detectnet_v2_model(model_config(), 3, (3, 270, 480))
    with pytest.raises(SpecError, match="1 or 3"):
        build_detectnet_v2_model(model_config(), 3, (4, 272, 480))
    with pytest.raises(SpecError, match="did you mean 'googlenet'"):
        build_detectnet_v2_model(model_config(arch="googlnet"), 3, (3, 64, 64))
    with pytest.raises(SpecError, match="no target classes"):
        build_detectnet_v2_model(model_config(), 0, (3, 64, 64))
    with pytest.raises(SpecError, match="missing bbox"):
        build_detectnet_v2_model(
            model_config(objective_set=SimpleNamespace(cov=SimpleNamespace(input=""))), 1, (3, 64, 64)
        )
    ambiguous = SimpleNamespace(cov=SimpleNamespace(input="block_3"), bbox=SimpleNamespace(input=""))
    with pytest.raises(SpecError, match="exactly one backbone layer"):
        build_detectnet_v2_model(model_config(num_layers=10, objective_set=ambiguous), 1, (3, 64, 64))


def test_head_input_by_layer_name():
    objective_set = SimpleNamespace(
        cov=SimpleNamespace(input="block_3a_relu"), bbox=SimpleNamespace(input="block_3a_relu")
    )
    model = build_detectnet_v2_model(model_config(num_layers=10, objective_set=objective_set), 1, (3, 64, 64))
    assert model.get_layer("output_cov").input.shape[-1] == 256  # block 3 has 256 channels
    assert "block_4a_conv_1" not in {
        layer.name for layer in model.layers
    }  # unused block 4 is pruned from the graph


def test_freeze_options_from_model_config():
    model = build_detectnet_v2_model(
        model_config(num_layers=10, freeze_blocks=[0.0, 4.0], freeze_bn=True), 1, (3, 32, 32)
    )
    assert not model.get_layer("conv1").trainable and not model.get_layer("block_4a_conv_2").trainable
    assert model.get_layer("block_2a_conv_1").trainable
    assert not model.get_layer("bn_conv1").trainable
    assert model.get_layer("output_cov").trainable and model.get_layer("output_bbox").trainable


def test_pretrained_weights_skip_heads_like_tao(tmp_path):
    source = build_detectnet_v2_model(model_config(num_layers=10), 3, (3, 32, 32))
    source.get_layer("block_2a_conv_1").kernel.assign(np.full((3, 3, 64, 128), 0.25, "float32"))
    path = os.path.join(tmp_path, "pretrained.keras")
    source.save(path)
    model, report = build_or_load_detectnet_v2_model(
        model_config(num_layers=10, pretrained_model_file=path), 3, (3, 64, 96)
    )
    assert report is not None
    # resnet10: 13 convs + 13 BNs load; the two heads are left alone, as TAO attaches them after loading
    assert len(report.loaded) == 26 and report.skipped == [] and report.mismatched == []
    assert sorted(report.excluded) == ["output_bbox", "output_cov"]
    np.testing.assert_array_equal(
        model.get_layer("block_2a_conv_1").kernel.numpy(), np.full((3, 3, 64, 128), 0.25)
    )
    assert not np.array_equal(
        model.get_layer("output_cov").kernel.numpy(), source.get_layer("output_cov").kernel.numpy()
    )


def test_load_graph(tmp_path):
    source = build_detectnet_v2_model(model_config(num_layers=10), 2, (3, 32, 32))
    path = os.path.join(tmp_path, "pruned.keras")
    source.save(path)
    config = model_config(num_layers=10, pretrained_model_file=path, load_graph=True)
    model, report = build_or_load_detectnet_v2_model(
        config, 2, (3, 32, 32), kernel_regularizer=keras.regularizers.L2(1e-3)
    )
    assert report is None
    x = np.random.default_rng(1).uniform(size=(1, 3, 32, 32)).astype("float32")
    expected = source(x, training=False)
    got = model(x, training=False)
    for name in ("output_cov", "output_bbox"):
        np.testing.assert_array_equal(got[name].numpy(), expected[name].numpy())
    # regularizers rebuilt on every conv kernel: 13 backbone convs + 2 heads
    assert len(model.losses) == 15
    with pytest.raises(SpecError, match="predicts 2 classes"):
        build_or_load_detectnet_v2_model(config, 3, (3, 32, 32))
    with pytest.raises(SpecError, match="pretrained_model_file is empty"):
        build_or_load_detectnet_v2_model(model_config(load_graph=True), 2, (3, 32, 32))


def test_load_graph_adds_heads_only_when_allowed(tmp_path):
    inputs = keras.Input((3, 32, 32), name="input_1")
    x = keras.layers.Permute((2, 3, 1))(inputs)
    x = keras.layers.Conv2D(8, 3, strides=16, name="conv1")(x)
    trunk = keras.Model(inputs, x)
    path = os.path.join(tmp_path, "trunk.keras")
    trunk.save(path)
    with pytest.raises(SpecError, match="allow_loaded_model_modification"):
        build_or_load_detectnet_v2_model(
            model_config(pretrained_model_file=path, load_graph=True), 2, (3, 32, 32)
        )
    config = model_config(pretrained_model_file=path, load_graph=True, allow_loaded_model_modification=True)
    model, _ = build_or_load_detectnet_v2_model(config, 2, (3, 32, 32))
    assert tuple(model.output["output_cov"].shape) == (None, 2, 2, 2)
    assert tuple(model.output["output_bbox"].shape) == (None, 8, 2, 2)


def test_load_graph_of_a_channels_first_tao_style_model(tmp_path):
    # TAO models are channels_first throughout, with a list of outputs [output_bbox, output_cov].
    inputs = keras.Input((3, 32, 32), name="input_1")
    x = keras.layers.Conv2D(8, 3, strides=16, padding="same", data_format="channels_first", name="conv1")(
        inputs
    )
    bbox = keras.layers.Conv2D(4, 1, data_format="channels_first", name="output_bbox")(x)
    cov = keras.layers.Conv2D(1, 1, data_format="channels_first", activation="sigmoid", name="output_cov")(x)
    tao = keras.Model(inputs, [bbox, cov], name="resnet18_nopool_bn_detectnet_v2")
    path = os.path.join(tmp_path, "tao_pruned.hdf5")
    tao.save(path)
    model, _ = build_or_load_detectnet_v2_model(
        model_config(pretrained_model_file=path, load_graph=True), 1, (3, 32, 32)
    )
    # The reference runs a channels_last twin with the same weights: TensorFlow's CPU kernels run
    # NCHW convolutions only when oneDNN is on (it is off on CPUs without AVX-512).
    twin_in = keras.Input((32, 32, 3))
    t = keras.layers.Conv2D(8, 3, strides=16, padding="same", name="conv1")(twin_in)
    twin = keras.Model(twin_in, [keras.layers.Conv2D(4, 1, name="output_bbox")(t),
                                 keras.layers.Conv2D(1, 1, activation="sigmoid", name="output_cov")(t)])
    twin.set_weights(tao.get_weights())
    x = np.random.default_rng(2).uniform(size=(1, 3, 32, 32)).astype("float32")
    expected_bbox, expected_cov = (np.transpose(y.numpy(), (0, 3, 1, 2)) for y in twin(np.transpose(x, (0, 2, 3, 1))))
    got = model(x)
    np.testing.assert_allclose(got["output_cov"].numpy(), expected_cov, rtol=1e-6)
    np.testing.assert_allclose(got["output_bbox"].numpy(), expected_bbox, rtol=1e-6)


def _uff_conv_geometry(payload: bytes) -> dict[str, tuple[tuple[int, int], tuple[int, int] | None]]:
    """conv name -> (strides, symmetric padding or None) read from a TAO UFF graph's Conv nodes."""
    import re

    convs = {}
    for match in re.finditer(rb"\n.([a-z0-9_]+)/convolution(?:\x12.[ -~]+?)+\x1a\x04Conv", payload, re.S):
        attrs = payload[match.end() : match.end() + 160]
        pad = re.search(rb"\x07padding\x12\x06B\x04\n\x02(.)(.)", attrs, re.S)
        strides = re.search(rb"\x07strides\x12\x06B\x04\n\x02(.)(.)", attrs, re.S)
        assert strides is not None
        convs[match.group(1).decode()] = (
            (strides.group(1)[0], strides.group(2)[0]),
            (pad.group(1)[0], pad.group(2)[0]) if pad else None,
        )
    return convs


def test_resnet18_matches_a_real_tao_detectnet_v2_export(corpus_dir):
    """A TAO-exported resnet18 DetectNet_v2 (.etlt, UFF inside): same weight names, strides and padding."""
    import re

    from tltk.modelfile.legacy import decode_legacy_file

    path = corpus_dir / "etlt" / "03_ppi-ai__edgepipes__resnet18_detector.etlt"
    if not path.is_file():
        pytest.skip("corpus .etlt not available")
    payload = decode_legacy_file(path, "tlt_encode").payload
    tao_weights = {
        (layer.decode(), weight.decode())
        for layer, weight in re.findall(
            rb"(?<![a-z0-9_])([a-z][a-z0-9_]*)/(kernel|bias|gamma|beta|moving_mean|moving_variance)", payload
        )
        if not layer.startswith(b"weights_")
    }
    model = build_detectnet_v2_model(model_config(), 1, (3, 64, 64))
    ours = {(layer.name, w.name) for layer in model.layers for w in layer.weights}
    assert ours == tao_weights  # 21 convs + 21 BNs + 2 heads, every kernel/bias/gamma/beta/mean/variance
    geometry = _uff_conv_geometry(payload)
    assert len(geometry) == 23
    names = {layer.name for layer in model.layers}
    for name, (strides, pad) in geometry.items():
        conv = model.get_layer(name)
        assert conv.strides == strides, name
        if f"{name}_pad" in names:
            ours_pad = model.get_layer(f"{name}_pad").padding[0]
        elif conv.padding == "same":
            # TF's own SAME is symmetric only at stride 1; strided SAME pads bottom/right only
            ours_pad = (conv.kernel_size[0] // 2,) * 2 if conv.strides == (1, 1) else "asymmetric"
        else:
            ours_pad = None
        assert ours_pad == pad, name


def test_load_graph_with_freeze_bn_trains_with_the_moving_statistics(tmp_path):
    source = build_detectnet_v2_model(model_config(num_layers=10), 2, (3, 32, 32))
    path = os.path.join(tmp_path, "pruned.keras")
    source.save(path)
    config = model_config(num_layers=10, pretrained_model_file=path, load_graph=True, freeze_bn=True)
    model, _ = build_or_load_detectnet_v2_model(config, 2, (3, 32, 32))
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 13 and not any(layer.trainable for layer in bns)
    x = np.random.default_rng(2).uniform(size=(4, 3, 32, 32)).astype("float32")
    before = [w.numpy().copy() for w in bns[0].weights]
    trained = model(x, training=True)
    inferred = model(x, training=False)
    for name in ("output_cov", "output_bbox"):  # the same network in training and inference
        np.testing.assert_allclose(trained[name].numpy(), inferred[name].numpy(), rtol=1e-5, atol=1e-6)
    for old, new in zip(before, bns[0].weights):
        np.testing.assert_array_equal(old, new.numpy())  # moving statistics not updated
