"""Import an authors' NoR-VDPNet checkpoint and export it to ONNX for ``edgehdr score`` and the pipeline.

    python -m edgehdr.models.training.import_norvdpnet weights_nor_tmo.pth -o norvdpnet_authors_tmo.onnx

The checkpoints of Banterle et al. (``weights_nor_sdr.pth``, ``weights_nor_jpg_xt.pth``,
``weights_nor_tmo.pth``, ``weights_nor_itmo.pth``) load strictly into
``edgehdr.models.training.nets.NoRVDPNet`` with ``torch.load(..., weights_only=True)``.
``sdr`` and ``tmo`` take the SDR encoding, ``jpg_xt`` and ``itmo`` the HDR one (the
authors' README: never the other way round). The export has a static input of
``--height`` x ``--width`` (TensorRT and INT8 calibration want one; images are
area-resampled to it) or, with ``--dynamic``, symbolic height and width (ONNX Runtime
scores each image at its own size, as the authors' evaluation does).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from edgehdr.models.training.nets import load_norvdpnet_checkpoint
from edgehdr.models.training.train_norvdpnet import export_scorer

__all__ = ["main"]

HDR_CHECKPOINTS = ("jpg_xt", "itmo", "hdr")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgehdr.models.training.import_norvdpnet",
                                description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=Path, help="the authors' .pth (e.g. weights_nor_tmo.pth)")
    p.add_argument("-o", "--out", type=Path, required=True, help="ONNX file to write (a manifest lands beside it)")
    p.add_argument("--encoding", choices=("auto", "sdr", "hdr"), default="auto",
                   help="input encoding (auto: hdr for *jpg_xt*/*itmo* checkpoints, else sdr)")
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--dynamic", action="store_true", help="symbolic input height and width")
    args = p.parse_args(argv)
    encoding = args.encoding
    if encoding == "auto":
        encoding = "hdr" if any(tag in args.checkpoint.stem for tag in HDR_CHECKPOINTS) else "sdr"
    model = load_norvdpnet_checkpoint(args.checkpoint)
    shape = (1, model.in_channels, args.height, args.width)
    export_scorer(model, args.out, model_name=args.out.stem, input_shape=shape, dynamic_hw=args.dynamic,
                  encoding=encoding, extra_metadata={"edgehdr.checkpoint": args.checkpoint.name})
    described = f"1x{model.in_channels}xHxW" if args.dynamic else shape
    print(f"wrote {args.out} ({encoding} encoding, input {described})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
