"""Object grounders of the team's 2026 navigation policy: the S2V2 inference server's OWL-v2 and PaliGemma2 paths.

A grounder turns one RGB frame into the ``[cx, cy, area, has_bbox]`` the policy's history gets (:class:`Grounding`).
The two real grounders reproduce EdgeGroundVLA ``robovlm_nav/serve/stage2_v2_inference_server.py``
(``OwlV2Grounder.run`` and ``PG2Grounder.run``; ``/work/research/grounder_mlp_facts.md`` sections 5.1, 5.2, 6):

- **OWL-v2** (deployed since 2026-07-23, fp32): query ``[[phrase]]``, the processor's post-processing with
  ``target_sizes=[(H, W)]`` of the original frame, the best-scoring box above the threshold (production 0.20), its
  corners divided by ``W`` and ``H``, the server's box filters on the *raw* area, and the served area
  ``min(raw_area * area_scale, 1)`` (``VLA_OWLV2_AREA_SCALE`` 3.0).
- **PaliGemma2** (bf16): prompt ``"detect {phrase}"``, greedy generation of at most 48 new tokens that stops at the
  first token containing ``;``, the first four ``<locNNNN>`` of the decoded text as ``y1, x1, y2, x2`` / 1023, the
  same filters plus "x-full"; no area scale.

Both fill a miss as the server does: ``cx 0.5, cy 0.6, area 0.06, has_bbox False`` (:data:`MISS`). The server's
grounding cache (``grounding_skip_n``) belongs to the policy, not here: every :meth:`Grounder.ground` call grounds.

Weights come only from a local folder (a ``save_pretrained`` folder or a Hub snapshot), never from the network.
Two things of the transformers version are pinned to what the team ran (transformers 4.45.2 / 4.49.0, their docs):

- the processors' PIL / NumPy image path (``Owlv2ImageProcessorPil``, ``SiglipImageProcessorPil``; the team's "slow"
  processors), not the torchvision one that transformers 5 picks when torchvision is installed;
- OWL-v2's square padding: transformers 4.x padded the frame (bottom / right) with gray 0.5 after rescaling,
  transformers 5 pads with 0 (huggingface/transformers#41938). :func:`pad_to_square` pads with the team's gray first,
  so the processor's own padding has nothing to do.

The box coordinates are *not* compressed along y: since huggingface/transformers#30686 (May 2024, before the team's
versions) ``post_process_object_detection`` scales OWL-v2's boxes, which are relative to the padded square, by
``max(H, W)`` on both axes, so ``target_sizes=[(H, W)]`` gives pixels of the original frame and the division by
``W`` and ``H`` gives true image fractions (the compression of #27205 predates it). The team's own OWL annotation
agrees: ``docs/v5/bbox_nav_owl/bbox_dataset_v6_owl.json`` has ``cy_det`` 0.61-0.68 on 1280x720 frames, above the
H/W = 0.5625 a compressed centre could reach.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from foundations.errors import MobileVLAError

# --- The server's box filters (S2V2 ``get_ground_filters`` defaults and the inline checks of both grounders). ------
#: A box whose raw area is above this is a hallucinated full frame ("full-frame"; ``area > 0.9``).
FULL_FRAME_AREA = 0.9
#: A box whose raw area is below this is noise ("tiny"; ``filters["min_area"]``, default 0.01).
MIN_AREA = 0.01
#: A box centred above this (image fraction from the top) is a false positive: the basket is always in the lower
#: part of the frame ("top"; ``filters["min_cy"]``, default 0.35).
MIN_CY = 0.35
#: PaliGemma2 only: a box spanning ``x1 < 0.02`` to ``x2 > 0.98`` is a full-width collapse ("x-full").
X_FULL_LEFT = 0.02
X_FULL_RIGHT = 0.98

# --- OWL-v2 (S2V2 ``OwlV2Grounder.run``; EdgeGroundVLA ``docs/v5/owlv2_grounder_brief.html``, DOC-OWL). --------------
#: Production score threshold (DOC-OWL section 6: 97.7% true / 12.7% false positives); the code default
#: ``VLA_OWLV2_THRESH`` is 0.25, the ROC optimum (95.3% / 0%).
OWL_THRESHOLD = 0.20
#: ``VLA_OWLV2_AREA_SCALE``: the served area is ``min(raw_area * 3.0, 1)``; the filters use the raw area.
OWL_AREA_SCALE = 3.0
#: ``VLA_OWL_SCORE_FLOOR``: the logged ``score`` is the best score above this floor, else 0.
OWL_SCORE_FLOOR = 0.01
#: The gray (after rescaling to [0, 1]) that the team's transformers 4.x padded OWL-v2's square with.
OWL_PAD_VALUE = 0.5
#: OWL-v2's latency on the robot: 1901.7 ms fp32 on the Jetson Orin NX (DOC-OWL).
OWLV2_LATENCY_S = 1.902

# --- PaliGemma2-448 (S2V2 ``PG2Grounder.run``). -----------------------------------------------------------------
#: ``generate(max_new_tokens=48)``.
PG2_MAX_NEW_TOKENS = 48
#: PaliGemma's location tokens ``<loc0000>`` .. ``<loc1023>``; the server divides by 1023.
LOC_DIVISOR = 1023.0
#: The server's ``_LOC_RE``.
LOC_PATTERN = re.compile(r"<loc(\d{4})>")
#: PaliGemma2's median latency on the robot, 2.13 s (the team's ``logs/grounding_decisions.jsonl``).
PALIGEMMA2_LATENCY_S = 2.13

#: File names of a model's weights in a local folder (single file or sharded; safetensors or PyTorch).
WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


class GrounderError(MobileVLAError, ValueError):
    """A grounder's name, model folder or file is wrong; the one-line message names it and what is missing."""


