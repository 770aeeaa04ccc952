"""``sim.export --verify``: the exported artifact against the original policy in closed loop."""

from __future__ import annotations

import json

from sim.export import main


def test_verify_runs_both_policies_on_the_same_seeds(tmp_path, capsys):
    out = tmp_path / "lstm"
    code = main(["--policy", "lstm-recon", "--backbone", "tiny-kosmos2", "--head-only", "--out", str(out), "--threads", "1",
                 "--verify", "--verify-episodes", "2", "--verify-layouts", "1box_vert_left", "--verify-distances", "close"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads((out / "verify.json").read_text())
    assert report["verdict"] == "PASS" and report["max_combo_difference"] == 0
    assert report["latency_ms"] == 0.0  # no --latency-budget-ms: no measured latency to put in the loop
    assert report["success"]["pytorch"] == report["success"]["onnx"] and report["success"]["onnx"][1] == 2
    assert report["action_difference"]["max_abs_diff"] <= 1e-4
    assert report["action_difference"]["key_mismatch_rate"] == 0.0
    assert 0.0 <= report["action_difference"]["max_heading_diff_deg"] < 1.0
    summary = json.loads((out / "verify" / "summary.json").read_text())
    assert len(summary["policies"]) == 2 and "closed-loop parity PASS" in printed


def test_verify_refuses_a_single_episode_per_combo(tmp_path, capsys):
    """With one episode per combo 'within one episode' always holds, so such a check would prove nothing."""
    assert main(["--policy", "lstm-recon", "--out", str(tmp_path / "x"), "--verify", "--verify-episodes", "1"]) == 2
    assert "at least 2" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
