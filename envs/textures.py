"""Procedural floor textures for domain randomisation, written once per machine as small PNG files.

PyBullet's ``loadTexture`` reads from a file path; the textures are generated deterministically (fixed seeds)
so every process and every run sees the same pixels.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from foundations.errors import ConfigError
from foundations.files import atomic_write

TEXTURE_SIZE = 256
FLOOR_TEXTURES = ("wood", "tile", "concrete", "carpet")


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    coarse = rng.random((cells + 1, cells + 1))
    idx = np.linspace(0, cells, size, endpoint=False)
    i0 = idx.astype(int)
    f = idx - i0
    rows = coarse[i0] * (1 - f)[:, None] + coarse[i0 + 1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]


def make_texture(name: str, size: int = TEXTURE_SIZE) -> np.ndarray:
    """Return texture ``name`` as uint8 ``(size, size, 3)`` RGB.

    Raises:
        ConfigError: for a name outside :data:`FLOOR_TEXTURES`.
    """
    rng = np.random.default_rng(FLOOR_TEXTURES.index(name) if name in FLOOR_TEXTURES else 0)
    y, x = np.mgrid[0:size, 0:size] / size
    if name == "wood":
        grain = np.sin((y * 24 + 2 * _smooth_noise(rng, size, 6)) * np.pi) * 0.5 + 0.5
        planks = (np.floor(x * 4) % 2) * 0.05
        base = np.array([0.78, 0.64, 0.47])
        img = base * (0.9 + 0.06 * grain[..., None] + planks[..., None])
    elif name == "tile":
        grout = ((x * 4 % 1) < 0.03) | ((y * 4 % 1) < 0.03)
        base = np.array([0.80, 0.80, 0.78]) * (0.95 + 0.05 * _smooth_noise(rng, size, 16))[..., None]
        img = np.where(grout[..., None], np.array([0.45, 0.45, 0.45]), base)
    elif name == "concrete":
        n = 0.6 * _smooth_noise(rng, size, 32) + 0.4 * rng.random((size, size))
        img = np.array([0.70, 0.70, 0.68]) * (0.88 + 0.16 * n)[..., None]
    elif name == "carpet":
        n = rng.random((size, size))
        img = np.array([0.30, 0.33, 0.42]) * (0.8 + 0.35 * n)[..., None]
    else:
        raise ConfigError(f"unknown floor texture {name!r}; known: {FLOOR_TEXTURES}")
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def texture_dir() -> Path:
    """Folder holding the PNGs (``$MOBILE_VLA_SIM_CACHE`` or the system temp dir)."""
    root = Path(os.environ.get("MOBILE_VLA_SIM_CACHE", Path(tempfile.gettempdir()) / "mobile-vla-sim"))
    return root / f"textures-{TEXTURE_SIZE}"


def texture_files() -> dict[str, Path]:
    """Make sure every texture PNG exists (atomic write: temp file + rename) and return name -> path."""
    folder = texture_dir()
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in FLOOR_TEXTURES:
        path = folder / f"{name}.png"
        if not path.exists():
            with atomic_write(path) as tmp:
                iio.imwrite(tmp, make_texture(name))
        paths[name] = path
    return paths
