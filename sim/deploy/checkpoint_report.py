"""What a checkpoint file holds, and whether ``sim.eval --checkpoint FILE`` loads it (the library of
``python -m sim.checkpoint``).

Reports the file's format and top-level keys, its metadata (``epoch``, ``mae``, ``args`` ...), the detected
architecture (from ``model_config`` or, when there is none, from the key set) with its provenance (the team's
class or our reconstruction), the config, the frozen models it carries (``kosmos.``, ``clip_model.``,
``backbone.``: role, tensors, parameters), the head keys (loaded strictly, or the exact missing / unexpected /
mis-shaped keys), the feature streams and widths the head reads against the backbone's, and what else a run
needs on this machine (Kosmos-2 weights and processor, CLIP weights) and whether they were found. ``--build``
also builds the whole policy and runs one step on a blank frame.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch


def _params(state: Mapping[str, torch.Tensor]) -> int:
    return sum(int(t.numel()) for t in state.values())


def describe_frozen(prefix: str, state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Role, layout, tensor and parameter counts of a frozen model carried under ``prefix``."""
    from policies.backbones import FROZEN_PREFIXES
    from policies.backbones.clip import is_openclip_layout

    role = FROZEN_PREFIXES[prefix]
    if role == "kosmos2":
        text_keys = [k for k in state if k.startswith("text_model.")]
        layout = ("Kosmos2ForConditionalGeneration" if any(k.startswith("text_model.lm_head") for k in text_keys)
                  else "Kosmos2Model (transformers 4.x names)" if any(not k.startswith("text_model.model.")
                                                                       for k in text_keys) else "Kosmos2Model")
    elif is_openclip_layout(state):
        layout = "open_clip CLIP (visual.* used)"
    else:
        layout = "transformers CLIPModel" if any(k.startswith("text_model.") for k in state) else "unknown"
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in state.values()})
    used = {"clip_vision": "not read by the team's forward pass"}.get(role, "used")
    return {"prefix": prefix, "role": role, "layout": layout, "tensors": len(state), "parameters": _params(state),
            "dtypes": dtypes, "use": used}


def _requirements(name: str, path: str | None, weights: Mapping[str, Any], clip_path: str | None,
                  streams: Sequence[str]) -> list[dict[str, Any]]:
    """What building the backbone needs besides the file, and whether it is here (cheap checks, no model built)."""
    if name in ("lite", "tiny-kosmos2"):
        return []
    from policies.backbones.kosmos2 import DEFAULT_KOSMOS2_ID, load_kosmos2_processor

    needs: list[dict[str, Any]] = []

    def cached(repo: str) -> bool:
        try:
            from huggingface_hub import try_to_load_from_cache

            return isinstance(try_to_load_from_cache(repo, "config.json"), str)
        except Exception:  # noqa: BLE001 - no hub library or cache: not found
            return False

    if weights.get("kosmos2"):
        needs.append({"what": "Kosmos-2 weights", "found": True, "where": "in the file"})
    else:
        here = bool(path) and Path(path).expanduser().is_dir() or cached(path or DEFAULT_KOSMOS2_ID)
        needs.append({"what": "Kosmos-2 weights", "found": here,
                      "where": path or f"{DEFAULT_KOSMOS2_ID} in the Hugging Face cache",
                      "remedy": "pass --backbone-path DIR (a save_pretrained folder of microsoft/kosmos-2-patch14-224)"})
    try:
        load_kosmos2_processor(name, path)
        needs.append({"what": "Kosmos-2 processor", "found": True, "where": path or DEFAULT_KOSMOS2_ID})
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        needs.append({"what": "Kosmos-2 processor", "found": False, "where": str(exc).split(":")[0],
                      "remedy": "pass --backbone-path DIR with the processor files"})
    for stream, role in (("clip_image", "clip_image"), ("clip_text", "clip_text")):
        if stream in streams:
            found = bool(weights.get(role)) or bool(clip_path and Path(clip_path).expanduser().exists())
            needs.append({"what": f"CLIP weights ({stream})", "found": found,
                          "where": "in the file" if weights.get(role) else (clip_path or "none given"),
                          "remedy": "pass --clip-path (open_clip file or CLIP save_pretrained folder)"})
    return needs