@dataclasses.dataclass(frozen=True)
class Grounding:
    """One grounding call's result, as the S2V2 server's bbox dict.

    Attributes:
        cx, cy: box centre, fractions of the frame's width and height (0 = left / top). A box inside the frame
            gives values in [0, 1]; OWL-v2 may place a box in the padding below a landscape frame (``cy > 1``),
            which is kept, as the server keeps it.
        area: the area the policy's history gets: OWL-v2's served ``min(raw_area * area_scale, 1)``, PaliGemma2's
            raw area; on a miss the server's fill 0.06.
        has_bbox: a box passed the threshold and the filters.
        score: the detector's confidence in [0, 1] (OWL-v2: best box score above :data:`OWL_SCORE_FLOOR`, else 0,
            reported on misses too); NaN for a grounder without one (PaliGemma2).
        box: the best box ``(x1, y1, x2, y2)`` as fractions of the frame, unclipped, also when a filter rejected it
            (the server keeps only ``hint_cx`` then); None when nothing was detected.
        raw_area: ``(x2 - x1) * (y2 - y1)`` of ``box`` (what the filters test); 0.0 without a box.
        filter_reason: why ``has_bbox`` is False: "no-locs" (nothing above the threshold / fewer than 4 locations),
            "full-frame", "tiny", "top", "x-full" (:func:`server_filter`), or another grounder's reason; None on a hit.
    """

    cx: float
    cy: float
    area: float
    has_bbox: bool
    score: float
    box: tuple[float, float, float, float] | None
    raw_area: float
    filter_reason: str | None


#: The server's fill for a miss (``_fallback`` of both OWL-v2 and PaliGemma2): ``cx 0.5, cy 0.6, area 0.06``.
MISS = Grounding(cx=0.5, cy=0.6, area=0.06, has_bbox=False, score=0.0, box=None, raw_area=0.0, filter_reason=None)


def server_filter(cx: float, cy: float, raw_area: float, x1: float, x2: float, grounder: str) -> str | None:
    """The server's box filters, in its order: the reason a box is rejected, or None when it is kept.

    Args:
        cx: box centre (fraction of the width); unused by the filters, kept for the server's signature and its
            ``hint_cx``.
        cy: box centre (fraction of the height).
        raw_area: the box's unscaled area (fraction of the frame).
        x1, x2: left and right edges (fractions of the width).
        grounder: ``"owlv2"`` (full-frame, tiny, top) or ``"paligemma2"`` (the same, then x-full).

    Returns:
        "full-frame" (``raw_area >`` :data:`FULL_FRAME_AREA`), "tiny" (``<`` :data:`MIN_AREA`), "top"
        (``cy <`` :data:`MIN_CY`), "x-full" (PaliGemma2: ``x1 <`` :data:`X_FULL_LEFT` and ``x2 >``
        :data:`X_FULL_RIGHT`), or None.

    Raises:
        GrounderError: an unknown ``grounder``.
    """
    if grounder not in ("owlv2", "paligemma2"):
        raise GrounderError(f"server_filter: unknown grounder {grounder!r}; known: owlv2, paligemma2")
    if raw_area > FULL_FRAME_AREA:
        return "full-frame"
    if raw_area < MIN_AREA:
        return "tiny"
    if cy < MIN_CY:
        return "top"
    if grounder == "paligemma2" and x1 < X_FULL_LEFT and x2 > X_FULL_RIGHT:
        return "x-full"
    return None


