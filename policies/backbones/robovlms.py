"""The backbone of the RoboVLMs Mobile VLA policy (``robovlms``): the ``action_token`` stream.

What the team's server computes per frame (``minuum/vla`` ``Mobile_VLA/inference_server.py``,
``RoboVLMs/robovlms/model/backbone/base_backbone.py`` ``forward_continuous``, ``Mobile_VLA/robovlms/model/
backbone/robokosmos.py``; ``../shared/reference/team_models/robovlms_*.json``):

1. image: RGB -> ``Resize((image_size, image_size), BICUBIC)`` (no crop) -> ``ToTensor`` -> ``Normalize(image_mean,
   image_std)`` from the config JSON;
2. prompt: ``"<grounding>An image of a robot {instruction}"`` (kept as given when it already starts with
   ``<grounding>``; ``"<grounding>" + instruction`` when it starts with ``"An image of a robot"``), tokenised by
   the Kosmos-2 tokenizer with ``padding="max_length"``, ``max_length=max_text_len``, truncation;
3. image tokens: ``vision_model(pixels).last_hidden_state`` -> ``post_layernorm`` -> L2 normalise ->
   ``image_to_text_projection`` (64 x 2048), inserted after the ``<s>`` token (attention mask 1);
4. the learned ``action_token`` (2048-d, ``model.action_token`` in the ``.ckpt``) inserted before the sequence's
   last position (``len - 1``: after the padding, before the final token), attention mask 1;
5. the language model over those embeddings (``inputs_embeds``; transformers scales them by ``embed_scale`` and
   adds positions by index), ``hidden_states[-1]`` at the action token's position.

``Kosmos2ForConditionalGeneration.forward`` refuses ``inputs_embeds`` without ``pixel_values`` in every
transformers release, and the team's fallback (pixel values plus the merged embeddings) cannot index the action
token; we run step 5 through the model's language model (``text_model``), which is what its forward does after
its image branch, on exactly the sequence of steps 2-4 (our reading, stated in the README); the LM head's logits,
which nothing reads, are not computed.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from foundations.errors import ConfigError, MobileVLAError
from foundations.files import read_json
from foundations.lru import MAX_INSTRUCTIONS, LRUCache
from policies.backbones.base import Backbone, freeze
from policies.backbones.kosmos2 import kosmos2_dtype

#: The team's prompt template (``_tokenize_instruction`` of their server).
PROMPT_TEMPLATE = "<grounding>An image of a robot {instruction}"
#: CLIP normalisation, their default ``image_mean`` / ``image_std``.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: The server's de-normalisation range (``unnoramalize_action(raw, -1.15, 1.15)``) and default scale factor.
ACTION_RANGE = 1.15


class RoboVLMsConfigError(MobileVLAError, ValueError):
    """A RoboVLMs config JSON that is unreadable or asks for something this policy does not implement."""


def team_prompt(instruction: str) -> str:
    """The server's prompt for ``instruction`` (see the module doc)."""
    text = instruction.strip()
    if text.startswith("<grounding>"):
        return text
    if text.startswith("An image of a robot"):
        return f"<grounding>{text}"
    return PROMPT_TEMPLATE.format(instruction=text)


