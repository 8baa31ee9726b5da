"""The ``edgehdr`` command: merge, tonemap, synth, bench, dim, bridge, run, demo, score."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from firmware_bridge.protocol import Config
    from firmware_bridge.transports import Transport

__all__ = ["main", "build_parser"]


def _check_output(path: str | os.PathLike[str], suffixes: Sequence[str], *, option: str = "-o") -> None:
    """Refuse an output path before any work: wrong suffix, a folder, or a folder that does not exist or cannot be
    written."""
    from edgehdr.io.staging import output_file

    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise ValueError(f"{option} {path}: unsupported output type {p.suffix or '(no extension)'!r}; "
                         f"use one of {', '.join(suffixes)}")
    if p.is_dir():
        raise ValueError(f"{option} {path}: is a folder; give a file name")
    output_file(p, option=option)


def _cmd_merge(args: argparse.Namespace) -> int:
    import numpy as np

    from edgehdr.hdr.align import align_bracket
    from edgehdr.hdr.crf import calibrate_debevec
    from edgehdr.hdr.merge import merge_debevec, resolve_response
    from edgehdr.io import RADIANCE_SUFFIXES, read_ldr_stack, write_radiance
    from edgehdr.progress import Progress

    if args.save_response and args.response != "auto":
        raise ValueError(f"--save-response {args.save_response}: only with --response auto (the calibration "
                         f"writes it; --response {args.response} is given, not estimated)")
    if args.list and args.images:  # the list's entries would replace them without a word
        raise ValueError(f"--list {args.list} and images ({' '.join(args.images)}): give one or the other")
    if not args.list and not args.images:
        raise ValueError("no images: give image files, a folder, a list file, or --list FILE")
    _check_output(args.output, RADIANCE_SUFFIXES)
    if args.exr_pixel_type != "auto" and Path(args.output).suffix.lower() != ".exr":
        raise ValueError(f"--exr-pixel-type {args.exr_pixel_type} applies to an .exr output, not -o {args.output}")
    if args.save_response:
        from edgehdr.hdr.crf import RESPONSE_FILE_SUFFIXES

        _check_output(args.save_response, RESPONSE_FILE_SUFFIXES, option="--save-response")
    progress = Progress(4, quiet=args.quiet)
    bracket = read_ldr_stack(args.images, list_file=args.list, bits=args.bits)
    read = [*bracket.extra["paths"], *([bracket.extra["list_file"]] if "list_file" in bracket.extra else [])]
    inputs = {Path(p).resolve() for p in read}
    for option, path in (("-o", args.output), ("--save-response", args.save_response)):
        if path and Path(path).resolve() in inputs:  # a response saved as .txt over the folder's list.txt, say
            raise ValueError(f"{option} {path}: is one of the inputs being merged; give another file name")
    progress.step(f"read {len(bracket)} frames {bracket.frames.shape[2]}x{bracket.frames.shape[1]}, "
                  f"{bracket.bits}-bit, relative exposures {np.round(bracket.relative_exposure, 6).tolist()}")
    source = args.list or " ".join(args.images)
    top = (1 << bracket.bits) - 1
    # A bracket with no sample between black and clipped in any frame measures nothing: its merge would be the
    # exposure bound everywhere (a flat image), its calibration a curve fitted to no data.
    if not ((bracket.frames > 0) & (bracket.frames < top)).any():
        raise ValueError(f"{source}: every frame is black (code 0) or clipped (code {top}) everywhere: nothing in "
                         "this bracket is measured, so there is nothing to calibrate or merge")
    if args.response == "auto":
        try:
            response = calibrate_debevec(bracket.frames, bracket.relative_exposure, bits=bracket.bits,
                                         smoothness=args.smoothness)
        except ValueError as exc:
            raise ValueError(f"{source}: calibrating the camera response failed ({exc}); the bracket holds too few "
                             "samples that change with exposure: give --response srgb, or the camera's response "
                             "file") from None
    else:
        response = resolve_response(args.response, bracket.bits)
    progress.step(f"camera response: {response.name}")
    bracket, motions = align_bracket(bracket, args.align, response=response)
    for i, m in enumerate(motions):
        if args.align != "none":
            progress.note(f"frame {i}: {json.dumps(m.as_dict())}")
    progress.step(f"aligned ({args.align})")
    radiance = merge_debevec(bracket, response=response, weighting=args.weighting, deghost=args.deghost,
                             fill=args.fill)
    if args.save_response:  # both files or neither: the response staged beside its final name, published last
        from edgehdr.io.atomic import atomic_output

        with atomic_output(args.save_response) as staged:
            response.save(staged)
            write_radiance(args.output, radiance, exr_pixel_type=args.exr_pixel_type)  # its errors name its file
    else:
        write_radiance(args.output, radiance, exr_pixel_type=args.exr_pixel_type)
    done = " and ".join(word for word, on in (("deghosting", args.deghost), ("the fill", args.fill)) if on)
    progress.step(f"merged{' with ' + done if done else ''} -> {args.output}")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from edgehdr.infer import open_runner
    from edgehdr.io.hdr_files import RADIANCE_SUFFIXES
    from edgehdr.models import model_path
    from edgehdr.quality.norvdpnet import NoRVDPNetScorer, model_encoding

    model = model_path(args.model)
    encoding = model_encoding(model)
    suffixes = RADIANCE_SUFFIXES if encoding == "hdr" else (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
    paths = []
    for item in args.images:
        p = Path(item)
        if p.is_dir():
            paths += sorted(q for q in p.iterdir() if q.suffix.lower() in suffixes)
        elif p.is_file():
            if encoding != "hdr" and p.suffix.lower() in RADIANCE_SUFFIXES:  # the reader would call it corrupt
                raise ValueError(f"{p}: a radiance map; {args.model} scores tone-mapped SDR images (tone map it "
                                 "first: edgehdr tonemap)")
            paths.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such image or folder")
    if not paths:
        raise ValueError(f"no images found in {', '.join(args.images)}")
    runner = open_runner(model, prefer="cpu" if args.backend == "cpu" else "auto")
    try:
        ranked = NoRVDPNetScorer(runner, encoding=encoding).rank(paths)
    finally:
        runner.close()
    if args.json:
        print(json.dumps([{"rank": i + 1, "score": round(s, 4), "path": str(p)} for i, (s, p) in enumerate(ranked)],
                         indent=2))
    else:
        print(f"{'rank':>4}  {'score':>6}  image   ({args.model}: higher is better)")
        for i, (score, p) in enumerate(ranked):
            print(f"{i + 1:4d}  {score:6.4f}  {p}")
    return 0


# ``edgehdr tonemap`` options and the operators that read them (given for another, they are refused).
_TONEMAP_OPTION_OPERATORS = {
    "model": ("neural",), "backend": ("neural",), "base_compression": ("reinhard-local",),
    "key": ("reinhard", "reinhard-local", "parametric"),
    "white": ("reinhard", "reinhard-local"), "bias": ("drago",), "alpha": ("parametric",), "mu": ("parametric",),
    "saturation": ("reinhard", "reinhard-local", "drago", "parametric"),
    "color": ("reinhard", "reinhard-local", "drago", "parametric")}


def _cmd_tonemap(args: argparse.Namespace) -> int:
    from edgehdr.io import read_radiance, write_ldr_image
    from edgehdr.tonemap import tonemap

    _check_output(args.output, (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".ppm", ".webp"))
    for option, value in vars(args).items():  # an option the operator does not read is refused, not dropped
        operators = _TONEMAP_OPTION_OPERATORS.get(option)
        if operators is not None and value is not None and args.operator not in operators:
            flag = "--" + option.replace("_", "-")
            raise ValueError(f"{flag} applies to --operator {' or '.join(operators)}, not {args.operator}")
    if args.operator == "parametric" and args.mu is not None and args.key is not None:
        raise ValueError("--key and --mu: the parametric operator's mid-point is --mu, or taken from --key when --mu "
                         "is not given; give one")
    radiance = read_radiance(args.input)
    if args.operator == "neural":
        model = args.model or "tmo_net"
        sdr = _neural_tonemap(radiance, model, args.backend or "auto")
        label = f"neural ({model})"
    else:
        # only what was given: the rest are the operator's own defaults (the help texts name them)
        params = {name: value for name, value in vars(args).items()
                  if value is not None and name in _TONEMAP_OPTION_OPERATORS and name not in ("model", "backend")}
        if args.operator == "parametric" and "saturation" in params:
            params["gamma"] = params.pop("saturation")  # the parametric operator's colour exponent
        sdr = tonemap(radiance, args.operator, **params)
        label = args.operator
    write_ldr_image(args.output, sdr)
    if not args.quiet:
        print(f"{label}: {args.input} -> {args.output}", file=sys.stderr)
    return 0


def _neural_tonemap(radiance: np.ndarray, model: str, backend: str) -> np.ndarray:
    """One frame through the real-time TMO network (no temporal smoothing: a still has no history)."""
    from edgehdr.infer import open_runner
    from edgehdr.models import model_path
    from edgehdr.tonemap.neural import NeuralToneMapper

    runner = open_runner(model_path(model), prefer="cpu" if backend == "cpu" else "auto")
    try:
        return NeuralToneMapper(runner, time_constant_s=0.0)(radiance)
    finally:
        runner.close()


_SYNTH_FRAME_NAME = re.compile(r"frame_[0-9]+\.(png|tif)")


def _synth_frames_listed(out: Path) -> set[str]:
    """The frame names ``edgehdr synth`` wrote (``frame_N.png|tif``) that ``out/list.txt`` names.

    Raises ``ValueError`` when ``out`` holds a bracket synth did not write: a ``list.txt`` naming any other file, or
    a ``response.json`` or ``ground_truth.exr`` without a list. Synth replaces those files, so it refuses rather
    than overwrite a user's own bracket."""
    from edgehdr.io.ldr_stack import read_list_file

    list_path = out / "list.txt"
    refusal = "not replacing a bracket of your own (choose an empty or new folder for -o)"
    try:
        entries = read_list_file(list_path)  # the parser merge reads it with
    except FileNotFoundError:
        own = [name for name in ("response.json", "ground_truth.exr") if (out / name).exists()]
        if own:
            raise ValueError(f"-o {out}: holds {' and '.join(own)} but no list.txt, so not a folder edgehdr synth "
                             "wrote; not replacing them (choose an empty or new folder)") from None
        return set()
    except ValueError as exc:  # not a list synth writes
        raise ValueError(f"{list_path}: not a list edgehdr synth wrote ({exc}): {refusal}") from None
    except OSError:
        return set()
    names = [os.path.relpath(path, out) for path, _ in entries]
    foreign = [name for name in names if not _SYNTH_FRAME_NAME.fullmatch(name)]
    if foreign:
        raise ValueError(f"{list_path}: names {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, which "
                         f"edgehdr synth did not write: {refusal}")
    return set(names)


