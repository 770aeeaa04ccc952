"""Episode videos: onboard camera beside the top-down view, with instruction, step, action arrow and outcome.

Frames are drawn with Pillow and written as H.264 mp4 through imageio (imageio-ffmpeg), one frame per step.
The top-down views are rendered after the episode by placing the robot at each recorded pose (the rest of the
scene is static), so recording costs nothing while the policy runs. Text is drawn in Pillow's default font, or, for
text beyond Latin-1 (the corridor family's Korean instructions), in an installed TrueType font that covers it
(:func:`_font`; Debian's ``fonts-nanum``, which ``.ci/run`` installs).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from matplotlib import font_manager, ft2font
from PIL import Image, ImageDraw, ImageFont

from envs.bullet import p
from envs.keys import action_to_key
from envs.scene import Scene
from foundations.files import atomic_write

TOP_SIZE = (576, 324)
HEADER = 46
STATUS_COLOURS = {"success": (40, 170, 60), "collision": (220, 50, 40), "timeout": (230, 140, 20),
                  "out_of_bounds": (150, 60, 170), "overshoot": (150, 90, 40), "error": (120, 120, 120)}


# Families tried, in order, for text beyond Latin-1: Korean fonts of Debian's fonts-nanum, fonts-noto-cjk,
# fonts-unfonts-core and fonts-baekmuk, then DejaVu Sans (shipped inside matplotlib, so always there: Greek,
# Cyrillic, arrows). The first that has a glyph for every character of the text draws it.
FONT_FAMILIES = ("NanumGothic", "Noto Sans CJK KR", "Noto Sans KR", "UnDotum", "Baekmuk Gulim", "DejaVu Sans")
FONT_PACKAGE = "fonts-nanum"  # the Debian package named when no installed font covers the text


def _family_paths(manager: font_manager.FontManager) -> list[str]:
    """The font file ``manager`` holds for each of :data:`FONT_FAMILIES` that it knows, in that order."""
    paths = []
    for family in FONT_FAMILIES:
        try:
            paths.append(manager.findfont(font_manager.FontProperties(family=[family]), fallback_to_default=False))
        except ValueError:  # not installed
            pass
    return paths


@functools.lru_cache(maxsize=1)
def _rescanned_paths() -> tuple[str, ...]:
    """:func:`_family_paths` of a fresh scan of the system's fonts (~0.2 s), once per process: matplotlib's font
    cache (``~/.cache/matplotlib/fontlist-*.json``) is written once per matplotlib release, so it misses a font
    package installed after it (e.g. ``fonts-nanum`` installed after the first ``import matplotlib``)."""
    return tuple(_family_paths(font_manager.FontManager()))


@functools.lru_cache(maxsize=None)
def _charmap(path: str) -> frozenset[int]:
    """The code points the font file at ``path`` has a glyph for (its cmap, read by FreeType)."""
    return frozenset(ft2font.FT2Font(path).get_charmap())


@functools.lru_cache(maxsize=None)
def _covering_font(text: str) -> str | None:
    """Path of the first font of :data:`FONT_FAMILIES` that has a glyph for every non-space character of
    ``text``, looked up through matplotlib's font manager (its cache first, then one fresh scan); ``None`` when no
    installed one does."""
    needed = {ord(c) for c in text if not c.isspace()}
    for paths in (lambda: _family_paths(font_manager.fontManager), _rescanned_paths):
        for path in paths():
            if needed <= _charmap(path):
                return path
    return None


@functools.lru_cache(maxsize=1)
def _warn_no_font() -> None:
    """Warn, once per process, that text beyond Latin-1 is drawn in a font without its glyphs."""
    warnings.warn(f"no installed font has the glyphs of the video text (e.g. the corridor family's Korean "
                  f"instructions), so they are drawn as empty boxes: install one, e.g. `apt-get install {FONT_PACKAGE}`",
                  RuntimeWarning, stacklevel=3)


@functools.lru_cache(maxsize=None)
def _default_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


@functools.lru_cache(maxsize=None)
def _truetype(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def _font(size: int, text: str = "") -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """A font for drawing ``text`` at ``size`` (pixels, the em height).

    Latin-1 text (all of it but the corridor family's Korean instructions) gets Pillow's default font, as the
    videos always had; other text the first installed font of :data:`FONT_FAMILIES` that covers it, through
    matplotlib's font manager. When none does (no Korean font installed), Pillow's default font, which draws
    Hangul as empty boxes, and one ``RuntimeWarning`` per process naming the package to install
    (:data:`FONT_PACKAGE`). Fonts and look-ups are cached per process.

    Args:
        size: Font size in pixels.
        text: The text the font will draw (``""``: Latin-1 only).

    Returns:
        A Pillow font for :meth:`PIL.ImageDraw.ImageDraw.text`.
    """
    if all(ord(c) <= 0xFF for c in text):
        return _default_font(size)
    path = _covering_font(text)
    if path is None:
        _warn_no_font()
        return _default_font(size)
    return _truetype(path, size)


def _arrow(draw: ImageDraw.ImageDraw, centre: tuple[float, float], action: np.ndarray, length: float) -> None:
    """Arrow for ``[linear_x, linear_y]``: forward is up in the camera image, left is left."""
    x, y = float(action[0]), float(action[1])
    norm = math.hypot(x, y)
    cx, cy = centre
    draw.ellipse([cx - 5, cy - 5, cx + 5, cy + 5], outline=(255, 255, 0), width=2)
    if norm < 1e-6:
        return
    ex, ey = cx - length * y / norm, cy - length * x / norm
    draw.line([cx, cy, ex, ey], fill=(255, 255, 0), width=4)
    ang = math.atan2(ey - cy, ex - cx)
    for side in (-1, 1):
        a = ang + math.pi + side * 0.45
        draw.line([ex, ey, ex + 12 * math.cos(a), ey + 12 * math.sin(a)], fill=(255, 255, 0), width=4)


def render_topdown_frames(env, poses: Sequence[tuple[float, float, float]]) -> list[np.ndarray]:
    """Top-down views (uint8 ``(H, W, 3)``) with the robot placed at each pose ``(x, y, yaw)``."""
    base = env.unwrapped
    scene, spec = base.scene, base.spec_scene
    frames = []
    for x, y, yaw in poses:
        orn = p.getQuaternionFromEuler((0, 0, yaw))
        p.resetBasePositionAndOrientation(scene.robot_id, (x, y, 0.0), orn, physicsClientId=scene.client)
        frames.append(scene.render_topdown(spec, TOP_SIZE))
    return frames


def compose_frames(
    onboard: Sequence[np.ndarray],
    topdown: Sequence[np.ndarray],
    poses: Sequence[tuple[float, float, float]],
    actions: Sequence[np.ndarray],
    *,
    spec,
    title: str,
    instruction: str,
    status: str,
    keys: Sequence[str] | None = None,
) -> list[np.ndarray]:
    """Side-by-side frames with overlays; frame k shows the observation before action k (the last frame shows
    the final state and the outcome). ``keys``: what each action was executed as (the env's ``info["key"]``: a
    key, or a class in class mode); default: the key the robot maps it to."""
    project = Scene.topdown_projection(spec, TOP_SIZE)
    h = TOP_SIZE[1]
    small, big = _font(14), _font(30)
    title_font, instruction_font = _font(14, title), _font(14, instruction)
    out = []
    pixels = [project(x, y) for x, y, _ in poses]
    for k, (cam, top) in enumerate(zip(onboard, topdown)):
        cam_img = Image.fromarray(cam).resize((h, h), Image.BILINEAR)
        canvas = Image.new("RGB", (h + TOP_SIZE[0], h + HEADER), (20, 20, 24))
        canvas.paste(cam_img, (0, HEADER))
        canvas.paste(Image.fromarray(top), (h, HEADER))
        draw = ImageDraw.Draw(canvas)
        draw.text((6, 4), title, fill=(230, 230, 230), font=title_font)
        draw.text((6, 24), instruction, fill=(180, 200, 255), font=instruction_font)
        trail = [(u + h, v + HEADER) for u, v in pixels[: k + 1]]
        if len(trail) > 1:
            draw.line(trail, fill=(30, 120, 255), width=3)
        last = k == len(onboard) - 1
        if k < len(actions):
            action = actions[k]
            _arrow(draw, (h / 2, HEADER + h - 40), action, 45)
            key = keys[k] if keys is not None else action_to_key(action)
            label = f"step {k + 1}  {key}  [{action[0]:+.2f}, {action[1]:+.2f}, {action[2]:+.2f}]"
            draw.text((6, HEADER + 6), label, fill=(255, 255, 0), font=small)
        if last:
            colour = STATUS_COLOURS.get(status, (255, 255, 255))
            draw.rectangle([h + 8, HEADER + 8, h + 250, HEADER + 48], fill=colour)
            draw.text((h + 16, HEADER + 10), status.upper(), fill=(255, 255, 255), font=big)
        out.append(np.asarray(canvas))
    return out


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: float = 2.0) -> Path:
    """Write ``frames`` (uint8 RGB, equal sizes) as mp4, atomically (temp file + rename). Holds the last frame
    for a second so the outcome can be read."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = list(frames) + [frames[-1]] * max(1, int(fps))
    with atomic_write(path) as tmp:
        iio.imwrite(tmp, np.stack(frames), fps=fps, codec="libx264", macro_block_size=2)
    return path
