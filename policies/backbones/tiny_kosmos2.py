"""``tiny-kosmos2``: the real ``Kosmos2Model`` / ``Kosmos2Processor`` code path at toy size, fully offline.

A seeded random ``Kosmos2Config`` (vision: hidden 32, 2 layers, patch 14, image 56; text: embed 32,
2 layers) and a processor assembled from parts: a byte-level BPE tokenizer trained with the ``tokenizers``
library on a small fixed corpus (instructions of the robot's data set plus navigation words), wrapped in
``PreTrainedTokenizerFast``, and a CLIP image processor resizing to 56 x 56. ``Kosmos2Processor`` adds its
own tag and patch-index tokens to that tokenizer, as it does for the real one. Built once per process
(:func:`build_tiny_kosmos2` is cached); same seed -> identical weights and vocabulary.
Used by tests and smoke runs; its features carry no meaning.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from policies.backbones.kosmos2 import Kosmos2Backbone

#: Seed of the random weights.
TINY_SEED = 20240822
#: Vision input size (pixels) and patch size of the toy model.
TINY_IMAGE_SIZE = 56
TINY_PATCH_SIZE = 14
#: Feature widths of the toy model.
TINY_VISION_DIM = 32
TINY_TEXT_DIM = 32

_CORPUS = (
    "Navigate around obstacles and reach the front of the beverage bottle on the left",
    "Navigate around obstacles and reach the front of the beverage bottle on the right",
    "Navigate around the obstacle on the left side and reach the cup",
    "Navigate around the obstacle on the right side and reach the cup",
    "Navigate to the gray basket while avoiding the brown pot",
    "go forward, turn left, turn right, move back, stop at the box, the chair, the table and the door",
)


def _build_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3: Kosmos-2's bos=0, pad=1, eos=2
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(_CORPUS) * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", pad_token="<pad>",
                                   eos_token="</s>", unk_token="<unk>")


def _build_image_processor() -> Any:
    import transformers

    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return cls(size={"shortest_edge": TINY_IMAGE_SIZE},
               crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})


@functools.lru_cache(maxsize=1)
def build_tiny_kosmos2() -> tuple[Any, Any]:
    """Return ``(Kosmos2Model, Kosmos2Processor)`` of the toy configuration (cached per process).

    The model is in eval mode with gradients off; the global torch RNG is left untouched.
    """
    from transformers import Kosmos2Config, Kosmos2Model, Kosmos2Processor

    processor = Kosmos2Processor(_build_image_processor(), _build_tokenizer())
    config = Kosmos2Config(
        text_config={"vocab_size": len(processor.tokenizer), "embed_dim": TINY_TEXT_DIM, "layers": 2,
                     "ffn_dim": 64, "attention_heads": 4, "max_position_embeddings": 256,
                     "dropout": 0.0, "attention_dropout": 0.0},
        vision_config={"hidden_size": TINY_VISION_DIM, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "image_size": TINY_IMAGE_SIZE, "patch_size": TINY_PATCH_SIZE},
        latent_query_num=4,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = Kosmos2Model(config)
    model.eval().requires_grad_(False)
    return model, processor


def load_tiny_kosmos2(device: str | torch.device = "cpu") -> Kosmos2Backbone:
    """A :class:`Kosmos2Backbone` named ``"tiny-kosmos2"`` over :func:`build_tiny_kosmos2` (32-d / 32-d)."""
    model, processor = build_tiny_kosmos2()
    return Kosmos2Backbone(model, processor, name="tiny-kosmos2", device=device)
