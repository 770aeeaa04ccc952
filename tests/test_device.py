"""``--device``: one check on every command, passed to the VLA policies by ``policy_spec``, kept by ``--resume``;
backbone caches keyed by device and dtype; CPU stays float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from foundations.errors import ConfigError
from policies.backbones import make_backbone
from policies.backbones.base import autocast, device_key
from sim.cli import check_device
from sim.eval import build_parser, config_from_args
from sim.evaluation import EvalConfig


@pytest.fixture
def no_cuda(monkeypatch):
    """This machine as one without CUDA, whatever it has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_check_device_spellings(no_cuda):
    assert check_device("cpu") == "cpu"
    for bad in ("gpu", "CUDA", "cuda:", "cuda:x", "cpu:0", "", "mps"):
        with pytest.raises(ConfigError, match="must be cpu, cuda or cuda:N"):
            check_device(bad)
    with pytest.raises(ConfigError, match="no CUDA device"):
        check_device("cuda")


def test_check_device_index(two_gpus):
    assert check_device("cuda") == "cuda" and check_device("cuda:1") == "cuda:1"
    with pytest.raises(ConfigError, match=r"sees 2 CUDA device\(s\)"):
        check_device("cuda:2")


@pytest.mark.parametrize("module, argv", [
    ("sim.eval", ["--policy", "case2", "--layouts", "1box_vert_left", "--distances", "close"]),
    ("sim.train", ["--policy", "case2", "--data", "nowhere", "--out", "nowhere"]),
    ("sim.offline", ["--policy", "case2", "--data", "nowhere", "--out", "nowhere"]),
    ("sim.export", ["--policy", "case2", "--out", "nowhere"]),
    ("sim.serve", ["--policy", "case2", "--port", "0"]),
])
@pytest.mark.parametrize("device, message", [("cuda", "torch sees no CUDA device"),
                                             ("gpu", "must be cpu, cuda or cuda:N")])
def test_every_command_refuses_an_unusable_device(module, argv, device, message, no_cuda, tmp_path, monkeypatch,
                                                  capsys):
    import importlib

    monkeypatch.chdir(tmp_path)
    main = importlib.import_module(module).main
    assert main([*argv, "--device", device]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("error: --device")
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "runs").exists()  # nothing written


def test_device_reaches_vla_policies_only_and_resume_keeps_it(tmp_path):
    args = build_parser().parse_args(["--policy", "case2", "--policy", "expert", "--device", "cpu", "--layouts",
                                      "1box_vert_left", "--distances", "close", "--out", str(tmp_path / "run")])
    cfg = config_from_args(args)
    assert cfg.policy("case2").kwargs["device"] == "cpu"
    assert "device" not in cfg.policy("expert").kwargs  # the rule of the model-source flags
    (tmp_path / "run").mkdir()
    cfg.save(tmp_path / "run")
    assert EvalConfig.load(tmp_path / "run").policy("case2").kwargs["device"] == "cpu"
    default = config_from_args(build_parser().parse_args(["--policy", "case2", "--layouts", "1box_vert_left"]))
    assert "device" not in default.policy("case2").kwargs  # the policy's own default: cpu
    assert default.policy("case2").build().device == torch.device("cpu")


def test_backbone_cache_never_shares_a_model_across_devices():
    images = np.random.default_rng(0).integers(0, 255, (2, 56, 56, 3), dtype=np.uint8)
    for name in ("tiny-kosmos2", "lite"):
        cpu = make_backbone(name, device="cpu")
        before = cpu.encode_frames(images, ("image",))
        other = make_backbone(name, device="meta")  # a second device torch has without CUDA
        assert other is not cpu and make_backbone(name, device="cpu") is cpu
        model = cpu.model if name == "tiny-kosmos2" else cpu.image_model
        assert {p.device.type for p in model.parameters()} == {"cpu"}
        assert torch.equal(cpu.encode_frames(images, ("image",)), before)  # the CPU instance still works as before


def test_device_key_and_autocast(two_gpus, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert device_key("cpu") == "cpu/torch.float32"
    assert device_key("cuda:1") == "cuda:1/torch.bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert device_key("cuda:1") == "cuda:1/torch.float16"  # another dtype: another cache entry
    with autocast("cpu"):
        x = torch.ones(2, 2) @ torch.ones(2, 2)
    assert x.dtype == torch.float32
