"""A recording stand-in for the parts of the TensorRT 10 Python API tltk's builder calls.

It lets the tests check, without TensorRT or a GPU, which builder flags, profile shapes, memory
limits, DLA settings and calibrator the settings turn into.  It is test scaffolding, not a model
of TensorRT's behaviour: every call is recorded in ``CALLS``; the "engine" is a fixed byte string
that names the flags that were set.
"""

from __future__ import annotations

import enum
import types

CALLS: list[tuple] = []
ENGINE_PREFIX = b"FAKE-PLAN:"


class _Flag(enum.Enum):
    FP16 = 0
    INT8 = 1
    GPU_FALLBACK = 3
    OBEY_PRECISION_CONSTRAINTS = 9
    PREFER_PRECISION_CONSTRAINTS = 10


class _Pool(enum.Enum):
    WORKSPACE = 0


class _Device(enum.Enum):
    GPU = 0
    DLA = 1


class _NetFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 1


class Logger:
    VERBOSE, INFO, WARNING = 4, 3, 2

    def __init__(self, level: int) -> None:
        self.level = level


class Dims(tuple):
    def __new__(cls, shape):
        return super().__new__(cls, tuple(shape))


class _Input:
    def __init__(self, name: str) -> None:
        self.name = name


class _Network:
    def __init__(self, flags: int, inputs: list[str]) -> None:
        self.flags = flags
        self._inputs = [_Input(n) for n in inputs]

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    def get_input(self, index: int) -> _Input:
        return self._inputs[index]


class _Profile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple] = {}

    def set_shape(self, name, lo, mid, hi) -> None:
        self.shapes[name] = (tuple(lo), tuple(mid), tuple(hi))


class _TimingCache:
    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)

    def serialize(self) -> bytes:
        return b"TIMING:" + self.data


class _Config:
    def __init__(self) -> None:
        self.flags: set[str] = set()
        self.pool: dict[str, int] = {}
        self.profiles: list[_Profile] = []
        self.calibration_profile = None
        self.int8_calibrator = None
        self.default_device_type = _Device.GPU
        self.DLA_core = -1
        self._timing = None

    def set_memory_pool_limit(self, pool, size) -> None:
        self.pool[pool.name] = size

    def set_flag(self, flag) -> None:
        self.flags.add(flag.name)

    def add_optimization_profile(self, profile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def set_calibration_profile(self, profile) -> bool:
        self.calibration_profile = profile
        return True

    def create_timing_cache(self, data) -> _TimingCache:
        return _TimingCache(data)

    def set_timing_cache(self, cache, ignore_mismatch) -> bool:
        self._timing = cache
        return True

    def get_timing_cache(self) -> _TimingCache:
        return self._timing


class Builder:
    NUM_DLA_CORES = 0
    INPUTS = ["input_1"]

    def __init__(self, logger) -> None:
        self.logger = logger
        CALLS.append(("Builder", logger.level))

    @property
    def num_DLA_cores(self) -> int:
        return self.NUM_DLA_CORES

    def create_network(self, flags: int = 0) -> _Network:
        network = _Network(flags, list(self.INPUTS))
        CALLS.append(("create_network", flags))
        return network

    def create_builder_config(self) -> _Config:
        config = _Config()
        CALLS.append(("config", config))
        return config

    def create_optimization_profile(self) -> _Profile:
        return _Profile()

    def build_serialized_network(self, network, config) -> bytes:
        CALLS.append(("build", network, config))
        return ENGINE_PREFIX + ",".join(sorted(config.flags)).encode()


class OnnxParser:
    FAIL_WITH: list[str] = []

    def __init__(self, network, logger) -> None:
        self.network = network

    def parse_from_file(self, path: str) -> bool:
        CALLS.append(("parse", path))
        return not self.FAIL_WITH

    @property
    def num_errors(self) -> int:
        return len(self.FAIL_WITH)

    def get_error(self, index: int) -> str:
        return self.FAIL_WITH[index]


class IInt8EntropyCalibrator2:
    def __init__(self) -> None:
        pass


class IInt8MinMaxCalibrator:
    def __init__(self) -> None:
        pass


def init_libnvinfer_plugins(logger, namespace) -> bool:
    CALLS.append(("plugins", namespace))
    return True


def make_module(version: str = "10.3.0.26", inputs: list[str] | None = None, dla_cores: int = 0) -> types.ModuleType:
    """A fresh fake ``tensorrt`` module (and an empty call log)."""
    CALLS.clear()
    Builder.INPUTS = list(inputs or ["input_1"])
    Builder.NUM_DLA_CORES = dla_cores
    OnnxParser.FAIL_WITH = []
    module = types.ModuleType("tensorrt")
    module.__version__ = version
    for name, value in {
        "Logger": Logger, "Builder": Builder, "OnnxParser": OnnxParser, "Dims": Dims,
        "BuilderFlag": _Flag, "MemoryPoolType": _Pool, "DeviceType": _Device,
        "NetworkDefinitionCreationFlag": _NetFlag, "IInt8EntropyCalibrator2": IInt8EntropyCalibrator2,
        "IInt8MinMaxCalibrator": IInt8MinMaxCalibrator, "init_libnvinfer_plugins": init_libnvinfer_plugins,
    }.items():
        setattr(module, name, value)
    return module


def last_config() -> _Config:
    """The builder config of the last build."""
    return [c for c in CALLS if c[0] == "config"][-1][1]