def _cmd_synth(args: argparse.Namespace) -> int:
    from edgehdr.hdr.crf import ResponseCurve
    from edgehdr.io import write_ldr_image, write_radiance, write_text_atomic
    from edgehdr.io.headers import max_pixels_limit
    from edgehdr.io.staging import staged_outputs
    from edgehdr.synth import CameraModel, capture_bracket, make_scene, random_camera_motion, suggest_exposures

    if args.width * args.height > max_pixels_limit():
        raise ValueError(f"--width {args.width} --height {args.height}: {args.width * args.height / 1e6:.1f} MP is "
                         f"above the pixel limit of {max_pixels_limit() / 1e6:.1f} MP (EDGEHDR_MAX_PIXELS)")
    camera = CameraModel(response=ResponseCurve.parse(args.response), bits=args.bits)
    out = Path(args.output)
    earlier_frames = _synth_frames_listed(out)
    # All or nothing: every file is written into a hidden folder beside the result and moved in at the end.
    with staged_outputs(out, "synth") as stage:
        scene = make_scene(args.seed, args.height, args.width, kind=args.kind, moving_objects=args.moving)
        poses = random_camera_motion(args.exposures, max_shift_px=args.shake_px, seed=args.seed) \
            if args.shake_px else None
        shot = capture_bracket(scene, suggest_exposures(scene.radiance, args.exposures, args.spacing), camera=camera,
                               seed=args.seed, camera_poses=poses)
        lines = []
        suffix = ".png" if args.bits == 8 else ".tif"
        for i, (frame, t) in enumerate(zip(shot.bracket.frames, shot.bracket.exposure_s)):
            name = f"frame_{i}{suffix}"
            write_ldr_image(stage / name, frame)
            lines.append(f"{name} {1.0 / t:.9g}")
        write_text_atomic(stage / "list.txt", "\n".join(lines) + "\n")
        write_radiance(stage / "ground_truth.exr", shot.radiance, exr_pixel_type="float")
        shot.response.save(stage / "response.json")
    # An earlier, longer (or other bit depth) bracket written here: its frames the new list does not name go, so
    # the folder holds one bracket (only files synth names itself and the old list named are touched).
    for name in earlier_frames - {line.split()[0] for line in lines}:
        (out / name).unlink(missing_ok=True)
    if not args.quiet:
        print(f"wrote {args.exposures} frames, list.txt, ground_truth.exr and response.json to {out}", file=sys.stderr)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from edgehdr import bench
    from edgehdr.io import null_undefined, write_json_atomic
    from edgehdr.io.staging import output_file

    if args.json:  # before the run: a 10-minute soak must not end in a path it cannot write
        output_file(args.json, option="--json")
    result: dict[str, Any]
    if args.runtime or args.faults:
        result = {}
        if args.runtime:
            width, height = args.size
            result["runtime"] = bench.runtime_benchmark(args.seconds, width=width, height=height, fps=args.fps,
                                                        shake_px=args.shake_px, quiet=args.quiet)
            print(bench.format_runtime(result["runtime"]))
        if args.faults:
            result["faults"] = bench.fault_run(quiet=args.quiet)
            print(bench.format_faults(result["faults"]))
    elif args.calls:
        result = bench.calls_benchmark(quiet=args.quiet)
        print(bench.format_calls(result))
    elif args.real:
        rows = [bench.real_stack_report(path) for path in args.real]
        result = {"real": rows}
        print(bench.format_real(rows))
    elif args.dimming:
        result = {"timing": bench.dimming_benchmark(quiet=args.quiet)}
        print(bench.format_dimming(result["timing"], None), flush=True)
        result["quality"] = bench.dimming_quality_table(quiet=args.quiet)
        print(bench.format_dimming(None, result["quality"]))
    elif args.quality:
        result = {"synthetic": bench.merge_quality_report(quiet=args.quiet)}
        print(bench.format_quality(result["synthetic"]), flush=True)
        from edgehdr.synth import real_hdr_dir

        try:
            real_hdr_dir()
        except FileNotFoundError as exc:
            print(f"real photographs: skipped ({exc})")
        else:
            result["real"] = bench.real_merge_report(quiet=args.quiet)
            print(bench.format_real_merge(result["real"]))
    else:
        result = bench.run_benchmark(args.sizes.split(","), repeat=args.repeat, quiet=args.quiet)
        print(bench.format_table(result))
    if args.json:
        write_json_atomic(args.json, null_undefined(result))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from edgehdr.pipeline.daemon import run_daemon

    return run_daemon(args.config, seconds=args.seconds)


