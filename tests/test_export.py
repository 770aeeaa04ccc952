"""``sim.export``: ONNX export of the whole per-step policy (lite) and of a head alone (tiny-kosmos2), the
sidecar, atomic writes, the numerical check (and its failure on a corrupted artifact), the CLI."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from policies.checkpoints import default_checkpoint
from policies.onnx_artifact import ARTIFACT_FORMAT, ArtifactMismatchError, ArtifactNotFoundError, read_spec
from policies.onnx_policy import OnnxPolicy
from sim import export as export_cli
from sim.deploy import onnx_export as ex

try:
    from tests.conftest_vla import single_torch_thread
except ImportError:  # tests/ is not a package
    from conftest_vla import single_torch_thread  # noqa: F401


@pytest.fixture(scope="module")
def observations():
    """Six steps of an expert episode in the simulator (224 x 224 frames)."""
    return ex.record_observations(6, seed=0)


@pytest.fixture(scope="module")
def case2_fp32(tmp_path_factory, observations):
    out = tmp_path_factory.mktemp("case2")
    return ex.export_policy("case2", out=out, observations=observations, check_steps=6)


def test_full_export_writes_model_and_sidecar(case2_fp32):
    r = case2_fp32
    assert r.model_path.name == "model.onnx" and r.model_path.is_file()
    assert r.sidecar_path == r.model_path.with_suffix(".json")
    assert sorted(p.name for p in r.model_path.parent.iterdir()) == ["model.json", "model.onnx"]  # no temp files
    side = json.loads(r.sidecar_path.read_text())
    assert side["format"] == ARTIFACT_FORMAT and side["kind"] == "full" and side["precision"] == "fp32"
    assert side["head"] == "case2" and side["backbone"] == "lite"
    assert (side["window_size"], side["effective_window"], side["chunk_size"], side["action_dim"]) == (8, 1, 1, 2)
    assert side["frame_streams"] == ["image", "clip_image"] and side["instruction_streams"] == ["text"]
    assert side["action_scale"] == pytest.approx(1.15)
    assert side["postprocess"]["clip_value"] == pytest.approx(1.5)
    assert side["image"]["normalisation"] == {"mean": [127.0] * 3, "std": [128.0] * 3,
                                              "units": "0..255 pixels, in the graph"}
    # no --checkpoint: the bundled case2 weights are exported, and the sidecar says so
    assert side["source"] == {"checkpoint": str(default_checkpoint("case2", "lite")), "checkpoint_format": "safetensors",
                              "seed": None, "clip_path": None, "key_map": None, "config": None}
    assert set(side["inputs"]) == {"frames", "history", "text"} and set(side["outputs"]) == {"actions", "features"}
    assert side["parity"]["passed"] is True
    # dynamic batch / new frames / past frames in the graph itself
    graph = onnx.load(str(r.model_path), load_external_data=False).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims["frames"] == ["batch", "new_frames", 224, 224, 3]
    assert dims["history"] == ["batch", "past_frames", 1280 + 512]  # image + the clip_image stand-in
    assert dims["text"] == ["batch", 384]
    assert oct(r.model_path.stat().st_mode & 0o777) != oct(0o600)  # not left with mkstemp's private mode


def test_fp32_parity_within_bound(case2_fp32):
    p = case2_fp32.parity
    assert p.passed and p.steps == 6
    assert p.max_abs_diff_actions <= 1e-4
    assert p.max_abs_diff_features <= 1e-3
    assert p.max_abs_diff_batch <= 1e-3


def test_fp16_export_reports_its_own_bound(tmp_path, observations):
    r = ex.export_policy("case1", out=tmp_path, fp16=True, observations=observations, check_steps=4)
    assert r.precision == "fp16" and r.sidecar["precision"] == "fp16"
    assert r.parity.bound_actions == ex.PARITY_BOUNDS["fp16"][0]
    assert 0 < r.parity.max_abs_diff_actions <= ex.PARITY_BOUNDS["fp16"][0]
    # half-precision weights: the file is about half the FP32 one (case1 FP32 ~ 17 MB)
    assert 7 < r.size_mb < 10
    # inputs / outputs stay float32 / uint8
    graph = onnx.load(str(r.model_path)).graph
    assert {i.name: i.type.tensor_type.elem_type for i in graph.output} == {
        "actions": onnx.TensorProto.FLOAT, "features": onnx.TensorProto.FLOAT}


def _corrupt(model_path, prefix="head."):
    """Add 0.5 to a head initializer of an ONNX file, in place: the final LayerNorm's bias when there is one
    (upstream weights barely move a LayerNorm(2) output), else the largest."""
    model = onnx.load(str(model_path))
    inits = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    head = [t for t in inits if t.name.startswith(prefix)] or inits
    final = [t for t in head if t.name == f"{prefix}final_norm.bias"]
    target = final[0] if final else max(head, key=lambda t: int(np.prod(t.dims)))
    arr = numpy_helper.to_array(target).copy() + np.float32(0.5)
    target.CopyFrom(numpy_helper.from_array(arr, target.name))
    onnx.save(model, str(model_path))
    return target.name


def test_numerical_check_fails_loudly_on_a_corrupted_artifact(case2_fp32, tmp_path, observations):
    for name in ("model.onnx", "model.json"):
        shutil.copy(case2_fp32.model_path.parent / name, tmp_path / name)
    ref = ex.build_source_policy(read_spec(tmp_path / "model.onnx"))
    assert ex.verify_artifact(tmp_path, observations[:3], reference=ref).passed  # intact copy passes
    _corrupt(tmp_path / "model.onnx")
    with pytest.raises(ex.ParityError, match="does not match PyTorch"):
        ex.verify_artifact(tmp_path, observations[:3], reference=ref)
    # and the runtime refuses the modified file by checksum
    with pytest.raises(ArtifactMismatchError, match="checksum"):
        OnnxPolicy(tmp_path / "model.onnx", text_backbone=ref.backbone)


def test_failed_check_writes_nothing(tmp_path, observations):
    with pytest.raises(ex.ParityError):
        ex.export_policy("case1", out=tmp_path, observations=observations[:2], bounds=(0.0, 0.0))
    assert list(tmp_path.iterdir()) == []


def test_head_only_export_with_tiny_kosmos2(tmp_path, observations):
    r = ex.export_policy("case4-recon", backbone="tiny-kosmos2", head_only=True, out=tmp_path,
                         observations=observations, check_steps=4)
    assert r.kind == "head-only" and r.parity.passed and r.parity.max_abs_diff_actions <= 1e-4
    assert r.parity.max_abs_diff_features is None
    side = r.sidecar
    assert set(side["inputs"]) == {"vision", "text"} and side["inputs"]["vision"]["shape"] == ["batch", 8, 32]
    assert side["image_encoder"] == {"runtime": "pytorch", "backbone": "tiny-kosmos2", "streams": ["image"]}
    assert (side["chunk_size"], side["image"]) == (5, None)


def test_full_export_refuses_a_python_preprocessed_backbone(tmp_path):
    with pytest.raises(ex.ExportError, match="--head-only"):
        ex.export_policy("case1", backbone="tiny-kosmos2", out=tmp_path)


def test_sidecar_errors(case2_fp32, tmp_path):
    shutil.copy(case2_fp32.model_path, tmp_path / "model.onnx")
    with pytest.raises(ArtifactNotFoundError, match="sidecar not found"):
        OnnxPolicy(tmp_path / "model.onnx")
    side = json.loads(case2_fp32.sidecar_path.read_text())
    side["chunk_size"] = 4
    side["sha256"] = None
    (tmp_path / "model.json").write_text(json.dumps(side))
    with pytest.raises(ArtifactMismatchError, match=r"actions: shape \[None, 1, 2\], sidecar implies \[None, 4, 2\]"):
        OnnxPolicy(tmp_path / "model.onnx")
    with pytest.raises(ArtifactNotFoundError, match="exported model not found"):
        OnnxPolicy(tmp_path / "missing.onnx")


def test_cli_export_and_check_only(tmp_path, observations, capsys):
    npz = tmp_path / "obs.npz"
    np.savez(npz, images=np.stack([o["image"] for o in observations[:3]]),
             instructions=np.array([o["instruction"] for o in observations[:3]]))
    out = tmp_path / "art"
    rc = export_cli.main(["--policy", "case3", "--out", str(out), "--observations", str(npz), "--check-steps", "3",
                  "--latency-budget-ms", "10000", "--latency-steps", "3", "--threads", "1"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "numerical check fp32: max abs diff actions" in text and "PASS" in text
    assert "latency pytorch" in text and "latency onnxruntime-cpu-fp32" in text
    side = json.loads((out / "model.json").read_text())
    assert set(side["latency"]) == {"pytorch", "onnx"} and side["latency"]["onnx"]["verdict"] == "PASS"
    assert export_cli.main(["--check-only", str(out), "--observations", str(npz)]) == 0
    assert "PASS" in capsys.readouterr().out
    assert export_cli.main(["--check-only", str(tmp_path / "nothing")]) == 2
    assert "exported model not found" in capsys.readouterr().err


def test_latency_verdict():
    assert ex.LatencyStats("onnx", 40.0, 90.0, 10, budget_ms=100).verdict == "PASS"
    assert ex.LatencyStats("onnx", 40.0, 120.0, 10, budget_ms=100).verdict == "FAIL"
    assert ex.LatencyStats("onnx", 40.0, 120.0, 10).verdict == "n/a"


def test_load_observations_rejects_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        ex.load_observations(tmp_path / "none.npz")
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        ex.load_observations(tmp_path / "bad.npz")
    os.remove(tmp_path / "bad.npz")


def test_policy_args_reach_the_exported_head_and_a_clash_with_a_flag_is_a_usage_error(tmp_path, capsys):
    out = tmp_path / "small"
    assert export_cli.main(["--policy", "lstm-recon", "--backbone", "tiny-kosmos2", "--head-only", "--out", str(out),
                            "--check-steps", "3", "--policy-arg", "hidden_size=16", "--threads", "1"]) == 0
    assert json.loads((out / "model.json").read_text())["head_config"]["hidden_size"] == 16
    assert export_cli.main(["--policy", "lstm-recon", "--out", str(tmp_path / "x"),
                            "--policy-arg", "window_size=4"]) == 2
    assert "--window-size" in capsys.readouterr().err
