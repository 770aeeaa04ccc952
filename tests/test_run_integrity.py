"""Issue 27: killing a command ends its workers (SIGTERM, SIGKILL, Ctrl-C); a run is counted once (the run folder's
lock, a new run only in a new or empty folder, a resumed run's records checked, no repeated names); no private API
of a dependency unless it is pinned to the releases it was tested on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from policies.registry import REGISTERED_ENV
from sim.eval import main
from sim.evaluation import read_records
from sim.evaluation.runner import LOCK_FILE, episode_seed
from tests.test_robustness import SWEEP  # registers test_faulty (tests.test_robustness:FaultyPolicy)

#: One layout x two distances x two episodes; the episode of this seed blocks for a minute at its second step.
BLOCKED = episode_seed(0, "1box_vert_left", "far", 1)


def _start(module: str, *args: str) -> subprocess.Popen:
    """``python -m module args`` with its output on pipes, as a caller that reads them would run it."""
    return subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, REGISTERED_ENV: os.environ[REGISTERED_ENV]})


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _descendants(proc: subprocess.Popen) -> list[psutil.Process]:
    try:
        return psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _blocked_eval(run) -> tuple[subprocess.Popen, list[psutil.Process]]:
    """A ``sim.eval`` on two workers whose three other episodes are recorded and one blocks; its worker processes
    (and the resource tracker) once they are all running."""
    proc = _start("sim.eval", "--policy", "test_faulty", "--policy-arg", "mode=block", "--policy-arg",
                  f"seed={BLOCKED}", *SWEEP, "--workers", "2", "--out", str(run))
    _wait_for(lambda: len(read_records(run / "episodes.jsonl")) == 3 or proc.poll() is not None, 120,
              "the three episodes that do not block")
    assert proc.poll() is None, proc.communicate()
    children = _descendants(proc)
    assert len([c for c in children if "python" in c.name().lower()]) >= 2, "the workers run"
    return proc, children


def _assert_all_ended(children: list[psutil.Process], timeout: float = 10) -> None:
    _, alive = psutil.wait_procs(children, timeout=timeout)
    assert not alive, f"still running: {[(p.pid, p.cmdline()[-2:]) for p in alive]}"


def test_sigterm_stops_the_evaluation_as_ctrl_c_does_and_ends_its_workers(tmp_path):
    run = tmp_path / "run"
    proc, children = _blocked_eval(run)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)  # never waits on a worker holding the pipes
    assert proc.returncode == 143, err
    assert b"Traceback" not in err and f"--resume {run}".encode() in out
    _assert_all_ended(children)
    assert len(read_records(run / "episodes.jsonl")) == 3, "the finished episodes are kept"


def test_sigkill_of_the_evaluation_ends_its_workers_and_the_callers_pipes(tmp_path):
    proc, children = _blocked_eval(tmp_path / "run")
    proc.kill()
    proc.communicate(timeout=30)  # the workers and the resource tracker hold the pipes until they end
    _assert_all_ended(children)


def test_sigkill_of_data_generation_ends_its_workers(tmp_path):
    out = tmp_path / "data"
    proc = _start("sim.generate", "--out", str(out), "--episodes", "40", "--workers", "2", "--image-size", "64x64",
                  "--no-progress")
    _wait_for(lambda: any(out.glob("episode_*.h5")) or proc.poll() is not None, 120, "a first episode")
    assert proc.poll() is None, proc.communicate()
    children = _descendants(proc)
    assert len(children) >= 2
    proc.kill()
    proc.communicate(timeout=30)
    _assert_all_ended(children)


def test_ctrl_c_leaves_no_temporary_video(tmp_path):
    run = tmp_path / "run"
    proc = _start("sim.eval", "--policy", "test_faulty", "--policy-arg", "mode=block", *SWEEP[:-2], "--record", "all",
                  "--workers", "2", "--out", str(run))
    _wait_for(lambda: len(_descendants(proc)) >= 3 or proc.poll() is not None, 120, "the workers")
    time.sleep(1)
    (run / "videos").mkdir(exist_ok=True)
    half_written = run / "videos" / ".test_faulty_ep000.mp4.k2j3h4.tmp.mp4"  # as a worker stopped mid-write leaves
    half_written.write_bytes(b"\0" * 10)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert not half_written.exists() and not [p for p in (run / "videos").iterdir() if p.name.startswith(".")]


def test_sigterm_in_any_command_returns_143():
    from sim.cli import command

    @command
    def slow(argv=None) -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        return 0

    previous = signal.getsignal(signal.SIGTERM)
    assert slow() == 143
    assert signal.getsignal(signal.SIGTERM) == previous, "the handler is the command's only while it runs"


# ------------------------------------------------------------------------------------------- counted once
EXPERT = ["--policy", "expert", "--layouts", "1box_vert_left", "--distances", "close", "--episodes-per-combo", "2",
          "--image-size", "48x48", "--record", "none", "--workers", "1"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    assert main([*EXPERT, "--out", str(run)]) == 0
    return run


def _copy(run, tmp_path):
    import shutil

    return shutil.copytree(run, tmp_path / "copy")


def test_a_second_evaluation_of_a_held_run_folder_is_refused(finished_run, tmp_path, capsys):
    from filelock import FileLock

    run = _copy(finished_run, tmp_path)
    with FileLock(run / LOCK_FILE):  # another evaluation running in it
        assert main(["--resume", str(run)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "in use by another evaluation" in err and "\n" not in err
    assert main(["--resume", str(run)]) == 0


def test_a_new_run_needs_a_new_or_empty_folder(finished_run, tmp_path, capsys):
    assert main([*EXPERT, "--out", str(finished_run)]) == 2
    assert "already holds a run; resume it" in capsys.readouterr().err
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    assert main([*EXPERT, "--out", str(theirs)]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds files of its own (notes.txt)" in err and "\n" not in err
    assert sorted(p.name for p in theirs.iterdir()) == ["notes.txt"], "nothing written there"
    (theirs / "notes.txt").unlink()
    assert main([*EXPERT, "--out", str(theirs)]) == 0, "an empty folder is fine"


def _set(field, value):
    def edit(lines):
        record = json.loads(lines[1])
        record[field] = value
        lines[1] = json.dumps(record)
        return lines
    return edit


@pytest.mark.parametrize("edit, named", [
    (_set("status", "won"), ":2: status 'won' is not one of"),
    (_set("success", False), ":2: success False disagrees with status"),
    (_set("seed", 7), ":2: seed 7 of episode"),
    (_set("episode", 5), ":2: episode ('expert', '1box_vert_left', 'close', 5)"),
    (_set("policy", "case2"), ":2: episode ('case2'"),
    (_set("layout", ["1box_vert_left"]), ":2: episode"),
    (lambda lines: [lines[0], lines[0]], ":2: episode ('expert', '1box_vert_left', 'close', 0) is recorded twice"),
    (lambda lines: ["{not json", lines[1]], ":1: not a JSON record"),
    (lambda lines: [lines[0], "[1, 2]"], ":2: a record must be a JSON object"),
    (lambda lines: [lines[0], json.dumps({k: v for k, v in json.loads(lines[1]).items() if k != "steps"})],
     ":2: missing field(s) steps"),
])
def test_resume_refuses_records_that_do_not_belong_to_the_run(finished_run, tmp_path, capsys, edit, named):
    run = _copy(finished_run, tmp_path)
    # an unfinished run: resuming would run what is missing and count what is there
    (run / "summary.json").unlink()
    path = run / "episodes.jsonl"
    path.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")
    before = path.read_text()
    assert main(["--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}") and named in err and "\n" not in err
    assert path.read_text() == before, "nothing rewritten"


def test_resume_drops_a_last_line_cut_short_by_a_kill(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    path = run / "episodes.jsonl"
    first, second = path.read_text().splitlines()
    path.write_text(first + "\n" + second[: len(second) // 2])
    assert main(["--resume", str(run)]) == 0
    again = [json.loads(line) for line in path.read_text().splitlines()]
    assert again[0] == json.loads(first) and len(again) == 2, "the cut line dropped, its episode run again"
    assert {k: again[1][k] for k in ("episode", "seed", "status", "path")} == {
        k: json.loads(finished_run.joinpath("episodes.jsonl").read_text().splitlines()[1])[k]
        for k in ("episode", "seed", "status", "path")}


@pytest.mark.parametrize("flags", [["--seed", "0"], ["--episodes-per-combo", "3"], ["--policy", "expert"],
                                   ["--layouts", "1box_vert_left"], ["--record", "all"], ["--out", "elsewhere"]])
def test_resume_refuses_flags_it_would_ignore(finished_run, capsys, flags):
    assert main(["--resume", str(finished_run), "--workers", "1", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --resume completes the run with the settings of its config.json: " + flags[0])
    assert "\n" not in err


@pytest.mark.parametrize("flag", ["--layouts", "--distances"])
def test_a_name_given_twice_is_refused(tmp_path, capsys, flag):
    args = {"--layouts": ["1box_vert_left", "1box_vert_left"], "--distances": ["close", "far", "close"]}
    sweep = [*(["--layouts", "1box_vert_left"] if flag == "--distances" else []), flag, *args[flag]]
    assert main(["--policy", "expert", *sweep, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {flag}: ") and "given more than once" in err
    assert not (tmp_path / "run").exists()


def test_the_library_refuses_a_repeated_name_too():
    from foundations.errors import ConfigError
    from sim.evaluation import Sweep

    with pytest.raises(ConfigError, match="'close' given more than once"):
        Sweep(layouts=["1box_vert_left"], distances=["close", "close"])


def test_videos_live_in_the_run_folder(tmp_path):
    from sim.evaluation import OutputSettings

    assert OutputSettings(out=tmp_path / "a" / "run").video_dir == tmp_path / "a" / "run" / "videos"
    assert OutputSettings(out=tmp_path / "a" / "run").video_dir != OutputSettings(out=tmp_path / "b" / "run").video_dir


# --------------------------------------------------------------------------------------------- private APIs
def test_the_pool_reads_no_private_member_of_the_executor():
    import ast
    from pathlib import Path

    from sim.evaluation import pool

    tree = ast.parse(Path(pool.__file__).read_text())  # os._exit is public (documented)
    private = sorted({node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                      and node.attr.startswith("_") and not node.attr.startswith("__") and node.attr != "_exit"})
    strings = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and node.value == "_processes"]
    assert not private and not strings, f"private members read: {private or strings}"


def test_uvicorn_is_a_release_the_read_deadline_was_tested_on():
    """The server's read deadline subclasses uvicorn's h11 protocol (no public hook exists): the dependency is pinned
    with an upper bound, the installed release is inside it, and the members the subclass reads still exist."""
    import inspect
    from pathlib import Path

    import uvicorn
    from packaging.requirements import Requirement
    from uvicorn.protocols.http.h11_impl import H11Protocol

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    deps = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = next(Requirement(d) for d in deps if Requirement(d).name == "uvicorn")
    assert any(spec.operator == "<" for spec in pin.specifier), f"{pin}: no upper bound"
    assert pin.specifier.contains(uvicorn.__version__), f"uvicorn {uvicorn.__version__} is outside {pin}"
    source = inspect.getsource(H11Protocol)
    for member in ("self.cycle", "self.conn", "self.transport", "self.loop", "self.client", "response_complete",
                   "def connection_made", "def data_received", "def connection_lost"):
        assert member in source, f"uvicorn {uvicorn.__version__}'s H11Protocol has no {member}"