def _cmd_demo(args: argparse.Namespace) -> int:
    from edgehdr.demo import run_demo

    stats = run_demo(args.output, seconds=args.seconds, seed=args.seed, height=args.height, width=args.width,
                     quiet=args.quiet, neural=args.neural)
    ctrl = stats.get("controller") or {}
    print(f"results in {args.output}/ (open contact_sheet.png; stats.json has the figures)")
    print(f"{stats['frames_completed']} frames at {stats['fps']} fps, {stats['frames_dropped']} dropped, "
          f"{stats['frames_failed']} failed; capture-to-zones {stats['capture_to_zones_ms_median']} ms median, "
          f"{stats['capture_to_zones_ms_p99']} ms p99; controller applied {ctrl.get('frames_applied')} zone frames")
    return 0


def _cmd_dim(args: argparse.Namespace) -> int:
    from edgehdr.dimming import LedLayout, dim_frame, display_target, load_layout, write_results
    from edgehdr.io import read_radiance
    from edgehdr.io.staging import output_folder, staged_outputs
    from edgehdr.progress import Progress

    output_folder(args.output, create=False)  # refuse an unwritable -o before the work
    progress = Progress(4, quiet=args.quiet)
    image = read_radiance(args.input)
    h, w = image.shape[:2]
    if args.layout:
        layout = load_layout(args.layout)
        if (layout.height_px, layout.width_px) != (h, w):
            raise ValueError(f"{args.input} is {w}x{h} but layout {args.layout} is for a "
                             f"{layout.width_px}x{layout.height_px} panel")
    else:
        if min(h, w) < 16:  # the panel model's smallest side (LedLayout's check would name the built-in layout)
            raise ValueError(f"{args.input} is {w}x{h}: the built-in panel needs at least 16 pixels a side")
        layout = LedLayout(rows=min(48, h), cols=min(48, w), width_px=w, height_px=h, source="<built-in 48x48>")
    progress.step(f"read {args.input} ({w}x{h}); layout {layout.rows}x{layout.cols} zones, "
                  f"peak {layout.peak_luminance_cd_m2:g} cd/m^2, contrast {layout.native_contrast:g}:1")
    try:
        target = display_target(image, layout, referred=args.input_referred)
    except ValueError as exc:  # e.g. an image with no positive luminance: name it
        raise ValueError(f"{args.input}: {exc}") from None
    progress.step(f"target: {args.input_referred}-referred -> cd/m^2 (robust peak to panel peak)")
    result = dim_frame(target, layout, args.algorithm, simulate=True, power_budget=args.power_budget)
    metrics = result.metrics
    if metrics is None:  # simulate=True computes them
        raise RuntimeError("dim_frame(simulate=True) returned no metrics")
    progress.step(f"{args.algorithm}: power {metrics['power']:.3f}, PU-PSNR {metrics['pu_psnr_db']:.2f} dB")
    with staged_outputs(args.output, "dim") as stage:  # all or nothing: moved in when every file is written
        write_results(stage, result, layout, target_cd_m2=target)
    progress.step(f"wrote zones.csv, zones.npy, lcd.png, display.exr, heatmap.png, metrics.json to {args.output}")
    from edgehdr.io import null_undefined

    print(json.dumps(null_undefined(metrics), indent=2, default=float, allow_nan=False))  # as metrics.json: no Infinity
    return 0


