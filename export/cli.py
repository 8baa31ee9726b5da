"""``edgehdr-export``: ONNX models in, checked / FP16 / INT8 Q/DQ models and TensorRT engines out.

Sub-commands::

    edgehdr-export build MODEL.onnx --precision int8 --calib synth --target onnx -o OUT
    edgehdr-export validate FP32.onnx CANDIDATE.(onnx|engine) [--data synth|DIR] -o REPORT
    edgehdr-export bench MODEL_OR_DIR [--runs N]
    edgehdr-export inspect MODEL.onnx|ENGINE
    edgehdr-export device-suite -o engines/      (on the Jetson)

Nothing here trains. ``build --target trt`` needs TensorRT (build on the target
device: engines are not portable across GPUs or TensorRT versions); everything
else runs on any machine with ONNX Runtime. This module is the argument layer:
the work lives in ``export.build``, ``export.validate``, ``export.bench`` and
``export.inspection``. A bad input (file, argument, output path) ends in one
``edgehdr-export CMD: error: ...`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from export.bench import bench, print_bench
from export.build import build
from export.inspection import inspect
from export.validate import ABS_BUDGET, COSINE_BUDGET, PSNR_BUDGET_DB, REL_L2_BUDGET, apply_budget, spearman, validate

__all__ = ["ABS_BUDGET", "PSNR_BUDGET_DB", "apply_budget", "bench", "build", "inspect", "main", "spearman", "validate"]


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (which argument, what it takes), exit status 2 as argparse has it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int_at_least(lo: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {value}")
        return value

    return parse


def _finite_float(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _shape(text: str) -> tuple[str, tuple[int, ...]]:
    from export.shapes import parse_shape

    try:
        return parse_shape(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cosine(text: str) -> float:
    value = _finite_float(text)
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a cosine similarity is in -1..1, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    value = _finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _add_user_budget(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cosine-budget", type=_cosine, default=None,
                   help=f"user tensors: minimum cosine similarity with FP32 per output (worst held-out sample; "
                        f"default {COSINE_BUDGET:g})")
    p.add_argument("--rel-l2-budget", type=_non_negative_float, default=None,
                   help=f"user tensors: maximum relative L2 error vs FP32 per output (default {REL_L2_BUDGET:g})")


_DATA_HELP = ("'synth', a folder (.exr/.hdr/.pfm, bracket folders, or .npz/.npy tensors named after the model's "
              "inputs), or a data-loader hook MODULE:FUNCTION / FILE.py:FUNCTION yielding {input: array} dicts")


def _add_shape(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shape", action="append", type=_shape, default=None, metavar="NAME:DIMS",
                   help="fix a dynamic input, e.g. image:1x3x64x64 (repeat per input; as trtexec --shapes)")


def _parser() -> argparse.ArgumentParser:
    positive, non_negative = _int_at_least(1), _int_at_least(0)
    parser = _Parser(prog="edgehdr-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build", help="check, convert (fp16/int8 Q/DQ), validate, build a TensorRT engine")
    p.add_argument("model", type=Path)
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32")
    p.add_argument("--calib", default="synth", help=_DATA_HELP)
    p.add_argument("--calib-count", type=positive, default=64)
    p.add_argument("--holdout", default=None, help="held-out data for validation, as --calib (default: disjoint "
                                                    "from --calib)")
    p.add_argument("--holdout-count", type=positive, default=16)
    p.add_argument("--method", choices=("auto", "minmax", "entropy", "percentile"), default="auto",
                   help="calibration; auto tries all three and keeps the closest to FP32 on calibration data")
    p.add_argument("--quantiser", choices=("onnxruntime", "modelopt"), default="onnxruntime")
    p.add_argument("--target", choices=("onnx", "trt"), default="onnx")
    p.add_argument("--dla", type=non_negative, default=None, metavar="CORE",
                   help="build for a DLA core (GPU fallback on)")
    p.add_argument("--workspace-mb", type=positive, default=1024)
    p.add_argument("--timing-cache", type=Path, default=None)
    p.add_argument("--strongly-typed", action=argparse.BooleanOptionalAction, default=None,
                   help="TensorRT typing (default: weak with precision flags on TensorRT 10, strong on 11+)")
    _add_shape(p)
    _add_user_budget(p)
    p.add_argument("--name", default=None)
    p.add_argument("--model-version", default="0")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder (created if its parent exists)")

    p = sub.add_parser("validate", help="FP32 vs converted model or engine on held-out data (markdown + JSON)")
    p.add_argument("reference", type=Path)
    p.add_argument("candidate", type=Path)
    p.add_argument("--data", default="synth", help=_DATA_HELP)
    p.add_argument("--count", type=positive, default=16)
    p.add_argument("--psnr-budget", type=_finite_float, default=None,
                   help=f"image outputs' PSNR against FP32, dB (default {PSNR_BUDGET_DB:g}; a shipped model is held "
                        "to its stage's task budget, and to this too when given)")
    p.add_argument("--abs-budget", type=_finite_float, default=None,
                   help=f"scalar outputs' max abs error against FP32 (default {ABS_BUDGET:g}; with a shipped model "
                        "as --psnr-budget)")
    _add_user_budget(p)
    _add_shape(p)
    p.add_argument("-o", "--out", type=Path, default=None, help="report base path (writes .json and .md)")

    p = sub.add_parser("bench", help="latency and throughput per backend and precision (vs OpenCV DNN)")
    p.add_argument("target", type=Path, help="a model, an engine, or a folder of them")
    p.add_argument("--runs", type=positive, default=50)
    p.add_argument("--warmup", type=non_negative, default=5)
    p.add_argument("--threads", type=non_negative, default=0, help="ONNX Runtime intra-op threads (0 = default)")
    _add_shape(p)
    p.add_argument("--json", type=Path, default=None)

    p = sub.add_parser("device-suite", help="on the Jetson: build all zoo engines, validate vs ONNX Runtime, "
                                            "print the table")
    p.add_argument("--precisions", default="fp16,int8")
    p.add_argument("--dla", type=non_negative, default=None, metavar="CORE")
    p.add_argument("--runs", type=positive, default=100)
    p.add_argument("--models", type=Path, nargs="*", default=None, help="default: edgehdr/models + test nets")
    p.add_argument("-o", "--out", type=Path, required=True)

    p = sub.add_parser("inspect", help="what a model or engine expects and what it was built for")
    p.add_argument("path", type=Path)
    return parser


def _input_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean a bad input (file, argument, environment), reported in one line with exit status 2;
    anything else is a bug and keeps its traceback."""
    import onnx
    from google.protobuf.message import DecodeError

    errors: list[type[BaseException]] = [ValueError, OSError, RuntimeError, DecodeError, onnx.checker.ValidationError,
              onnx.shape_inference.InferenceError]
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors
    except ImportError:
        return tuple(errors)
    return tuple(errors + [ort_errors.Fail, ort_errors.InvalidArgument, ort_errors.InvalidGraph,
                           ort_errors.InvalidProtobuf, ort_errors.NoSuchFile])


