"""GPU checks of the team's model paths, as one prepared run (the figures in the README's "GPU" section).

``python bench/gpu_checks.py [--out report.json] [--steps 30]`` (``--device cpu --size tiny``: a dry run of the same
code on the toy Kosmos-2)

On CUDA, with full-size ``Kosmos2ForConditionalGeneration`` built from transformers' default config (= the sizes
of ``microsoft/kosmos-2-patch14-224``) with **random weights**:

1. ``robovlms`` (action token + LSTM) in bf16: p50 / p95 of a whole ``act()`` step at batch 1 against the robot's
   100 ms loop; the backbone's forward at batch 1 / 8 / 32; the same forward in fp16 (what the team's server
   runs, ``model.half()``) and the largest difference of its action-token state from fp32 (relative);
2. ``case1`` (Kosmos-2 vision pooler + cached text feature) and ``hybrid`` (Kosmos-2 over image + instruction,
   CLIP text) per-step latency in bf16;
3. ``compile_vision`` (:mod:`policies.backbones.compile`): the Kosmos-2 vision tower (``vision_model``) eager vs
   ``reduce-overhead`` (inductor + CUDA graphs), then vs ``cuda-graph`` (CUDA graphs without inductor), in bf16:
   milliseconds per forward at batch 1 and 16, the compile + warm-up time, and the largest difference of the
   ``image`` stream (``encode_images``) from eager's (relative L2 <= 2e-2 and cosine >= 0.999 pass: bf16
   rounding); ``--only-compile-vision`` runs it alone (a short device run);
4. batched inference (:mod:`policies.batching`): ``case1``'s ``act_batch`` at batch 1 / 8 / 32 (ms per batched
   step, environment steps per second) and a batch of 8 against the same 8 steps one by one;
5. when ``open_clip`` imports (carried as a wheel), the open_clip -> transformers CLIP conversion
   (:func:`policies.backbones.clip.openclip_visual_to_hf`) against ``open_clip``'s own ViT-B-32 (random init):
   largest ``encode_image`` difference, and its preprocessing against ours.

Before those (a short device run gets it first; ``--only-goalnav`` runs it alone):

0. ``goalnav`` (issue 25): the deployed grounder + MLP policy ``exp73`` (:mod:`policies.goalnav.policy`) with the
   OWL-v2 grounder built from transformers' default ``Owlv2Config`` at the deployed checkpoint's 960 x 960 input
   (``google/owlv2-base-patch16-ensemble`` differs from the default config only there; random weights, a toy CLIP
   tokenizer; ``--size tiny``: the tests' tiny OWL-v2) saved to a temporary folder and loaded through the ``owlv2``
   grounder as a real folder is, the vision feature from the same random Kosmos-2 as the other checks, and a random
   exp73 head + Stage 1 projection read from team-layout files. On the robot's 1280x720 frame, in bf16 on CUDA
   (fp32 on the CPU): p50 / p95 ms per decision and per component (``grounder``: the whole OWL-v2 call, of it the
   processor on the CPU and the model's forward; ``vision``; ``mlp``: the head on its window), for a grounded
   decision and a cached one, against the robot's budget: the components' figures on the robot
   (``OWLV2_LATENCY_S`` 1.902 s fp32 on the Jetson, ``VISION_LATENCY_S``, ``MLP_LATENCY_S``), the deployed loop's
   period (``Cadence.parse("deployed").period_s``, 100 ms: a cached decision within one tick) and the robot's
   ~1.3 Hz decision rate (``envs/cadence.py``: a grounded decision within 1 / 1.3 s); on CUDA also the grounder
   call in fp32 (the deployed dtype).

Exits 2 without CUDA. Prints one line per figure and writes them to ``--out`` as JSON after every check.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from foundations.files import atomic_write_text  # noqa: E402

INSTRUCTION = "Navigate around obstacles and reach the front of the beverage bottle on the left"
REPORT: dict = {}
DEVICE = "cuda"


def sync() -> None:
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def say(key: str, value, text: str) -> None:
    REPORT[key] = value
    print(text, flush=True)


def timed(fn, warmup: int = 3, repeats: int = 10) -> list[float]:
    for _ in range(warmup):
        fn()
    sync()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        out.append((time.perf_counter() - start) * 1e3)
    return out


def p(values, q):
    return float(np.percentile(np.asarray(values), q))


def step_latencies(policy, steps: int) -> list[float]:
    """Milliseconds of each ``act()`` over ``steps`` fresh frames, after 3 warm-up steps and a reset."""
    imgs = frames(steps + 3)
    policy.reset(INSTRUCTION)
    for img in imgs[:3]:
        policy.act({"image": img, "instruction": INSTRUCTION})
    policy.reset(INSTRUCTION)
    for img in imgs[3:]:
        policy.act({"image": img, "instruction": INSTRUCTION})
    sync()
    return policy.latencies_ms


def frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(n)]


def full_kosmos2(size: str):
    from transformers import Kosmos2Config, Kosmos2ForConditionalGeneration

    from policies.backbones.tiny_kosmos2 import tiny_kosmos2_config

    torch.manual_seed(0)
    with torch.device(DEVICE):
        model = Kosmos2ForConditionalGeneration(Kosmos2Config() if size == "full" else tiny_kosmos2_config())
    return model.eval().requires_grad_(False)


def processor_224(size: int = 224):
    import transformers
    from transformers import Kosmos2Processor

    from policies.backbones.tiny_kosmos2 import tiny_kosmos2_processor

    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    image = cls(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return Kosmos2Processor(image, tiny_kosmos2_processor().tokenizer)


#: The robot's decision rate with the deployed policy: ~1.3 Hz in bursts of 0.08 / 0.08 / 2.2 s behind the
#: grounder (``envs/cadence.py``, preset ``deployed``; ``docs/scenarios.md``).
ROBOT_DECISION_HZ = 1.3
#: The robot's camera frame (W, H) that the grounder and the vision feature get (``policies/goalnav/oracle.py``).
ROBOT_FRAME = (1280, 720)
#: The deployed OWL-v2 (``google/owlv2-base-patch16-ensemble``): transformers' default ``Owlv2Config`` but for the
#: vision tower's input, 960 x 960 (its config.json and preprocessor_config.json; the default config says 768).
OWLV2_IMAGE_SIZE = 960


def toy_clip_tokenizer():
    """A real ``CLIPTokenizer`` (the class ``Owlv2Processor`` wants) on a toy vocabulary: letters, the query's
    words merged whole, CLIP's specials last; its ids fit any CLIP text tower (the tests' ``_clip_tokenizer``)."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    merges = []
    for word in ("gray", "basket"):
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append((pieces[0], pieces[1]))
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
            vocab.setdefault(pieces[0], len(vocab))
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=16)


