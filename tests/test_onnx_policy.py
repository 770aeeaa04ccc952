"""``OnnxPolicy`` behaves like the ``VLAPolicy`` it was exported from (history, chunk execution modes,
post-processing), rejects bad input, is reachable through the registry, and the deployment loader follows the
fallback order TensorRT -> ONNX -> PyTorch."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from policies import make_policy
from policies import onnx_artifact as oa
from policies import onnx_policy as op
from policies.vla import build_vla_policy
from sim.deploy import onnx_export as ex

try:
    from tests.conftest_vla import single_torch_thread
except ImportError:  # tests/ is not a package
    from conftest_vla import single_torch_thread  # noqa: F401


@pytest.fixture(scope="module")
def observations():
    """Nine steps of expert driving ("all" with a 3-action chunk predicts at steps 0, 3, 6 from 3 new frames)."""
    return ex.record_observations(9, seed=3)


HEAD = "clip-lstm-recon"  # window 8 over two pixel streams (image + clip_image)
SMALL = {"chunk_size": 3, "hidden_size": 64, "stream_dim": 32}


@pytest.fixture(scope="module")
def chunked(tmp_path_factory, observations):
    """A windowed head on lite with a 3-action chunk (so "all" feeds the graph several new frames at once)."""
    source = build_vla_policy(HEAD, head_overrides=SMALL)
    out = tmp_path_factory.mktemp("chunked")
    result = ex.export_policy(HEAD, out=out, source_policy=source, observations=observations, check_steps=4)
    return result, source


@pytest.mark.parametrize("execution", ["first", "all", "ensemble"])
def test_matches_vla_policy_in_every_execution_mode(chunked, observations, execution):
    result, _ = chunked
    ref = build_vla_policy(HEAD, head_overrides=SMALL, execution=execution)
    pol = op.OnnxPolicy(result.model_path, execution=execution)
    instruction = observations[0]["instruction"]
    ref.reset(instruction)
    pol.reset(instruction)
    for obs in observations:
        a_ref, a_onnx = ref.act(obs), pol.act(obs)
        np.testing.assert_allclose(a_onnx, a_ref, atol=1e-4)
        np.testing.assert_allclose(pol.last_chunk, ref.last_chunk, atol=1e-4)
    assert pol.num_predictions == ref.num_predictions
    assert len(pol.latencies_ms) == len(observations)
    # the first action is forced to zero as in VLAPolicy, and a new episode starts clean
    pol.reset(instruction)
    assert np.all(pol.act(observations[0]) == 0)


def test_defaults_come_from_the_sidecar(chunked):
    result, source = chunked
    pol = op.OnnxPolicy(result.model_path.parent)  # a folder resolves to DIR/model.onnx
    assert (pol.execution, pol.chunk_size, pol.action_dim, pol.window) == ("first", 3, 2, 8)
    assert pol.postprocess == source.postprocess
    no_clip = op.OnnxPolicy(result.model_path, clip=False, dead_zone=False)
    assert not no_clip.postprocess.clip and not no_clip.postprocess.dead_zone


def test_bad_input_is_rejected(chunked, observations):
    result, _ = chunked
    pol = op.OnnxPolicy(result.model_path)
    pol.reset("go")
    with pytest.raises(oa.ArtifactInputError, match="takes 224x224 frames"):
        pol.act({**observations[0], "image": np.zeros((120, 160, 3), np.uint8)})
    with pytest.raises(oa.ArtifactInputError, match="uint8"):
        pol.act({**observations[0], "image": np.zeros((224, 224, 3), np.float32)})
    with pytest.raises(oa.ArtifactMismatchError, match="window_size=8"):
        op.OnnxPolicy(result.model_path, window_size=4)
    with pytest.raises(ValueError, match="execution"):
        op.OnnxPolicy(result.model_path, execution="sometimes")


def test_registry_name(chunked, observations):
    result, _ = chunked
    pol = make_policy(f"onnx:{result.model_path}", execution="all")
    assert isinstance(pol, op.OnnxPolicy) and pol.name == f"onnx:{result.model_path}" and pol.runtime == "onnx"
    pol.reset(observations[0]["instruction"])
    assert pol.act(observations[0]).shape == (3,)


def test_head_only_policy_matches(tmp_path, observations):
    result = ex.export_policy("lstm-recon", backbone="tiny-kosmos2", head_only=True, out=tmp_path,
                              observations=observations, check_steps=3)
    ref = build_vla_policy("lstm-recon", backbone="tiny-kosmos2", execution="ensemble")
    pol = op.OnnxPolicy(result.model_path, execution="ensemble")
    ref.reset(observations[0]["instruction"])
    pol.reset(observations[0]["instruction"])
    for obs in observations[:6]:
        np.testing.assert_allclose(pol.act(obs), ref.act(obs), atol=1e-4)


# ---------------------------------------------------------------------------------------- fallback order


@pytest.fixture
def artifact(chunked, tmp_path):
    """A private copy of the exported artifact (tests add engines / remove files)."""
    result, _ = chunked
    for name in ("model.onnx", "model.json"):
        shutil.copy(result.model_path.parent / name, tmp_path / name)
    return tmp_path / "model.onnx"


class FakeTensorRTRunner:
    """Stands in for a TensorRT engine: runs the ONNX file with onnxruntime."""

    runtime = "tensorrt"

    def __init__(self, engine_path, trt):
        self.engine_path, self.trt = engine_path, trt
        self._ort = oa.OrtRunner(engine_path.with_suffix(".onnx"))

    def run(self, feeds):
        return self._ort.run(feeds)


def test_tensorrt_first_when_engine_and_module_exist(artifact, monkeypatch, caplog, observations):
    artifact.with_suffix(".engine").write_bytes(b"serialized engine")
    monkeypatch.setattr(op, "_import_tensorrt", lambda: "fake tensorrt module")
    monkeypatch.setattr(op, "TensorRTRunner", FakeTensorRTRunner)
    with caplog.at_level(logging.INFO, logger="policies.onnx_policy"):
        loaded = op.load_deployed_policy(artifact)
    assert loaded.runtime == "tensorrt" and loaded.policy.runtime == "tensorrt"
    assert loaded.policy.runner.trt == "fake tensorrt module"
    assert loaded.reasons == [f"tensorrt: taken: engine {artifact.with_suffix('.engine')}"]
    assert "policy runtime: tensorrt" in caplog.text
    loaded.policy.reset(observations[0]["instruction"])
    assert loaded.policy.act(observations[0]).shape == (3,)


def test_onnx_when_tensorrt_is_not_importable(artifact, monkeypatch, caplog):
    artifact.with_suffix(".plan").write_bytes(b"serialized engine")

    def no_tensorrt():
        raise ModuleNotFoundError("No module named 'tensorrt'")

    monkeypatch.setattr(op, "_import_tensorrt", no_tensorrt)
    with caplog.at_level(logging.INFO, logger="policies.onnx_policy"):
        loaded = op.load_deployed_policy(artifact.parent)
    assert loaded.runtime == "onnx" and isinstance(loaded.policy, op.OnnxPolicy)
    assert "engine model.plan found but tensorrt is not importable" in loaded.reasons[0]
    assert loaded.reasons[1].startswith("onnx: taken")
    assert "policy runtime: onnx" in caplog.text


def test_onnx_when_no_engine(artifact):
    loaded = op.load_deployed_policy(artifact)
    assert loaded.runtime == "onnx"
    assert "no engine" in loaded.reasons[0]


def test_pytorch_when_the_onnx_model_is_unusable(artifact, chunked, observations):
    artifact.write_bytes(b"not an onnx file")
    loaded = op.load_deployed_policy(artifact)
    assert loaded.runtime == "pytorch" and loaded.policy.runtime == "pytorch"
    assert "onnx: skipped" in loaded.reasons[1]
    assert loaded.reasons[2] == f"pytorch: taken: source {HEAD} on lite (seed 0)"
    # the rebuilt source policy is the exported one (same seed and head config)
    _, source = chunked
    pol = loaded.policy
    pol.reset(observations[0]["instruction"])
    source.reset(observations[0]["instruction"])
    for obs in observations[:3]:
        np.testing.assert_array_equal(pol.act(obs), source.act(obs))


def test_nothing_loads(tmp_path):
    with pytest.raises(oa.ArtifactError, match="no runtime could load it"):
        op.load_deployed_policy(tmp_path / "model.onnx")
    with pytest.raises(ValueError, match="unknown runtime"):
        op.load_deployed_policy(tmp_path, order=("tflite",))
