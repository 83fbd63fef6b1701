"""tltk.spec.fields: a field read with the schema's own default, for messages and namespaces."""

from __future__ import annotations

from types import SimpleNamespace as NS

import numpy as np
import pytest

from tltk._proto import detectnet_v2_pb2 as pb
from tltk.spec.fields import spec_default, spec_field


def test_spec_default_reads_the_schema() -> None:
    assert spec_default(pb.KITTIConfig, "image_extension") == ".png"
    assert spec_default(pb.KITTIConfig, "num_shards") == 10
    assert spec_default(pb.BboxRasterizerConfig, "deadzone_radius") == np.float32(0.67)  # as a message stores it
    assert spec_default(pb.ModelConfig, "arch") == "resnet"
    assert spec_default(pb.ModelConfig, "objective_set") is None
    assert spec_default(pb.ModelConfig, "freeze_blocks") == []
    assert spec_default(pb.BboxRasterizerConfig, "target_class_config") == {}
    assert spec_default(pb.ClusteringConfig, "clustering_algorithm") == pb.ClusteringConfig.DBSCAN
    with pytest.raises(KeyError, match="no field 'num_layer'"):
        spec_default(pb.ModelConfig, "num_layer")


def test_spec_field_gives_messages_and_namespaces_the_same_defaults() -> None:
    message = pb.ModelConfig()
    for name in ("arch", "num_layers", "dropout_rate", "use_batch_norm", "pretrained_model_file"):
        assert spec_field(message, pb.ModelConfig, name) == spec_field(NS(), pb.ModelConfig, name) \
            == spec_field(None, pb.ModelConfig, name) == getattr(message, name)
    # An unset block is None (an absent block, not an empty one), for both kinds of object.
    assert spec_field(message, pb.ModelConfig, "objective_set") is None
    assert spec_field(NS(), pb.ModelConfig, "objective_set") is None
    message.objective_set.cov.input = "block_3"
    assert spec_field(message, pb.ModelConfig, "objective_set").cov.input == "block_3"


def test_spec_field_keeps_explicit_values_including_zero() -> None:
    # Zero as "use the default" is the loader's business (zero_means_default), not this reader's.
    assert spec_field(pb.ModelConfig(num_layers=0), pb.ModelConfig, "num_layers") == 0
    assert spec_field(NS(num_layers=0), pb.ModelConfig, "num_layers") == 0
    assert spec_field(NS(num_layers=34), pb.ModelConfig, "num_layers") == 34
    assert spec_field(NS(num_layers=None), pb.ModelConfig, "num_layers") == 18
