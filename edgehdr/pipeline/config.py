"""The daemon's configuration file (``edgehdr.toml``): schema, defaults, validation.

Every key has a type, a default and an allowed range; an unknown section or key,
a wrong type or a value out of range fails with the file, ``[section] key``, the
value and what is allowed. ``edgehdr/deploy/edgehdr.example.toml`` lists every key.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeAlias

from edgehdr.dimming.neural import MAX_REFINE_STEPS, REFINE_STEPS
from edgehdr.dimming.zones import DEFAULT_ALGORITHM, DEFAULT_POWER_BUDGET, HEURISTICS
from edgehdr.hdr.align import ALIGN_METHODS
from edgehdr.hdr.weights import WEIGHTINGS
from edgehdr.tomlconfig import finite_number, read_table, typed_entries
from edgehdr.tonemap import OPERATORS

__all__ = ["load_config", "default_config", "ConfigError", "SCHEMA"]


class ConfigError(ValueError):
    """A configuration value that is not allowed; the message names the key."""


_Check: TypeAlias = tuple[Callable[[Any], bool], str]  # (check, what is allowed, as text)


def _choice(*options: object) -> _Check:
    return (lambda v: v in options), "one of " + ", ".join(repr(o) for o in options)


def _range(lo: float, hi: float) -> _Check:
    return (lambda v: lo <= v <= hi), f"a number in {lo}..{hi}"


def _any() -> _Check:
    return (lambda v: True), "any value"


# section -> key -> (type, default, (check, allowed text))
SCHEMA: dict[str, dict[str, tuple[type, Any, _Check]]] = {
    "source": {
        "kind": (str, "synthetic", _choice("synthetic", "replay", "v4l2", "gstreamer", "picamera2")),
        "width": (int, 1920, _range(16, 16384)),
        "height": (int, 1080, _range(16, 16384)),
        "fps": (float, 30.0, _range(0.0, 1000.0)),
        "mode": (str, "rolling", _choice("rolling", "burst")),
        "exposures_s": (list, [], _any()),
        "gains": (list, [], _any()),
        "seed": (int, 0, _range(0, 2**31 - 1)),
        "path": (str, "", _any()),
        "bracket_size": (int, 3, _range(2, 9)),
        "loop": (bool, True, _any()),
        "pipeline": (str, "", _any()),
        "sensor_id": (int, 0, _range(0, 16)),
        # v4l2 / gstreamer: frames dropped after each exposure change while the sensor applies it (-1: the source's
        # own, 2 for V4L2 and 3 for Argus); picamera2 checks each frame's metadata instead
        "settle_frames": (int, -1, _range(-1, 8)),
        # picamera2: the Pi 5 ISP's MultiExposureUnmerged mode alternates the exposures itself
        "hdr_mode": (bool, False, _any()),
        "response": (str, "srgb", _any()),
        "moving_objects": (int, 2, _range(0, 32)),
        "shake_px": (int, 0, _range(0, 64)),
        # The synthetic camera's bracket stacks in flight at most (0: no limit), as a driver's buffer count: with all
        # held downstream the read waits; one more per step after the merge that reads the bracket, and when kept.
        # 1: the next capture waits for the merge to let go of the last bracket (a few ms, before its frame slot)
        # and writes into the same stack; 2 absorbs a slower merge for 19 MB more at 1080p (README, issue 16).
        "buffers": (int, 1, _range(0, 64)),
    },
    "planner": {
        "enabled": (bool, True, _any()),
        "max_frames": (int, 3, _range(2, 9)),  # a bracket of one exposure cannot be merged
        "min_exposure_s": (float, 1e-5, _range(1e-7, 10.0)),
        "max_exposure_s": (float, 0.0333, _range(1e-6, 60.0)),
        "max_gain": (float, 8.0, _range(1.0, 256.0)),
        "every_n": (int, 5, _range(1, 1000)),
    },
    "align": {
        "method": (str, "mtb", _choice(*ALIGN_METHODS)),
        "work_scale": (int, 2, _range(1, 8)),
    },
    "merge": {
        "method": (str, "debevec", _choice("debevec", "neural")),
        "model": (str, "merge_net", _any()),
        "weighting": (str, "noise", _choice(*sorted(WEIGHTINGS))),
        "deghost": (bool, False, _any()),
        "fill": (bool, True, _any()),  # the neural merge's fill of clipped samples no frame measures (hdr/fill.py)
    },
    "tonemap": {
        "operator": (str, "reinhard", _choice(*OPERATORS, "neural")),
        "model": (str, "tmo_net", _any()),
        "key": (float, 0.18, _range(0.01, 1.0)),
        "saturation": (float, 1.0, _range(0.0, 2.0)),
        "base_compression": (float, 0.0, _range(0.0, 0.95)),
        "time_constant_s": (float, 0.4, _range(0.0, 60.0)),
    },
    "dimming": {
        "enabled": (bool, True, _any()),
        "layout": (str, "", _any()),
        "rows": (int, 48, _range(1, 255)),
        "cols": (int, 48, _range(1, 255)),
        "peak_luminance_cd_m2": (float, 1000.0, _range(1.0, 100000.0)),
        "algorithm": (str, DEFAULT_ALGORITHM, _choice(*HEURISTICS, "neural")),
        "model": (str, "dimming_net", _any()),
        "power_budget": (float, DEFAULT_POWER_BUDGET, _range(0.01, 1.0)),
        "refine_steps": (int, REFINE_STEPS, _range(0, MAX_REFINE_STEPS)),  # algorithm = "neural" (NeuralDimmer)
    },
    "score": {
        "every_n": (int, 0, _range(0, 100000)),
        "model": (str, "norvdpnet_tmo", _any()),
    },
    "infer": {
        "backend": (str, "auto", _choice("auto", "cpu")),
        "engine_dir": (str, "", _any()),
        "threads": (int, 0, _range(0, 64)),
    },
    "bridge": {
        "enabled": (bool, True, _any()),
        "port": (str, "simulate", _any()),
        "baudrate": (int, 2_000_000, _range(1200, 100_000_000)),
        "bits": (int, 12, _range(8, 16)),
        "watchdog_ms": (int, 500, _range(50, 65535)),
        "heartbeat_ms": (int, 100, _range(10, 30000)),
        "safe_level": (int, 0, _range(0, 65535)),
    },
    "outputs": {
        "frames_dir": (str, "", _any()),
        "frames_every_n": (int, 30, _range(1, 100000)),
        "lcd_dir": (str, "", _any()),
        "video": (str, "", ((lambda v: not v or v.lower().endswith((".avi", ".mp4"))),
                            "a file ending in .avi (MJPG) or .mp4 (mp4v), or \"\" for none")),
    },
    "preview": {
        "enabled": (bool, True, _any()),
        # "" would listen on every interface: refused (write 0.0.0.0 to mean that)
        "host": (str, "127.0.0.1", ((lambda v: bool(v.strip())), "an address (127.0.0.1: this machine only; 0.0.0.0: "
                                                                  "every interface)")),
        "port": (int, 8080, _range(0, 65535)),
        # Host names answered beside loopback ones while listening on loopback (a reverse proxy on this machine that
        # passes its own Host on); a page that rebinds its name to 127.0.0.1 is refused otherwise
        "allowed_hosts": (list, [], ((lambda v: all(isinstance(h, str) and h.strip() for h in v)),
                                     "a list of host names")),
    },
    "run": {
        "seconds": (float, 0.0, _range(0.0, 1e9)),
        # 2 absorbs a stage's jitter where the machine keeps up (the 720p demo: 0 of 154 frames dropped, 1-2 with
        # 1, the same latency). Overloaded, 1 sheds frames sooner: 1080p30 on 2 cores, 3 runs each, alternating,
        # capture-to-zones p50 130-152 ms and p99 191-238 ms against 183-229 and 289-491 ms with 2, peak RSS 431
        # against 472-490 MB, fps the same within the VM's noise.
        "queue_size": (int, 2, _range(1, 64)),
        # 0: all cores (numba's threads) for each stage's kernels; measured in edgehdr/pipeline/graph.py.
        "kernel_threads": (int, 0, _range(0, 64)),
        # Radiance arrays (25 MB each at 1080p) in flight at most between the merge and the stages that read them
        # (0: no limit): at the limit the merge waits for the tone mapper and the dimming to let one go. One more
        # is allowed for each later step that reads the radiance and when the pipeline keeps it (the demo).
        "radiance_buffers": (int, 1, _range(0, 16)),
        "log_level": (str, "info", _choice("debug", "info", "warning", "error")),
        "log_format": (str, "text", _choice("text", "json")),
        "stats_interval_s": (float, 5.0, _range(0.1, 3600.0)),
    },
}


def default_config() -> dict[str, dict[str, Any]]:
    return {section: {key: (list(spec[1]) if isinstance(spec[1], list) else spec[1]) for key, spec in keys.items()}
            for section, keys in SCHEMA.items()}


def validate(data: dict[str, Any], source: str = "<config>") -> dict[str, dict[str, Any]]:
    """Defaults overlaid with ``data``; raises ``ConfigError`` naming the first bad key."""
    config = default_config()
    types = {section: {key: spec[0] for key, spec in keys.items()} for section, keys in SCHEMA.items()}
    for section, key, value in typed_entries(data, types, source, ConfigError):
        _, _, (check, allowed) = SCHEMA[section][key]
        if not check(value):
            raise ConfigError(f"{source}: [{section}] {key} = {value!r}: expected {allowed}")
        config[section][key] = value
    src = config["source"]
    if src["settle_frames"] != -1 and src["kind"] not in ("v4l2", "gstreamer"):
        raise ConfigError(f"{source}: [source] settle_frames = {src['settle_frames']}: only the v4l2 and gstreamer "
                          f"sources drop frames after an exposure change, not kind = {src['kind']!r} (leave it out)")
    if src["hdr_mode"] and src["kind"] != "picamera2":
        raise ConfigError(f"{source}: [source] hdr_mode = true: the Pi 5's HDR mode needs kind = \"picamera2\", "
                          f"not {src['kind']!r}")
    for key in ("exposures_s", "gains"):
        values = src[key]
        if not all(finite_number(v) and v > 0 for v in values):
            raise ConfigError(f"{source}: [source] {key} = {values!r}: expected a list of finite positive numbers")
    if len(src["exposures_s"]) == 1:
        raise ConfigError(f"{source}: [source] exposures_s = {src['exposures_s']!r}: an HDR bracket needs at least "
                          "two exposures (or leave it empty for the source's own guess)")
    if len(set(src["exposures_s"])) != len(src["exposures_s"]) and not src["gains"]:
        raise ConfigError(f"{source}: [source] exposures_s = {src['exposures_s']!r}: each exposure must differ")
    from edgehdr.pipeline.sinks import RunPatternError, expand_run_pattern

    for key in ("frames_dir", "lcd_dir", "video"):
        try:
            expand_run_pattern(config["outputs"][key], datetime(2000, 1, 1))
        except RunPatternError as exc:
            raise ConfigError(f"{source}: [outputs] {key} = {config['outputs'][key]!r}: the only placeholder "
                              f"allowed is {{start:FORMAT}} with a strftime FORMAT ({exc.detail})") from None
    if src["gains"] and len(src["gains"]) != len(src["exposures_s"]):
        raise ConfigError(f"{source}: [source] gains has {len(src['gains'])} values for "
                          f"{len(src['exposures_s'])} exposures_s")
    _check_response(src["response"], source, src["kind"])
    if src["kind"] in ("replay", "v4l2") and not src["path"]:
        raise ConfigError(f"{source}: [source] path is required when kind = {src['kind']!r}")
    planner = config["planner"]
    if planner["min_exposure_s"] >= planner["max_exposure_s"]:
        raise ConfigError(f"{source}: [planner] min_exposure_s must be below max_exposure_s")
    tm = config["tonemap"]
    if tm["base_compression"] and tm["operator"] != "reinhard-local":
        raise ConfigError(f"{source}: [tonemap] base_compression = {tm['base_compression']!r}: applies to "
                          f"operator = 'reinhard-local', not {tm['operator']!r} (leave it at 0)")
    bridge = config["bridge"]
    if bridge["enabled"] and bridge["port"] != "simulate":
        from firmware_bridge.transports import parse_transport_spec

        try:
            parse_transport_spec(bridge["port"])
        except ValueError as exc:
            raise ConfigError(f"{source}: [bridge] port = {bridge['port']!r}: {exc}, or \"simulate\"") from None
    if 2 * bridge["heartbeat_ms"] >= bridge["watchdog_ms"]:
        raise ConfigError(f"{source}: [bridge] heartbeat_ms = {bridge['heartbeat_ms']}: expected less than "
                          f"watchdog_ms / 2 ({bridge['watchdog_ms'] // 2})")
    if bridge["safe_level"] >= (1 << bridge["bits"]):
        raise ConfigError(f"{source}: [bridge] safe_level = {bridge['safe_level']}: expected "
                          f"0..{(1 << bridge['bits']) - 1}")
    return config


def _check_response(response: str, source: str, kind: str) -> None:
    from edgehdr.hdr.crf import RESPONSE_FILE_SUFFIXES, CameraResponse, ResponseCurve

    if response == "auto":
        return
    if response.lower().endswith(RESPONSE_FILE_SUFFIXES):
        if kind == "synthetic":
            raise ConfigError(f"{source}: [source] response = {response!r}: the synthetic camera renders with a "
                              "named curve (linear, gamma2.2, srgb, s-curve); a response file is for the sources "
                              "that read a real camera's frames (replay, v4l2, gstreamer, picamera2)")
        if not Path(response).is_file():
            raise ConfigError(f"{source}: [source] response = {response!r}: no such response file")
        try:
            CameraResponse.load(response)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{source}: [source] response = {response!r}: {exc}") from None
        return
    try:
        ResponseCurve.parse(response)
    except ValueError as exc:
        raise ConfigError(f"{source}: [source] response = {response!r}: {exc}, or a response file "
                          f"({', '.join(RESPONSE_FILE_SUFFIXES)})") from None


def sections_running_networks(config: dict[str, dict[str, Any]]) -> list[str]:
    """The sections of a validated configuration whose stage runs its ``model``: merge, tonemap, dimming, score."""
    runs = {"merge": config["merge"]["method"] == "neural", "tonemap": config["tonemap"]["operator"] == "neural",
            "dimming": config["dimming"]["enabled"] and config["dimming"]["algorithm"] == "neural",
            "score": config["score"]["every_n"] > 0}
    return [section for section, running in runs.items() if running]


def check_paths(config: dict[str, dict[str, Any]], source: str = "<config>") -> None:
    """The files and folders a validated configuration names, as they are now: a replay's stack, a layout file, an
    engine folder, and the folders outputs go to. Raises ``ConfigError`` naming the key, so a typo fails before
    any frame (exit 2) instead of at start-up or, for ``[infer] engine_dir``, not at all (engines then silently
    not used). Kept out of ``validate``, which also checks configurations built in code for other machines."""
    src = config["source"]
    if src["kind"] == "replay" and not Path(src["path"]).exists():
        raise ConfigError(f"{source}: [source] path = {src['path']!r}: no such folder or list file")
    layout = config["dimming"]["layout"]
    if config["dimming"]["enabled"] and layout and not Path(layout).is_file():
        raise ConfigError(f"{source}: [dimming] layout = {layout!r}: no such layout file")
    engine_dir = config["infer"]["engine_dir"]
    networks = sections_running_networks(config)
    # A model's name or file, where its stage runs: a typo fails here, not after the kernels' warm-up (10-19 s on a
    # first run). Whether the file suits its stage is checked by the daemon's check_models (it means loading it).
    from edgehdr.models import model_path

    for section in networks:
        model = config[section]["model"]
        try:
            model_path(model)
        except FileNotFoundError as exc:
            raise ConfigError(f"{source}: [{section}] model = {model!r}: {exc}") from None
    # Read only where a network runs on the device's engines (a config shared with a CPU-only host may name it).
    if engine_dir and networks and config["infer"]["backend"] != "cpu" and not Path(engine_dir).is_dir():
        raise ConfigError(f"{source}: [infer] engine_dir = {engine_dir!r}: no such folder (the engines "
                          "edgehdr-export build made on this device)")
    from edgehdr.pipeline.sinks import expand_run_pattern  # here, as in validate: sinks brings OpenCV

    when = datetime.now()
    for key in ("frames_dir", "lcd_dir", "video"):
        pattern = config["outputs"][key]
        if not pattern or (key == "lcd_dir" and not config["dimming"]["enabled"]):  # not written without dimming
            continue
        path = Path(expand_run_pattern(pattern, when))  # validate() checked the pattern
        if key != "video":  # a frames folder is created; a file in its place cannot be
            blocker = next((p for p in (path, *path.parents) if p.exists()), None)
            if blocker is not None and not blocker.is_dir():
                raise ConfigError(f"{source}: [outputs] {key} = {pattern!r}: {blocker} exists and is not a folder")
            # The last fixed folder (the folder itself, or the one holding the first {start:...} placeholder) and
            # the per-run folders below it are created; what is above it must exist, so a typo earlier in the path
            # is refused rather than made into a new tree of folders.
            parts = Path(pattern).parts
            first_placeholder = next((i for i, part in enumerate(parts) if "{" in part), len(parts))
            base = Path(*parts[:first_placeholder - 1]) if first_placeholder > 1 else Path(".")
            if not base.is_dir():
                raise ConfigError(f"{source}: [outputs] {key} = {pattern!r}: folder {base} does not exist (create "
                                  "it first: only the last folder before a {start:...} placeholder, and those from "
                                  "it on, are created)")
        elif not path.parent.is_dir():
            raise ConfigError(f"{source}: [outputs] {key} = {pattern!r}: folder {path.parent} does not exist "
                              "(create it first)")


def load_config(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Read and validate a TOML configuration file, and the paths it names (``check_paths``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such configuration file")
    config = validate(read_table(path, ConfigError), str(path))
    check_paths(config, str(path))
    return config
