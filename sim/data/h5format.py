"""The robot's H5 episode format in one place: the spec, an atomic writer and a validator.

Source: ``ROBOT_AND_DATA.md`` section 3 (the robot team's collector), section 2 (action labels). One file per
episode, ``N`` frames:

=========================  ===================  =======================  ==========================================
key                        shape                dtype                    content
=========================  ===================  =======================  ==========================================
``images``                 ``(N, H, W, 3)``     ``uint8``                camera frames, **BGR**, gzip (robot: 720x1280)
``actions``                ``(N, 3)``           ``float32``              ``[linear_x, linear_y, angular_z]``, gzip
``action_event_types``     ``(N,)``             variable-length UTF-8    ``episode_start`` / ``start_action`` /
                                                                         ``stop_action``
``language_instruction``   ``(1,)``             ``S256`` (UTF-8 bytes)   optional: added after collection
=========================  ===================  =======================  ==========================================

File attributes (all required): ``episode_name``, ``total_duration`` (s), ``num_frames``, ``action_chunk_size``
(8), ``obstacle_layout_type`` (``hori``/``vert``), ``time_period`` (dawn/morning/evening/night),
``collection_datetime``, ``collection_hour``, ``collection_minute``. Extra attributes are allowed (the
simulator adds ``sim_*`` ones); missing required ones are not.

Frame semantics (the collector's): frame 0 is the initial image with a zero action and ``episode_start``;
frame ``i >= 1`` is the image captured when press ``i`` was made (before executing it) with that press's label
and ``start_action`` (``stop_action`` with zeros for SPACE). So ``N = 1 + presses`` and frames 0 and 1 show the
same view.

File name: ``episode_YYYYMMDD_HHMMSS_{1box|2box}_{hori|vert}_{left|right}_{core|variant}_{close|medium|far}.h5``.

**The V6 layout** (the team's joystick collector of 2026-07, EdgeGroundVLA ``robovlm_nav/serve/mona_dashboard.py``
``DataCollectSession._save_episode_data``; the ``corridor`` family), told apart by its ``cx_position`` attribute as
the team does: the same ``images`` (BGR, gzip), ``actions`` (``[linear_x, linear_y, angular_z]``: ``linear_x``,
``linear_y`` in ``{0, +-1.15}``, ``angular_z`` continuous, ``+-1.15`` for a pure rotation) and
``action_event_types`` (``joystick``, ``joystick_neutral`` for the stick released (a stop), ``stop_inject``, and the
dashboard's other sources: ``joystick_A_<n>``, ``keyboard``) with one frame per published command (consecutive
stops de-duplicated) and the last image repeated ``stop_inject_n`` = 5 times with zeros and ``stop_inject``;
attributes: the nine above plus ``scenario`` (may be empty), ``cx_position``, ``cx_path``, ``stop_inject_n``;
``total_duration`` is the time to the stop, before the injected frames; ``obstacle_layout_type`` is ``hori``.
Name ``episode_YYYYMMDD_HHMMSS_{cx_position}_{cx_path}.h5``. ``language_instruction`` is optional here too (the
team's V6 files have none; the simulator writes the episode's unless ``--collector-format``).

Both :mod:`sim.data.generation` (writer) and :mod:`sim.data.dataset` / :mod:`sim.data.inspection` (readers) use
this module, so the writer and the checks cannot drift apart.
"""

from __future__ import annotations

import collections.abc
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from zlib_ng import zlib_ng

from envs.keys import ACTION_LABEL, KEY_ACTIONS
from foundations import files
from foundations.errors import ConfigError, MobileVLAError
from foundations.files import atomic_write

# --------------------------------------------------------------------------------------------- the spec
#: Frame size the robot's CSI camera records, ``(height, width)`` px (spec section 1 and 3).
ROBOT_IMAGE_HW = (720, 1280)
#: Event types of ``action_event_types`` (spec section 3).
EVENT_START = "episode_start"
EVENT_PRESS = "start_action"
EVENT_STOP = "stop_action"
EVENT_TYPES = (EVENT_START, EVENT_PRESS, EVENT_STOP)
#: ``action_chunk_size`` attribute value written by the collector.
ACTION_CHUNK_SIZE = 8
#: Byte length of the ``language_instruction`` strings (numpy ``S256``).
INSTRUCTION_BYTES = 256
#: gzip level: h5py's default for ``compression="gzip"``, which the collector used.
GZIP_LEVEL = 4
LAYOUT_TYPES = ("hori", "vert")
TIME_PERIODS = ("dawn", "morning", "evening", "night")
EPISODE_KINDS = ("core", "variant")
DISTANCES = ("close", "medium", "far")