def _deep_update(base: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


#: Most files a RoboVLMs config's ``parent`` chain may hold (theirs use one or two).
MAX_PARENT_DEPTH = 16


def load_team_config(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a RoboVLMs config JSON, resolving its ``parent`` chain as their ``load_config`` does (a relative
    ``parent`` is looked up beside the file, then from the working folder).

    Raises:
        RoboVLMsConfigError: missing file, bad JSON, larger than 16 MiB, not an object, a ``parent`` that is not a
            string, a ``parent`` cycle, or a chain deeper than :data:`MAX_PARENT_DEPTH` files.
    """
    path = Path(path).expanduser()
    if path.resolve() in {p.resolve() for p in _seen}:
        raise RoboVLMsConfigError(f"{path}: 'parent' chain loops back to itself")
    if len(_seen) >= MAX_PARENT_DEPTH:
        raise RoboVLMsConfigError(f"{_seen[0]}: 'parent' chain deeper than {MAX_PARENT_DEPTH} files (at {path})")
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise RoboVLMsConfigError(f"RoboVLMs config not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise RoboVLMsConfigError(f"{path}: not a readable JSON config ({exc})") from None
    if not isinstance(data, dict):
        raise RoboVLMsConfigError(f"{path}: the config must be a JSON object")
    config: dict[str, Any] = {}
    parent = data.get("parent")
    if parent is not None and not isinstance(parent, str):
        raise RoboVLMsConfigError(f"{path}: parent must be a file name (a string), got {parent!r}")
    if parent:
        candidate = (path.parent / parent) if not Path(parent).is_absolute() else Path(parent)
        if not candidate.is_file():
            candidate = Path(parent)
        _deep_update(config, load_team_config(candidate, (*_seen, path)))
    return _deep_update(config, data)


@dataclass(frozen=True)
class RoboVLMsSettings:
    """What the policy reads from the team's config JSON (defaults: ``mobile_vla_left_chunk10_20251218.json``).

    Attributes:
        model_name: the config file's stem (the server reports it as ``model_name``).
        window_size: LSTM inputs kept (8). chunk_size: ``fwd_pred_next_n`` (10). action_dim: 2.
        hidden_size, num_layers: ``act_head.hidden_size`` (512), ``act_head.num_layers`` (4, the class default).
        max_text_len: ``tokenizer.max_text_len`` (256). image_size: the config's ``image_size`` (224 in theirs);
            ``None`` = the vision model's input size. image_mean, image_std: normalisation.
        norm_action: the server de-normalises with ``unnoramalize_action(raw, -1.15, 1.15)`` (true) or multiplies
            by ``scale_factor`` (false); both give ``scale * raw`` for a symmetric range.
        scale: the factor applied to the head's output (1.15).
        source: the config file read, if any.
    """

    model_name: str = "mobile_vla_left_chunk10_20251218"
    window_size: int = 8
    chunk_size: int = 10
    action_dim: int = 2
    hidden_size: int = 512
    num_layers: int = 4
    max_text_len: int = 256
    image_size: int | None = None
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    norm_action: bool = True
    scale: float = ACTION_RANGE
    source: str | None = field(default=None, compare=False)

    @classmethod
    def from_config(cls, config: str | Path | Mapping[str, Any]) -> RoboVLMsSettings:
        """Settings from a config file path or an already loaded dict.

        Raises:
            RoboVLMsConfigError: unreadable file, a wrong type, or an unsupported option (discrete or
            classification heads, ``latent != 1``, ``down_sample != "none"``, ``history_type != "post"``,
            ``with_history`` false, a non-Kosmos model).
        """
        source = None
        if isinstance(config, (str, Path)):
            source = str(Path(config).expanduser())
            name = Path(config).stem
            config = load_team_config(config)
        else:
            name = str(config.get("exp_name") or cls.model_name)
        where = source or "config"
        head = config.get("act_head") or {}
        if not isinstance(head, Mapping):
            raise RoboVLMsConfigError(f"{where}: act_head must be an object")

        def need(value: Any, ok: Any, what: str) -> None:
            if value is not None and value != ok:
                raise RoboVLMsConfigError(f"{where}: {what} = {value!r} is not supported (only {ok!r})")

        need(head.get("type"), "MobileVLALSTMDecoder", "act_head.type")
        need(head.get("action_space"), "continuous", "act_head.action_space")
        need(head.get("down_sample"), "none", "act_head.down_sample")
        need(head.get("latent"), 1, "act_head.latent")
        need(head.get("history_type"), "post", "act_head.history_type")
        need(head.get("with_history"), True, "act_head.with_history")
        need(config.get("inference_mode"), "regression", "inference_mode")
        need(config.get("model"), "kosmos", "model")

        def number(value: Any, what: str, kind: type = int, low: float = 1) -> Any:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (
                    kind is int and int(value) != value):
                raise RoboVLMsConfigError(f"{where}: {what} must be {'an integer' if kind is int else 'a number'}, "
                                          f"got {value!r}")
            if value < low or value > 1e6:
                raise RoboVLMsConfigError(f"{where}: {what} = {value!r} is out of range")
            return kind(value)

        def triple(value: Any, what: str) -> tuple[float, float, float]:
            if (not isinstance(value, (list, tuple)) or len(value) != 3
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                               for v in value)):
                raise RoboVLMsConfigError(f"{where}: {what} must be a list of 3 numbers, got {value!r}")
            return tuple(float(v) for v in value)

        tokenizer = config.get("tokenizer") or {}
        if not isinstance(tokenizer, Mapping):
            raise RoboVLMsConfigError(f"{where}: tokenizer must be an object, got {tokenizer!r}")
        norm = config.get("norm_action", cls.norm_action)
        if not isinstance(norm, bool):
            raise RoboVLMsConfigError(f"{where}: norm_action must be true or false, got {norm!r}")
        scale = ACTION_RANGE if norm else number(config.get("scale_factor", ACTION_RANGE), "scale_factor", float, 0)
        std = triple(config.get("image_std", CLIP_STD), "image_std")
        if min(std) <= 0:
            raise RoboVLMsConfigError(f"{where}: image_std must be positive, got {list(std)}")
        return cls(
            model_name=name,
            window_size=number(config.get("window_size", head.get("window_size", cls.window_size)), "window_size"),
            chunk_size=number(config.get("fwd_pred_next_n", head.get("fwd_pred_next_n", cls.chunk_size)),
                              "fwd_pred_next_n"),
            action_dim=number(head.get("action_dim", cls.action_dim), "act_head.action_dim"),
            hidden_size=number(head.get("hidden_size", cls.hidden_size), "act_head.hidden_size"),
            num_layers=number(head.get("num_layers", cls.num_layers), "act_head.num_layers"),
            max_text_len=number(tokenizer.get("max_text_len", cls.max_text_len), "tokenizer.max_text_len", int, 2),
            image_size=number(config["image_size"], "image_size", int, 8) if "image_size" in config else None,
            image_mean=triple(config.get("image_mean", CLIP_MEAN), "image_mean"), image_std=std,
            norm_action=norm, scale=scale, source=source)

    def head_config(self) -> dict[str, Any]:
        """The ``robovlms`` head config fields these settings fix."""
        return {"window_size": self.window_size, "chunk_size": self.chunk_size, "action_dim": self.action_dim,
                "hidden_size": self.hidden_size, "num_layers": self.num_layers}


class RoboVLMsBackbone(Backbone):
    """The ``action_token`` stream of the module doc (``Kosmos2ForConditionalGeneration`` + the learned token).

    Args:
        model: a ``Kosmos2ForConditionalGeneration`` (frozen, moved to ``device``, bf16 on CUDA).
        tokenizer: the Kosmos-2 tokenizer (``processor.tokenizer``, with ``<grounding>``).
        action_token: float ``(embed_dim,)``.
        settings: :class:`RoboVLMsSettings` (prompt length, image size and normalisation).
        name: reported backbone name (``"kosmos2"`` / ``"tiny-kosmos2"``).

    Raises:
        ConfigError: an ``action_token`` whose width is not the language model's, or an ``image_size`` other than
            the vision model's.
    """

    def __init__(self, model: Any, tokenizer: Any, action_token: torch.Tensor, settings: RoboVLMsSettings,
                 name: str = "kosmos2", device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        self.name = name
        self.settings = settings
        self.dtype = kosmos2_dtype(self.device)
        self.model = freeze(model.to(device=self.device, dtype=self.dtype))
        self.tokenizer = tokenizer
        self.hidden_size = int(model.config.text_config.embed_dim)
        token = torch.as_tensor(action_token).detach().reshape(-1)
        if token.numel() != self.hidden_size:
            raise ConfigError(f"action_token has {token.numel()} values; the language model's hidden size is "
                             f"{self.hidden_size}")
        self.action_token = token.to(self.device, self.dtype)
        self.image_size = int(model.config.vision_config.image_size)
        if settings.image_size not in (None, self.image_size):
            raise ConfigError(f"the config's image_size is {settings.image_size} px but the Kosmos-2 vision model "
                             f"takes {self.image_size} px")
        self.vision_dim, self.text_dim = self.hidden_size, 0
        self._prompts: LRUCache[str, tuple[torch.Tensor, torch.Tensor]] = LRUCache(MAX_INSTRUCTIONS)
        mean = torch.tensor(settings.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(settings.image_std, dtype=torch.float32).view(1, 3, 1, 1)
        self._norm = (mean, std)

    def stream_dims(self) -> dict[str, int]:
        """``{"action_token": hidden_size}``: its one stream, the language model's ``text_config.embed_dim``."""
        return {"action_token": self.hidden_size}

    def vision_modules(self) -> dict[str, torch.nn.Module]:
        """Kosmos-2's ``vision_model`` (step 2 of :meth:`merged_inputs`); the language model stays eager."""
        return {"vision_model": self.model.vision_model}

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """uint8 ``(N, H, W, 3)`` RGB -> float32 ``(N, 3, S, S)``: PIL bicubic resize to ``image_size`` (no crop),
        ``/ 255``, ``(x - mean) / std``."""
        size = self.image_size
        frames = [np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BICUBIC)) for img in images]
        x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255.0
        mean, std = self._norm
        return (x - mean) / std

    def tokenize(self, instruction: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)``, each ``(1, max_text_len)`` long, of the team's prompt (cached, the last
        :data:`~foundations.lru.MAX_INSTRUCTIONS` instructions)."""
        cached = self._prompts.get(instruction)
        if cached is None:
            enc = self.tokenizer(team_prompt(instruction), return_tensors="pt", padding="max_length",
                                 max_length=self.settings.max_text_len, truncation=True)
            cached = (enc["input_ids"], enc["attention_mask"])
            self._prompts[instruction] = cached
        return cached

    def merged_inputs(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Steps 2-4 of the module doc: ``(inputs_embeds (N, L + Q + 1, D), attention_mask (N, L + Q + 1), at)``
        for ``pixels`` ``(N, 3, S, S)`` (normalised) and one tokenised prompt ``(1, L)``; ``at`` is the action
        token's position (``Q`` image tokens)."""
        model, n = self.model, pixels.shape[0]
        ids = input_ids.to(self.device).expand(n, -1)
        mask = attention_mask.to(self.device).expand(n, -1)
        embeds = model.text_model.model.embed_tokens(ids)
        vision = model.vision_model(pixel_values=pixels.to(self.device, self.dtype))
        image = torch.nn.functional.normalize(model.vision_model.model.post_layernorm(vision[0]), dim=-1)
        image = model.image_to_text_projection(image)[0]
        bos = int(self.tokenizer.bos_token is not None)
        eos = int(self.tokenizer.eos_token is not None)
        ones = torch.ones(n, image.shape[1], dtype=mask.dtype, device=mask.device)
        embeds = torch.cat([embeds[:, :bos], image.to(embeds.dtype), embeds[:, bos:]], dim=1)
        mask = torch.cat([mask[:, :bos], ones, mask[:, bos:]], dim=1)
        at = embeds.shape[1] - eos
        token = self.action_token.to(embeds.dtype).view(1, 1, -1).expand(n, 1, -1)
        embeds = torch.cat([embeds[:, :at], token, embeds[:, at:]], dim=1)
        mask = torch.cat([mask[:, :at], ones[:, :1], mask[:, at:]], dim=1)
        return embeds, mask, at

    def action_token_states(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
                            ) -> torch.Tensor:
        """The language model's last hidden state at the action token, ``(N, hidden_size)`` (step 5)."""
        embeds, mask, at = self.merged_inputs(pixels, input_ids, attention_mask)
        # the text transformer without its LM head: its last_hidden_state is the team's hidden_states[-1]
        out = self.model.text_model.model(inputs_embeds=embeds, attention_mask=mask, use_cache=False)
        return out.last_hidden_state[:, at]

    def _encode_frames(self, images: np.ndarray, streams: tuple[str, ...], instruction: str | None
                       ) -> dict[str, torch.Tensor]:
        ids, mask = self.tokenize(instruction or "")
        return {"action_token": self.action_token_states(self.preprocess(images), ids, mask)}
