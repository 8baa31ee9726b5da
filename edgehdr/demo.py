"""``edgehdr demo``: the built-in default job on a synthetic scene, with viewable results.

Offline version of the frame's journey (the live daemon comes with the runtime):
a synthetic camera with hand shake and a moving object captures a 3-exposure
bracket; it is aligned (MTB), merged with deghosting, tone mapped by every
operator and scored against the exact ground truth. The output folder holds the
brackets, the merged OpenEXR, the tone-mapped PNGs, a contact sheet and
``metrics.json``; every file is written atomically.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from edgehdr.hdr.align import align_bracket
from edgehdr.hdr.merge import merge_debevec
from edgehdr.io import write_ldr_image, write_radiance, write_text_atomic
from edgehdr.progress import Progress
from edgehdr.quality import psnr_mu, pu21_psnr, tmqi
from edgehdr.synth import capture_bracket, make_scene, suggest_exposures
from edgehdr.tonemap import OPERATORS, tonemap
from edgehdr.viz import contact_sheet, false_colour

__all__ = ["run_demo"]


def run_demo(outdir="edgehdr-demo", *, seed: int = 0, height: int = 720, width: int = 1280, quiet: bool = False) -> dict:
    """Run the offline demo and return its metrics (also written to ``metrics.json``)."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    progress = Progress(6, quiet=quiet)
    timings = {}

    progress.step(f"synthetic scene {seed} ({width}x{height}) with a moving object; capturing 3 exposures")
    scene = make_scene(seed, height, width, kind="outdoor", moving_objects=1, object_speed_px=0.02 * width)
    shot = capture_bracket(scene, suggest_exposures(scene.radiance, 3, 2.5), seed=seed,
                           camera_poses=[(4.0, -3.0, 0.0), (0.0, 0.0, 0.0), (-3.0, 2.0, 0.0)])
    for i, frame in enumerate(shot.bracket.frames):
        write_ldr_image(out / f"bracket_{i}.png", frame)

    progress.step("aligning (median threshold bitmaps)")
    t0 = time.perf_counter()
    aligned, motions = align_bracket(shot.bracket, "mtb", response=shot.response)
    timings["align_ms"] = 1e3 * (time.perf_counter() - t0)
    for i, m in enumerate(motions):
        progress.note(f"frame {i}: shift ({m.dx_px:+.0f}, {m.dy_px:+.0f}) px; true {shot.camera_poses[i][:2]}")

    progress.step("merging (Debevec, tutorial weights, deghosting)")
    t0 = time.perf_counter()
    radiance = merge_debevec(aligned, response=shot.response, deghost=True, reference_index=shot.reference_index)
    timings["merge_ms"] = 1e3 * (time.perf_counter() - t0)
    write_radiance(out / "merged.exr", radiance)
    ghosted = merge_debevec(aligned, response=shot.response, deghost=False)

    progress.step("tone mapping with every operator")
    tone_mapped, scores = {}, {}
    for op in OPERATORS:
        t0 = time.perf_counter()
        sdr = tonemap(radiance, op)
        timings[f"tonemap_{op}_ms"] = 1e3 * (time.perf_counter() - t0)
        tone_mapped[op] = sdr
        write_ldr_image(out / f"tonemapped_{op}.png", sdr)

    progress.step("scoring against the exact ground truth")
    valid = np.ones(radiance.shape[:2], bool)
    m = 8  # border pixels that alignment shifted in
    valid[:m], valid[-m:], valid[:, :m], valid[:, -m:] = False, False, False, False
    moving = shot.motion_mask & valid
    for op, sdr in tone_mapped.items():
        scores[op] = round(tmqi(shot.radiance, sdr).Q, 4)
    metrics = {
        "scene": {"seed": seed, "kind": scene.kind, "size": [width, height],
                  "dynamic_range_stops": round(float(np.log2(shot.radiance.max() / shot.radiance.min())), 1)},
        "exposures_s": [round(float(t), 6) for t in shot.bracket.exposure_s],
        "alignment": [mo.as_dict() for mo in motions],
        "merge": {
            "pu21_psnr_db": round(pu21_psnr(radiance, shot.radiance), 2),
            "psnr_mu_db": round(psnr_mu(radiance, shot.radiance), 2),
            "pu21_psnr_moving_db": round(pu21_psnr(radiance, shot.radiance, mask=moving), 2),
            "pu21_psnr_moving_without_deghost_db": round(pu21_psnr(ghosted, shot.radiance, mask=moving), 2),
        },
        "tmqi": scores,
        "timings_ms": {k: round(v, 2) for k, v in timings.items()},
    }

    progress.step("writing contact sheet and metrics")
    fc, (lo, hi) = false_colour(radiance)
    tiles = [(f"exposure {i}: {t * 1e3:.3g} ms", f) for i, (t, f) in
             enumerate(zip(shot.bracket.exposure_s, shot.bracket.frames))]
    tiles.append((f"merged HDR, log2 L {lo:.0f}..{hi:.0f} (false colour)", fc))
    tiles += [(f"{op} (TMQI {scores[op]:.3f})", tone_mapped[op]) for op in OPERATORS]
    tiles.append(("without deghosting (reinhard)", tonemap(ghosted, "reinhard")))
    write_ldr_image(out / "contact_sheet.png", contact_sheet(tiles, columns=3))
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2))
    return metrics