@dataclass(frozen=True)
class DatasetSpec:
    """One required (or optional) dataset: ``shape`` with ``None`` for free dimensions (the first is ``N``)."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str  # "uint8", "float32", "vlen-utf8" or "S256"
    compressed: bool
    required: bool = True


#: Datasets of an episode file, spec section 3. ``images`` allows any ``H x W`` (synthetic files may be
#: smaller); :func:`check_episode` can insist on the robot's 720x1280.
DATASETS: tuple[DatasetSpec, ...] = (
    DatasetSpec("images", (None, None, None, 3), "uint8", compressed=True),
    DatasetSpec("actions", (None, 3), "float32", compressed=True),
    DatasetSpec("action_event_types", (None,), "vlen-utf8", compressed=False),
    DatasetSpec("language_instruction", (1,), f"S{INSTRUCTION_BYTES}", compressed=False, required=False),
)
DATASET_SPECS = {d.name: d for d in DATASETS}

#: Required file attributes and the Python type family of their value.
REQUIRED_ATTRS: dict[str, type] = {
    "episode_name": str,
    "total_duration": float,
    "num_frames": int,
    "action_chunk_size": int,
    "obstacle_layout_type": str,
    "time_period": str,
    "collection_datetime": str,
    "collection_hour": int,
    "collection_minute": int,
}

#: ``episode_YYYYMMDD_HHMMSS_[basket_]{nbox}_{hori|vert}_{left|right}_{core|variant}_{distance}.h5`` (``basket_``:
#: the 2026 set-up with the gray basket target and the brown pot obstacle).
FILENAME_RE = re.compile(
    r"^episode_(?P<date>\d{8})_(?P<time>\d{6})_(?P<basket>basket_)?(?P<nbox>[12]box)_(?P<layout_type>hori|vert)_"
    r"(?P<side>left|right)_(?P<kind>core|variant)_(?P<distance>close|medium|far)\.h5$"
)

#: Most frames an episode may declare (10 Hz for 1000 s; the robot's episodes hold 15-60): a file declaring more is
#: refused before anything is read, so a tiny crafted file cannot make a reader allocate gigabytes.
MAX_FRAMES = 10_000
#: Largest image side accepted (px); the robot's camera gives 1280x720.
MAX_IMAGE_SIDE = 4096
#: Largest absolute action value accepted (label units; the collector writes 0 and +-1.15).
MAX_ABS_ACTION = 10.0

#: The exact action rows the collector writes (spec section 2), float32.
LABEL_ROWS = np.unique(np.asarray(list(KEY_ACTIONS.values()), dtype=np.float32), axis=0)

# --------------------------------------------------------------------------------------------- the V6 layout
#: Injected stop frames at the end of a V6 file (``STOP_INJECT_N``, ``mona_dashboard.py``).
STOP_INJECT_N = 5
V6_EVENT_JOYSTICK = "joystick"
V6_EVENT_NEUTRAL = "joystick_neutral"
V6_EVENT_INJECT = "stop_inject"
#: Event types a V6 file may hold: the ``source`` values of the dashboard's ``publish_and_move``.
V6_EVENT_RE = re.compile(r"^(joystick|joystick_neutral|joystick_A_\d+|keyboard|stop_inject)$")
#: Attributes a V6 file has on top of :data:`REQUIRED_ATTRS`.
V6_EXTRA_ATTRS: dict[str, type] = {"scenario": str, "cx_position": str, "cx_path": str, "stop_inject_n": int}
#: ``episode_YYYYMMDD_HHMMSS_[scenario_]{cx_position}_{cx_path}.h5`` (``mona_dashboard.py``).
V6_FILENAME_RE = re.compile(r"^episode_(?P<date>\d{8})_(?P<time>\d{6})_(?:[A-Za-z0-9_]+_)?"
                            r"(?P<cx_position>(?:v5_)?(?:center|weak_left|strong_left|weak_right|strong_right|left|"
                            r"right))_(?P<cx_path>left_curve|straight|right_curve)\.h5$")


def is_v6(attrs: Mapping[str, Any]) -> bool:
    """Whether file attributes are of the V6 layout (the team's test: a ``cx_position`` attribute)."""
    return "cx_position" in attrs


def v6_filename(when: datetime, position: str, path: str) -> str:
    """``episode_YYYYMMDD_HHMMSS_{position}_{path}.h5``.

    Raises:
        ConfigError: a position or path the V6 name pattern cannot hold.
    """
    name = f"episode_{when:%Y%m%d_%H%M%S}_{position}_{path}.h5"
    if not V6_FILENAME_RE.match(name):
        raise ConfigError(f"cannot build a V6 file name from position={position!r} path={path!r}")
    return name


def v6_attributes(episode_name: str, total_duration: float, num_frames: int, position: str, path: str,
                  time_period: str, when: datetime) -> dict[str, Any]:
    """The V6 file attributes with the dashboard's value types (``scenario`` empty, ``obstacle_layout_type``
    ``hori``, ``stop_inject_n`` 5)."""
    return {**collector_attributes(episode_name, total_duration, num_frames, "hori", time_period, when),
            "scenario": "", "cx_position": position, "cx_path": path, "stop_inject_n": STOP_INJECT_N}


def v6_task(position: str, path: str) -> str:
    """The task sentence the team's LeRobot converter gives a V6 episode (EdgeGroundVLA
    ``scripts/convert/h5_v6_to_lerobot.py``): the instruction of a V6 file that stores none."""
    return (f"Navigate a {path.replace('_', ' ')} approach from the {position.replace('_', ' ')} extreme starting "
            "position toward the gray basket.")


class InvalidEpisodeError(MobileVLAError, ValueError):
    """An H5 episode file does not follow the format; ``str()`` names the file and every problem.

    Attributes:
        path: the offending file.
        problems: list of human-readable problems (at least one).
    """

    def __init__(self, path: str | os.PathLike, problems: Sequence[str]) -> None:
        self.path = Path(path)
        self.problems = list(problems) or ["invalid episode"]
        super().__init__(f"{self.path}: " + "; ".join(self.problems))


# --------------------------------------------------------------------------------------------- names
def episode_filename(when: datetime, layout: str, kind: str, distance: str, family: str = "cup") -> str:
    """``episode_YYYYMMDD_HHMMSS_[basket_]{layout}_{kind}_{distance}.h5`` (``layout`` like ``"1box_hori_left"``;
    ``basket_`` for the ``basket`` family, as the team named its 2026 files).

    Raises:
        ConfigError: if the result does not match :data:`FILENAME_RE` (unknown layout/kind/distance).
    """
    prefix = "basket_" if family == "basket" else ""
    name = f"episode_{when:%Y%m%d_%H%M%S}_{prefix}{layout}_{kind}_{distance}.h5"
    if not FILENAME_RE.match(name):
        raise ConfigError(f"cannot build a collector file name from layout={layout!r} kind={kind!r} "
                         f"distance={distance!r}: {name!r} does not match {FILENAME_RE.pattern}")
    return name


def parse_filename(path: str | os.PathLike) -> dict[str, str] | None:
    """Fields of a collector file name (``date, time, nbox, layout_type, side, kind, distance``, ``layout`` =
    ``"{nbox}_{layout_type}_{side}"`` and ``family``: ``"basket"`` for a ``basket_`` name, else ``"cup"``), or None
    if the name does not follow the pattern."""
    m = FILENAME_RE.match(Path(path).name)
    if not m:
        return None
    out = {k: v for k, v in m.groupdict().items() if k != "basket"}
    out["layout"] = f"{out['nbox']}_{out['layout_type']}_{out['side']}"
    out["family"] = "basket" if m["basket"] else "cup"
    return out


#: Instruction the team used when a file has no ``language_instruction`` (format string over ``side``).
FALLBACK_INSTRUCTION = "Navigate around obstacles and reach the front of the beverage bottle on the {side}"
#: Instruction when the file name names no side either.
FALLBACK_INSTRUCTION_NO_SIDE = "Navigate around obstacles and reach the front of the beverage bottle"


def instruction_from_filename(path: str | os.PathLike) -> str:
    """The team's rule for files without ``language_instruction``: the side is ``left`` if the file name
    contains ``_left_`` (or ends ``_left.h5``), ``right`` likewise; the instruction is
    :data:`FALLBACK_INSTRUCTION` with that side, or :data:`FALLBACK_INSTRUCTION_NO_SIDE` when neither appears.
    """
    name = Path(path).name
    for side in ("left", "right"):
        if f"_{side}_" in name or name.endswith(f"_{side}.h5"):
            return FALLBACK_INSTRUCTION.format(side=side)
    return FALLBACK_INSTRUCTION_NO_SIDE


# --------------------------------------------------------------------------------------------- writing
def encode_instruction(text: str) -> np.ndarray:
    """``(1,)`` ``S256`` array of the UTF-8 bytes of ``text``.

    Raises:
        ConfigError: the UTF-8 encoding is longer than 256 bytes.
    """
    raw = text.encode("utf-8")
    if len(raw) > INSTRUCTION_BYTES:
        raise ConfigError(f"instruction is {len(raw)} bytes in UTF-8, the format allows {INSTRUCTION_BYTES}")
    return np.array([raw], dtype=f"S{INSTRUCTION_BYTES}")


def decode_instruction(value: Any) -> str:
    """Inverse of :func:`encode_instruction` (accepts the dataset's value, bytes or str)."""
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0]
    if isinstance(value, bytes):
        value = value.rstrip(b"\0").decode("utf-8")
    return str(value)