def _box_grounding(box: tuple[float, float, float, float], grounder: str, score: float, area_scale: float) -> Grounding:
    """The grounding of the best box ``(x1, y1, x2, y2)`` (frame fractions): the filters, then the served area."""
    x1, y1, x2, y2 = (float(v) for v in box)
    raw = (x2 - x1) * (y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    reason = server_filter(cx, cy, raw, x1, x2, grounder)
    if reason is not None:
        return dataclasses.replace(MISS, score=score, box=(x1, y1, x2, y2), raw_area=raw, filter_reason=reason)
    return Grounding(cx, cy, min(raw * area_scale, 1.0), True, score, (x1, y1, x2, y2), raw, None)


def owl_grounding(scores: np.ndarray, boxes: np.ndarray, height: int, width: int, threshold: float = OWL_THRESHOLD,
                  area_scale: float = OWL_AREA_SCALE) -> Grounding:
    """The OWL-v2 server's decision on post-processed detections.

    Args:
        scores: ``(N,)`` box scores in [0, 1] (``post_process_object_detection``'s ``"scores"``).
        boxes: ``(N, 4)`` boxes ``(x1, y1, x2, y2)`` in pixels of the ``height`` x ``width`` frame (its
            ``"boxes"`` with ``target_sizes=[(height, width)]``).
        height, width: the frame's size in pixels.
        threshold: a box counts when its score is strictly above this (the post-processing's ``scores > threshold``).
        area_scale: the served area is ``min(raw_area * area_scale, 1)``.

    Returns:
        The best-scoring box's :class:`Grounding`, or :data:`MISS` with reason "no-locs" when no score is above
        ``threshold`` (``score`` is reported either way).
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    best = int(scores.argmax()) if scores.size else -1
    score = float(scores[best]) if scores.size and scores[best] > OWL_SCORE_FLOOR else 0.0
    if not scores.size or not scores[best] > threshold:
        return dataclasses.replace(MISS, score=score, filter_reason="no-locs")
    bx1, by1, bx2, by2 = boxes[best]
    return _box_grounding((bx1 / width, by1 / height, bx2 / width, by2 / height), "owlv2", score, area_scale)


def parse_locations(text: str) -> tuple[float, float, float, float] | None:
    """PaliGemma's detection text -> its first box ``(y1, x1, y2, x2)`` as fractions, as the server parses it.

    The first four ``<locNNNN>`` tokens anywhere in ``text`` (other text and further tokens are ignored), each
    divided by 1023, in PaliGemma's order ``y1, x1, y2, x2``, then sorted so that ``y1 <= y2`` and ``x1 <= x2``.
    None when there are fewer than four.
    """
    locs = [int(v) / LOC_DIVISOR for v in LOC_PATTERN.findall(text)]
    if len(locs) < 4:
        return None
    y1, x1, y2, x2 = locs[:4]
    return min(y1, y2), min(x1, x2), max(y1, y2), max(x1, x2)


def paligemma_grounding(text: str) -> Grounding:
    """The PaliGemma2 server's decision on the decoded generation ``text``: the first box (:func:`parse_locations`)
    through the filters (with "x-full"), unscaled area; :data:`MISS` with reason "no-locs" without four locations.
    ``score`` is NaN: PaliGemma2 reports none."""
    locs = parse_locations(text)
    if locs is None:
        return dataclasses.replace(MISS, score=math.nan, filter_reason="no-locs")
    y1, x1, y2, x2 = locs
    return _box_grounding((x1, y1, x2, y2), "paligemma2", math.nan, 1.0)


def pad_to_square(frame: np.ndarray) -> np.ndarray:
    """``frame`` (uint8 ``(H, W, 3)``) padded at the bottom / right to ``(S, S, 3)``, ``S = max(H, W)``, float32
    in [0, 255], with the team's gray :data:`OWL_PAD_VALUE` (127.5: 0.5 after the processor's rescaling)."""
    height, width = frame.shape[:2]
    side = max(height, width)
    square = np.full((side, side, 3), OWL_PAD_VALUE * 255.0, dtype=np.float32)
    square[:height, :width] = frame
    return square


def _rgb_frame(image: np.ndarray) -> np.ndarray:
    """``image`` as a uint8 ``(H, W, 3)`` array; ValueError for anything else."""
    frame = np.asarray(image)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"a grounder needs a uint8 (H, W, 3) RGB frame, got {frame.dtype} {frame.shape}")
    return frame


def _model_folder(path: str | Path, model: str) -> Path:
    """The local model folder ``path``, checked for ``config.json`` and weights before transformers reads it.

    Raises:
        GrounderError: the folder does not exist, or has no ``config.json`` or no weights (:data:`WEIGHT_FILES`).
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise GrounderError(f"{model} folder {folder}: not found (a local save_pretrained folder or Hub snapshot)")
    if not (folder / "config.json").is_file():
        raise GrounderError(f"{model} folder {folder}: no config.json")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise GrounderError(f"{model} folder {folder}: no weights (none of {', '.join(WEIGHT_FILES)})")
    return folder