def inspect_checkpoint(file: str | Path, *, policy: str | None = None, key_map: str | None = None,
                       backbone: str = "auto", backbone_path: str | None = None, clip_path: str | None = None,
                       config: str | None = None, build: bool = False) -> dict[str, Any]:
    """The report of the module doc as a dict; ``report["loads"]`` is the verdict.

    Raises:
        CheckpointNotFoundError: no such file (a bad argument, not a verdict).
    """
    from policies.backbones import stream_widths
    from policies.checkpoints import CheckpointError, CheckpointNotFoundError, compare_state_dicts, load_checkpoint
    from policies.heads import HEADS, config_from_dict, head_class, provenance
    from policies.vla import head_config_values, resolve_backbone, robovlms_settings

    report: dict[str, Any] = {"file": str(Path(file).expanduser()), "loads": False, "problems": []}
    goalnav = goalnav_report(file, backbone, backbone_path, build)
    if goalnav is not None:
        return {**report, **goalnav}
    try:
        ckpt = load_checkpoint(file, key_map)
    except CheckpointNotFoundError:
        raise
    except CheckpointError as exc:
        report["problems"].append(str(exc))
        return report
    report.update(format=ckpt.format, keys=ckpt.keys, meta=ckpt.meta, config_source=ckpt.config_source,
                  config=ckpt.head_config, frozen=[describe_frozen(p, s) for p, s in ckpt.frozen.items()],
                  extra={k: list(v.shape) for k, v in ckpt.extra.items()},
                  head_tensors=len(ckpt.state_dict), head_parameters=_params(ckpt.state_dict))
    detected = ckpt.detected_head()
    head = policy or detected
    report["detected"] = detected
    report["detected_from"] = ("sidecar" if ckpt.config_source == "sidecar" and ckpt.head_name else
                               "model_config" if ckpt.head_name else "key set" if detected else None)
    if head is None:
        shown = sorted(ckpt.state_dict)[:12]
        report["problems"].append(
            f"unknown head layout: none of {', '.join(HEADS)} has these keys ({len(ckpt.state_dict)} tensors, first "
            f"{shown}); if it is one of them under other names, write a --key-map JSON (old prefix -> new)")
        return report
    if head not in HEADS:
        report["problems"].append(f"unknown policy {head!r}; heads: {', '.join(HEADS)}")
        return report
    report["architecture"] = {"head": head, "provenance": provenance(head)}
    fixed: dict[str, Any] = {}
    if head == "robovlms":
        hparams = ckpt.meta.get("hyper_parameters") or {}
        source = config if config else hparams.get("configs", hparams) or None
        try:
            settings = robovlms_settings(ckpt, config or None)
        except ValueError as exc:
            report["problems"].append(str(exc))
            return report
        fixed = settings.head_config()
        report["robovlms_config"] = {"source": settings.source or ("checkpoint hyper_parameters" if source else
                                                                   "default (mobile_vla_left_chunk10_20251218)"),
                                     **{k: getattr(settings, k) for k in ("window_size", "chunk_size",
                                                                          "hidden_size", "num_layers",
                                                                          "max_text_len", "scale")}}
        if "action_token" not in ckpt.extra:
            report["problems"].append("no action_token (model.action_token): not a RoboVLMs continuous checkpoint")
    try:
        values = head_config_values(head, ckpt, {}, fixed)
        head_config = config_from_dict(head, values)
        model = head_class(head)(head_config)
    except (ValueError, TypeError) as exc:
        report["problems"].append(f"cannot build a {head} head from this file's config: {exc}")
        return report
    report["head_config"] = head_config.to_dict()
    missing, unexpected, mismatched = compare_state_dicts(model.state_dict(), ckpt.state_dict)
    report["head_keys"] = {"expected": len(model.state_dict()), "missing": missing, "unexpected": unexpected,
                           "mismatched": [f"{k} checkpoint {list(a)} vs model {list(b)}" for k, a, b in mismatched]}
    if missing or unexpected or mismatched:
        report["problems"].append(f"head keys do not fit {type(model).__name__}: {len(missing)} missing, "
                                  f"{len(unexpected)} unexpected, {len(mismatched)} mis-shaped")
    bb_name = resolve_backbone(backbone, head, ckpt)
    weights = ckpt.frozen_weights()
    try:
        widths = stream_widths(bb_name, backbone_path, weights=weights, clip_path=clip_path)
    except (ValueError, OSError) as exc:
        report["problems"].append(f"backbone {bb_name!r}: {exc}")
        return report
    inputs = [(s, f, int(getattr(head_config, f))) for s, f in
              (*model.frame_inputs(head_config), *model.instruction_inputs(head_config))]
    report["backbone"] = bb_name
    report["streams"] = [{"stream": s, "field": f, "head": w, "backbone": widths.get(s)} for s, f, w in inputs]
    for s, f, w in inputs:
        if s not in widths and s.startswith("clip_"):
            continue  # reported as a requirement below
        if widths.get(s) != w:
            report["problems"].append(f"head reads {s} features of width {w} ({f}); backbone {bb_name!r} gives "
                                      f"{widths.get(s, 'none')}")
    report["needs"] = _requirements(bb_name, backbone_path, weights, clip_path, [s for s, _, _ in inputs])
    report["loads"] = not report["problems"]
    if build and report["loads"]:
        report["build"] = _build_and_step(head, file, key_map, backbone, backbone_path, clip_path, config)
        report["loads"] = report["build"]["ok"]
    return report