def collector_attributes(
    episode_name: str,
    total_duration: float,
    num_frames: int,
    obstacle_layout_type: str,
    time_period: str,
    when: datetime,
) -> dict[str, Any]:
    """The required attributes with the collector's value types: ``collection_datetime`` is ISO-8601
    (``YYYY-MM-DDTHH:MM:SS``), ``collection_hour`` / ``collection_minute`` ints, ``total_duration`` in s."""
    return {
        "episode_name": str(episode_name),
        "total_duration": float(total_duration),
        "num_frames": int(num_frames),
        "action_chunk_size": ACTION_CHUNK_SIZE,
        "obstacle_layout_type": str(obstacle_layout_type),
        "time_period": str(time_period),
        "collection_datetime": when.isoformat(timespec="seconds"),
        "collection_hour": int(when.hour),
        "collection_minute": int(when.minute),
    }


@dataclass(frozen=True)
class EncodedFrames:
    """An episode's ``images`` already compressed: one zlib stream per frame (:func:`encode_frame`), each the chunk
    of one frame (``(1, H, W, 3)``) that HDF5's deflate filter decodes, so :func:`write_episode` writes them as they
    are (``write_direct_chunk``); the file is byte-identical to the one it writes from the frames themselves
    (``tests/test_h5format.py``). Build with :class:`FrameEncoder`.

    Attributes:
        height: frame height px.
        width: frame width px.
        chunks: ``N`` compressed frames (BGR, in file order).
        gzip_level: their deflate level.
    """

    height: int
    width: int
    chunks: tuple[bytes, ...]
    gzip_level: int = GZIP_LEVEL

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(N, H, W, 3)``: the ``images`` dataset's shape."""
        return (len(self.chunks), self.height, self.width, 3)


def encode_frame(frame_bgr: np.ndarray, gzip_level: int = GZIP_LEVEL) -> bytes:
    """One ``(H, W, 3)`` uint8 BGR frame as an ``images`` chunk: a zlib stream at ``gzip_level`` made by zlib-ng
    (``zlib_ng.compress``), the one deflate implementation of every ``images`` chunk this project writes.

    zlib-ng writes the same format as zlib (HDF5's gzip filter, h5py, the team's readers and :func:`zlib.decompress`
    read it) at the collector's level 4, but its matcher differs, so the bytes are not zlib's: measured on 1280x720
    EGL frames (2026-12-05), 11.8 ms and 240 kB a frame against zlib's 18.2 ms and 275 kB.
    """
    return zlib_ng.compress(np.ascontiguousarray(frame_bgr, dtype=np.uint8), gzip_level)