def _load_processor(processor_cls: Any, image_processor: str, folder: Path, model: str) -> Any:
    """``processor_cls`` from ``folder`` with the PIL / NumPy image processor ``image_processor`` (module doc).

    Raises:
        GrounderError: transformers cannot load the processor's files (the message's first line is kept).
    """
    import transformers

    image_cls = getattr(transformers, f"{image_processor}Pil", None) or getattr(transformers, image_processor)
    try:
        return processor_cls.from_pretrained(
            folder, local_files_only=True, image_processor=image_cls.from_pretrained(folder, local_files_only=True))
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GrounderError(f"{model} folder {folder}: cannot load its processor ({first})") from exc


class Grounder(abc.ABC):
    """A grounder: one RGB frame -> :class:`Grounding`.

    Attributes:
        name: the registry name (:data:`GROUNDERS`).
        default_latency_s: the grounder's measured latency on the robot (s), for the policy's cadence model.
        needs_folder: :func:`build_grounder` must pass a model folder as the first argument.
    """

    name: str
    default_latency_s: float
    needs_folder: bool = False

    def reset(self, info: Mapping[str, Any]) -> None:
        """Start of an episode, with the environment's reset ``info``; the real grounders keep no state."""

    @abc.abstractmethod
    def ground(self, image: np.ndarray, state: np.ndarray | None, step: int) -> Grounding:
        """Ground the target in ``image`` (uint8 ``(H, W, 3)`` RGB) at the episode's ``step`` (0-based);
        ``state`` is the observation's robot state (None when there is none; the real grounders ignore it)."""


class Owlv2Grounder(Grounder):
    """OWL-v2 as the S2V2 server runs it (module doc), fp32.

    Args:
        path: local model folder (``config.json``, weights, processor and tokenizer files), e.g. a snapshot of
            ``google/owlv2-base-patch16-ensemble``.
        phrase: the text query (the server maps the instruction "basket" to "gray basket").
        threshold: score threshold; :data:`OWL_THRESHOLD` (production 0.20; the server's code default is 0.25).
        area_scale: served area factor (:data:`OWL_AREA_SCALE`).
        device: torch device of the model.

    Raises:
        GrounderError: the folder is missing, has no ``config.json`` or weights, or its processor cannot be loaded.
    """

    name = "owlv2"
    default_latency_s = OWLV2_LATENCY_S
    needs_folder = True

    def __init__(self, path: str | Path, phrase: str = "gray basket", threshold: float = OWL_THRESHOLD,
                 area_scale: float = OWL_AREA_SCALE, device: str | torch.device = "cpu") -> None:
        from transformers import Owlv2ForObjectDetection, Owlv2Processor

        folder = _model_folder(path, "OWL-v2")
        self.processor = _load_processor(Owlv2Processor, "Owlv2ImageProcessor", folder, "OWL-v2")
        self.model = Owlv2ForObjectDetection.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
        self.model.to(device).eval()
        self.phrase, self.threshold, self.area_scale = phrase, float(threshold), float(area_scale)
        self.device = torch.device(device)

    def ground(self, image: np.ndarray, state: np.ndarray | None, step: int) -> Grounding:
        """One OWL-v2 call on ``image`` (uint8 ``(H, W, 3)`` RGB; ``state`` and ``step`` are not read).

        Raises:
            ValueError: ``image`` is not a uint8 ``(H, W, 3)`` array.
        """
        frame = _rgb_frame(image)
        height, width = frame.shape[:2]
        inputs = self.processor(text=[[self.phrase]], images=pad_to_square(frame), return_tensors="pt")
        with torch.inference_mode():
            outputs = self.model(**inputs.to(self.device))
        # one pass at the lower of the threshold and the score floor serves both the decision and the logged score
        result = self.processor.image_processor.post_process_object_detection(
            outputs, threshold=min(self.threshold, OWL_SCORE_FLOOR), target_sizes=[(height, width)])[0]
        return owl_grounding(result["scores"].float().cpu().numpy(), result["boxes"].float().cpu().numpy(),
                             height, width, self.threshold, self.area_scale)


