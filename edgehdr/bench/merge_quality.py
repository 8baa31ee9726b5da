"""``edgehdr bench --quality``: merge quality against exact ground truth on synthetic scenes (PU21-PSNR)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import cv2
import numpy as np

from edgehdr.hdr.merge import merge_debevec
from edgehdr.progress import Progress
from edgehdr.synth import capture_bracket, make_scene, suggest_exposures

__all__ = ["format_quality", "format_real_merge", "merge_quality_report", "real_merge_report"]


def merge_quality_report(seeds: Iterable[int] = range(10), *, height: int = 360, width: int = 640,
                         quiet: bool = False) -> dict[str, Any]:
    """Merge quality against exact ground truth over synthetic scenes (PU21-PSNR, dB).

    Per scene: EdgeHDR vs ``cv2.MergeDebevec`` with the same (known) response; a
    Debevec-calibrated response vs the known one (calibrated radiance scale-aligned
    once, globally, since calibration fixes radiance only up to scale); and PU21-PSNR
    inside the moving regions with and without deghosting.
    """
    from edgehdr.hdr.crf import calibrate_debevec
    from edgehdr.quality import pu21_psnr

    seeds = list(seeds)
    progress = Progress(len(seeds), quiet=quiet)
    rows = []
    for seed in seeds:
        progress.step(f"scene {seed}")
        scene = make_scene(seed, height, width, moving_objects=2, object_speed_px=0.02 * width)
        static = capture_bracket(make_scene(seed, height, width), suggest_exposures(scene.radiance, 3), seed=seed)
        moving = capture_bracket(scene, suggest_exposures(scene.radiance, 3), seed=seed)
        b, truth, resp = static.bracket, static.radiance, static.response
        ours = merge_debevec(b, response=resp)
        lut = np.ascontiguousarray(np.exp(resp.log_lut())[::-1].T.reshape(256, 1, 3))
        cv = cv2.cvtColor(cv2.createMergeDebevec().process([cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in b.frames],
                                                           b.relative_exposure.astype(np.float32), lut),
                          cv2.COLOR_BGR2RGB)
        calibrated = merge_debevec(b, response=calibrate_debevec(b.frames, b.relative_exposure))
        calibrated *= np.float32(np.exp(np.median(np.log(ours / calibrated))))
        plain = merge_debevec(moving.bracket, response=resp)
        clean = merge_debevec(moving.bracket, response=resp, deghost=True, reference_index=moving.reference_index)
        mask = moving.motion_mask
        rows.append({
            "seed": seed, "kind": scene.kind,
            "edgehdr_db": round(pu21_psnr(ours, truth), 2),
            "opencv_db": round(pu21_psnr(cv, truth), 2),
            "calibrated_db": round(pu21_psnr(calibrated, truth), 2),
            "moving_plain_db": round(pu21_psnr(plain, moving.radiance, mask=mask), 2),
            "moving_deghost_db": round(pu21_psnr(clean, moving.radiance, mask=mask), 2),
        })
    return {"size": [width, height], "exposures": 3, "rows": rows}


def format_quality(report: dict[str, Any]) -> str:
    head = (f"{'seed':>4} {'kind':<8} {'edgehdr':>8} {'opencv':>8} {'calibr.':>8} "
            f"{'moving':>8} {'deghost':>8}   (PU21-PSNR dB)")
    lines = [head, "-" * len(head)]
    for r in report["rows"]:
        lines.append(f"{r['seed']:>4} {r['kind']:<8} {r['edgehdr_db']:>8.2f} {r['opencv_db']:>8.2f} "
                     f"{r['calibrated_db']:>8.2f} {r['moving_plain_db']:>8.2f} {r['moving_deghost_db']:>8.2f}")
    mean = {k: float(np.mean([r[k] for r in report["rows"]])) for k in
            ("edgehdr_db", "opencv_db", "calibrated_db", "moving_plain_db", "moving_deghost_db")}
    lines.append(f"{'mean':>4} {'':<8} {mean['edgehdr_db']:>8.2f} {mean['opencv_db']:>8.2f} "
                 f"{mean['calibrated_db']:>8.2f} {mean['moving_plain_db']:>8.2f} {mean['moving_deghost_db']:>8.2f}")
    w, h = report["size"]
    lines.append(f"({w}x{h}, {report['exposures']} exposures; edgehdr/opencv: known response; calibr.: Debevec "
                 "response from the stack; moving/deghost: inside moving regions without/with deghosting)")
    return "\n".join(lines)


# The cameras real photographs are re-taken with: a typical phone/compact curve, a flatter "log-ish" one, and plain
# sRGB, each with shot and read noise, vignetting and JPEG at the quality such cameras use.
def _real_cameras() -> list[tuple[str, Any, int]]:
    from edgehdr.hdr.crf import ResponseCurve
    from edgehdr.synth import FilmicResponse, RealisticCamera

    return [("filmic q90", RealisticCamera(FilmicResponse(gamma=2.2, toe=0.3, shoulder=0.4)), 90),
            ("flat q85", RealisticCamera(FilmicResponse(gamma=1.8, toe=0.5, shoulder=0.6)), 85),
            ("srgb q95", RealisticCamera(ResponseCurve.parse("srgb")), 95)]


def real_merge_report(*, max_side: int = 640, frames: int = 3, spacing_stops: float = 2.0,
                      weightings: Iterable[str] | None = None, quiet: bool = False) -> dict[str, Any]:
    """Merge quality on real HDR photographs re-taken through realistic cameras (``edgehdr.synth.rephotograph``).

    Per scene and camera: PU21-PSNR against the exact truth of EdgeHDR's merge with each
    weighting, given the true response and with the response calibrated from the stack
    (the CLI's ``--response auto``), and of OpenCV's CalibrateDebevec + MergeDebevec; and
    each tool's reprojection error (``edgehdr.bench.real.reprojection_error``) through the
    response it used. Calibrated radiance is scale-aligned to the truth once, globally
    (calibration fixes radiance only up to scale).

    Two whole pipelines run beside them, as ``edgehdr merge`` runs them (calibration,
    alignment, merge): ``defaults``, the CLI's current defaults read from its parser,
    and ``seed_defaults``, the defaults the project started with (``--align mtb
    --weighting tutorial``) through today's code. Their reprojection error is taken
    against the frames they merged (aligned).
    """
    from edgehdr.bench.real import reprojection_error
    from edgehdr.cli import build_parser
    from edgehdr.hdr.align import align_bracket
    from edgehdr.hdr.crf import CameraResponse, calibrate_debevec
    from edgehdr.hdr.weights import WEIGHTINGS
    from edgehdr.quality import pu21_psnr
    from edgehdr.synth import real_hdr_scenes, rephotograph

    names = list(weightings) if weightings is not None else sorted(w for w in WEIGHTINGS if w != "hat")
    scenes = real_hdr_scenes(max_side=max_side)
    cameras = _real_cameras()
    progress = Progress(len(scenes) * len(cameras), quiet=quiet)

    def aligned_scale(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
        ok = (estimate > 0) & (truth > 0)
        return estimate * np.float32(np.exp(np.median(np.log(truth[ok] / estimate[ok]))))

    cli = build_parser().parse_args(["merge", "-o", "out.exr"])
    pipelines = {"defaults": (cli.align, cli.weighting, cli.smoothness), "seed_defaults": ("mtb", "tutorial", 10000.0)}
    rows: list[dict[str, Any]] = []
    for scene_name, radiance in scenes:
        for cam_name, camera, quality in cameras:
            progress.step(f"{scene_name}, {cam_name}")
            shot = rephotograph(radiance, n=frames, spacing_stops=spacing_stops, camera=camera,
                                jpeg_quality=quality, seed=len(rows))
            b, truth, true_resp = shot.bracket, shot.radiance, shot.response
            t = b.relative_exposure
            row: dict[str, Any] = {"scene": scene_name, "camera": cam_name}
            calibrated = calibrate_debevec(b.frames, t, bits=8, smoothness=cli.smoothness)  # as `edgehdr merge`
            for w in names:
                known = merge_debevec(b, response=true_resp, weighting=w)
                est = merge_debevec(b, response=calibrated, weighting=w)
                row[f"{w}_known_db"] = round(pu21_psnr(aligned_scale(known, truth), truth), 2)
                row[f"{w}_calibrated_db"] = round(pu21_psnr(aligned_scale(est, truth), truth), 2)
                row[f"{w}_reprojection"] = round(reprojection_error(b.frames, t, est, calibrated), 3)
            for label, (align, weighting, smoothness) in pipelines.items():
                response = calibrated if smoothness == cli.smoothness else calibrate_debevec(
                    b.frames, t, bits=8, smoothness=smoothness)
                aligned, _ = align_bracket(b, align, response=response)
                rad = merge_debevec(aligned, response=response, weighting=weighting)
                row[f"{label}_db"] = round(pu21_psnr(aligned_scale(rad, truth), truth), 2)
                row[f"{label}_reprojection"] = round(reprojection_error(aligned.frames, t, rad, response), 3)
            bgr = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in b.frames]
            cv_resp = cv2.createCalibrateDebevec().process(bgr, t.astype(np.float32))
            cv_rad = cv2.cvtColor(cv2.createMergeDebevec().process(bgr, t.astype(np.float32), cv_resp),
                                  cv2.COLOR_BGR2RGB)
            lut = np.maximum.accumulate(np.maximum(np.asarray(cv_resp).reshape(256, 3).T[::-1], 1e-9), axis=1)
            row["opencv_calibrated_db"] = round(pu21_psnr(aligned_scale(cv_rad, truth), truth), 2)
            row["opencv_reprojection"] = round(reprojection_error(b.frames, t, cv_rad,
                                                                  CameraResponse(lut.astype(np.float32))), 3)
            rows.append(row)
    return {"max_side": max_side, "frames": frames, "spacing_stops": spacing_stops, "weightings": names,
            "pipelines": {k: {"align": v[0], "weighting": v[1]} for k, v in pipelines.items()}, "rows": rows}


def format_real_merge(report: dict[str, Any]) -> str:
    names = report["weightings"]
    cols = [f"{w}_calibrated_db" for w in names] + ["opencv_calibrated_db"]
    head = f"{'scene':<26} {'camera':<11} " + " ".join(f"{c.split('_')[0][:9]:>9}" for c in cols)
    lines = ["PU21-PSNR dB, response calibrated from the stack (each tool its own):", head, "-" * len(head)]
    for r in report["rows"]:
        lines.append(f"{r['scene'][:26]:<26} {r['camera']:<11} " + " ".join(f"{r[c]:>9.2f}" for c in cols))

    def mean(key: str) -> float:
        return float(np.mean([r[key] for r in report["rows"]]))

    lines.append(f"{'mean':<26} {'':<11} " + " ".join(f"{mean(c):>9.2f}" for c in cols))
    lines.append("mean with the true response:      " + "  ".join(f"{w} {mean(w + '_known_db'):.2f}" for w in names))
    lines.append("mean reprojection error (codes):  " + "  ".join(f"{w} {mean(w + '_reprojection'):.2f}"
                                                                 for w in names)
                 + f"  opencv {mean('opencv_reprojection'):.2f}")
    rows = report["rows"]
    if rows and "defaults_db" in rows[0]:
        pipes = report["pipelines"]
        lines.append("whole pipeline (calibrate, align, merge), means: "
                     + "  ".join(f"{k} ({v['align']}, {v['weighting']}) {mean(k + '_db'):.2f} dB, "
                                 f"{mean(k + '_reprojection'):.2f} codes" for k, v in pipes.items()))
        scenes = sorted({r["scene"] for r in rows})

        def scene_mean(scene: str, key: str) -> float:
            return float(np.mean([r[key] for r in rows if r["scene"] == scene]))

        wins = sum(scene_mean(sc, "defaults_db") >= scene_mean(sc, "opencv_calibrated_db") for sc in scenes)
        lines.append(f"defaults vs OpenCV: PU21 >= on {wins}/{len(scenes)} scenes (mean over the cameras), on "
                     f"{sum(r['defaults_db'] >= r['opencv_calibrated_db'] for r in rows)}/{len(rows)} brackets; "
                     f"reprojection <= on {sum(r['defaults_reprojection'] <= r['opencv_reprojection'] for r in rows)}"
                     f"/{len(rows)}; vs seed defaults {mean('defaults_db') - mean('seed_defaults_db'):+.2f} dB")
    lines.append(f"({len(report['rows'])} brackets: real HDR photographs re-taken at max side {report['max_side']} px, "
                 f"{report['frames']} JPEG frames {report['spacing_stops']:g} stops apart, noise, vignetting)")
    return "\n".join(lines)