def goalnav_report(file: str | Path, backbone: str = "auto", backbone_path: str | None = None,
                   build: bool = False) -> dict[str, Any] | None:
    """The report of a team grounder + MLP file (:mod:`policies.goalnav.checkpoints`), or None when the file has
    another layout (a VLA head's; .safetensors files never are one)."""
    from policies.catalog import GOALNAV_VARIANTS
    from policies.checkpoints import CheckpointError, torch_load
    from policies.goalnav.checkpoints import is_goalnav_layout, recognise_goalnav_checkpoint

    path = Path(file).expanduser()
    if path.suffix == ".safetensors" or not path.is_file():
        return None
    try:
        raw = torch_load(path)
    except CheckpointError:
        return None  # the VLA loader reports it
    if not is_goalnav_layout(raw):
        return None
    report: dict[str, Any] = {"format": "team grounder + MLP (torch.save dict)", "keys": sorted(map(str, raw)),
                              "problems": [], "loads": False, "goalnav": {}}  # filled once the file is recognised
    try:
        ckpt = recognise_goalnav_checkpoint(raw, path)
    except CheckpointError as exc:
        report["problems"].append(str(exc))
        return report
    report["meta"] = ckpt.meta
    if ckpt.kind == "stage1":
        report["goalnav"] = {"kind": "stage1", "d_in": ckpt.d_in, "parameters": _params(ckpt.head.state_dict())}
        report["needs"] = [{"what": "a head to go with it", "where": "python -m sim.eval --policy exp73|stage2-v2 "
                                                                      f"--checkpoint HEAD --policy-arg stage1={path}",
                            "found": True}]
        report["loads"] = True
        return report
    variant = next(name for name, kind in GOALNAV_VARIANTS.items() if kind == ckpt.kind)
    report["goalnav"] = {"kind": ckpt.kind, "policy": variant, "window": ckpt.window, "bbox_scale": ckpt.bbox_scale,
                         "d_in": ckpt.d_in, "goal_dim": ckpt.goal_dim, "parameters": _params(ckpt.head.state_dict()),
                         "fallbacks": list(ckpt.fallbacks)}
    needs = [{"what": "Kosmos-2 weights (the 1024-d vision feature: vision_model last_hidden_state mean)",
              "where": backbone_path or "--backbone-path DIR", "found": bool(backbone_path)},
             {"what": "a grounder", "where": "--policy-arg grounder=oracle (default; the simulator's ground truth) "
                                             "or owlv2|paligemma2 with --policy-arg grounder_path=DIR",
              "found": True}]
    if ckpt.kind in ("stage2_v2", "exp73_mlp", "exp73_hybrid"):
        needs.insert(1, {"what": "its Stage 1 projection file (image_proj)", "where": "--policy-arg stage1=FILE "
                         "(the team's stage1_v2_projs.pt, or stage1_v3_5cls_owl_projs.pt for the 2026-08 head)",
                         "found": False})
    report["needs"] = needs
    report["loads"] = True
    report["architecture"] = {"head": variant, "provenance": f"team architecture ({ckpt.kind})"}
    if build:
        report["problems"].append("--build: a grounder + MLP head needs its Stage 1 file and Kosmos-2: build it with "
                                  "sim.eval")
        report["loads"] = False
    return report


