"""``tiny-kosmos2``: the real ``Kosmos2ForConditionalGeneration`` / ``Kosmos2Processor`` code path at toy size,
fully offline.

A seeded random ``Kosmos2Config`` (vision: hidden 32, 2 layers, patch 14, image 56; text: embed 32, 2 layers,
4 latent queries) and a processor assembled from parts: a byte-level BPE tokenizer trained with the
``tokenizers`` library on a small fixed corpus (:mod:`policies.backbones.toy_bpe`),
which adds ``<s> ... </s>`` around every text as the real XLM-R tokenizer does, wrapped in
``PreTrainedTokenizerFast``, and a CLIP image processor resizing to 56 x 56. ``Kosmos2Processor`` adds its own tag
(``<grounding>``, ...) and patch-index tokens to that tokenizer, as it does for the real one. Same seed ->
identical weights and vocabulary; each call builds a fresh model object (so two devices never share one).
Used by tests and smoke runs; its features carry no meaning.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from policies.backbones.toy_bpe import bpe_tokenizer

#: Seed of the random weights.
TINY_SEED = 20240822
#: Vision input size (pixels) and patch size of the toy model.
TINY_IMAGE_SIZE = 56
TINY_PATCH_SIZE = 14
#: Feature widths of the toy model.
TINY_VISION_DIM = 32
TINY_TEXT_DIM = 32

def _build_image_processor() -> Any:
    import transformers

    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return cls(size={"shortest_edge": TINY_IMAGE_SIZE},
               crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})


@functools.lru_cache(maxsize=1)
def tiny_kosmos2_processor() -> Any:
    """The toy ``Kosmos2Processor`` (cached per process; processors hold no device state)."""
    from transformers import Kosmos2Processor

    # ids 0..3 as Kosmos-2's: bos=0, pad=1, eos=2, unk=3
    tokenizer = bpe_tokenizer(["<s>", "<pad>", "</s>", "<unk>"], bos="<s>", eos="</s>", pad="<pad>", unk="<unk>")
    return Kosmos2Processor(_build_image_processor(), tokenizer)


def tiny_kosmos2_config() -> Any:
    """The toy ``Kosmos2Config`` (vocabulary sized to :func:`tiny_kosmos2_processor`'s tokenizer)."""
    from transformers import Kosmos2Config

    return Kosmos2Config(
        text_config={"vocab_size": len(tiny_kosmos2_processor().tokenizer), "embed_dim": TINY_TEXT_DIM,
                     "layers": 2, "ffn_dim": 64, "attention_heads": 4, "max_position_embeddings": 512,
                     "dropout": 0.0, "attention_dropout": 0.0},
        vision_config={"hidden_size": TINY_VISION_DIM, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "image_size": TINY_IMAGE_SIZE, "patch_size": TINY_PATCH_SIZE},
        latent_query_num=4,
    )


@functools.lru_cache(maxsize=1)
def _tiny_state() -> dict[str, torch.Tensor]:
    from transformers import Kosmos2ForConditionalGeneration

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = Kosmos2ForConditionalGeneration(tiny_kosmos2_config())
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def build_tiny_kosmos2() -> tuple[Any, Any]:
    """A new ``(Kosmos2ForConditionalGeneration, Kosmos2Processor)`` of the toy configuration, on the CPU, in eval
    mode with gradients off; the global torch RNG is left untouched."""
    from transformers import Kosmos2ForConditionalGeneration

    with torch.random.fork_rng(devices=[]):  # the constructor's random init must not move the global RNG
        model = Kosmos2ForConditionalGeneration(tiny_kosmos2_config())
    model.load_state_dict(_tiny_state())
    model.eval().requires_grad_(False)
    return model, tiny_kosmos2_processor()
