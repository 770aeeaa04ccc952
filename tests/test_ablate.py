"""``python -m sim.ablate``: a small spec end to end (tiny Kosmos-2, a few 64x64 episodes, one short evaluation
episode per variant), the table, resuming, spec errors, and the README's spec file with every idea."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

import sim.evaluation
import sim.training.supervised
from foundations.errors import ConfigError
from sim import ablate
from sim.training.ablation import load_spec, resolve_variant, run_ablation

try:
    from tests.conftest_vla import single_torch_thread  # noqa: F401  (module fixture)
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from conftest_vla import single_torch_thread  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
SMALL_SPEC = """
seed = 0
[data]
episodes = 4
image_size = "64x64"
layouts = ["1box_hori_left", "1box_hori_right"]
distances = ["close"]
[eval]
episodes_per_combo = 1
layouts = ["1box_hori_left"]
distances = ["close"]
max_steps = 6
[train]
policy = "case1"
backbone = "tiny-kosmos2"
epochs = 2
policy_args = { final_norm = false, hidden_dim = 16 }
[[variants]]
name = "baseline"
[[variants]]
name = "hard-negative"
idea = "30 % of the draws from the high-loss windows"
sampling = "hard-negative"
[[variants]]
name = "final-fixed"
policy = "final-fixed-recon"
strategy = "final-fixed"
loss = "final-fixed"
policy_args = { hidden_dim = 16 }
[[variants]]
name = "lora"
lora = { r = 4, alpha = 8 }
"""
COLUMNS = ("| variant | offline validation | closed-loop success [95% CI] | SPL | collision | side compliance | "
           "train time |")


def write_spec(tmp_path, text=SMALL_SPEC, name="small.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_small_spec_end_to_end_then_resume_skips_finished_variants(tmp_path, capsys, monkeypatch):
    spec_path, out = write_spec(tmp_path), tmp_path / "run"
    assert ablate.main([str(spec_path), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert COLUMNS in printed and (out / "table.md").read_text() in printed
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["baseline", "hard-negative", "final-fixed", "lora"]
    for row in rows:
        assert row["episodes"] == 1 and 0.0 <= row["val_mae"] < 2.0 and row["train_seconds"] >= 0
        assert (out / "variants" / row["variant"] / "eval" / "summary.json").is_file()
    assert "| final-fixed | " in printed and "- `hard-negative`: 30 % of the draws" in printed

    def refuse(*args, **kwargs):
        raise AssertionError("a finished variant was run again")

    monkeypatch.setattr(sim.training.supervised, "train", refuse)
    monkeypatch.setattr(sim.evaluation, "evaluate", refuse)
    again = run_ablation(load_spec(spec_path), out, progress=False)
    assert again.rows == rows and again.table == (out / "table.md").read_text()

    # an interrupted training: no summary, no result -> only that variant restarts, from a cleared folder
    lora = out / "variants" / "lora"
    (lora / "result.json").unlink()
    (lora / "train" / "summary.json").unlink()
    (lora / "train" / "stale.txt").write_text("left by the interrupted run")
    monkeypatch.undo()
    trained = []
    real_train = sim.training.supervised.train
    monkeypatch.setattr(sim.training.supervised, "train", lambda policy, *a, **k: trained.append(policy) or
                        real_train(policy, *a, **k))
    evaluated = []
    real_evaluate = sim.evaluation.evaluate
    monkeypatch.setattr(sim.evaluation, "evaluate", lambda cfg, **k: evaluated.append(k["resume"]) or
                        real_evaluate(cfg, **k))
    redone = run_ablation(load_spec(spec_path), out, progress=False)
    assert trained == ["case1"] and not (lora / "train" / "stale.txt").exists()
    assert evaluated == [False]  # a new checkpoint: evaluated afresh, not resumed from the old one's episodes

    # an interrupted evaluation (its episode not written yet): completed with evaluate's resume, no training
    base = out / "variants" / "baseline"
    (base / "result.json").unlink()
    (base / "eval" / "episodes.jsonl").write_text("")
    trained.clear()
    evaluated.clear()
    resumed = run_ablation(load_spec(spec_path), out, progress=False)
    assert trained == [] and evaluated == [True]
    assert {k: v for k, v in resumed.rows[0].items() if k != "eval_seconds"} == \
        {k: v for k, v in rows[0].items() if k != "eval_seconds"}
    assert [r["variant"] for r in redone.rows] == [r["variant"] for r in rows]
    assert redone.rows[3]["val_mae"] == rows[3]["val_mae"] and redone.rows[3]["successes"] == rows[3]["successes"]

    changed = write_spec(tmp_path, SMALL_SPEC.replace("episodes = 4", "episodes = 6"), "changed.toml")
    with pytest.raises(ConfigError, match="was started with other data settings"):
        run_ablation(load_spec(changed), out, progress=False)


@pytest.mark.parametrize("edit, message", [
    (("lr = ", "lrr = "), "variants.0.lrr: Extra inputs are not permitted"),
    (("name = \"baseline\"", "name = \"baseline\"\npolicy_args = { nope = 1 }"),
     "variant 'baseline': head case1 has no config field nope"),
    (("name = \"baseline\"", "name = \"baseline\"\nstrategy = \"fast\""), "unknown strategy 'fast'"),
    (("name = \"baseline\"", "name = \"baseline\"\npolicy_args = { dropout = \"high\" }"),
     "variant 'baseline': Case1Config.dropout must be a number"),
    (("name = \"lora\"", "name = \"baseline\""), "variant names must be unique"),
    (("episodes = 4", "episodes = \"many\""), "data.episodes"),
    (("distances = [\"close\"]", "distances = [\"near\"]"), "unknown distance 'near'"),
    (("[train]", "[train"), "small.toml"),
    (("episodes = 4", "episodes = 4\nfamily = \"mug\""), "unknown scenario family 'mug'"),
])
def test_bad_spec_files_are_one_line_errors(edit, message, tmp_path, capsys):
    text = SMALL_SPEC.replace("[[variants]]\nname = \"baseline\"", "[[variants]]\nname = \"baseline\"\nlr = 0.01", 1)
    spec = write_spec(tmp_path, text.replace(*edit, 1))
    assert ablate.main([str(spec), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_missing_spec_file(tmp_path, capsys):
    assert ablate.main([str(tmp_path / "none.toml")]) == 2
    assert "no such spec file" in capsys.readouterr().err


def test_the_readme_spec_holds_every_idea_of_the_notes():
    spec = load_spec(ROOT / "ablations" / "ideas.toml")
    runs = {v.name: resolve_variant(spec, v) for v in spec.variants}
    assert list(runs) == ["baseline", "final-fixed", "hybrid-ensemble", "adaptive-fusion", "distance-aug",
                          "hard-negative", "lora", "strategy-1", "strategy-2", "strategy-3"]
    assert all(r.backbone == "lite" and r.train_kwargs["seed"] == spec.seed for r in runs.values())
    base = runs["baseline"]
    assert base.policy == "case1" and base.head_overrides == {"final_norm": False, "dropout": 0.1}
    ff = runs["final-fixed"]
    assert ff.policy == "final-fixed-recon" and ff.train_kwargs["loss"] == "final-fixed"
    assert (ff.train_kwargs["lr"], ff.train_kwargs["weight_decay"], ff.train_kwargs["epochs"]) == (1e-3, 1e-5, 6)
    assert ff.head_overrides == {"dropout": 0.2, "action_dim": 3, "z_axis_weight": 0.05}
    ens = runs["hybrid-ensemble"]
    assert ens.policy == "hybrid-ensemble-recon" and ens.head_overrides["advanced"] == "case1"
    assert runs["adaptive-fusion"].head_overrides == {**base.head_overrides, "adaptive_fusion": True}
    assert runs["distance-aug"].train_kwargs["distance_augmentation"] == {"close": 8, "medium": 5, "far": 8}
    assert runs["hard-negative"].train_kwargs["sampling"] == "hard-negative"
    lora = runs["lora"].train_kwargs["lora"]
    assert (lora.r, lora.alpha, lora.dropout) == (32, 16, 0.1)
    for name, (dropout, lr, wd, epochs, patience) in {"strategy-1": (0.2, 1e-3, 1e-5, 6, 6),
                                                      "strategy-2": (0.3, 1e-4, 1e-4, 15, 15),
                                                      "strategy-3": (0.4, 5e-5, 1e-3, 20, 7)}.items():
        run = runs[name]
        assert run.policy == "case1" and run.head_overrides["dropout"] == dropout
        assert run.head_overrides["action_dim"] == 3
        assert [run.train_kwargs[k] for k in ("lr", "weight_decay", "epochs", "patience")] == [lr, wd, epochs, patience]
    for name in ("baseline", "adaptive-fusion", "distance-aug", "hard-negative", "lora"):  # one idea each
        kwargs = runs[name].train_kwargs
        assert (kwargs["lr"], kwargs["epochs"], kwargs["patience"]) == (1e-3, 60, 12)


def test_the_spec_chooses_the_family_of_the_data_and_of_the_sweep(tmp_path):
    """``[data] family`` generates there; the sweep follows it unless ``[eval] family`` says otherwise."""
    from sim.training.ablation import eval_config, load_spec

    basket = load_spec(write_spec(tmp_path, SMALL_SPEC.replace("episodes = 4", 'episodes = 4\nfamily = "basket"', 1)))
    assert basket.data.family == "basket"
    run = SimpleNamespace(policy="case1", backbone="tiny-kosmos2", eval_args={})
    assert eval_config(basket, run, tmp_path / "c.safetensors", tmp_path / "e").env.family == "basket"
    text = SMALL_SPEC.replace("episodes_per_combo = 1", 'episodes_per_combo = 1\nfamily = "cup"', 1)
    crossed = load_spec(write_spec(tmp_path, text.replace("episodes = 4", 'episodes = 4\nfamily = "basket"', 1)))
    assert eval_config(crossed, run, tmp_path / "c.safetensors", tmp_path / "e").env.family == "cup"


GOALNAV_SPEC = """
seed = 0
[data]
family = "corridor"
episodes = 3
image_size = "64x36"
layouts = ["center"]
distances = ["straight"]
[eval]
episodes_per_combo = 1
layouts = ["center"]
distances = ["straight"]
cadence = "deployed"
max_time = 8
[train]
policy = "exp73"
epochs = 2
window = 3
[[variants]]
name = "baseline"
[[variants]]
name = "every-call"
idea = "ground on every call"
eval_policy_args = { grounding_skip_n = 1, latencies = { grounder = 0.5 } }
[[variants]]
name = "exp49"
policy = "exp49"
window = 8
"""


def test_grounder_mlp_heads_share_what_they_train_alike_and_differ_at_evaluation(tmp_path, capsys):
    spec_path, out = write_spec(tmp_path, GOALNAV_SPEC, "corridor.toml"), tmp_path / "run"
    assert ablate.main([str(spec_path), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    table = (out / "table.md").read_text()
    assert "| overshoot |" in table and table.count("acc ") == 3
    rows = {r["variant"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert rows["baseline"]["val_acc"] == rows["every-call"]["val_acc"]  # one trained exp73 head, shared
    assert sorted(p.name.split("-")[0] for p in (out / "trained").iterdir()) == ["exp49", "exp73"]
    assert rows["every-call"]["eval_args"]["grounding_skip_n"] == 1
    episode = json.loads((out / "variants" / "every-call" / "eval" / "episodes.jsonl").read_text().splitlines()[0])
    assert set(episode["latency_steps_s"]) == {0.5547}  # every call grounds, at the variant's grounder latency
    sidecar = json.loads((out / "trained" / next(p.name for p in (out / "trained").iterdir()
                                                 if p.name.startswith("exp73")) / "head.json").read_text())
    assert sidecar["window"] == 3


@pytest.mark.parametrize("edit, message", [
    (("window = 8", "window = 8\nsampling = \"hard-negative\""), "has no training key sampling"),
    (("name = \"baseline\"", "name = \"baseline\"\neval_policy_args = { skip = 2 }"), "has no option skip"),
    (("family = \"corridor\"\nepisodes = 3\nimage_size = \"64x36\"\nlayouts = [\"center\"]\n"
      "distances = [\"straight\"]\n[eval]\n", "episodes = 3\n[eval]\nfamily = \"corridor\"\n"),
     "trains on corridor data"),
    (("policy = \"exp73\"", "policy = \"case1\""), "window is a grounder + MLP training key"),
    (("cadence = \"deployed\"", "cadence = \"warp\""), "warp"),
])
def test_bad_grounder_mlp_specs_are_one_line_errors(edit, message, tmp_path, capsys):
    spec = write_spec(tmp_path, GOALNAV_SPEC.replace(*edit, 1), "corridor.toml")
    assert ablate.main([str(spec), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_the_corridor_spec_resolves():
    spec = load_spec(ROOT / "ablations" / "corridor_exp73.toml")
    runs = {v.name: resolve_variant(spec, v) for v in spec.variants}
    assert runs["baseline"].policy == "exp73" and runs["baseline"].eval_args == {}
    trained = {r.training_key() for r in runs.values()}
    assert len(trained) < len(runs)  # the evaluation-only variants reuse the baseline's head
