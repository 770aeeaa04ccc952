"""Which PyBullet renderer draws the camera images: ``tiny``, ``egl`` or ``auto`` (the one rule, used by the env,
``sim.eval``, ``sim.generate``, ``sim.preview`` and ``sim.offline``).

- ``tiny``: ``ER_TINY_RENDERER``, PyBullet's CPU software rasteriser (no dependency).
- ``egl``: ``ER_BULLET_HARDWARE_OPENGL`` through PyBullet's own ``eglRenderer`` plugin, loaded per physics client
  (so each worker process loads its own): the machine's EGL/OpenGL, a GPU's where there is one, else Mesa's
  ``llvmpipe`` on the CPU (Debian: ``apt-get install libegl1 libgl1-mesa-dri``). No Python dependency.
- ``auto``: per image size, the faster of the two on a CPU-only machine: ``egl`` from :data:`AUTO_EGL_MIN_PIXELS`
  pixels per frame up, ``tiny`` below; ``tiny`` (with one line on stderr) when EGL cannot start.

The camera model is the same (the same view and projection matrices go to both: ``tests/test_env.py`` projects a
known point with :mod:`envs.camera` and finds it at the same pixel in both renderers); the frames differ in shading
(see the README's environment section).
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from collections.abc import Sequence
from typing import Literal, get_args

from foundations.errors import ConfigError

Renderer = Literal["tiny", "egl", "auto"]
RENDERERS: tuple[str, ...] = get_args(Renderer)

#: ``auto`` renders with EGL from this many pixels per frame up. Our measurement on this 2-core machine (Mesa 22.3
#: llvmpipe, 2026-12-04, render-only frames/s of the onboard camera in the 2-box scene, tiny / egl): 224x224
#: 82.7 / 32.9, 320x240 55.6 / 31.9, 400x300 30.9 / 30.5 (a tie), 480x360 25.3 / 35.8, 640x360 14.0 / 38.5,
#: 1280x720 2.8 / 22.5. The crossover is at 400x300 = 120 k px; 130 k px puts it on the tiny side of the tie.
AUTO_EGL_MIN_PIXELS = 130_000


def check_renderer(value: str, name: str = "renderer") -> str:
    """``value`` if it is one of :data:`RENDERERS`.

    Raises:
        ConfigError: any other value (one line naming ``name`` and the choices).
    """
    if value not in RENDERERS:
        raise ConfigError(f"{name} must be one of {', '.join(RENDERERS)}, got {value!r}")
    return value


def egl_plugin_path() -> str | None:
    """The file of PyBullet's ``eglRenderer`` plugin module, or None when this pybullet has none."""
    spec = importlib.util.find_spec("eglRenderer")
    return None if spec is None else spec.origin


def load_egl(client: int) -> int:
    """Load the EGL plugin into the PyBullet ``client``; returns its plugin id (for ``p.unloadPlugin``).

    Raises:
        RuntimeError: no plugin in this pybullet, or EGL cannot start (no libEGL, no device).
    """
    from envs.bullet import p, quiet_c_output

    path = egl_plugin_path()
    if path is None:
        raise RuntimeError("this pybullet has no eglRenderer plugin")
    with quiet_c_output():
        plugin = p.loadPlugin(path, "_eglRendererPlugin", physicsClientId=client)
    if plugin < 0:
        raise RuntimeError("pybullet could not load its eglRenderer plugin (no libEGL / libGL, or no EGL device: "
                           "apt-get install libegl1 libgl1-mesa-dri)")
    return plugin


@functools.cache
def egl_error() -> str | None:
    """Why EGL cannot render here (None when it can): loads the plugin into a throwaway client and renders one
    8x8 frame. Cached per process."""
    from envs.bullet import p, quiet_c_output

    client = p.connect(p.DIRECT)
    try:
        plugin = load_egl(client)
        with quiet_c_output():
            p.getCameraImage(8, 8, renderer=p.ER_BULLET_HARDWARE_OPENGL, physicsClientId=client)
            p.unloadPlugin(plugin, physicsClientId=client)
    except Exception as exc:  # noqa: BLE001 - any failure means: no EGL here
        return f"{type(exc).__name__}: {exc}"
    finally:
        with quiet_c_output():
            p.disconnect(client)
    return None


@functools.cache
def _say_fallback(reason: str) -> None:
    print(f"renderer auto: EGL cannot start ({reason}); rendering with tiny", file=sys.stderr)


def choose_renderer(value: str, image_size: Sequence[int]) -> str:
    """The renderer that draws ``image_size`` = ``(width, height)`` px frames: ``"tiny"`` or ``"egl"``.

    ``tiny`` and ``egl`` are returned as given; ``auto`` is ``egl`` from :data:`AUTO_EGL_MIN_PIXELS` up when EGL
    starts here (:func:`egl_error`; otherwise one line on stderr, once per process), else ``tiny``.

    Raises:
        ConfigError: ``value`` is not one of :data:`RENDERERS`.
    """
    check_renderer(value)
    if value != "auto":
        return value
    width, height = image_size
    if width * height < AUTO_EGL_MIN_PIXELS:
        return "tiny"
    reason = egl_error()
    if reason is not None:
        _say_fallback(reason)
        return "tiny"
    return "egl"
