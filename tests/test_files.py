"""One atomic_write for every file the project writes; one error base every command maps to exit 2."""

from __future__ import annotations

import os

import pytest

from foundations.errors import ConfigError, MobileVLAError
from foundations.files import atomic_write, atomic_write_text, is_temp_file


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def test_atomic_write_text_gives_the_usual_permissions_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "summary.json"
    atomic_write_text(target, "{}\n")
    assert target.read_text() == "{}\n" and (target.stat().st_mode & 0o777) == (0o666 & ~_umask())
    with pytest.raises(TypeError):
        atomic_write_text(tmp_path / "bad.json", None)  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_a_failed_write_keeps_the_previous_version(tmp_path):
    target = tmp_path / "model.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_bytes(b"half")
        assert is_temp_file(tmp) and tmp.parent == tmp_path and tmp.suffix == ".bin"
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["model.bin"]


def test_suffix_for_writers_that_pick_a_format_by_extension(tmp_path):
    with atomic_write(tmp_path / "clip.mp4") as tmp:
        assert tmp.name.endswith(".mp4")
        tmp.write_bytes(b"x")
    assert (tmp_path / "clip.mp4").read_bytes() == b"x"
    assert not is_temp_file(tmp_path / "clip.mp4")


def test_every_error_class_of_the_project_derives_from_the_one_base():
    import importlib
    import inspect
    import pkgutil

    import envs
    import policies
    import scenarios
    import sim

    found = []
    for package in (scenarios, envs, policies, sim):
        for module_info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            try:
                module = importlib.import_module(module_info.name)
            except ImportError:  # an optional dependency (onnxruntime, stable-baselines3) is missing
                continue
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if cls.__module__ == module.__name__ and issubclass(cls, Exception):
                    found.append(cls)
    assert len(found) >= 20
    assert [c.__qualname__ for c in found if not issubclass(c, MobileVLAError)] == []
    assert issubclass(ConfigError, ValueError)