def save_owlv2(folder: Path, size: str) -> dict:
    """A random OWL-v2 with its processor (PIL image path, toy tokenizer) saved to ``folder`` as a real snapshot is;
    ``full``: :data:`OWLV2_IMAGE_SIZE` on transformers' default config, ``tiny``: the tests' (hidden 32, 2 layers,
    patch 8, image 32). Returns the config's sizes."""
    import transformers

    tokenizer = toy_clip_tokenizer()
    if size == "full":
        config = transformers.Owlv2Config(vision_config={"image_size": OWLV2_IMAGE_SIZE})
    else:
        layers = {"intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 32}
        config = transformers.Owlv2Config(
            text_config={**layers, "vocab_size": len(tokenizer), "max_position_embeddings": 16,
                         "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                         "pad_token_id": tokenizer.pad_token_id},
            vision_config={**layers, "image_size": 32, "patch_size": 8}, projection_dim=32)
    image = int(config.vision_config.image_size)
    image_cls = getattr(transformers, "Owlv2ImageProcessorPil", None) or transformers.Owlv2ImageProcessor
    torch.manual_seed(0)
    model = transformers.Owlv2ForObjectDetection(config)
    sizes = {"parameters": sum(x.numel() for x in model.parameters()), "image_size": image,
             "patch_size": int(config.vision_config.patch_size)}
    model.save_pretrained(folder)
    del model
    transformers.Owlv2Processor(image_cls(size={"height": image, "width": image}), tokenizer).save_pretrained(folder)
    return sizes


class Timed:
    """``target`` (a callable: a bound method, a model, a processor) whose calls add their wall time in ms (CUDA
    synchronised before and after) to ``record[key]``; every other attribute is the target's."""

    def __init__(self, target, record: dict, key: str) -> None:
        self._target, self._record, self._key = target, record, key

    def __call__(self, *args, **kwargs):
        sync()
        start = time.perf_counter()
        out = self._target(*args, **kwargs)
        sync()
        self._record[self._key] = self._record.get(self._key, 0.0) + (time.perf_counter() - start) * 1e3
        return out

    def __getattr__(self, name: str):
        return getattr(self._target, name)


def check_goalnav(model, size: str, steps: int) -> None:
    """The deployed exp73 grounder + MLP policy per decision, by component, against the robot's budget (module doc,
    item 0). Reuses ``model`` (the random Kosmos-2) for the vision feature."""
    import tempfile

    import transformers

    from envs.cadence import Cadence
    from policies.backbones.kosmos2 import Kosmos2Backbone
    from policies.goalnav.checkpoints import load_goalnav_checkpoint
    from policies.goalnav.grounders import OWLV2_LATENCY_S, build_grounder
    from policies.goalnav.heads import FORWARD, PROJ_DIM, Exp73MLPHead, Stage1ImageProj
    from policies.goalnav.policy import MLP_LATENCY_S, VISION_LATENCY_S, GoalNavPolicy

    transformers.utils.logging.disable_progress_bar()  # save / load bars of the temporary folder
    with tempfile.TemporaryDirectory(prefix="gpu_checks_goalnav_") as tmp:
        folder = Path(tmp) / "owlv2"
        start = time.perf_counter()
        owl = save_owlv2(folder, size)
        grounder = build_grounder("owlv2", folder, device=DEVICE)  # fp32, as deployed; bf16 below on CUDA
        load_s = time.perf_counter() - start
        bb = Kosmos2Backbone(model, processor_224(int(model.config.vision_config.image_size)),
                             name="kosmos2-random", device=DEVICE)
        torch.manual_seed(0)
        head, proj = Exp73MLPHead(4 + PROJ_DIM, 6), Stage1ImageProj(bb.vision_dim, PROJ_DIM)
        with torch.no_grad():  # a head that always says FORWARD: the cache rule, not a random rotation, regrounds
            head.net[-1].weight.zero_()
            head.net[-1].bias.copy_(torch.nn.functional.one_hot(torch.tensor(FORWARD), head.net[-1].out_features))
        torch.save({"model": head.state_dict(), "head": "mlp", "window": 6, "bbox_scale": 3.0, "exp": "exp73"},
                   Path(tmp) / "exp73_mlp.pt")
        torch.save({"image_proj": proj.state_dict()}, Path(tmp) / "stage1.pt")
        policy = GoalNavPolicy(load_goalnav_checkpoint(Path(tmp) / "exp73_mlp.pt", expect="head"),
                               load_goalnav_checkpoint(Path(tmp) / "stage1.pt", expect="stage1",
                                                       vis_dim=bb.vision_dim).head, bb, grounder)
    say("goalnav_models", {"owlv2": owl, "owlv2_load_s": load_s, "vision": bb.name, "vision_dim": bb.vision_dim},
        f"goalnav exp73: random OWL-v2 ({owl['parameters'] / 1e6:.1f} M parameters, image {owl['image_size']}, "
        f"patch {owl['patch_size']}) saved and loaded through the owlv2 grounder in {load_s:.1f} s; vision: the "
        f"random Kosmos-2's image_mean ({bb.vision_dim}-d) + Stage 1 projection; head exp73 MLP (window 6)")
    width, height = ROBOT_FRAME
    rng = np.random.default_rng(7)
    imgs = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(steps + 2)]
    record: dict[str, float] = {}
    grounder.ground = Timed(grounder.ground, record, "grounder")
    grounder.processor = Timed(grounder.processor, record, "grounder.processor")
    grounder.model = Timed(grounder.model, record, "grounder.forward")
    bb.encode_frames = Timed(bb.encode_frames, record, "vision")
    policy._classes = Timed(policy._classes, record, "mlp")

    def decisions(policy: GoalNavPolicy, skip: int, n: int, warmup: int) -> dict[str, list[float]]:
        """``n`` decisions (after ``warmup``) with ``grounding_skip_n = skip`` (no regrounding after a miss):
        per decision the wall ms of ``act`` and of each component; only the decisions of the wanted kind."""
        policy.grounding_skip_n, policy.reground_on_miss = skip, False
        policy.reset(INSTRUCTION, {})
        out: dict[str, list[float]] = {}
        for i in range(warmup + n):  # cached: the episode's first decision, in the warm-up, grounds
            record.clear()
            sync()
            start = time.perf_counter()
            policy.act({"image": imgs[i % len(imgs)], "instruction": INSTRUCTION})
            sync()
            grounded = "grounder" in policy.step_components
            if i >= warmup and grounded == (skip == 1):
                for key, ms in {"decision": (time.perf_counter() - start) * 1e3, **record}.items():
                    out.setdefault(key, []).append(ms)
        return out

    with torch.inference_mode():
        dtype = "fp32"
        if DEVICE.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()  # the deployed fp32 first, a few calls: the grounder alone
            fp32 = decisions(policy, 1, max(3, steps // 3), 2)["grounder"]
            grounder.model._target.to(torch.bfloat16)  # OWL-v2 casts its pixels to the patch embedding's dtype
            dtype = "bf16"
        runs = {"grounded": decisions(policy, 1, steps, 2), "cached": decisions(policy, 10**9, steps, 2)}
    period_ms = Cadence.parse("deployed").period_s * 1e3
    rate_ms = 1e3 / ROBOT_DECISION_HZ
    robot = {"grounder": OWLV2_LATENCY_S * 1e3, "vision": VISION_LATENCY_S * 1e3, "mlp": MLP_LATENCY_S * 1e3}
    for kind, ms in runs.items():
        order = ("decision", "grounder", "grounder.processor", "grounder.forward", "vision", "mlp")
        parts = {k: [p(ms[k], 50), p(ms[k], 95)] for k in order if k in ms}
        budget, limit = ("the ~1.3 Hz decision rate", rate_ms) if kind == "grounded" else \
            ("the deployed loop's period", period_ms)
        ok = parts["decision"][1] <= limit
        say(f"goalnav_{kind}_{dtype}_ms", {**parts, "n": len(ms["decision"]), "budget_ms": limit, "pass": ok},
            f"goalnav exp73 {kind} decision ({dtype}, {width}x{height}, {len(ms['decision'])} decisions): p50 "
            f"{parts['decision'][0]:.1f} ms, p95 {parts['decision'][1]:.1f} ms ({'PASS' if ok else 'FAIL'} against "
            f"{budget}, {limit:.0f} ms); " + ", ".join(
                f"{k} {v[0]:.1f} / {v[1]:.1f}" for k, v in parts.items() if k != "decision") + " ms (p50 / p95)")
    grounded, cached = ({k: p(v, 50) for k, v in runs[kind].items()} for kind in ("grounded", "cached"))
    ratios = {k: grounded[k] / robot[k] for k in robot}
    say("goalnav_vs_robot", {"robot_ms": robot, "here_over_robot": ratios, "loop_period_ms": period_ms,
                             "decision_hz": ROBOT_DECISION_HZ},
        "  against the robot (p50 here / the robot's figure): " + ", ".join(
            f"{k} {grounded[k]:.1f} / {robot[k]:.1f} ms = {ratios[k]:.3g}" for k in robot)
        + " (OWLV2_LATENCY_S fp32 on the Jetson Orin NX, VISION_LATENCY_S, MLP_LATENCY_S of "
        "policies/goalnav)")
    skip3 = (grounded["decision"] + 2 * cached["decision"]) / 3
    say("goalnav_skip3_mean_ms", skip3,
        f"  the robot's schedule (grounding_skip_n 3, no miss): mean {skip3:.1f} ms per decision = "
        f"{1e3 / skip3:.1f} decisions/s against the robot's ~{ROBOT_DECISION_HZ} Hz (ROBOT_DECISION_HZ, "
        f"envs/cadence.py) and its {period_ms:.0f} ms loop (Cadence deployed period_s)")
    if DEVICE.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**30
        say("goalnav_grounder_fp32_ms", {"p50_p95": [p(fp32, 50), p(fp32, 95)], "peak_gib": peak},
            f"  the grounder call in fp32 (the deployed dtype), {len(fp32)} calls: p50 {p(fp32, 50):.1f} ms, p95 "
            f"{p(fp32, 95):.1f} ms (= {p(fp32, 50) / robot['grounder']:.3g} of OWLV2_LATENCY_S); peak CUDA memory "
            f"{peak:.2f} GiB (OWL-v2 + Kosmos-2 + activations)")
    del policy, grounder
    if DEVICE.startswith("cuda"):
        torch.cuda.empty_cache()


def check_robovlms(model, steps: int) -> None:
    from policies.backbones.robovlms import RoboVLMsBackbone, RoboVLMsSettings
    from policies.backbones.tiny_kosmos2 import tiny_kosmos2_processor
    from policies.heads import make_head
    from policies.vla import PostProcessing, VLAPolicy

    settings = RoboVLMsSettings()
    tok = tiny_kosmos2_processor().tokenizer
    hidden = int(model.config.text_config.embed_dim)
    gen = torch.Generator().manual_seed(1)
    token = torch.randn(hidden, generator=gen) * 0.02
    bb = RoboVLMsBackbone(model, tok, token, settings, name="kosmos2-random", device=DEVICE)
    head = make_head("robovlms", hidden, 0, **settings.head_config())
    policy = VLAPolicy(head, bb, window_size=8, device=DEVICE, postprocess=PostProcessing(dead_zone=False))
    lat = step_latencies(policy, steps)
    say("robovlms_bf16_act_ms", [p(lat, 50), p(lat, 95)],
        f"robovlms {bb.dtype}, act() over {steps} steps: p50 {p(lat, 50):.1f} ms, p95 {p(lat, 95):.1f} ms "
        f"({'PASS' if p(lat, 95) <= 100 else 'FAIL'} against 100 ms); backbone share "
        f"{sum(policy.backbone_latencies_ms) / sum(lat):.0%}")
    ids, mask = bb.tokenize(INSTRUCTION)
    with torch.inference_mode():
        for batch in (1, 8, 32):
            pixels = bb.preprocess(np.stack(frames(batch)))
            t = timed(lambda pixels=pixels: bb.action_token_states(pixels, ids, mask))
            say(f"robovlms_bf16_backbone_b{batch}_ms", p(t, 50),
                f"  backbone forward (image + {settings.max_text_len}-token prompt + action token), batch {batch}: "
                f"{p(t, 50):.1f} ms per call, {p(t, 50) / batch:.2f} ms per frame")
        pixels = bb.preprocess(np.stack(frames(4)))
        bf16 = bb.action_token_states(pixels, ids, mask).float()
        for dtype, name in ((torch.float16, "fp16"), (torch.float32, "fp32")):
            bb.model.to(dtype)
            bb.dtype, bb.action_token = dtype, bb.action_token.to(dtype)
            states = bb.action_token_states(pixels, ids, mask).float()
            if name == "fp16":
                t = timed(lambda: bb.action_token_states(pixels[:1], ids, mask))
                say("robovlms_fp16_backbone_b1_ms", p(t, 50),
                    f"  the same forward in fp16 (the team server's model.half()), batch 1: {p(t, 50):.1f} ms")
                fp16 = states
        ref = states
        for label, got in (("bf16", bf16), ("fp16", fp16)):
            rel = float(((got - ref).norm(dim=-1) / ref.norm(dim=-1)).max())
            cos = float(torch.nn.functional.cosine_similarity(got, ref, dim=-1).min())
            say(f"robovlms_{label}_vs_fp32", {"max_rel_l2": rel, "min_cosine": cos},
                f"  action-token state {label} vs fp32 (random weights, 4 frames): relative L2 error <= {rel:.3g}, "
                f"cosine >= {cos:.5f}")
        bb.model.to(torch.bfloat16)
        bb.dtype, bb.action_token = torch.bfloat16, bb.action_token.to(torch.bfloat16)


def check_case_heads(model, steps: int) -> None:
    from policies.backbones.kosmos2 import Kosmos2Backbone
    from policies.heads import make_head
    from policies.vla import VLAPolicy

    bb = Kosmos2Backbone(model, processor_224(int(model.config.vision_config.image_size)), name="kosmos2-random",
                         device=DEVICE, clip_text="tiny")
    for name, head in (("case1", make_head("case1", bb.vision_dim, bb.text_dim)),
                       ("hybrid", make_head("hybrid", bb.text_dim, bb.clip_text.dim))):
        policy = VLAPolicy(head, bb, device=DEVICE)
        lat = step_latencies(policy, steps)
        say(f"{name}_bf16_act_ms", [p(lat, 50), p(lat, 95)],
            f"{name} on Kosmos-2 {bb.dtype} ({'+'.join(policy.frame_streams)}): act() p50 {p(lat, 50):.1f} ms, "
            f"p95 {p(lat, 95):.1f} ms")


def check_batched(model, steps: int, batches: tuple[int, ...] = (1, 8, 32)) -> None:
    """``act_batch`` (:mod:`policies.batching`'s forward) of ``case1`` on Kosmos-2 in bf16 at several batch sizes:
    milliseconds per batched step and environment steps per second; and batched vs one-by-one actions."""
    from policies.backbones.kosmos2 import Kosmos2Backbone
    from policies.heads import make_head
    from policies.vla import PostProcessing, VLAPolicy

    bb = Kosmos2Backbone(model, processor_224(int(model.config.vision_config.image_size)), name="kosmos2-random",
                         device=DEVICE)
    policy = VLAPolicy(make_head("case1", bb.vision_dim, bb.text_dim), bb, device=DEVICE,
                       postprocess=PostProcessing(dead_zone=False, zero_first_step=False))
    imgs = frames(max(batches) * 2)
    base = None
    for batch in batches:
        episodes = [policy.new_episode() for _ in range(batch)]
        for ep in episodes:
            policy.start_episode(ep, INSTRUCTION)
        obs = [{"image": img, "instruction": INSTRUCTION} for img in imgs[:batch]]
        t = timed(lambda episodes=episodes, obs=obs: policy.act_batch(episodes, obs), repeats=max(3, steps // 3))
        rate = batch / p(t, 50) * 1e3
        base = base or rate
        say(f"batched_case1_b{batch}", {"ms": p(t, 50), "steps_per_s": rate},
            f"case1 act_batch, batch {batch}: {p(t, 50):.1f} ms per batched step, {rate:.0f} env steps/s "
            f"({rate / base:.1f}x batch 1)")
    episodes = [policy.new_episode() for _ in range(8)]
    for ep in episodes:
        policy.start_episode(ep, INSTRUCTION)
    obs = [{"image": img, "instruction": INSTRUCTION} for img in imgs[:8]]
    together = np.stack(policy.act_batch(episodes, obs))
    alone = []
    for o in obs:
        policy.reset(INSTRUCTION)
        alone.append(policy.act(o)[:together.shape[1]])
    diff = float(np.abs(together - np.stack(alone)).max())
    say("batched_vs_alone_max_abs", diff, f"  batch of 8 vs one by one: largest action difference {diff:.2e} "
        f"({'PASS' if diff <= 2e-2 else 'FAIL'} at bf16 tolerance 2e-2, label units)")


def check_compile_vision(model, batches: tuple[int, ...] = (1, 16)) -> None:
    """Eager vs compiled vision tower (module doc, item 3). Compiles ``model.vision_model`` in place and leaves it
    eager again at the end (so it runs after, or instead of, the other checks on ``model``)."""
    from policies.backbones.base import autocast
    from policies.backbones.compile import compile_vision
    from policies.backbones.kosmos2 import Kosmos2Backbone

    size = int(model.config.vision_config.image_size)
    bb = Kosmos2Backbone(model, processor_224(size), name="kosmos2-random", device=DEVICE)
    tower = bb.model.vision_model
    gen = torch.Generator().manual_seed(5)
    pixels = {b: torch.randn(b, 3, size, size, generator=gen).to(DEVICE, bb.dtype) for b in batches}
    images = {b: np.stack(frames(b)) for b in batches}

    def forward_ms(x: torch.Tensor, compiled: bool) -> float:
        def call() -> None:
            if compiled:  # a new cudagraph-trees step: the previous call's outputs are not read again
                torch.compiler.cudagraph_mark_step_begin()
            tower(x)

        with torch.inference_mode(), autocast(DEVICE):  # as encode_frames calls it (no recompile for autocast)
            return p(timed(call, warmup=3, repeats=20), 50)

    want = {b: bb.encode_images(images[b]) for b in batches}
    eager_ms = {b: forward_ms(pixels[b], False) for b in batches}
    for mode in ("reduce-overhead", "cuda-graph"):
        if mode == "cuda-graph" and not DEVICE.startswith("cuda"):
            continue
        try:
            start = time.perf_counter()
            compile_vision(bb, mode, warmup=("image",))  # compiles the graphs: batch 1, then dynamic batch (2)
            sync()
            compile_s = time.perf_counter() - start
            for b in batches:
                first = time.perf_counter()
                got = bb.encode_images(images[b])  # batch 16: no recompile; on CUDA a graph recorded for it
                first_ms = (time.perf_counter() - first) * 1e3
                ms = forward_ms(pixels[b], True)
                rel = float(((got - want[b]).norm(dim=-1) / want[b].norm(dim=-1)).max())
                cos = float(torch.nn.functional.cosine_similarity(got, want[b], dim=-1).min())
                ok = rel <= 2e-2 and cos >= 0.999
                say(f"compile_vision_{mode}_b{b}", {"eager_ms": eager_ms[b], "compiled_ms": ms, "compile_s": compile_s,
                                                    "first_call_ms": first_ms, "max_rel_l2": rel, "min_cosine": cos,
                                                    "pass": ok},
                    f"vision tower {bb.dtype}, batch {b}: eager {eager_ms[b]:.2f} ms, compile_vision={mode} {ms:.2f} ms "
                    f"({eager_ms[b] / ms:.2f}x; compile + warm-up {compile_s:.1f} s, first encode at this batch "
                    f"{first_ms:.0f} ms); image stream vs eager: relative L2 <= {rel:.3g}, cosine >= {cos:.5f} "
                    f"({'PASS' if ok else 'FAIL'})")
        finally:  # eager again for the next mode (or check)
            tower._compiled_call_impl = None
            bb.vision_compile = "off"
            torch._dynamo.reset()


def check_open_clip() -> None:
    try:
        import open_clip
    except ImportError as exc:
        say("open_clip", None, f"open_clip not importable ({exc}): conversion check skipped")
        return
    from PIL import Image

    from policies.backbones.clip import load_clip_image

    torch.manual_seed(0)
    # QuickGELU, as open_clip builds ViT-B-32 for pretrained="openai" (the team's case 2)
    model = open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True).eval()
    ours = load_clip_image({k: v.detach().clone() for k, v in model.state_dict().items()}, "cpu")
    pixels = torch.randn(4, 3, 224, 224)
    with torch.inference_mode():
        want = model.encode_image(pixels)
        got = ours.model(pixel_values=pixels).image_embeds
    diff = float((got - want).abs().max())
    say("open_clip_encode_image_max_abs_diff", diff,
        f"open_clip ViT-B-32 (random init) encode_image vs our conversion: max abs diff {diff:.2e} "
        f"(|features| ~ {float(want.abs().mean()):.2f}), open_clip {open_clip.__version__}")
    preprocess = open_clip.image_transform(224, is_train=False, mean=open_clip.OPENAI_DATASET_MEAN,
                                           std=open_clip.OPENAI_DATASET_STD)
    frame = np.random.default_rng(3).integers(0, 256, (360, 640, 3), dtype=np.uint8)
    a = preprocess(Image.fromarray(frame))
    b = ours.processor(images=[frame], return_tensors="pt")["pixel_values"][0]
    say("open_clip_preprocess_mean_abs_diff", float((a - b).abs().mean()),
        f"open_clip preprocessing vs ours on a 640x360 frame: mean abs diff {float((a - b).abs().mean()):.4f}, "
        f"max {float((a - b).abs().max()):.3f} (normalised units)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", choices=["full", "tiny"], default="full")
    parser.add_argument("--only-open-clip", action="store_true", help="run the open_clip conversion check alone")
    parser.add_argument("--only-compile-vision", action="store_true",
                        help="run the compile_vision check (eager vs compiled vision tower) alone")
    parser.add_argument("--only-goalnav", action="store_true",
                        help="run the goalnav check (exp73 with OWL-v2 + Kosmos-2 vision per decision) alone")
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = args.device
    if DEVICE.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: nothing to check", file=sys.stderr)
        return 2
    import transformers

    name = torch.cuda.get_device_name(0) if DEVICE.startswith("cuda") else "cpu"
    say("device", name, f"{name}, torch {torch.__version__}, transformers {transformers.__version__}")
    start = time.perf_counter()
    model = full_kosmos2(args.size)
    say("kosmos2_parameters", sum(x.numel() for x in model.parameters()),
        f"random {args.size} Kosmos-2: {sum(x.numel() for x in model.parameters()) / 1e9:.3f} B parameters, built in "
        f"{time.perf_counter() - start:.1f} s")
    checks = {"goalnav": lambda: check_goalnav(model, args.size, args.steps),  # first: short, issue 25's figure
              "robovlms": lambda: check_robovlms(model, args.steps),
              "case_heads": lambda: check_case_heads(model, args.steps),
              "compile_vision": lambda: check_compile_vision(model), "open_clip": check_open_clip,
              "batched": lambda: check_batched(model, args.steps)}
    only = [name for name in checks if getattr(args, f"only_{name}", False)]
    for check in [checks[name] for name in only] or list(checks.values()):
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - report every check, keep going
            say(f"error_{len(REPORT)}", f"{type(exc).__name__}: {exc}", f"CHECK FAILED: {type(exc).__name__}: {exc}")
        if args.out:  # after every check: a run stopped by its time limit keeps what it measured
            atomic_write_text(args.out, json.dumps(REPORT, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
