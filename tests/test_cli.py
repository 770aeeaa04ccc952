"""The flags naming a VLA policy's weights are the same in every CLI and survive being handed from one to another."""

from __future__ import annotations

import pytest

from sim import eval as sim_eval
from sim import export as sim_export
from sim.cli import MODEL_SOURCE_FLAGS, model_source_argv, model_source_kwargs


def test_export_hands_every_model_source_flag_to_eval():
    given = ["--checkpoint", "run.ckpt", "--backbone", "kosmos2", "--backbone-path", "kosmos2_dir",
             "--clip-path", "clip.bin", "--key-map", "map.json", "--config", "robovlms.json"]
    exported = sim_export.build_parser().parse_args(["--policy", "robovlms", *given])
    evaluated = sim_eval.build_parser().parse_args(["--policy", "robovlms", *model_source_argv(exported)])
    assert model_source_kwargs(evaluated) == model_source_kwargs(exported)
    assert set(model_source_kwargs(exported)) == set(MODEL_SOURCE_FLAGS)


def test_unset_flags_are_not_handed_on():
    args = sim_eval.build_parser().parse_args(["--policy", "case2"])
    assert model_source_kwargs(args) == {}
    assert model_source_argv(args) == []
    assert model_source_kwargs(sim_export.build_parser().parse_args([])) == {"backbone": "auto"}


def test_bad_backbone_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        sim_eval.build_parser().parse_args(["--policy", "case2", "--backbone", "resnet"])
    assert exc.value.code == 2
    assert "--backbone" in capsys.readouterr().err

