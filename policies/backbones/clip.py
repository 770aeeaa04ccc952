"""CLIP feature sources of the team's models, on transformers' CLIP implementation.

- ``clip_image`` (case 2's CLIP normalisation): **open_clip ViT-B-32** (``pretrained='openai'``)
  ``encode_image``, 512-d. The team ran open_clip; ``open-clip-torch`` imports torchvision, which has no wheel for
  the CPU torch this project pins, so the same network runs here as transformers'
  ``CLIPVisionModelWithProjection`` (QuickGELU, pre-LayerNorm ViT-B/32, ``ln_post`` on the class token, then
  ``proj``): :func:`openclip_visual_to_hf` maps open_clip's parameter names (``visual.conv1``,
  ``visual.transformer.resblocks.N.attn.in_proj_weight``, ``visual.proj``, ...) onto it. Preprocessing is
  open_clip's for ``openai`` weights: shortest side to 224 (bicubic), centre crop 224, OpenAI mean/std
  (:data:`OPENAI_MEAN`, :data:`OPENAI_STD`).
- ``clip_text`` (the original ``Kosmos2CLIPHybridModel``): the text tower of transformers' ``CLIPModel``
  (``openai/clip-vit-base-patch32`` layout), its ``pooler_output`` (512-d, the final-LayerNorm state at the end
  token), with that model's tokenizer (77 tokens at most).

Weights come from a state dict (the frozen weights inside a team checkpoint: ``clip_model.*`` in open_clip
names, ``clip_text.*`` in ``CLIPModel`` names), a file (``.bin``/``.pt``/``.pth``/``.safetensors``, either
layout), a local ``save_pretrained`` folder, or ``"tiny"``: a seeded random toy configuration for tests.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from foundations.errors import MobileVLAError
from policies.backbones.base import inference_dtype
from policies.backbones.toy_bpe import bpe_tokenizer

#: open_clip's normalisation of ``openai`` weights (``OPENAI_DATASET_MEAN`` / ``_STD``).
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
#: Hub id of the ``CLIPModel`` whose layout the hybrid's ``clip_text.*`` weights use.
DEFAULT_CLIP_ID = "openai/clip-vit-base-patch32"
#: Longest CLIP text input (tokens).
CLIP_MAX_TOKENS = 77
#: Seed and sizes of the toy configuration.
TINY_CLIP_SEED = 20250301
TINY_CLIP = {"width": 64, "layers": 2, "image_size": 32, "patch_size": 16, "projection_dim": 24}


class ClipWeightsError(MobileVLAError, ValueError):
    """CLIP weights that cannot be read or do not match a known layout (the message names the source)."""


# --------------------------------------------------------------------------------------- open_clip names


def is_openclip_layout(state: Mapping[str, Any]) -> bool:
    """True for open_clip parameter names (``visual.conv1.weight``, ...)."""
    return "visual.conv1.weight" in state


def openclip_vision_config(state: Mapping[str, torch.Tensor]) -> Any:
    """The ``CLIPVisionConfig`` of an open_clip ViT from its tensors' shapes (heads = width / 64, open_clip's
    ``head_width``; QuickGELU as the ``openai`` models).

    Raises:
        ClipWeightsError: the ``visual.*`` tensors are missing or inconsistent.
    """
    from transformers import CLIPVisionConfig

    try:
        conv = state["visual.conv1.weight"]
        width, patch = int(conv.shape[0]), int(conv.shape[-1])
        positions = int(state["visual.positional_embedding"].shape[0])
        layers = 1 + max(int(m.group(1)) for k in state
                         if (m := re.match(r"visual\.transformer\.resblocks\.(\d+)\.", k)))
        mlp = int(state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0])
        proj = int(state["visual.proj"].shape[1])
    except (KeyError, ValueError, IndexError) as exc:
        raise ClipWeightsError(f"not an open_clip vision tower: {type(exc).__name__}: {exc}") from None
    grid = round((positions - 1) ** 0.5)
    return CLIPVisionConfig(hidden_size=width, intermediate_size=mlp, num_hidden_layers=layers,
                            num_attention_heads=max(1, width // 64), image_size=grid * patch, patch_size=patch,
                            projection_dim=proj, hidden_act="quick_gelu")


def openclip_visual_to_hf(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """open_clip ``visual.*`` tensors -> (``CLIPVisionTransformer`` state dict, ``visual_projection`` weight).

    ``attn.in_proj_weight`` / ``in_proj_bias`` are split into ``q_proj``, ``k_proj``, ``v_proj``; ``visual.proj``
    ``(width, dim)`` becomes the projection's ``(dim, width)`` weight.
    """
    out: dict[str, torch.Tensor] = {
        "embeddings.class_embedding": state["visual.class_embedding"],
        "embeddings.patch_embedding.weight": state["visual.conv1.weight"],
        "embeddings.position_embedding.weight": state["visual.positional_embedding"],
        "pre_layrnorm.weight": state["visual.ln_pre.weight"], "pre_layrnorm.bias": state["visual.ln_pre.bias"],
        "post_layernorm.weight": state["visual.ln_post.weight"], "post_layernorm.bias": state["visual.ln_post.bias"],
    }
    names = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
             "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    for key, value in state.items():
        m = re.match(r"visual\.transformer\.resblocks\.(\d+)\.(.+)[._](weight|bias)$", key)
        if not m:
            continue
        layer, module, kind = m.groups()
        prefix = f"encoder.layers.{layer}."
        if module == "attn.in_proj":
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"{prefix}self_attn.{name}.{kind}"] = part
        elif module in names:
            out[f"{prefix}{names[module]}.{kind}"] = value
    return out, state["visual.proj"].T


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
        raise ClipWeightsError(f"{path}: not a readable weights file ({type(exc).__name__}: {exc})") from None
    obj = obj.get("state_dict", obj) if isinstance(obj, Mapping) else obj
    if not isinstance(obj, Mapping):
        raise ClipWeightsError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return dict(obj)


def _submodule(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _load_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    own = module.state_dict()
    missing = sorted(k for k in own if k not in state and not k.endswith("position_ids"))
    unexpected = sorted(k for k in state if k not in own)
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        raise ClipWeightsError(f"{source}: weights do not fit {type(module).__name__}: missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}, wrong shape {wrong[:5]}")
    module.load_state_dict(dict(state), strict=False)


def _image_processor(image_size: int) -> Any:
    import transformers

    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return cls(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
               image_mean=list(OPENAI_MEAN), image_std=list(OPENAI_STD), do_center_crop=True, resample=3)


# -------------------------------------------------------------------------------------------- image


class ClipImageEncoder:
    """``clip_image``: uint8 RGB ``(N, H, W, 3)`` -> ``encode_image`` features ``(N, projection_dim)``.

    Args:
        model: a ``CLIPVisionModelWithProjection`` (frozen here).
        device: torch device (float32 on CPU, bf16 on CUDA).
    """

    def __init__(self, model: Any, device: str | torch.device = "cpu") -> None:
        from policies.backbones.base import freeze

        self.device = torch.device(device)
        self.dtype = inference_dtype(self.device)
        self.model = freeze(model.to(device=self.device, dtype=self.dtype))
        self.dim = int(model.config.projection_dim)
        self.processor = _image_processor(int(model.config.image_size))

    def encode(self, images: np.ndarray) -> torch.Tensor:
        """Features of a uint8 ``(N, H, W, 3)`` batch, ``(N, dim)`` in the model's dtype on its device."""
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        return self.model(pixel_values=pixels.to(self.device, self.dtype)).image_embeds