def _have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not _have("onnx"):  # the device install leaves the host tools out
        print(f"edgehdr-export {args.command}: error: the export tools need onnx, which the device install does "
              "not carry: pip install 'edgehdr[export]'", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:
        logging.getLogger().setLevel(logging.ERROR)  # ORT's quantiser logs every tensor at WARNING
    try:
        return _run(args)
    except _input_errors() as exc:
        message = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
        print(f"edgehdr-export {args.command}: error: {message}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from edgehdr.io import dumps_json, write_json_atomic
    from edgehdr.io.staging import output_file
    from export.strict_json import null_undefined

    if args.command == "build":
        result = build(args.model, args.out, precision=args.precision, calib=args.calib,
                       calib_count=args.calib_count, holdout=args.holdout, holdout_count=args.holdout_count,
                       method=args.method, target=args.target, dla_core=args.dla, workspace_mb=args.workspace_mb,
                       timing_cache=args.timing_cache, quantiser=args.quantiser,
                       strongly_typed=args.strongly_typed, shapes=args.shape, name=args.name,
                       version=args.model_version, cosine=args.cosine_budget, rel_l2=args.rel_l2_budget)
        for key in ("fp32_onnx", "onnx", "engine"):
            if key in result:
                print(f"{key}: {result[key]}")
        report = result.get("engine_accuracy_vs_fp32") or result.get("accuracy_vs_fp32")
        return 0 if report is None or report["budget"]["passed"] else 1
    if args.command == "validate":
        report = validate(args.reference, args.candidate, data=args.data, count=args.count, out_base=args.out,
                          psnr_db=args.psnr_budget, max_abs=args.abs_budget, shapes=args.shape,
                          cosine=args.cosine_budget, rel_l2=args.rel_l2_budget)
        return 0 if report["budget"]["passed"] else 1
    if args.command == "bench":
        if args.json:
            output_file(args.json, option="--json")
        rows = bench(args.target, runs=args.runs, warmup=args.warmup, threads=args.threads, shapes=args.shape)
        print_bench(rows)
        if args.json:
            write_json_atomic(args.json, null_undefined(rows))
        return 0
    if args.command == "device-suite":
        from export.device_suite import run_device_suite

        result = run_device_suite(args.out, precisions=tuple(args.precisions.split(",")), dla_core=args.dla,
                                  runs=args.runs, models=args.models)
        return 0 if all(r.get("within_budget") for r in result["rows"]) else 1
    print(dumps_json(null_undefined(inspect(args.path)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
