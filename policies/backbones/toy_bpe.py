"""The toy byte-level BPE tokenizer that the tiny backbones share (``tiny-kosmos2``'s text tokenizer and the toy
CLIP text tower's): trained with the ``tokenizers`` library on a small fixed corpus (instructions of the robot's
data set plus navigation words), so it is built offline and identically on every machine.
"""

from __future__ import annotations

from typing import Any

_CORPUS = (
    "Navigate around obstacles and reach the front of the beverage bottle on the left",
    "Navigate around obstacles and reach the front of the beverage bottle on the right",
    "Navigate around the obstacle on the left side and reach the cup",
    "Navigate around the obstacle on the right side and reach the cup",
    "Navigate to the gray basket while avoiding the brown pot",
    "An image of a robot",
    "go forward, turn left, turn right, move back, stop at the box, the chair, the table and the door",
)


def bpe_tokenizer(specials: list[str], *, bos: str, eos: str, pad: str, unk: str, vocab_size: int = 512) -> Any:
    """A ``PreTrainedTokenizerFast`` with a byte-level BPE trained on a fixed corpus of the robot's instructions;
    ``specials`` get the first ids and every encoded text is wrapped as ``bos ... eos``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(_CORPUS) * 4, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} $B {eos}",
        special_tokens=[(bos, tok.token_to_id(bos)), (eos, tok.token_to_id(eos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, pad_token=pad, eos_token=eos, unk_token=unk)