def _bridge_config(args: argparse.Namespace) -> Config:
    from firmware_bridge.protocol import Config

    return Config(rows=args.rows, cols=args.cols, bits=args.bits, safe_level=args.safe_level,
                  watchdog_ms=args.watchdog_ms, heartbeat_ms=args.heartbeat_ms).validate()


def _cmd_bridge_simulate(args: argparse.Namespace) -> int:
    import time

    from firmware_bridge.simulator import ControllerSimulator, UdpControllerEndpoint
    from firmware_bridge.transports import PtyPair

    endpoint: Transport
    pair: PtyPair | None
    if args.udp:
        host, _, port = args.udp.rpartition(":")
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            print(f"edgehdr bridge simulate: error: --udp {args.udp!r}: give HOST:PORT with a port in 1..65535",
                  file=sys.stderr)
            return 2
        endpoint = UdpControllerEndpoint((host or "127.0.0.1", int(port)))
        pair = None
    else:
        if args.pty:
            link = Path(args.pty)
            stale_pty_link = link.is_symlink() and os.readlink(link).startswith("/dev/pts/")
            if (link.exists() or link.is_symlink()) and not stale_pty_link:
                print(f"edgehdr bridge simulate: error: --pty {link} exists and is not a link to a pty; refusing to "
                      "replace it (give a path that does not exist yet)", file=sys.stderr)
                return 2
        pair = PtyPair(args.pty)
        endpoint = pair.controller

    def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # SIGTERM like Ctrl-C: the finally below removes the pty link

    previous_term = signal.signal(signal.SIGTERM, _stop_on_signal)
    sim = None
    try:
        sim = ControllerSimulator(endpoint, rows=args.rows, cols=args.cols, max_bits=args.bits,
                                  vsync_hz=args.vsync_hz).start()
        if isinstance(endpoint, UdpControllerEndpoint) and endpoint.address is not None:  # open: bound
            where = f"udp:{endpoint.address[0]}:{endpoint.address[1]}"
        else:
            where = pair.path if pair is not None else args.udp
        print(f"controller simulator listening on {where} ({args.rows}x{args.cols} zones, {args.vsync_hz:g} Hz "
              "vsync); Ctrl-C to stop", flush=True)
        end = time.monotonic() + args.seconds if args.seconds else None
        while end is None or time.monotonic() < end:
            time.sleep(1.0)
            st = sim.status()
            print(f"state={st.state} applied={st.frames_applied} superseded={st.frames_superseded} "
                  f"crc_errors={st.crc_errors} framing_errors={st.framing_errors} last_frame={st.last_frame_id}",
                  file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not interrupt the clean-up
        if sim is not None:
            sim.stop()
        if pair is not None:
            pair.close()
        else:
            endpoint.close()
        signal.signal(signal.SIGTERM, previous_term)
    return 0


def _cmd_bridge_send(args: argparse.Namespace) -> int:
    import time

    from firmware_bridge.link import Link
    from firmware_bridge.patterns import test_pattern
    from firmware_bridge.transports import open_transport

    config = _bridge_config(args)
    with Link(open_transport(args.port, baudrate=args.baud), config) as link:
        if not link.wait_running(args.connect_timeout):
            stats = link.stats()
            why = stats["last_error"] or (f"no answer in {args.connect_timeout:g} s (protocol state "
                                          f"{stats.get('state', '?')}: nothing or no controller listens there)")
            print(f"edgehdr bridge send: error: controller on {args.port} did not come up: {why}", file=sys.stderr)
            return 2
        n = int(args.seconds * args.fps)
        start = time.monotonic()
        for i in range(1, n + 1):
            link.send_zones(test_pattern(args.pattern, config.rows, config.cols, config.bits, i), frame_id=i)
            delay = start + i / args.fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        # Report once the link has written (or superseded) every frame handed to it, however loaded the machine,
        # and the controller had a moment to answer; at most 5 s.
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            stats = link.stats()
            if stats["frames_sent"] + stats["frames_superseded"] >= n:
                break
            time.sleep(0.01)
        time.sleep(0.2)
        print(json.dumps(link.stats(), indent=2, default=str))
    return 0


def _cmd_bridge_bench_qemu(args: argparse.Namespace) -> int:
    from edgehdr.io import null_undefined, write_json_atomic
    from firmware_bridge import bench
    from firmware_bridge.qemu import FirmwareUnavailable

    progress_print = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    try:
        result = bench.qemu_summary(args.seconds, args.hz, progress=progress_print, board=args.board)
    except FirmwareUnavailable as exc:
        print(f"edgehdr bridge bench: {exc}", file=sys.stderr)
        return 2
    print(bench.format_qemu_summary(result))
    if args.json:
        write_json_atomic(args.json, null_undefined(result))
    return 0 if bench.qemu_summary_ok(result) else 1


def _cmd_bridge_bench(args: argparse.Namespace) -> int:
    from edgehdr.io import null_undefined, write_json_atomic
    from edgehdr.io.staging import output_file
    from firmware_bridge import bench

    if args.json:  # before the run, which takes minutes
        output_file(args.json, option="--json")
    if args.controller == "qemu":
        return _cmd_bridge_bench_qemu(args)
    args.hz = args.hz or 120.0
    progress_print = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    progress_print("[1/4] encode + write one ZONES frame, 2000 times")
    result = {"encode_write": bench.encode_write_ms(args.zones)}
    print(bench.format_encode_write(result["encode_write"], args.zones))
    progress_print(f"[2/4] {args.hz:g} Hz stream over a pty for {args.seconds:g} s, vsync {args.hz:g} Hz")
    result["stream"] = bench.stream_run(args.seconds, args.hz, args.zones)
    print(bench.format_stream(result["stream"]))
    receipt_s = min(args.seconds, 10.0)
    progress_print(f"[3/4] the same, applied on receipt (no vsync wait), {receipt_s:g} s")
    result["stream_apply_on_receipt"] = bench.stream_run(receipt_s, args.hz, args.zones, vsync_hz=0)
    print(bench.format_apply_on_receipt(result["stream_apply_on_receipt"]))
    progress_print("[4/4] fault run: unplug/replug, garbage injection")
    result["faults"] = bench.fault_run(args.hz, args.zones)
    print(bench.format_link_faults(result["faults"]))
    if args.json:
        write_json_atomic(args.json, null_undefined(result))
    return 0


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    """argparse type: an integer in lo..hi (argparse then names the option in its error, exit 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is out of range; allowed {lo}..{hi}")
        return value
    return parse


def _float_range(lo: float, hi: float = math.inf, *, above: bool = False) -> Callable[[str], float]:
    """argparse type: a finite number in lo..hi (``above``: strictly greater than lo)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (math.isfinite(value) and (value > lo if above else value >= lo) and value <= hi):
            if hi == math.inf:
                allowed = f"> {lo:g}" if above else f">= {lo:g}"
            else:
                allowed = f"in ({lo:g}, {hi:g}]" if above else f"{lo:g}..{hi:g}"
            raise argparse.ArgumentTypeError(f"{text} is not allowed; give a finite number {allowed}")
        return value
    return parse


def _float_at_least(lo: float) -> Callable[[str], float]:
    return _float_range(lo)


def _float_above(lo: float) -> Callable[[str], float]:
    return _float_range(lo, above=True)


def _float_in(lo: float, hi: float) -> Callable[[str], float]:
    return _float_range(lo, hi)


def frame_size(text: str) -> tuple[int, int]:
    """argparse type: ``WIDTHxHEIGHT`` (e.g. 1280x720) or a name (720p, 1080p, 4k) -> (width, height)."""
    from edgehdr.bench.stages import SIZES

    if text.lower() in SIZES:
        h, w = SIZES[text.lower()]
        return w, h
    parts = text.lower().split("x")
    try:
        w, h = (int(v) for v in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give WIDTHxHEIGHT (e.g. 1280x720) or one of "
                                         f"{', '.join(SIZES)}") from None
    if not (16 <= w <= 16384 and 16 <= h <= 16384):
        raise argparse.ArgumentTypeError(f"{text}: width and height must be 16..16384")
    return w, h


def _add_bridge_grid(p: argparse.ArgumentParser, rows: int = 16, cols: int = 24, bits: int = 12) -> None:
    # PROTOCOL.md: rows and cols are u8 (1..255), zone depth 8..16 bit
    p.add_argument("--rows", type=_int_in(1, 255), default=rows, help=f"zone rows, 1..255 (default {rows})")
    p.add_argument("--cols", type=_int_in(1, 255), default=cols, help=f"zone columns, 1..255 (default {cols})")
    p.add_argument("--bits", type=_int_in(8, 16), default=bits, help=f"zone value depth, 8..16 (default {bits})")


def build_parser() -> argparse.ArgumentParser:
    from edgehdr import __version__
    from edgehdr.hdr.align import ALIGN_METHODS
    from edgehdr.hdr.weights import WEIGHTINGS
    from edgehdr.tonemap import COLOR_METHODS, OPERATORS
    from firmware_bridge.patterns import PATTERNS
    from firmware_bridge.qemu import BOARDS as QEMU_BOARDS

    parser = argparse.ArgumentParser(prog="edgehdr", description="HDR imaging on edge devices.")
    parser.add_argument("--version", action="version", version=f"edgehdr {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("merge", help="merge an exposure stack into a radiance map")
    p.add_argument("images", nargs="*", help="image files, a folder (uses its list.txt or EXIF) or a list file")
    p.add_argument("-o", "--output", required=True, help="output .exr, .hdr or .pfm")
    p.add_argument("--list", help="OpenCV-style list file: 'FILENAME INVERSE_SHUTTER_TIME' per line")
    p.add_argument("--response", default="auto",
                   help="auto (Debevec calibration), srgb, gamma2.2, linear, s-curve[:C:P], or a response file: "
                        ".json, OpenCV's .npy, pfstools' .m, a .txt/.lut table")
    p.add_argument("--save-response", help="with --response auto: write the calibrated response here (.json; .npy for "
                                            "OpenCV, .m for pfstools, .txt/.lut for a plain LUT)")
    p.add_argument("--smoothness", type=_float_at_least(0.0), default=30000.0,
                   help="Debevec calibration smoothness lambda (>= 0)")
    p.add_argument("--align", choices=ALIGN_METHODS, default="auto",
                   help="auto: translation, rotation or homography only where it lowers the exposure-matched "
                        "residual (tripod stacks stay put); mtb: Ward's bitmaps; homography; none")
    p.add_argument("--deghost", action="store_true", help="reject moving objects against the middle exposure")
    p.add_argument("--fill", action="store_true",
                   help="clipped samples no usable frame measures take the brightness of their measured "
                        "neighbours beyond the reference's range, above their bound (edgehdr.hdr.fill); with "
                        "--deghost (measured on moving brackets: +0.3 dB PU21 on real photographs)")
    p.add_argument("--weighting", choices=sorted(WEIGHTINGS), default="noise",
                   help="noise: inverse-variance weights from the camera noise model (best measured on real "
                        "photographs re-taken through JPEG cameras); triangle (= hat, Debevec's); tutorial: the "
                        "seed's weighting")
    p.add_argument("--bits", type=_int_in(8, 16), help="significant bits of 16-bit files (e.g. 12)")
    p.add_argument("--exr-pixel-type", choices=("auto", "half", "float"), default="auto",
                   help="auto: half-float unless radiance exceeds 65504, then float (never +inf)")
    p.set_defaults(func=_cmd_merge)

    p = sub.add_parser("tonemap", help="tone map a radiance map to an sRGB image")
    p.add_argument("input", help="input .exr, .hdr or .pfm")
    p.add_argument("-o", "--output", required=True, help="output .png, .jpg or .tif")
    p.add_argument("--operator", choices=(*OPERATORS, "neural"), default="reinhard",
                   help="neural: the real-time TMO network through ONNX Runtime (or a TensorRT engine); the "
                        "curve options below do not apply to it")
    p.add_argument("--model", help="with --operator neural: a shipped model name or an .onnx path (default tmo_net)")
    p.add_argument("--backend", choices=("auto", "cpu"), default=None,
                   help="with --operator neural: auto (a TensorRT engine where one is built; the default) or cpu")
    p.add_argument("--key", type=_float_above(0.0), default=None,
                   help="Reinhard key / parametric mid-grey (default 0.18)")
    p.add_argument("--white", type=_float_above(0.0), help="Reinhard white point (default: scene maximum)")
    p.add_argument("--base-compression", type=_float_in(0.0, 0.95), default=None,
                   help="reinhard-local: compress the base layer towards the key by 1 - this (Durand & Dorsey); "
                        "0 is Reinhard's operator, 0.5 lifts deep shadows beside a bright sky")
    p.add_argument("--bias", type=_float_above(0.0), default=None, help="Drago bias (default 0.85)")
    p.add_argument("--alpha", type=_float_above(0.0), default=None, help="parametric contrast exponent (default 0.8)")
    p.add_argument("--mu", type=_float_above(0.0), help="parametric mid-point (default from the key)")
    p.add_argument("--saturation", type=_float_at_least(0.0), default=None,
                   help="colour saturation s (gamma for parametric; default 1, 0.8 for parametric)")
    p.add_argument("--color", choices=COLOR_METHODS, default=None, help="colour correction (default schlick)")
    p.set_defaults(func=_cmd_tonemap)

    p = sub.add_parser("synth", help="write a synthetic bracket with its exact ground truth")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--seed", type=_int_in(0, 2**31 - 1), default=0)
    p.add_argument("--kind", choices=("outdoor", "indoor", "night"))
    p.add_argument("--width", type=_int_in(16, 16384), default=1280, help="16..16384, within the pixel limit")
    p.add_argument("--height", type=_int_in(16, 16384), default=720, help="16..16384, within the pixel limit")
    p.add_argument("--exposures", type=_int_in(2, 9), default=3, help="frames in the bracket, 2..9")
    p.add_argument("--spacing", type=_float_in(0.1, 8.0), default=2.0, help="stops between exposures, 0.1..8")
    p.add_argument("--moving", type=_int_in(0, 32), default=0, help="moving objects")
    p.add_argument("--shake-px", type=_float_in(0.0, 64.0), default=0.0,
                   help="random hand shake up to this many pixels, 0..64")
    p.add_argument("--response", default="srgb", help="camera response curve")
    p.add_argument("--bits", type=int, default=8, choices=(8, 10, 12, 16))
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("bench", help="per-stage latency against OpenCV at 720p, 1080p and 4K")
    p.add_argument("--sizes", default="720p,1080p,4k")
    p.add_argument("--repeat", type=_int_in(1, 1000), default=7)
    p.add_argument("--json", help="also write the figures as JSON")
    p.add_argument("--quality", action="store_true",
                   help="instead: merge quality against ground truth (PU21-PSNR) on 10 synthetic scenes and on the "
                        "real HDR photographs of ../shared/data (or $EDGEHDR_DATA) re-taken through JPEG cameras")
    p.add_argument("--dimming", action="store_true",
                   help="instead: local-dimming timing at 1080p/2304 zones and the quality table over 10 scenes")
    p.add_argument("--runtime", action="store_true",
                   help="instead: the daemon's pipeline at --size and --fps for --seconds (fps, drops, latency "
                        "p50/p99/p99.9, CPU %%, peak and median RSS)")
    p.add_argument("--real", nargs="+", metavar="STACK",
                   help="instead: EdgeHDR and OpenCV side by side on your own stacks (folders with list.txt or "
                        "EXIF, or list files): reprojection error of each tool's merge and response, and time")
    p.add_argument("--calls", action="store_true",
                   help="instead: per-call time of calibrate, merge and exposure-matched MTB against OpenCV at "
                        "0.3-12 MP on a real photograph re-taken through a JPEG camera")
    p.add_argument("--faults", action="store_true",
                   help="instead: fault run (source error/stall, corrupt frame, link unplug/replug)")
    p.add_argument("--seconds", type=_float_above(0.0), default=60.0, help="duration of --runtime (600 for the soak)")
    p.add_argument("--size", type=frame_size, default="1080p", metavar="WxH",
                   help="frame size of --runtime: WIDTHxHEIGHT or 720p, 1080p, 4k")
    p.add_argument("--fps", type=_float_in(1.0, 240.0), default=30.0, help="capture rate of --runtime")
    p.add_argument("--shake-px", type=_int_in(0, 64), default=0,
                   help="hand shake of --runtime's synthetic camera in pixels (default 0: on a tripod)")
    p.set_defaults(func=_cmd_bench)

    from edgehdr.dimming.run import ALGORITHMS as DIM_ALGORITHMS
    from edgehdr.dimming.zones import DEFAULT_ALGORITHM, DEFAULT_POWER_BUDGET

    p = sub.add_parser("dim", help="local dimming of one image: zone values, LCD image, simulated display")
    p.add_argument("input", help="input .exr, .hdr or .pfm")
    p.add_argument("--layout", help="LED layout (.toml or .json); default 48x48 zones on a panel of the image size")
    p.add_argument("--algorithm", choices=DIM_ALGORITHMS, default=DEFAULT_ALGORITHM,
                   help=f"zone algorithm (default {DEFAULT_ALGORITHM}, chosen on real photographs)")
    p.add_argument("--input-referred", choices=("scene", "display"), default="scene",
                   help="scene: robust peak mapped to the panel peak; display: already cd/m^2")
    p.add_argument("--power-budget", type=_float_range(0.0, 1.0, above=True), default=DEFAULT_POWER_BUDGET,
                   help=f"cap on the mean LED light fraction, (0, 1] (default {DEFAULT_POWER_BUDGET}; 1: no cap)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.set_defaults(func=_cmd_dim)

    p = sub.add_parser("bridge", help="display-controller link: simulator, test sender, benchmark")
    bridge = p.add_subparsers(dest="bridge_command", required=True)
    b = bridge.add_parser("simulate", help="run the controller simulator on a pty (or UDP)")
    b.add_argument("--pty", default="ttyEH0", help="path of the pty symlink the host opens (default ./ttyEH0)")
    b.add_argument("--udp", help="listen on HOST:PORT over UDP instead")
    _add_bridge_grid(b, rows=48, cols=48, bits=16)
    b.add_argument("--vsync-hz", type=_float_at_least(0.0), default=120.0,
                   help="display refresh; 0 applies frames on receipt (default 120)")
    b.add_argument("--seconds", type=_float_at_least(0.0), default=0.0,
                   help="stop after this long (default: until Ctrl-C)")
    b.set_defaults(func=_cmd_bridge_simulate)
    b = bridge.add_parser("send", help="stream test patterns to a controller")
    b.add_argument("port", help="serial device, udp:HOST:PORT or spi:BUS.DEV[@HZ]")
    _add_bridge_grid(b)
    b.add_argument("--baud", type=_int_in(1200, 100_000_000), default=2_000_000)
    b.add_argument("--fps", type=_float_above(0.0), default=60.0)
    b.add_argument("--seconds", type=_float_above(0.0), default=5.0)
    b.add_argument("--pattern", choices=PATTERNS, default="gradient")
    b.add_argument("--safe-level", type=_int_in(0, 65535), default=0)
    b.add_argument("--watchdog-ms", type=_int_in(50, 65535), default=500)
    b.add_argument("--heartbeat-ms", type=_int_in(10, 30000), default=100)
    b.add_argument("--connect-timeout", type=_float_above(0.0), default=5.0)
    b.set_defaults(func=_cmd_bridge_send)
    b = bridge.add_parser("bench", help="encode cost, 120 Hz stream over a pty, fault run; --controller qemu runs "
                                        "the reference firmware on an emulated Cortex-M3")
    b.add_argument("--controller", choices=("sim", "qemu"), default="sim",
                   help="sim: the Python controller simulator on a pty; qemu: the C firmware "
                        "(firmware_bridge/firmware) built with arm-none-eabi-gcc and run in qemu-system-arm")
    b.add_argument("--zones", type=_int_in(1, 255 * 255), default=2304, help="zones per frame for --controller sim")
    b.add_argument("--board", choices=tuple(QEMU_BOARDS), default="mps2_an385",
                   help="with --controller qemu: the emulated board (firmware_bridge/firmware/board_<name>.c)")
    b.add_argument("--hz", type=_float_above(0.0), default=None,
                   help="zone frames per second (default: 120; with --controller qemu 60 on mps2_an385, whose "
                        "emulated UART carries ~10 kB/s, 120 on lm3s6965evb; see firmware_bridge/firmware/PORTING.md)")
    b.add_argument("--seconds", type=_float_above(0.0), default=60.0)
    b.add_argument("--json", help="also write the figures as JSON")
    b.set_defaults(func=_cmd_bridge_bench)

    p = sub.add_parser("score", help="no-reference quality (NoR-VDPNet) of SDR images, ranked best first")
    p.add_argument("images", nargs="+", help="image files or folders (PNG, JPEG, TIFF, ...; "
                                                  ".exr/.hdr/.pfm for an HDR-encoding model)")
    p.add_argument("--model", default="norvdpnet_tmo", help="shipped model name or an .onnx path "
                                                            "(default: norvdpnet_tmo, a TMQI estimate)")
    p.add_argument("--backend", choices=("auto", "cpu"), default="auto")
    p.add_argument("--json", action="store_true", help="print the ranking as JSON")
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("run", help="the capture daemon (SIGTERM/SIGINT stop it cleanly)")
    p.add_argument("--config", help="edgehdr.toml (see edgehdr/deploy/edgehdr.example.toml); default: synthetic camera")
    p.add_argument("--seconds", type=_float_at_least(0.0),
                   help="stop after this long; 0: until SIGTERM or Ctrl-C (overrides [run] seconds)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("demo", help="the main job on the built-in default: synthetic camera -> pipeline -> "
                                   "controller simulator, a few seconds")
    p.add_argument("-o", "--output", default="edgehdr-demo", help="result folder")
    p.add_argument("--seconds", type=_float_above(0.0), default=5.0)
    p.add_argument("--seed", type=_int_in(0, 2**31 - 1), default=0)
    p.add_argument("--width", type=_int_in(16, 16384), default=1280)
    p.add_argument("--height", type=_int_in(16, 16384), default=720)
    p.add_argument("--neural", action="store_true", help="the merge network, neural tone mapper and local-dimming "
                                                         "network (edgehdr/models) instead of the classical stages")
    p.set_defaults(func=_cmd_demo)
    _show_defaults(parser)
    return parser


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except None (an option whose default depends on others says so in its help)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Every (sub)command's --help shows the default of each option."""
    parser.formatter_class = _DefaultsFormatter
    for action in parser._actions:
        if action.help is None and action.option_strings and action.default not in (None, argparse.SUPPRESS):
            action.help = "default: %(default)s"  # argparse prints defaults only beside a help text
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _show_defaults(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"edgehdr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. TransportError: a device that cannot be opened
        print(f"edgehdr {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