def load_clip_image(source: Mapping[str, torch.Tensor] | str | Path, device: str | torch.device = "cpu"
                    ) -> ClipImageEncoder:
    """Build the ``clip_image`` encoder.

    Args:
        source: a state dict (open_clip names, or ``CLIPModel`` / ``CLIPVisionModelWithProjection`` names), a
            weights file, a ``save_pretrained`` folder, or ``"tiny"``.

    Raises:
        ClipWeightsError: unreadable or unrecognised weights. FileNotFoundError: no such file or folder.
    """
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    if isinstance(source, str) and source == "tiny":
        t = TINY_CLIP
        config = CLIPVisionConfig(hidden_size=t["width"], intermediate_size=2 * t["width"],
                                  num_hidden_layers=t["layers"], num_attention_heads=max(1, t["width"] // 64),
                                  image_size=t["image_size"], patch_size=t["patch_size"],
                                  projection_dim=t["projection_dim"], hidden_act="quick_gelu")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_CLIP_SEED)
            model = CLIPVisionModelWithProjection(config)
        return ClipImageEncoder(model.eval(), device)
    name = "state dict"
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if path.is_dir():
            from policies.backbones.minilm import quiet_transformers

            with quiet_transformers():
                model = CLIPVisionModelWithProjection.from_pretrained(str(path), local_files_only=True)
            return ClipImageEncoder(model.eval(), device)
        if not path.is_file():
            raise FileNotFoundError(f"CLIP weights not found: {path}")
        name, source = str(path), _read_state(path)
    state = dict(source)
    if is_openclip_layout(state):
        config = openclip_vision_config(state)
        vision, projection = openclip_visual_to_hf(state)
    elif "visual_projection.weight" in state:
        vision, projection = _submodule(state, "vision_model."), state["visual_projection.weight"]
        config = CLIPVisionConfig(
            hidden_size=int(projection.shape[1]), projection_dim=int(projection.shape[0]),
            intermediate_size=int(vision["encoder.layers.0.mlp.fc1.weight"].shape[0]),
            num_hidden_layers=1 + max(int(k.split(".")[2]) for k in vision if k.startswith("encoder.layers.")),
            num_attention_heads=max(1, int(projection.shape[1]) // 64),
            patch_size=int(vision["embeddings.patch_embedding.weight"].shape[-1]),
            image_size=int(vision["embeddings.patch_embedding.weight"].shape[-1])
            * round((int(vision["embeddings.position_embedding.weight"].shape[0]) - 1) ** 0.5),
            hidden_act="quick_gelu")
    else:
        raise ClipWeightsError(f"{name}: neither open_clip (visual.*) nor CLIPModel (vision_model.*, "
                               f"visual_projection.weight) names; first keys: {sorted(state)[:5]}")
    with torch.random.fork_rng(devices=[]):  # random init, overwritten below: leave the global RNG alone
        model = CLIPVisionModelWithProjection(config)
    _load_strict(model.vision_model, vision, name)
    _load_strict(model.visual_projection, {"weight": projection}, name)
    return ClipImageEncoder(model.eval(), device)


# --------------------------------------------------------------------------------------------- text


class ClipTextEncoder:
    """``clip_text``: instructions -> CLIP text tower ``pooler_output`` ``(N, hidden_size)``.

    Args:
        model: a ``CLIPTextModel`` (frozen here). tokenizer: its tokenizer. device: torch device.
    """

    def __init__(self, model: Any, tokenizer: Any, device: str | torch.device = "cpu") -> None:
        from policies.backbones.base import freeze

        self.device = torch.device(device)
        self.dtype = inference_dtype(self.device)
        self.model = freeze(model.to(device=self.device, dtype=self.dtype))
        self.tokenizer = tokenizer
        self.dim = int(model.config.hidden_size)

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Pooled features of ``texts`` (each on its own, no padding), ``(N, dim)``."""
        feats = []
        for text in texts:
            tok = self.tokenizer([text], truncation=True, max_length=CLIP_MAX_TOKENS, return_tensors="pt")
            feats.append(self.model(input_ids=tok["input_ids"].to(self.device)).pooler_output)
        return torch.cat(feats, 0)


@functools.lru_cache(maxsize=1)
def _tiny_clip_tokenizer() -> Any:
    return bpe_tokenizer(["<|pad|>", "<|startoftext|>", "<|unk|>", "<|endoftext|>"], bos="<|startoftext|>",
                         eos="<|endoftext|>", pad="<|pad|>", unk="<|unk|>", vocab_size=384)


def _clip_tokenizer(path: str | Path | None) -> Any:
    from transformers import AutoTokenizer

    if path == "tiny":
        return _tiny_clip_tokenizer()
    ref = str(Path(path).expanduser()) if path is not None else DEFAULT_CLIP_ID
    try:
        return AutoTokenizer.from_pretrained(ref, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ClipWeightsError(
            f"the CLIP tokenizer is needed for the clip_text stream: none found in {ref!r} (a local folder with "
            f"the tokenizer files of {DEFAULT_CLIP_ID}, or that model in the Hugging Face cache): {exc}") from None


def load_clip_text(source: Mapping[str, torch.Tensor] | str | Path, device: str | torch.device = "cpu", *,
                   tokenizer_path: str | Path | None = None) -> ClipTextEncoder:
    """Build the ``clip_text`` encoder.

    Args:
        source: a ``CLIPModel`` / ``CLIPTextModel`` state dict (``text_model.*`` names), a ``save_pretrained``
            folder (weights and tokenizer), or ``"tiny"``.
        tokenizer_path: folder with the CLIP tokenizer when ``source`` is a state dict (default: the Hugging
            Face cache of :data:`DEFAULT_CLIP_ID`; ``"tiny"``: the toy tokenizer).

    Raises:
        ClipWeightsError: unrecognised weights or no tokenizer. FileNotFoundError: no such folder.
    """
    from transformers import CLIPTextConfig, CLIPTextModel

    if isinstance(source, str) and source == "tiny":
        tok = _tiny_clip_tokenizer()
        t = TINY_CLIP
        config = CLIPTextConfig(vocab_size=len(tok), hidden_size=t["width"], intermediate_size=2 * t["width"],
                                num_hidden_layers=t["layers"], num_attention_heads=max(1, t["width"] // 64),
                                max_position_embeddings=CLIP_MAX_TOKENS, projection_dim=t["projection_dim"],
                                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                pad_token_id=tok.pad_token_id)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_CLIP_SEED + 1)
            model = CLIPTextModel(config)
        return ClipTextEncoder(model.eval(), tok, device)
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"CLIP folder not found: {path}")
        from policies.backbones.minilm import quiet_transformers

        with quiet_transformers():
            model = CLIPTextModel.from_pretrained(str(path), local_files_only=True)
        return ClipTextEncoder(model.eval(), _clip_tokenizer(path), device)
    state = _submodule(source, "text_model.") or dict(source)
    try:
        vocab, width = (int(n) for n in state["embeddings.token_embedding.weight"].shape)
        config = CLIPTextConfig(
            vocab_size=vocab, hidden_size=width, num_attention_heads=max(1, width // 64),
            intermediate_size=int(state["encoder.layers.0.mlp.fc1.weight"].shape[0]),
            num_hidden_layers=1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layers.")),
            max_position_embeddings=int(state["embeddings.position_embedding.weight"].shape[0]))
    except (KeyError, ValueError) as exc:
        raise ClipWeightsError(f"not a CLIP text tower (text_model.* names): {type(exc).__name__}: {exc}") from None
    tokenizer = _clip_tokenizer(tokenizer_path)
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    with torch.random.fork_rng(devices=[]):
        model = CLIPTextModel(config)
    _load_strict(getattr(model, "text_model", model), state, "clip_text weights")
    return ClipTextEncoder(model.eval(), tokenizer, device)