def _build_and_step(head: str, file: str | Path, key_map: str | None, backbone: str, backbone_path: str | None,
                    clip_path: str | None, config: str | None) -> dict[str, Any]:
    import numpy as np

    from policies import make_policy

    kwargs: dict[str, Any] = {"checkpoint": str(file), "backbone": backbone, "backbone_path": backbone_path,
                              "clip_path": clip_path, "key_map": key_map}
    if config:
        kwargs["config"] = config
    try:
        policy = make_policy(head, **kwargs)
        policy.reset("Navigate around the obstacle on the left side and reach the cup")
        obs = {"image": np.full((224, 224, 3), 128, np.uint8), "instruction": policy.instruction,
               "state": np.zeros(6, np.float32)}
        policy.act(obs)
        action = policy.act(obs)
        return {"ok": True, "action": [round(float(v), 4) for v in action], "latency_ms": round(policy.latencies_ms[-1], 1)}
    except Exception as exc:  # noqa: BLE001 - the verdict reports any failure
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def format_report(r: dict[str, Any]) -> str:
    """Human-readable lines of :func:`inspect_checkpoint`'s report."""
    lines = [f"{r['file']}"]
    if "goalnav" in r:
        g = r["goalnav"]
        lines.append(f"  format        {r['format']} (keys: {', '.join(r['keys'])})")
        if r.get("meta"):
            lines.append(f"  metadata      {json.dumps(r['meta'], default=str)[:300]}")
        if g:
            lines.append(f"  kind          {g['kind']}: " + ", ".join(f"{k} {v}" for k, v in g.items() if k != "kind"))
        for need in r.get("needs", []):
            lines.append(f"  needs         {need['what']}: {need['where']}")
    elif "format" in r:
        keys = f" (keys: {', '.join(r['keys'])})" if r.get("keys") else ""
        lines.append(f"  format        {r['format']}{keys}")
        meta = {k: v for k, v in r["meta"].items() if k != "hyper_parameters"}
        if meta:
            lines.append(f"  metadata      {json.dumps(meta, default=str)[:300]}")
        if r.get("architecture"):
            a = r["architecture"]
            lines.append(f"  architecture  {a['head']}: {a['provenance']} (from {r.get('detected_from') or '--policy'})")
        lines.append(f"  config        {r['config_source']}: {json.dumps(r.get('config'), default=str)[:300]}")
        if r.get("robovlms_config"):
            lines.append(f"  robovlms      {json.dumps(r['robovlms_config'])}")
        for f in r["frozen"]:
            lines.append(f"  frozen        {f['prefix']:<15} {f['role']:<11} {f['layout']}, {f['tensors']} tensors, "
                         f"{f['parameters'] / 1e6:.1f} M parameters {'/'.join(f['dtypes'])} ({f['use']})")
        for key, shape in r["extra"].items():
            lines.append(f"  extra         {key} {shape}")
        if "head_keys" in r:
            hk = r["head_keys"]
            ok = not (hk["missing"] or hk["unexpected"] or hk["mismatched"])
            lines.append(f"  head          {r['head_tensors']} tensors, {r['head_parameters'] / 1e6:.2f} M parameters: "
                         + ("load strictly" if ok else "DO NOT FIT"))
            for what in ("missing", "unexpected", "mismatched"):
                if hk[what]:
                    lines.append(f"    {what} ({len(hk[what])}): {', '.join(hk[what][:12])}"
                                 + (" ..." if len(hk[what]) > 12 else ""))
        if r.get("streams"):
            lines.append(f"  backbone      {r['backbone']}: " + ", ".join(
                f"{s['stream']} {s['head']}{'' if s['backbone'] == s['head'] else ' (backbone: ' + str(s['backbone']) + ')'}"
                for s in r["streams"]))
        for need in r.get("needs", []):
            state = "found" if need["found"] else "NOT FOUND: " + need.get("remedy", "")
            lines.append(f"  needs         {need['what']} ({need['where']}): {state}")
        if r.get("build"):
            lines.append(f"  build         {json.dumps(r['build'])}")
    for problem in r["problems"]:
        lines.append(f"  problem       {problem}")
    verdict = "LOADS" if r["loads"] else "DOES NOT LOAD"
    run = ""
    if r["loads"] and r.get("architecture"):
        extra = ""
        if "goalnav" in r:
            stage1 = r["goalnav"]["kind"] in ("stage2_v2", "exp73_mlp", "exp73_hybrid")
            extra = (" --policy-arg stage1=STAGE1_FILE" if stage1 else "") + " --backbone-path KOSMOS2_DIR --family corridor"
        run = f": python -m sim.eval --policy {r['architecture']['head']} --checkpoint {r['file']}{extra}"
    lines.append(f"  verdict       {verdict}{run}")
    return "\n".join(lines)
