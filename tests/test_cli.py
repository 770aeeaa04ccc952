"""The flags naming a VLA policy's weights are the same in every CLI and reach the policy the same way."""

from __future__ import annotations

from sim import eval as sim_eval
from sim import export as sim_export
from sim import serve as sim_serve
from sim.cli import MODEL_SOURCE_FLAGS, model_source_kwargs
from sim.evaluation.config import policy_spec


def test_every_command_reads_the_same_model_source_flags():
    given = ["--checkpoint", "run.ckpt", "--backbone", "kosmos2", "--backbone-path", "kosmos2_dir",
             "--clip-path", "clip.bin", "--key-map", "map.json", "--config", "robovlms.json", "--device", "cpu"]
    exported = sim_export.build_parser().parse_args(["--policy", "robovlms", *given])
    evaluated = sim_eval.build_parser().parse_args(["--policy", "robovlms", *given])
    assert model_source_kwargs(evaluated) == model_source_kwargs(exported)
    assert set(model_source_kwargs(exported)) == set(MODEL_SOURCE_FLAGS)
    spec = policy_spec("robovlms", model_source=model_source_kwargs(evaluated))
    assert {k: spec.kwargs[k] for k in MODEL_SOURCE_FLAGS} == model_source_kwargs(exported)


def test_unset_flags_are_not_handed_on():
    args = sim_eval.build_parser().parse_args(["--policy", "case2"])
    assert model_source_kwargs(args) == {}
    assert model_source_kwargs(sim_export.build_parser().parse_args([])) == {"backbone": "auto"}
    assert policy_spec("case2", model_source={"config": "x.json"}).kwargs == {"num_threads": 1}, \
        "--config is the robovlms config: not handed to other heads"
    assert policy_spec("expert", model_source={"checkpoint": "x"}).kwargs == {}, "VLA flags reach VLA policies only"


def test_bad_backbone_is_a_usage_error(capsys):
    assert sim_eval.main(["--policy", "case2", "--backbone", "resnet"]) == 2
    assert "--backbone" in capsys.readouterr().err


def test_policy_args_have_one_style(capsys):
    from sim.cli import parse_policy_args

    assert parse_policy_args(["seed=3", "case2@execution=all"]) == {"*": {"seed": 3}, "case2": {"execution": "all"}}
    assert sim_serve.main(["--policy", "random", "--policy-arg", "seed"]) == 2
    assert "[POLICY@]KEY=VALUE" in capsys.readouterr().err