class SemicolonStop:
    """The server's ``StopOnTokenCriteria``: stop generating once the last token's text contains ``;`` (the
    separator between PaliGemma's detections; matching the decoded text also catches the merged `` ;`` token).

    A ``transformers`` stopping criterion by its call signature: ``(input_ids (B, T) int64, scores) -> (B,) bool``.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return torch.tensor([";" in self.tokenizer.decode([int(row[-1])], skip_special_tokens=False)
                             for row in input_ids], dtype=torch.bool, device=input_ids.device)


class PaliGemma2Grounder(Grounder):
    """PaliGemma2 as the S2V2 server runs it (module doc).

    Args:
        path: local model folder, e.g. a snapshot of ``google/paligemma2-3b-mix-448``.
        phrase: the object; the prompt is ``"detect {phrase}"``.
        max_new_tokens: generation budget (:data:`PG2_MAX_NEW_TOKENS`).
        device: torch device of the model.
        dtype: the model's dtype (the server's bf16).

    Raises:
        GrounderError: the folder is missing, has no ``config.json`` or weights, or its processor cannot be loaded.
    """

    name = "paligemma2"
    default_latency_s = PALIGEMMA2_LATENCY_S
    needs_folder = True

    def __init__(self, path: str | Path, phrase: str = "gray basket", max_new_tokens: int = PG2_MAX_NEW_TOKENS,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.bfloat16) -> None:
        from transformers import PaliGemmaForConditionalGeneration, PaliGemmaProcessor, StoppingCriteriaList

        folder = _model_folder(path, "PaliGemma2")
        self.processor = _load_processor(PaliGemmaProcessor, "SiglipImageProcessor", folder, "PaliGemma2")
        self.model = PaliGemmaForConditionalGeneration.from_pretrained(folder, local_files_only=True, dtype=dtype)
        self.model.to(device).eval()
        self.phrase, self.max_new_tokens, self.dtype = phrase, int(max_new_tokens), dtype
        self.device = torch.device(device)
        self.stopping = StoppingCriteriaList([SemicolonStop(self.processor.tokenizer)])

    def generate_text(self, image: np.ndarray) -> str:
        """The decoded new tokens (special tokens kept) of one greedy generation on ``image`` (uint8 ``(H, W, 3)``).

        The prompt starts with the processor's ``<image>`` token: the tokens are the same as for the server's bare
        ``"detect {phrase}"`` (``<image>`` x image_seq_length, ``<bos>``, the prompt, ``\\n``), without the
        processor's warning on every call.
        """
        from PIL import Image

        inputs = self.processor(text=f"{self.processor.image_token}detect {self.phrase}",
                                images=Image.fromarray(_rgb_frame(image)), return_tensors="pt")
        inputs.pop("labels", None)  # transformers 5 adds training labels to every call; generation takes none
        inputs = inputs.to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, min_new_tokens=1, do_sample=False,
                                      stopping_criteria=self.stopping)
        return self.processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=False)

    def ground(self, image: np.ndarray, state: np.ndarray | None, step: int) -> Grounding:
        """One PaliGemma2 call on ``image`` (:meth:`generate_text`, then :func:`paligemma_grounding`).

        Raises:
            ValueError: ``image`` is not a uint8 ``(H, W, 3)`` array.
        """
        return paligemma_grounding(self.generate_text(image))


#: Grounder registry: name -> ``"module:Class"`` of a :class:`Grounder` (imported on use; extend it by adding keys).
GROUNDERS: dict[str, str] = {
    "owlv2": "policies.goalnav.grounders:Owlv2Grounder",
    "paligemma2": "policies.goalnav.grounders:PaliGemma2Grounder",
    "oracle": "policies.goalnav.oracle:OracleGrounder",
}


def build_grounder(name: str, path: str | Path | None = None, **kwargs: Any) -> Grounder:
    """The grounder ``name`` (:data:`GROUNDERS`), built as ``Class(path, **kwargs)`` for one that reads a model
    folder (``needs_folder``), else ``Class(**kwargs)``.

    Raises:
        GrounderError: an unknown name, a model grounder without ``path`` or another one given a ``path``, and the
            grounder's own errors (a missing folder or weights).
    """
    if name not in GROUNDERS:
        raise GrounderError(f"unknown grounder {name!r}; known: {', '.join(GROUNDERS)}")
    module, _, attr = GROUNDERS[name].partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if cls.needs_folder:
        if path is None:
            raise GrounderError(f"grounder {name!r} needs its local model folder (path)")
        return cls(path, **kwargs)
    if path is not None:
        raise GrounderError(f"grounder {name!r} reads no model folder, got {path}")
    return cls(**kwargs)