class FrameEncoder:
    """Compresses an episode's frames into ``images`` chunks while the next ones are rendered: :meth:`add` hands an
    **RGB** frame to one background thread (BGR conversion + :func:`encode_frame`; zlib-ng and numpy's copy release the
    GIL, so this runs beside the renderer), :meth:`frames` returns the :class:`EncodedFrames` in any order of the keys
    added (a key may repeat: V6's injected stop frames). A frame given again as the same object as the previous one
    (the collector's frames 0 and 1, the repeated last frame) reuses its chunk instead of compressing it twice.
    Use as a context manager (the thread ends on exit).
    """

    def __init__(self, gzip_level: int = GZIP_LEVEL) -> None:
        self.gzip_level = int(gzip_level)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="frame-encoder")
        self._futures: dict[Any, Future] = {}
        self._last: tuple[Any, Future] | None = None
        self._hw: tuple[int, int] | None = None
        self._bgr = np.empty((0,), np.uint8)  # the thread's BGR buffer, reused (zlib-ng copies what it reads)

    def add(self, key: Any, frame_rgb: np.ndarray) -> None:
        """Start compressing ``frame_rgb`` (uint8 ``(H, W, 3)`` RGB; kept unmodified) as frame ``key``.

        Raises:
            ConfigError: a frame of another size or type than the first.
        """
        if frame_rgb.dtype != np.uint8 or frame_rgb.ndim != 3 or frame_rgb.shape[-1] != 3:
            raise ConfigError(f"frames must be uint8 (H, W, 3), got {frame_rgb.dtype} {frame_rgb.shape}")
        self._hw = self._hw or frame_rgb.shape[:2]
        if frame_rgb.shape[:2] != self._hw:
            raise ConfigError(f"frame {key!r} is {frame_rgb.shape[:2]}, the first {self._hw}")
        if self._last is not None and self._last[0] is frame_rgb:
            future = self._last[1]
        else:
            future = self._pool.submit(self._encode_rgb, frame_rgb)
        self._futures[key], self._last = future, (frame_rgb, future)

    def _encode_rgb(self, frame_rgb: np.ndarray) -> bytes:
        if self._bgr.shape != frame_rgb.shape:
            self._bgr = np.empty_like(frame_rgb)
        for c in range(3):  # channel by channel: 4x faster than copying the reversed view at once
            self._bgr[..., c] = frame_rgb[..., 2 - c]
        return encode_frame(self._bgr, self.gzip_level)

    def frames(self, keys: Sequence[Any]) -> EncodedFrames:
        """The compressed frames ``keys`` (each added before) in this order; waits for them."""
        if self._hw is None:
            raise ConfigError("no frame was added")
        return EncodedFrames(self._hw[0], self._hw[1], tuple(self._futures[k].result() for k in keys),
                             self.gzip_level)

    def close(self) -> None:
        """Stop the compression threads (frames not started are dropped) and forget the frames."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._futures.clear()
        self._last = None

    def __enter__(self) -> FrameEncoder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def write_episode(
    path: str | os.PathLike,
    images_bgr: np.ndarray | EncodedFrames,
    actions: np.ndarray,
    events: Sequence[str],
    attrs: Mapping[str, Any],
    instruction: str | None = None,
    extra_attrs: Mapping[str, Any] | None = None,
    gzip_level: int = GZIP_LEVEL,
) -> Path:
    """Write one episode file atomically (:func:`foundations.files.atomic_write`).

    Args:
        path: final file path (``.h5``).
        images_bgr: uint8 ``(N, H, W, 3)`` frames in **BGR** order (compressed here, one chunk a frame, by
            :func:`encode_frame`), or the same already compressed (:class:`EncodedFrames` at ``gzip_level``:
            written as they are, the same bytes).
        actions: ``(N, 3)`` labels (cast to float32).
        events: ``N`` event types from :data:`EVENT_TYPES` (V6: :data:`V6_EVENT_RE`).
        attrs: the required attributes (see :func:`collector_attributes`; V6: :func:`v6_attributes`, whose
            ``cx_position`` makes the file V6: event types gzip-compressed as the dashboard writes them).
        instruction: written as ``language_instruction`` ``(1,)`` S256 when given.
        extra_attrs: additional attributes; dicts/lists are stored as JSON strings.
        gzip_level: gzip level of ``images`` and ``actions`` (1-9).

    Datasets are written with ``track_times=False`` so identical content gives identical bytes.
    A failure leaves no partial file behind (the temp file is removed) and never touches an existing ``path``
    until the new file is complete.

    Raises:
        ConfigError: inputs that do not follow the format (checked before anything is written).
    """
    path = Path(path)
    encoded = isinstance(images_bgr, EncodedFrames)
    if not encoded:
        images_bgr = np.asarray(images_bgr)
    actions = np.asarray(actions, dtype=np.float32)
    n = images_bgr.shape[0] if encoded or images_bgr.ndim else 0
    problems = []
    if encoded:
        if images_bgr.gzip_level != gzip_level:
            problems.append(f"frames compressed at gzip level {images_bgr.gzip_level}, the file's is {gzip_level}")
    elif images_bgr.dtype != np.uint8 or images_bgr.ndim != 4 or images_bgr.shape[-1] != 3:
        problems.append(f"images must be uint8 (N, H, W, 3), got {images_bgr.dtype} {images_bgr.shape}")
    if actions.shape != (n, 3):
        problems.append(f"actions must be ({n}, 3), got {actions.shape}")
    v6 = is_v6(attrs)
    known = (lambda e: bool(V6_EVENT_RE.match(e))) if v6 else (lambda e: e in EVENT_TYPES)
    if len(events) != n or not all(known(e) for e in events):
        problems.append(f"events must be {n} event types of the {'V6' if v6 else 'collector'} layout, got "
                        f"{list(events)[:5]}...")
    missing = (set(REQUIRED_ATTRS) | (set(V6_EXTRA_ATTRS) if v6 else set())) - set(attrs)
    if missing:
        problems.append(f"missing attributes {sorted(missing)}")
    elif int(attrs["num_frames"]) != n:
        problems.append(f"attribute num_frames={attrs['num_frames']} but {n} frames")
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))

    h, w = images_bgr.shape[1:3]
    if not encoded:
        images_bgr = EncodedFrames(h, w, tuple(encode_frame(frame, gzip_level) for frame in images_bgr), gzip_level)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as f:
        # one chunk a frame, compressed by encode_frame and written as it is; HDF5's gzip filter decodes it
        dset = f.create_dataset("images", shape=images_bgr.shape, dtype=np.uint8, chunks=(1, h, w, 3),
                                compression="gzip", compression_opts=gzip_level, track_times=False)
        for i, chunk in enumerate(images_bgr.chunks):
            dset.id.write_direct_chunk((i, 0, 0, 0), chunk, 0)
        f.create_dataset("actions", data=actions, compression="gzip", compression_opts=gzip_level,
                         track_times=False)
        f.create_dataset("action_event_types", data=np.array(list(events), dtype=object),
                         dtype=h5py.string_dtype("utf-8"), track_times=False,
                         **({"compression": "gzip", "compression_opts": gzip_level} if v6 else {}))
        if instruction is not None:
            f.create_dataset("language_instruction", data=encode_instruction(instruction), track_times=False)
        for key, value in {**attrs, **(extra_attrs or {})}.items():
            if isinstance(value, (dict, list, tuple)):
                value = json.dumps(value, sort_keys=True)
            f.attrs[key] = value
    return path


def is_temp_file(path: str | os.PathLike) -> bool:
    """True for the temporary file of an episode a killed writer may leave behind (:mod:`foundations.files`)."""
    return Path(path).name.startswith(".episode_") and files.is_temp_file(path)


# --------------------------------------------------------------------------------------------- checking
def _attr_type_ok(value: Any, kind: type) -> bool:
    if kind is str:
        return isinstance(value, (str, bytes, np.bytes_, np.str_))
    if kind is int:
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    return isinstance(value, kind)


def _as_str(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def check_episode(path: str | os.PathLike, strict: bool = False,
                  image_hw: tuple[int, int] | None = None) -> list[str]:
    """Every problem of one episode file (empty list = valid). Never raises for a bad file.

    Structural checks (always): the file is HDF5 and readable at its first and last frame (truncation); required
    datasets with the spec's dtype, rank and trailing shape; ``images``/``actions`` gzip; equal ``N`` across
    datasets, ``1 <= N <= MAX_FRAMES`` and images at most ``MAX_IMAGE_SIDE`` px (checked before any data is
    read); finite actions within ``+-MAX_ABS_ACTION``; ``language_instruction`` ``(1,)`` S256 valid UTF-8 when
    present; event types from :data:`EVENT_TYPES`; required attributes present with the right value type and
    ``num_frames == N``.

    ``strict`` adds: every image frame is read (a corrupt chunk in the middle is found; memory stays one frame),
    and, for synthetic files, every action row is a key label (spec section 2); frame 0 is
    ``episode_start`` with zeros; ``stop_action`` rows are zeros; ``action_chunk_size == 8``;
    ``obstacle_layout_type`` / ``time_period`` from the spec's vocabularies; ``language_instruction``
    present; the file name follows :data:`FILENAME_RE`.

    A V6 file (a ``cx_position`` attribute) is checked against its own layout (module doc): its event types, its
    four further attributes; ``strict``: ``linear_x``/``linear_y`` in ``{0, +-1.15}``, ``angular_z`` within
    ``+-1.15``, the last ``stop_inject_n`` frames zeros with ``stop_inject`` (and no other), stops
    (``joystick_neutral``) zero, ``action_chunk_size == 8``, ``obstacle_layout_type == "hori"``, the file name
    follows :data:`V6_FILENAME_RE`; ``language_instruction`` is not required.

    ``image_hw``: also require this ``(H, W)`` frame size (the robot's is :data:`ROBOT_IMAGE_HW`).
    """
    path = Path(path)
    problems: list[str] = []
    if not path.is_file():
        return ["not a file"]
    if not h5py.is_hdf5(path):
        return ["not an HDF5 file"]
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        return [f"cannot open as HDF5 (truncated or corrupt?): {exc}"]
    try:
        with f:
            _check_open_episode(f, path, problems, strict, image_hw)
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:  # whatever else h5py meets in the file
        problems.append(f"unreadable ({type(exc).__name__}: {exc})")
    return problems


def _check_open_episode(f: h5py.File, path: Path, problems: list[str], strict: bool,
                        image_hw: tuple[int, int] | None) -> None:
    """The body of :func:`check_episode` on the open file ``f``: appends to ``problems``."""
    v6 = is_v6(f.attrs)
    lengths: dict[str, int] = {}
    for spec in DATASETS:
        link = f.get(spec.name, getlink=True)
        if isinstance(link, (h5py.SoftLink, h5py.ExternalLink)):  # may dangle, loop or point outside the file
            target = link.path if isinstance(link, h5py.SoftLink) else f"{link.filename}:{link.path}"
            problems.append(f"'{spec.name}' is {'a soft' if isinstance(link, h5py.SoftLink) else 'an external'} "
                            f"link (to {target}), not a dataset stored in the file")
            continue
        if spec.name not in f:
            if spec.required:
                problems.append(f"missing dataset '{spec.name}'")
            elif strict and not v6:
                problems.append(f"missing dataset '{spec.name}' (required for synthetic files)")
            continue
        ds = f[spec.name]
        if not isinstance(ds, h5py.Dataset):
            problems.append(f"'{spec.name}' is not a dataset")
            continue
        if spec.dtype == "vlen-utf8":
            info = h5py.check_string_dtype(ds.dtype)
            dtype_ok = info is not None and info.length is None and info.encoding == "utf-8"
            shown = f"{ds.dtype} ({'vlen ' + info.encoding if info and info.length is None else 'not vlen utf-8'})"
        else:
            dtype_ok = ds.dtype == np.dtype(spec.dtype)
            shown = str(ds.dtype)
        if not dtype_ok:
            problems.append(f"dataset '{spec.name}' has dtype {shown}, expected {spec.dtype}")
        if len(ds.shape) != len(spec.shape) or any(
            want is not None and got != want for got, want in zip(ds.shape, spec.shape)
        ):
            want = "(" + ", ".join("N" if i == 0 and w is None else ("*" if w is None else str(w))
                                   for i, w in enumerate(spec.shape)) + ("," if len(spec.shape) == 1 else "") + ")"
            problems.append(f"dataset '{spec.name}' has shape {ds.shape}, expected {want}")
            continue
        if spec.compressed and ds.compression != "gzip":
            problems.append(f"dataset '{spec.name}' is not gzip-compressed (compression={ds.compression})")
        if spec.name != "language_instruction":
            lengths[spec.name] = ds.shape[0]
    if lengths and len(set(lengths.values())) > 1:
        problems.append(f"datasets disagree on the number of frames: {lengths}")
    n = lengths.get("images", lengths.get("actions"))
    if n == 0:
        problems.append("episode has no frames")
    shape = f["images"].shape if "images" in lengths else ()
    if image_hw is not None and len(shape) == 4 and tuple(shape[1:3]) != tuple(image_hw):
        problems.append(f"images are {shape[1]}x{shape[2]} (HxW), expected {image_hw[0]}x{image_hw[1]}")
    too_big = [f"'{name}' declares {size} frames" for name, size in lengths.items() if size > MAX_FRAMES]
    if len(shape) == 4 and max(shape[1:3]) > MAX_IMAGE_SIDE:
        too_big.append(f"images of {shape[1]}x{shape[2]} px")
    if too_big:  # refuse before reading: such sizes cannot come from the robot, only from a broken file
        problems.append(f"{', '.join(too_big)}: more than this reader accepts ({MAX_FRAMES} frames, "
                        f"{MAX_IMAGE_SIDE} px)")
        return

    # Read what is cheap in full and the first and last image chunks (all of them in strict mode).
    actions = events = None
    try:
        if "actions" in lengths:
            actions = np.asarray(f["actions"][()], dtype=np.float32)
            if not np.all(np.isfinite(actions)):
                problems.append("actions contain NaN or inf")
            elif actions.size and np.abs(actions).max() > MAX_ABS_ACTION:
                problems.append(f"actions reach {np.abs(actions).max():.3g}, beyond +-{MAX_ABS_ACTION:g} (labels "
                                "are 0 and +-1.15)")
        if "action_event_types" in lengths:
            events = [_as_str(e) for e in f["action_event_types"][()]]
            if v6:
                bad = sorted({e for e in events if not V6_EVENT_RE.match(e)})
                expected = V6_EVENT_RE.pattern
            else:
                bad, expected = sorted(set(events) - set(EVENT_TYPES)), list(EVENT_TYPES)
            if bad:
                problems.append(f"unknown action_event_types {bad}; expected {expected}")
        if "images" in lengths and n:
            f["images"][n - 1]
            f["images"][0]
            for i in range(1, n - 1) if strict else ():
                f["images"][i]
        if "language_instruction" in f and f["language_instruction"].shape == (1,):
            try:
                decode_instruction(f["language_instruction"][()])
            except UnicodeDecodeError:
                problems.append("language_instruction is not valid UTF-8")
    except (OSError, ValueError, RuntimeError) as exc:
        problems.append(f"data unreadable (truncated or corrupt?): {exc}")

    attrs = dict(f.attrs)
    for key, kind in {**REQUIRED_ATTRS, **(V6_EXTRA_ATTRS if v6 else {})}.items():
        if key not in attrs:
            problems.append(f"missing attribute '{key}'")
        elif not _attr_type_ok(attrs[key], kind):
            problems.append(f"attribute '{key}' = {attrs[key]!r} is not {kind.__name__}")
    declared = attrs.get("num_frames")
    if n is not None and declared is not None and _attr_type_ok(declared, int) and int(declared) != n:
        problems.append(f"attribute num_frames = {int(attrs['num_frames'])} but the datasets hold {n} frames")

    if strict and v6:
        problems += _v6_strict_problems(path, actions, events, attrs)
    elif strict:
        if actions is not None and actions.shape[1:] == (3,) and len(actions):
            off = ~(actions[:, None, :] == LABEL_ROWS[None]).all(-1).any(-1)
            if off.any():
                problems.append(f"actions rows {np.flatnonzero(off)[:5].tolist()} are not key labels")
            if events is not None and len(events) == len(actions):
                if events[0] != EVENT_START or np.any(actions[0]):
                    problems.append("frame 0 must be episode_start with a zero action")
                if any(e == EVENT_START for e in events[1:]):
                    problems.append("episode_start after frame 0")
                stops = [i for i, e in enumerate(events) if e == EVENT_STOP]
                if stops and np.any(actions[stops]):
                    problems.append("stop_action rows must be zero")
        if attrs.get("action_chunk_size") is not None and attrs.get("action_chunk_size") != ACTION_CHUNK_SIZE:
            problems.append(f"action_chunk_size = {attrs['action_chunk_size']}, expected {ACTION_CHUNK_SIZE}")
        if "obstacle_layout_type" in attrs and _as_str(attrs["obstacle_layout_type"]) not in LAYOUT_TYPES:
            problems.append(f"obstacle_layout_type = {attrs['obstacle_layout_type']!r} not in {LAYOUT_TYPES}")
        if "time_period" in attrs and _as_str(attrs["time_period"]) not in TIME_PERIODS:
            problems.append(f"time_period = {attrs['time_period']!r} not in {TIME_PERIODS}")
        if not FILENAME_RE.match(path.name):
            problems.append(f"file name does not match {FILENAME_RE.pattern}")


def _v6_strict_problems(path: Path, actions: np.ndarray | None, events: list[str] | None,
                        attrs: Mapping[str, Any]) -> list[str]:
    """The strict checks of a V6 file (see :func:`check_episode`)."""
    problems = []
    if actions is not None and actions.shape[1:] == (3,) and len(actions):
        lx_ly = actions[:, :2]
        off = ~np.isin(lx_ly, np.asarray([0.0, ACTION_LABEL, -ACTION_LABEL], np.float32)).all(axis=1)
        if off.any():
            problems.append(f"actions rows {np.flatnonzero(off)[:5].tolist()}: linear_x/linear_y not in "
                            "{0, +-1.15}")
        if np.abs(actions[:, 2]).max() > ACTION_LABEL + 1e-6:
            problems.append("angular_z beyond +-1.15")
        n_inject = attrs.get("stop_inject_n")
        if events is not None and len(events) == len(actions) and _attr_type_ok(n_inject, int):
            n_inject = int(n_inject)
            tail = events[len(events) - n_inject:] if n_inject else []
            if n_inject > len(events) or any(e != V6_EVENT_INJECT for e in tail) or np.any(actions[len(actions) - n_inject:]):
                problems.append(f"the last stop_inject_n = {n_inject} frames must be zeros with '{V6_EVENT_INJECT}'")
            if events.count(V6_EVENT_INJECT) != n_inject:
                problems.append(f"'{V6_EVENT_INJECT}' frames other than the last {n_inject}")
            stops = [i for i, e in enumerate(events) if e == V6_EVENT_NEUTRAL]
            if stops and np.any(actions[stops]):
                problems.append(f"'{V6_EVENT_NEUTRAL}' rows must be zero")
    if attrs.get("action_chunk_size") is not None and attrs.get("action_chunk_size") != ACTION_CHUNK_SIZE:
        problems.append(f"action_chunk_size = {attrs['action_chunk_size']}, expected {ACTION_CHUNK_SIZE}")
    if "obstacle_layout_type" in attrs and _as_str(attrs["obstacle_layout_type"]) != "hori":
        problems.append(f"obstacle_layout_type = {attrs['obstacle_layout_type']!r}, the V6 layout writes 'hori'")
    if not V6_FILENAME_RE.match(path.name):
        problems.append(f"file name does not match {V6_FILENAME_RE.pattern}")
    return problems


def validate_episode(path: str | os.PathLike, strict: bool = False,
                     image_hw: tuple[int, int] | None = None) -> None:
    """Raise :class:`InvalidEpisodeError` (naming the file and every problem) unless :func:`check_episode`
    finds nothing."""
    problems = check_episode(path, strict=strict, image_hw=image_hw)
    if problems:
        raise InvalidEpisodeError(path, problems)


@dataclass(frozen=True)
class EpisodeInfo:
    """Light metadata of a valid episode (no frames loaded).

    Attributes:
        path: the file. num_frames: ``N``. image_hw: ``(H, W)`` px. instruction: ``language_instruction`` or the
        file-name rule. has_instruction: whether the file stores one. layout / distance / kind: from the file
        name (None when it does not follow the pattern; ``layout`` falls back to ``obstacle_layout_type``).
        attrs: the file attributes (str/int/float). family: ``"basket"`` for a ``basket_`` name, ``"corridor"`` for
        a V6 file (``layout`` / ``distance`` are then its ``cx_position`` / ``cx_path``, the instruction without a
        stored one :func:`v6_task`), else ``"cup"``.
    """

    path: Path
    num_frames: int
    image_hw: tuple[int, int]
    instruction: str
    has_instruction: bool
    layout: str | None
    distance: str | None
    kind: str | None
    side: str | None
    attrs: dict[str, Any]
    family: str = "cup"

    @property
    def episode_id(self) -> str:
        """The file's name without ``.h5``."""
        return self.path.stem


def read_info(path: str | os.PathLike) -> EpisodeInfo:
    """Metadata of an episode file (call after validation; raises ``OSError``/``KeyError`` on a bad file)."""
    path = Path(path)
    with h5py.File(path, "r") as f:
        n = int(f["actions"].shape[0])
        hw = tuple(int(v) for v in f["images"].shape[1:3])
        has = "language_instruction" in f
        instruction = decode_instruction(f["language_instruction"][()]) if has else instruction_from_filename(path)
        attrs = {}
        for k, v in f.attrs.items():
            if isinstance(v, (bytes, np.bytes_, str)):
                v = _as_str(v)
            attrs[k] = v.item() if isinstance(v, np.generic) else v
    if is_v6(attrs):  # the corridor: position x path, no side to keep
        position, route = str(attrs["cx_position"]), str(attrs["cx_path"])
        return EpisodeInfo(
            path=path, num_frames=n, image_hw=hw, instruction=instruction if has else v6_task(position, route),
            has_instruction=has, layout=position, distance=route, kind=attrs.get("sim_kind"), side=None,
            attrs=attrs, family="corridor")
    fields = parse_filename(path) or {}
    side = fields.get("side")
    if side is None:
        side = "left" if "_left" in path.name else "right" if "_right" in path.name else None
    return EpisodeInfo(
        path=path, num_frames=n, image_hw=hw, instruction=instruction, has_instruction=has,
        layout=fields.get("layout") or attrs.get("obstacle_layout_type"), distance=fields.get("distance"),
        kind=fields.get("kind"), side=side, attrs=attrs, family=fields.get("family", "cup"),
    )


def read_actions(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """``actions`` float32 ``(N, 3)`` and the ``N`` event types of an episode file."""
    with h5py.File(path, "r") as f:
        return (np.asarray(f["actions"][()], dtype=np.float32),
                [_as_str(e) for e in f["action_event_types"][()]])


def read_episode_frames(path: str | os.PathLike, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Frames ``start:stop`` of an episode as uint8 **RGB** ``(n, H, W, 3)`` (converted from the stored BGR).
    Memory is the frames asked for: read a long episode by windows (:func:`iter_episode_frames`,
    :class:`EpisodeFrames`)."""
    with h5py.File(path, "r") as f:
        bgr = f["images"][start:stop]
    return np.ascontiguousarray(bgr[..., ::-1])


#: Frames read at once by :func:`iter_episode_frames` and :class:`EpisodeFrames`: 32 (32 x 2.6 MiB at 720p).
FRAME_WINDOW = 32


def iter_episode_frames(path: str | os.PathLike, window: int = FRAME_WINDOW) -> Iterator[np.ndarray]:
    """An episode's frames in order, as uint8 RGB windows ``(n <= window, H, W, 3)``: whatever the file declares,
    at most ``window`` decompressed frames are held at once."""
    with h5py.File(path, "r") as f:
        images = f["images"]
        for start in range(0, images.shape[0], window):
            yield np.ascontiguousarray(images[start:start + window][..., ::-1])


class EpisodeFrames(collections.abc.Sequence):
    """An episode's frames as a lazy sequence of uint8 RGB ``(H, W, 3)``: ``frames[i]`` reads the window of
    :data:`FRAME_WINDOW` frames holding it (the last window read is kept), so iterating holds one window, never the
    whole decompressed array.

    Raises (on construction):
        OSError / KeyError: the file or its ``images`` cannot be opened (validate it first).
    """

    def __init__(self, path: str | os.PathLike, window: int = FRAME_WINDOW) -> None:
        self.path, self.window = Path(path), int(window)
        with h5py.File(self.path, "r") as f:
            images = f["images"]
            self._len = int(images.shape[0])
            #: ``(N, H, W, 3)`` and the stored dtype, as an array's (a lazy camera column for the LeRobot writer)
            self.shape, self.dtype = tuple(int(d) for d in images.shape), images.dtype
        self._start, self._frames = -1, np.empty((0,), np.uint8)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._len))]
        i = int(index) + (self._len if int(index) < 0 else 0)
        if not 0 <= i < self._len:
            raise IndexError(f"frame {index} of {self._len}")
        start = i - i % self.window
        if start != self._start:
            self._frames, self._start = read_episode_frames(self.path, start, start + self.window), start
        return self._frames[i - start]


__all__ = [
    "ACTION_CHUNK_SIZE", "DATASETS", "DATASET_SPECS", "EVENT_PRESS", "EVENT_START", "EVENT_STOP", "EVENT_TYPES",
    "EncodedFrames", "EpisodeInfo", "FILENAME_RE", "FrameEncoder", "encode_frame", "FALLBACK_INSTRUCTION", "InvalidEpisodeError", "REQUIRED_ATTRS",
    "ROBOT_IMAGE_HW", "STOP_INJECT_N", "V6_FILENAME_RE", "check_episode", "is_v6", "v6_attributes", "v6_filename",
    "v6_task", "collector_attributes", "decode_instruction", "encode_instruction",
    "episode_filename", "instruction_from_filename", "is_temp_file", "parse_filename", "read_actions",
    "read_episode_frames", "read_info", "validate_episode", "write_episode", "EpisodeFrames", "FRAME_WINDOW",
    "iter_episode_frames",
]
