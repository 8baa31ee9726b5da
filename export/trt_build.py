"""TensorRT engine builder (TensorRT 10 Python API). Engines are built on the target device.

Parses the ONNX file, configures the builder (workspace, FP16/INT8 flags for
non-strongly-typed builds, strongly typed for Q/DQ models, an optimisation profile
for dynamic inputs, a timing cache, a DLA core with GPU fallback), serialises the
engine and writes the manifest next to it. Needs ``tensorrt`` (JetPack) and, for
the device name in the manifest, ``pycuda``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from edgehdr.infer.base import BackendUnavailable
from edgehdr.infer.manifest import Manifest, sha256_file
from edgehdr.infer.trt import import_tensorrt
from export.checks import io_specs
from export.strict_json import save_manifest

if TYPE_CHECKING:
    from edgehdr.infer.base import PathLike

__all__ = ["build_engine", "engine_source", "trt_major"]


def trt_major() -> int:
    return int(import_tensorrt().__version__.split(".")[0])


def engine_source(fp32_onnx: PathLike, converted_onnx: PathLike, precision: str,
                  strongly_typed: bool | None = None) -> tuple[Path, bool]:
    """Which ONNX file to parse, and whether strongly typed, for an engine of ``precision``.

    TensorRT 11 removed the FP16/INT8 builder flags: every network is strongly typed and
    its precision comes from the graph (the FP16 ONNX, the Q/DQ ONNX). TensorRT 10
    (JetPack 6) defaults to weak typing: FP16 engines from the FP32 graph with the FP16
    flag (TensorRT keeps a layer in FP32 where FP16 is slower or unsupported; DLA needs
    the flag), INT8 from the Q/DQ graph with INT8+FP16 flags so the layers between Q/DQ
    pairs run in FP16 rather than FP32.
    """
    major = trt_major()
    if strongly_typed is None:
        strongly_typed = major >= 11
    if not strongly_typed and major >= 11:
        raise ValueError(f"TensorRT {major}.x builds strongly typed networks only; drop --no-strongly-typed")
    if precision == "fp32":
        return Path(fp32_onnx), strongly_typed
    if precision == "fp16":
        return (Path(converted_onnx) if strongly_typed else Path(fp32_onnx)), strongly_typed
    return Path(converted_onnx), strongly_typed


def build_engine(onnx_path: PathLike, out_dir: PathLike, *, precision: str = "fp16",
                 strongly_typed: bool | None = None, workspace_mb: int = 1024, dla_core: int | None = None,
                 timing_cache: PathLike | None = None,
                 profile: Mapping[str, tuple[Sequence[int], Sequence[int], Sequence[int]]] | None = None,
                 model_name: str | None = None, model_version: str = "0", calibration: dict[str, Any] | None = None,
                 source_onnx_sha256: str | None = None) -> Path:
    """Build ``OUT_DIR/<name>.<precision>.engine`` (+ ``.manifest.json``); returns the engine path.

    ``precision``: fp32, fp16 or int8 (int8 expects a Q/DQ model; it is built strongly
    typed unless ``strongly_typed=False``). ``profile`` maps dynamic input names to
    ``(min, opt, max)`` shapes. ``timing_cache`` is a file read before and written after.
    """
    trt = import_tensorrt()
    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"precision must be fp32, fp16 or int8, got {precision!r}")
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = model_name or onnx_path.stem
    if strongly_typed is None:
        strongly_typed = int(trt.__version__.split(".")[0]) >= 11
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"{onnx_path}: TensorRT cannot parse the model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if not strongly_typed:
        if precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        elif precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            config.set_flag(trt.BuilderFlag.FP16)
    dynamic = [network.get_input(i) for i in range(network.num_inputs) if -1 in tuple(network.get_input(i).shape)]
    if dynamic:
        if not profile:
            raise ValueError(f"{onnx_path}: dynamic inputs {[t.name for t in dynamic]} need a profile "
                             "{name: (min, opt, max)}")
        opt = builder.create_optimization_profile()
        for tensor in dynamic:
            lo, mid, hi = profile[tensor.name]
            opt.set_shape(tensor.name, lo, mid, hi)
        config.add_optimization_profile(opt)
    cache_bytes = Path(timing_cache).read_bytes() if timing_cache and Path(timing_cache).is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    if not config.set_timing_cache(cache, ignore_mismatch=False):  # e.g. a cache another GPU or TensorRT made
        print(f"edgehdr-export: warning: timing cache {timing_cache} does not match this device or TensorRT "
              "version; building without it, and not writing over it", file=sys.stderr)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
        timing_cache = None
    if dla_core is not None:
        if builder.num_DLA_cores <= dla_core:
            raise BackendUnavailable(f"DLA core {dla_core} requested, this device has {builder.num_DLA_cores}")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"{onnx_path}: TensorRT build failed (see the log above)")
    build_s = time.perf_counter() - t0
    from edgehdr.io.atomic import write_bytes_atomic

    engine_path = out_dir / f"{name}.{precision}{'.dla' + str(dla_core) if dla_core is not None else ''}.engine"
    write_bytes_atomic(engine_path, bytes(serialized))
    if timing_cache:
        write_bytes_atomic(timing_cache, bytes(cache.serialize()))
    props: Mapping[str, str | None]
    try:
        from edgehdr.infer.cuda_buffers import device_properties

        props = device_properties(0)
    except BackendUnavailable:
        props = {"device_name": None, "compute_capability": None}
    specs = io_specs(onnx.load(str(onnx_path)))
    manifest = Manifest(model_name=name, model_version=model_version, artefact=engine_path.name, format="tensorrt",
                        precision=precision, source_onnx_sha256=source_onnx_sha256 or sha256_file(onnx_path),
                        inputs=specs["inputs"], outputs=specs["outputs"], calibration=calibration or {},
                        tensorrt_version=trt.__version__,
                        build_flags={"strongly_typed": strongly_typed, "workspace_mb": workspace_mb,
                                     "dla_core": dla_core, "profile": profile, "build_seconds": round(build_s, 2)},
                        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        device_name=props["device_name"], compute_capability=props["compute_capability"])
    save_manifest(manifest, Manifest.path_for(engine_path))
    return engine_path
