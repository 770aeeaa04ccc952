"""Export every head on the lite backbone to ONNX FP32 and FP16 and compare, in one run (by hand; not a test).

For each head: artifact size (MB), the numerical check (max abs diff of the actions vs the FP32 PyTorch policy,
FP32 and FP16), and p50/p95 milliseconds per ``act()`` step on CPU for PyTorch vs ONNX FP32 vs ONNX FP16
(onnxruntime), all on the same recorded expert observations, with a verdict against the latency budget::

    python bench/export_latency.py --threads 1 --steps 30 --budget-ms 100
    python bench/export_latency.py --heads case2 lstm-recon --keep out/exports   # keep the artifacts

Exit status 1 if a numerical check fails (FP32 bound 1e-4 on actions; FP16 bound 0.1, below the key dead-zone).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies.catalog import EXECUTION_MODES
from policies.heads import HEADS as HEAD_CLASSES
from policies.onnx_policy import OnnxPolicy
from policies.vla import build_vla_policy
from sim.deploy.onnx_export import ParityError, export_policy, measure_latency, record_observations

HEADS = tuple(h for h in HEAD_CLASSES if h != "robovlms")  # robovlms exports head-only on Kosmos-2
PIXEL_STREAMS = {"image", "clip_image"}  # what the full (in-graph) lite encoder computes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", nargs="+", default=list(HEADS), choices=HEADS)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per runtime (default 30)")
    parser.add_argument("--check-steps", type=int, default=12, help="steps of the numerical check (default 12)")
    parser.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads (default 1)")
    parser.add_argument("--budget-ms", type=float, default=100.0, help="per-step budget (default 100 = 10 Hz)")
    parser.add_argument("--execution", default="first", choices=EXECUTION_MODES)
    parser.add_argument("--keep", default=None, help="write artifacts under this folder (default: a temp dir)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    obs = record_observations(max(args.steps, args.check_steps))
    print(f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}, "
          f"execution={args.execution}, {args.steps} timed steps, budget {args.budget_ms:g} ms (verdict on p95)")
    cols = (f"{'head':<16}{'fp32 MB':>8}{'fp16 MB':>8}{'diff fp32':>11}{'diff fp16':>11}"
            f"{'torch p50/p95':>16}{'onnx32 p50/p95':>17}{'onnx16 p50/p95':>17}  verdict torch/onnx32/onnx16")
    print(cols)
    status = 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        for head in args.heads:
            source = build_vla_policy(head, execution=args.execution)
            head_only = not set(source.frame_streams) <= PIXEL_STREAMS  # e.g. multimodal reads the instruction
            row, sizes, diffs, verdicts = {}, {}, {}, []
            row["torch"] = measure_latency(source, obs[:args.steps], budget_ms=args.budget_ms)
            for fp16 in (False, True):
                tag = "fp16" if fp16 else "fp32"
                try:
                    res = export_policy(head, out=root / f"{head}_{tag}", fp16=fp16, source_policy=source,
                                        head_only=head_only,
                                        observations=obs, check_steps=args.check_steps, num_threads=args.threads)
                except ParityError as exc:
                    print(f"{head} {tag}: {exc}")
                    status = 1
                    continue
                sizes[tag], diffs[tag] = res.size_mb, res.parity.max_abs_diff_actions
                pol = OnnxPolicy(res.model_path, execution=args.execution, text_backbone=source.backbone,
                                 num_threads=args.threads)
                row[tag] = measure_latency(pol, obs[:args.steps], budget_ms=args.budget_ms)
            cells = []
            for key in ("torch", "fp32", "fp16"):
                s = row.get(key)
                cells.append(f"{s.p50_ms:.1f}/{s.p95_ms:.1f}" if s else "-")
                verdicts.append(s.verdict if s else "-")
            print(f"{head:<16}{sizes.get('fp32', 0):>8.1f}{sizes.get('fp16', 0):>8.1f}"
                  f"{diffs.get('fp32', float('nan')):>11.2e}{diffs.get('fp16', float('nan')):>11.2e}"
                  f"{cells[0]:>16}{cells[1]:>17}{cells[2]:>17}  {'/'.join(verdicts)}", flush=True)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
