"""Network definitions (PyTorch; used for training and ONNX export only).

Every network keeps the ONNX graph TensorRT- and DLA-friendly: static shapes,
3x3 convolutions, ReLU, residual adds, global average pooling, 1x1 convolutions
instead of fully connected layers, sigmoid output mapped into physical ranges.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from edgehdr.tonemap.neural import PARAM_RANGES, TMO_GRID_SHAPE, TMO_INPUT_SHAPE

__all__ = ["TMONet", "DimmingNet", "MergeNet", "NoRVDPNet", "load_norvdpnet_checkpoint", "count_parameters",
           "count_macs"]


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.ReLU(inplace=True))


class TMONet(nn.Module):
    """Real-time TMO: log luminance (1, 1, 128, 224) -> parameter grid (1, 3, 8, 14) of (alpha, s, gamma).

    An HDRNet-style split (Gharbi et al. 2017): a strided encoder to the 1/16 grid, a
    local path, and a global path (further strided convolution, global average pool,
    1 x 1 convolutions) added to every grid cell, so each cell sees both its region and
    the whole frame. The head maps into ``PARAM_RANGES`` with a sigmoid and starts at the
    global operator's defaults with the colour ratios kept (alpha 0.8, s 0, gamma 1).
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.encoder = nn.Sequential(_conv(1, 8, 2), _conv(8, 16, 2), _conv(16, width, 2), _conv(width, width, 2))
        self.local = nn.Sequential(_conv(width, width), nn.Conv2d(width, width, 3, padding=1))
        self.global_path = nn.Sequential(_conv(width, width, 2), nn.AdaptiveAvgPool2d(1),
                                         nn.Conv2d(width, width, 1), nn.ReLU(inplace=True),
                                         nn.Conv2d(width, width, 1))
        self.head = nn.Conv2d(width, 3, 1)
        lo = torch.tensor([r[0] for r in PARAM_RANGES])
        hi = torch.tensor([r[1] for r in PARAM_RANGES])
        self.register_buffer("lo", lo.view(1, 3, 1, 1))
        self.register_buffer("span", (hi - lo).view(1, 3, 1, 1))
        start = torch.tensor([0.8, 0.0, 1.0])
        with torch.no_grad():
            self.head.weight.mul_(0.1)
            frac = (start - lo) / (hi - lo)
            assert self.head.bias is not None  # Conv2d(bias=True)
            self.head.bias.copy_(torch.log(frac / (1 - frac)))

    def forward(self, log_luminance: torch.Tensor) -> torch.Tensor:
        feat = self.encoder(log_luminance)
        fused = torch.relu(self.local(feat) + self.global_path(feat))
        lo, span = self.get_buffer("lo"), self.get_buffer("span")
        return lo + span * torch.sigmoid(self.head(fused))

    input_shape = TMO_INPUT_SHAPE
    output_shape = TMO_GRID_SHAPE


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass (convolutions and linear layers), by forward hooks."""
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * (module.in_channels // module.groups)
            total += output.numel() * k
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(torch.zeros(input_shape))
    finally:
        for h in handles:
            h.remove()
    return int(total)


assert math.isclose(TMO_INPUT_SHAPE[2] / TMO_GRID_SHAPE[2], 16) and TMO_INPUT_SHAPE[3] // TMO_GRID_SHAPE[3] == 16


class DimmingNet(nn.Module):
    """Local dimming: sub-zone statistics and power budget (1, 3, 4R, 4C) -> zone light (1, 1, R, C) in [0, 1].

    ``in_channels`` = 4 takes the sub-zone minima as a fourth channel (``edgehdr.dimming.neural``).

    Two strided convolutions bring the 4 x 4 sub-zone grid to the zone grid; two residual
    3 x 3 blocks at zone resolution give every zone the neighbourhood the LED PSF couples it
    to (a receptive field of +-4 zones); a 1 x 1 head and a sigmoid give the light fraction.
    """

    def __init__(self, rows: int, cols: int, width: int = 32, in_channels: int = 3) -> None:
        super().__init__()
        self.rows, self.cols, self.in_channels = rows, cols, in_channels
        self.down = nn.Sequential(_conv(in_channels, 16), _conv(16, 24, 2), _conv(24, width, 2))
        self.block1 = nn.Sequential(_conv(width, width), nn.Conv2d(width, width, 3, padding=1))
        self.block2 = nn.Sequential(_conv(width, width), nn.Conv2d(width, width, 3, padding=1))
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, zone_stats: torch.Tensor) -> torch.Tensor:
        x = self.down(zone_stats)
        x = torch.relu(x + self.block1(x))
        x = torch.relu(x + self.block2(x))
        return torch.sigmoid(self.head(x))


class MergeNet(nn.Module):
    """Merge weights: bracket encoding (1, 12, h, w) -> per-frame logits (1, 3, h / 2, w / 2), h and w multiples of
    8 (trained at 272 x 480, half the recipe's brackets; exported at the runtime's 136 x 240, ``MERGE_INPUT_SHAPE``).

    A small U-Net (three strided 3 x 3 encoders to 1/8 of the working size, two 3 x 3
    convolutions there, two decoder steps with bilinear x2 upsampling, skip concatenation,
    a 1 x 1 fusion and a 3 x 3 convolution), a 3 x 3 head at half the working size. The head
    starts at zero, so an untrained network weights the frames equally: the classical
    merge without deghosting (Kalantari & Ramamoorthi 2017, weight-estimation variant).

    Each decoder step's 1 x 1 fusion of ``concat(up(low), skip)`` runs as
    ``up(W_low * low) + W_skip * skip + b`` with the same parameters (``_fuse``): a 1 x 1 convolution commutes with
    the bilinear upsampling (both linear, per pixel and per channel; the taps sum to one, so the bias may go either
    side), and the sum needs no concatenation. The same function (within 1e-6 on the shipped weights); exported, ONNX
    Runtime's NCHWc graph has no Concat and no layout reorders around it: 4.1-4.7 against 5.3-8.6 ms at 480 x 272 on
    two cores (alternating sessions), and the upsampling carries the narrower output.
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w1, w2, w3 = width, width * 3 // 2, width * 2
        self.enc1 = _conv(12, w1, 2)
        self.enc2 = _conv(w1, w2, 2)
        self.enc3 = _conv(w2, w3, 2)
        self.mid = nn.Sequential(_conv(w3, w3), _conv(w3, w3))
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.dec2 = nn.Sequential(nn.Conv2d(w3 + w2, w2, 1), nn.ReLU(inplace=True), _conv(w2, w2))
        self.dec1 = nn.Sequential(nn.Conv2d(w2 + w1, w1, 1), nn.ReLU(inplace=True), _conv(w1, w1))
        self.head = nn.Conv2d(w1, 3, 3, padding=1)
        with torch.no_grad():
            self.head.weight.zero_()
            assert self.head.bias is not None  # Conv2d(bias=True)
            self.head.bias.zero_()

    def _fuse(self, step: nn.Sequential, low: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """``step`` (1 x 1 fusion, ReLU, 3 x 3 block) on ``concat(up(low), skip)``, the fusion split (class
        docstring)."""
        fusion = step[0]
        assert isinstance(fusion, nn.Conv2d) and fusion.bias is not None
        c = low.shape[1]
        fused = self.up(F.conv2d(low, fusion.weight[:, :c])) + F.conv2d(skip, fusion.weight[:, c:], fusion.bias)
        return step[2](F.relu(fused))

    def forward(self, bracket: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(bracket)
        e2 = self.enc2(e1)
        e3 = self.mid(self.enc3(e2))
        d2 = self._fuse(self.dec2, e3, e2)
        d1 = self._fuse(self.dec1, d2, e1)
        return self.head(d1)


class _BlockQ(nn.Module):
    """3 x 3 convolution + ReLU; the attribute name ``conv`` keeps the authors' parameter names."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _Regressor(nn.Module):
    """Global mean pool -> Linear -> ReLU -> Linear -> sigmoid (the authors' ``Regressor``)."""

    def __init__(self, features: int, hidden: int, outputs: int = 1) -> None:
        super().__init__()
        self.regressor = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, outputs),
                                       nn.Sigmoid())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.regressor(features.mean(dim=(2, 3)))


NORVDPNET_WIDTHS = (32, 32, 64, 64, 128, 128, 256, 256, 512, 512)


class NoRVDPNet(nn.Module):
    """NoR-VDPNet (Banterle et al., ICIP 2020): image (N, C, H, W) -> quality (N, 1) in [0, 1].

    Ten 3 x 3 convolutions with ReLU, widths 32-32-64-64-128-128-256-256-512-512
    (times ``width_scale``), 2 x 2 max pooling after each pair, the tenth with stride 2;
    global mean pooling; Linear(512, 256) -> ReLU -> Linear(256, 1) -> sigmoid.
    Parameter names equal the authors' (``conv.0.conv.0.weight`` ...
    ``conv.13.conv.0.bias``, ``regressor.regressor.0.weight`` ... ``regressor.regressor.2.bias``),
    so their checkpoints (``weights_nor_{sdr,jpg_xt,tmo,itmo}.pth``) load with strict loading
    at ``width_scale = 1`` (``load_norvdpnet_checkpoint``).
    """

    def __init__(self, in_channels: int = 1, width_scale: float = 1.0) -> None:
        super().__init__()
        widths = [max(1, int(round(w * width_scale))) for w in NORVDPNET_WIDTHS]
        layers: list[nn.Module] = []
        cin = in_channels
        for i, w in enumerate(widths):
            layers.append(_BlockQ(cin, w, stride=2 if i == len(widths) - 1 else 1))
            cin = w
            if i % 2 == 1:
                layers.append(nn.MaxPool2d(2))
        self.conv = nn.Sequential(*layers)
        self.regressor = _Regressor(widths[-1], max(1, int(round(256 * width_scale))))
        self.in_channels, self.width_scale = in_channels, width_scale

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.regressor(self.conv(image))


def load_norvdpnet_checkpoint(path: str | os.PathLike[str]) -> NoRVDPNet:
    """The authors' checkpoint (a dict with ``model``, or a bare state dict) in a ``NoRVDPNet``, strictly loaded.

    ``torch.load(..., weights_only=True)``: no pickled code runs. The input channels
    (1 grey, 3 colour) and the width come from the first convolution's weight.
    """
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    first = state.get("conv.0.conv.0.weight") if isinstance(state, dict) else None
    if first is None:
        keys = list(state)[:6] if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path}: not a NoR-VDPNet checkpoint (no conv.0.conv.0.weight; first keys {keys})")
    model = NoRVDPNet(in_channels=int(first.shape[1]), width_scale=int(first.shape[0]) / NORVDPNET_WIDTHS[0])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: checkpoint does not match the NoR-VDPNet architecture: {exc}") from None
    return model.eval()
