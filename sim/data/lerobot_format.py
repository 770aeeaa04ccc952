"""LeRobot datasets written without ``lerobot``: the v3.0 on-disk format that ``lerobot`` 0.4.4 reads.

``lerobot`` itself cannot be installed next to this project's torch (it pins ``torch<2.11``), so this module
writes its dataset layout with pyarrow. The format is the one ``LeRobotDataset(repo_id, root=...)`` of
``lerobot==0.4.4`` loads (``codebase_version`` ``"v3.0"``), as defined by these files of that release:

* ``lerobot/datasets/lerobot_dataset.py``: ``LeRobotDatasetMetadata`` (``save_episode``,
  ``_save_episode_metadata``: the episodes table) and ``LeRobotDataset`` (``save_episode``,
  ``_save_episode_data``, ``_save_episode_video``: the data files, one row group per episode, snappy);
* ``lerobot/datasets/utils.py``: paths (``DEFAULT_DATA_PATH``, ``DEFAULT_VIDEO_PATH``, ``DEFAULT_EPISODES_PATH``,
  ``DEFAULT_TASKS_PATH``, ``INFO_PATH``, ``STATS_PATH``), ``DEFAULT_FEATURES``, ``create_empty_dataset_info``
  (``meta/info.json``), ``get_hf_features_from_features`` (column types), ``write_json``, ``write_tasks``;
* ``lerobot/datasets/compute_stats.py``: per-episode statistics (``compute_episode_stats``,
  ``RunningQuantileStats``, ``sample_images``) and their aggregation (``aggregate_stats``);
* ``lerobot/datasets/video_utils.py``: ``get_video_info`` (the ``info`` of a video feature).

Layout under ``root`` (``E`` episodes, ``F`` frames in all, ``T`` distinct tasks)::

    meta/info.json                          codebase_version "v3.0", fps, robot_type, totals, features, templates
    meta/stats.json                         per feature: min, max, mean, std, count, q01, q10, q50, q90, q99
    meta/tasks.parquet                      T rows: task_index (int64), the task string as the pandas index
    meta/episodes/chunk-000/file-000.parquet
                                            E rows: episode_index, tasks, length, data/chunk_index,
                                            data/file_index, dataset_from_index, dataset_to_index,
                                            [videos/<key>/chunk_index, file_index, from_timestamp, to_timestamp],
                                            stats/<feature>/<stat>, meta/episodes/chunk_index, file_index
    data/chunk-CCC/file-FFF.parquet         F rows over the files: one column per non-video feature, then
                                            timestamp (float32, s), frame_index, episode_index, index, task_index
    videos/<key>/chunk-CCC/file-FFF.mp4     only for ``dtype: "video"`` features: the episodes back to back

Features are lerobot's dicts, ``{key: {"dtype": ..., "shape": (...), "names": [...] | None}}``:

* ``"image"``: ``(H, W, 3)`` uint8 RGB frames, stored losslessly in the parquet as PNG bytes in the
  ``struct<bytes: binary, path: string>`` of ``datasets.Image`` (the default; reads back bit-identical);
* ``"video"``: ``(H, W, 3)`` uint8 RGB frames, encoded H.264 ``yuv420p`` (lossy; even ``H`` and ``W``) with
  lerobot's encoder settings (GOP 2, CRF 30) into ``videos/<key>/...mp4``; not a parquet column;
* ``"string"``: shape ``(1,)``, one string per frame;
* a numeric numpy dtype name (``"float32"``, ``"int64"``, ...): shape ``(1,)`` (a scalar column) or ``(D,)``
  (a fixed-size list column), values in the feature's own units.

Every frame also gets lerobot's default features: ``timestamp`` = ``frame_index / fps`` (s, float32),
``frame_index`` (0-based in the episode), ``episode_index``, ``index`` (0-based in the dataset, equal to the
row's position) and ``task_index`` (into ``meta/tasks.parquet``), all int64 but the timestamp. Statistics are
computed as ``compute_episode_stats`` does (images: per channel over a sample of frames, scaled to [0, 1], shape
``(3, 1, 1)``; ``count`` is the number of frames, or of sampled frames for images) and aggregated over episodes
as ``aggregate_stats`` does, with one exception: lerobot 0.4.4 squares image pixels in uint8, which overflows and
makes its image ``std`` wrong (mostly 0); here integers are squared in float64, so image ``std`` is the true
one. Everything is written into a hidden folder beside ``root`` (each file through
:func:`foundations.files.atomic_write`) that becomes ``root`` by one rename in :meth:`LeRobotV3Writer.finalize`.

The team's mobile-base episodes use :func:`mobile_base_features`::

    with LeRobotV3Writer(root, fps=6, features=mobile_base_features(240, 320), robot_type="mobile_base") as w:
        w.add_episode("go to the cup", {"observation.images.cam_front": frames,   # uint8 (N, 240, 320, 3) RGB
                                        "action": actions,                          # float32 (N, 3)
                                        "action.event_type": event_types})          # N strings
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from foundations.errors import MobileVLAError
from foundations.files import atomic_write, atomic_write_text, default_mode, json_text

#: ``codebase_version`` of the format (``lerobot_dataset.CODEBASE_VERSION`` of lerobot 0.4.4).
CODEBASE_VERSION = "v3.0"

INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"

#: lerobot's defaults: files per chunk folder, and the size (MiB) past which the next episode opens a new file.
DEFAULT_CHUNK_SIZE = 1000
DEFAULT_DATA_FILE_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILE_SIZE_IN_MB = 200

#: The features every frame has besides the declared ones, in lerobot's order.
DEFAULT_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": (1,), "names": None},
    "frame_index": {"dtype": "int64", "shape": (1,), "names": None},
    "episode_index": {"dtype": "int64", "shape": (1,), "names": None},
    "index": {"dtype": "int64", "shape": (1,), "names": None},
    "task_index": {"dtype": "int64", "shape": (1,), "names": None},
}

#: Per-feature statistics, in lerobot's order (``compute_stats.RunningQuantileStats.get_statistics``).
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_KEYS = tuple(f"q{int(q * 100):02d}" for q in QUANTILES)
_QUANTILE_BINS = 5000

#: Video encoding: lerobot's ``encode_video_frames`` defaults (GOP 2, CRF 30) with its ``"h264"`` codec.
VIDEO_CODEC = "h264"
VIDEO_PIX_FMT = "yuv420p"
_VIDEO_OUTPUT_PARAMS = ["-g", "2", "-crf", "30", "-movflags", "+faststart"]

#: lerobot's ``tolerance_s``: how far a timestamp may be from ``frame_index / fps``.
TIMESTAMP_TOLERANCE_S = 1e-4

_CAMERA_DTYPES = ("image", "video")
_IMAGE_NAMES = ["height", "width", "channels"]
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MIB = 1024**2


class LeRobotFormatError(MobileVLAError, ValueError):
    """A bad argument to the writer (the message names it) or a folder that is not a LeRobot v3.0 dataset."""


def mobile_base_features(height: int, width: int, *, video: bool = False) -> dict[str, dict[str, Any]]:
    """The team's features: front camera ``(height, width, 3)`` uint8 RGB (``"image"``, or ``"video"`` with
    ``video=True``), ``action`` float32 ``[linear_x, linear_y, angular_z]`` (m/s, m/s, rad/s) and
    ``action.event_type`` (one string per frame)."""
    return {
        "observation.images.cam_front": {
            "dtype": "video" if video else "image", "shape": (height, width, 3), "names": list(_IMAGE_NAMES)},
        "action": {"dtype": "float32", "shape": (3,), "names": ["linear_x", "linear_y", "angular_z"]},
        "action.event_type": {"dtype": "string", "shape": (1,), "names": None},
    }


# --------------------------------------------------------------------------------------------- features
def _positive_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0


def _check_features(features: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``features`` validated and normalised (``shape`` a tuple of ints, ``names`` a list or None)."""
    if not isinstance(features, Mapping) or not features:
        raise LeRobotFormatError("features: must be a non-empty mapping {key: {'dtype', 'shape', 'names'}}")
    out = {}
    for key, spec in features.items():
        where = f"features[{key!r}]"
        if not isinstance(key, str) or not key or "/" in key:
            raise LeRobotFormatError(f"{where}: a key must be a non-empty string without '/'")
        if key in DEFAULT_FEATURES:
            raise LeRobotFormatError(f"{where}: {key!r} is one of lerobot's default features, added by the writer")
        if not isinstance(spec, Mapping) or "dtype" not in spec or "shape" not in spec:
            raise LeRobotFormatError(f"{where}: must be a mapping with 'dtype' and 'shape' (and 'names')")
        dtype, names = spec["dtype"], spec.get("names")
        shape = tuple(spec["shape"]) if isinstance(spec["shape"], (tuple, list)) else None
        if shape is None or not all(_positive_int(s) for s in shape):
            raise LeRobotFormatError(f"{where}: shape must be a tuple of positive ints, got {spec['shape']!r}")
        shape = tuple(int(s) for s in shape)
        if dtype in _CAMERA_DTYPES:
            if len(shape) != 3 or shape[2] != 3:
                raise LeRobotFormatError(f"{where}: an {dtype} feature has shape (H, W, 3), got {shape}")
            if dtype == "video" and (shape[0] % 2 or shape[1] % 2):
                raise LeRobotFormatError(f"{where}: H.264 yuv420p video needs an even height and width, got {shape}")
        elif dtype == "string":
            if shape != (1,):
                raise LeRobotFormatError(f"{where}: a string feature has shape (1,), got {shape}")
        else:
            try:
                kind = np.dtype(dtype).kind if isinstance(dtype, str) else ""
            except TypeError:
                kind = ""
            if kind not in ("f", "i", "u") or np.dtype(dtype).name != dtype:
                raise LeRobotFormatError(
                    f"{where}: dtype must be 'image', 'video', 'string' or a numeric numpy dtype name "
                    f"('float32', 'int64', ...), got {dtype!r}")
            if len(shape) != 1:
                raise LeRobotFormatError(f"{where}: a numeric feature has shape (1,) or (D,), got {shape}")
        if dtype in _CAMERA_DTYPES and names is None:
            names = _IMAGE_NAMES
        if names is not None and (not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names)):
            raise LeRobotFormatError(f"{where}: names must be None or a list of strings, got {names!r}")
        expected_names = 3 if dtype in _CAMERA_DTYPES else shape[0]
        if names is not None and dtype != "string" and len(names) != expected_names:
            raise LeRobotFormatError(f"{where}: {len(names)} names for shape {shape}")
        out[key] = {"dtype": dtype, "shape": shape, "names": None if names is None else list(names)}
    return out


def _hf_feature(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The ``datasets`` (4.x) JSON of a feature, as ``get_hf_features_from_features`` types it."""
    if spec["dtype"] == "image":
        return {"_type": "Image"}
    value = {"dtype": spec["dtype"], "_type": "Value"}
    if tuple(spec["shape"]) == (1,):
        return value
    return {"feature": value, "length": spec["shape"][0], "_type": "List"}


def _arrow_type(spec: Mapping[str, Any]) -> pa.DataType:
    """The parquet column type of a non-video feature (what ``datasets`` writes for :func:`_hf_feature`)."""
    if spec["dtype"] == "image":
        return pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    if spec["dtype"] == "string":
        return pa.string()
    value = pa.from_numpy_dtype(np.dtype(spec["dtype"]))
    return value if tuple(spec["shape"]) == (1,) else pa.list_(pa.field("element", value), spec["shape"][0])


def _data_schema(features: Mapping[str, Mapping[str, Any]]) -> pa.Schema:
    """Columns of ``data/*.parquet``: the non-video features then the defaults, with the ``huggingface``
    schema metadata ``datasets`` writes (minus its random ``fingerprint``)."""
    columns = {k: f for k, f in {**features, **DEFAULT_FEATURES}.items() if f["dtype"] != "video"}
    info = {"info": {"features": {k: _hf_feature(f) for k, f in columns.items()}}}
    return pa.schema([pa.field(k, _arrow_type(f)) for k, f in columns.items()],
                     metadata={"huggingface": json.dumps(info)})


# --------------------------------------------------------------------------------------------- statistics
def _quantile(hist: np.ndarray, edges: np.ndarray, target: float) -> float:
    """``RunningQuantileStats._compute_single_quantile``: linear interpolation inside the histogram bin."""
    cumsum = np.cumsum(hist)
    idx = int(np.searchsorted(cumsum, target))
    if idx == 0:
        return edges[0]
    if idx >= len(cumsum):
        return edges[-1]
    before = cumsum[idx - 1]
    in_bin = cumsum[idx] - before
    if in_bin == 0:
        return edges[idx]
    return edges[idx] + (target - before) / in_bin * (edges[idx + 1] - edges[idx])


def _feature_stats(batch: np.ndarray, count: int) -> dict[str, np.ndarray]:
    """lerobot's ``get_feature_stats`` of ``batch`` ``(M, D)`` rows: ``RunningQuantileStats`` after one update
    (quantiles from a 5000-bin histogram per column), or ``_compute_basic_stats`` (quantiles = mean) for one
    row. Computed in ``batch``'s dtype as lerobot does, except that integers are squared in float64 (lerobot
    squares them in their dtype, which overflows uint8 pixels); ``count`` is stored as given."""
    lo, hi, mean = np.min(batch, axis=0), np.max(batch, axis=0), np.mean(batch, axis=0)
    if batch.shape[0] < 2:
        std, quantiles = np.std(batch, axis=0), [mean.copy() for _ in QUANTILES]
    else:
        squares = np.square(batch, dtype=np.float64) if batch.dtype.kind in "iu" else np.square(batch)
        std = np.sqrt(np.maximum(0, np.mean(squares, axis=0) - mean**2))
        edges = [np.linspace(lo[i] - 1e-10, hi[i] + 1e-10, _QUANTILE_BINS + 1) for i in range(batch.shape[1])]
        hists = [np.histogram(batch[:, i], bins=edges[i])[0] for i in range(batch.shape[1])]
        quantiles = [np.array([_quantile(h, e, q * batch.shape[0]) for h, e in zip(hists, edges)]) for q in QUANTILES]
    return {"min": lo, "max": hi, "mean": mean, "std": std, "count": np.array([count]),
            **dict(zip(QUANTILE_KEYS, quantiles))}


def _lazy_frames(value: Any) -> bool:
    """Whether ``value`` is a lazy camera column: not an array, but it declares its ``shape`` and ``dtype`` and
    gives frames by index (:class:`sim.data.h5format.EpisodeFrames`), so it is read a frame (a window) at a time."""
    return (not isinstance(value, np.ndarray) and hasattr(value, "shape") and hasattr(value, "dtype")
            and hasattr(value, "__getitem__") and hasattr(value, "__len__"))


def _image_stats(frames: Any) -> dict[str, np.ndarray]:
    """``compute_episode_stats`` of a camera feature, ``frames`` uint8 ``(N, H, W, 3)``: a sample of frames
    (``sample_indices``: all of them up to 100, then ``N ** 0.75`` up to 10 000), downsampled when a side is
    300 px or more (``auto_downsample_height_width``), per-channel stats / 255 with shape ``(3, 1, 1)``."""
    n = len(frames)
    num = max(min(n, 100), min(int(n**0.75), 10_000))
    picked = np.round(np.linspace(0, n - 1, num)).astype(int)
    sample = frames[picked] if isinstance(frames, np.ndarray) else np.stack([frames[i] for i in picked])
    height, width = sample.shape[1:3]
    if max(width, height) >= 300:
        step = int(width / 150) if width > height else int(height / 150)
        sample = sample[:, ::step, ::step]
    stats = _feature_stats(sample.reshape(-1, 3), count=num)
    return {k: v if k == "count" else (v / 255.0).reshape(3, 1, 1) for k, v in stats.items()}


def _aggregate_stats(stats_list: Sequence[Mapping[str, Mapping[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """``aggregate_stats``: min of mins, max of maxes, count-weighted mean, pooled std (parallel variance) and
    count-weighted quantiles; ``stats_list`` share their features."""
    out = {}
    for key in stats_list[0]:
        stats = [s[key] for s in stats_list]
        means = np.stack([s["mean"] for s in stats])
        variances = np.stack([s["std"] ** 2 for s in stats])
        counts = np.stack([s["count"] for s in stats])
        total = counts.sum(axis=0)
        while counts.ndim < means.ndim:
            counts = np.expand_dims(counts, axis=-1)
        mean = (means * counts).sum(axis=0) / total
        variance = ((variances + (means - mean) ** 2) * counts).sum(axis=0) / total
        out[key] = {"min": np.min(np.stack([s["min"] for s in stats]), axis=0),
                    "max": np.max(np.stack([s["max"] for s in stats]), axis=0),
                    "mean": mean, "std": np.sqrt(variance), "count": total,
                    **{q: (np.stack([s[q] for s in stats]) * counts).sum(axis=0) / total for q in QUANTILE_KEYS}}
    return out


# --------------------------------------------------------------------------------------------- output files
class _RollingFile:
    """Episodes appended to ``chunk-CCC/file-FFF`` files one after another, each file written through
    :func:`atomic_write`. As in lerobot, an episode never spans two files: the next one opens a new file when
    ``size + size / frames * n >= limit_mb`` MiB, and ``chunks_size`` files fill a chunk folder."""

    def __init__(self, root: Path, template: str, limit_mb: float, chunks_size: int) -> None:
        self._root, self._template, self._limit_mb, self._chunks_size = root, template, limit_mb, chunks_size
        self.chunk_index = self.file_index = self.frames = 0
        self._stack: contextlib.ExitStack | None = None

    def place(self, n: int) -> int:
        """Open the file the next ``n`` frames go to; returns the frames that file already holds."""
        if self._stack is not None and self.frames:
            size_mb = self._size() / _MIB
            if size_mb + size_mb / self.frames * n >= self._limit_mb:
                self.close()
                if self.file_index == self._chunks_size - 1:
                    self.chunk_index, self.file_index = self.chunk_index + 1, 0
                else:
                    self.file_index += 1
        if self._stack is None:
            path = self._root / self._template.format(chunk_index=self.chunk_index, file_index=self.file_index)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._stack = contextlib.ExitStack()
            self._open(self._stack.enter_context(atomic_write(path)))
            self._stack.callback(self._close)
            self.frames = 0
        return self.frames

    def append(self, payload: Any, n: int) -> None:
        self._write(payload)
        self.frames += n

    def close(self) -> None:
        """Finish the open file (it takes its final name)."""
        if self._stack is not None:
            stack, self._stack = self._stack, None
            stack.close()

    def _open(self, tmp: Path) -> None:
        raise NotImplementedError

    def _write(self, payload: Any) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _size(self) -> int:
        raise NotImplementedError


class _ParquetFiles(_RollingFile):
    """``data/*.parquet``: one row group per episode, snappy, dictionary encoding (lerobot's ``ParquetWriter``)."""

    def __init__(self, root: Path, schema: pa.Schema, limit_mb: float, chunks_size: int) -> None:
        super().__init__(root, DATA_PATH, limit_mb, chunks_size)
        self.schema = schema

    def _open(self, tmp: Path) -> None:
        self._sink = pa.OSFile(str(tmp), "wb")
        self._writer = pq.ParquetWriter(self._sink, self.schema, compression="snappy", use_dictionary=True)

    def _write(self, payload: pa.Table) -> None:
        self._writer.write_table(payload)

    def _close(self) -> None:
        self._writer.close()
        self._sink.close()

    def _size(self) -> int:
        return self._sink.tell()


class _VideoFiles(_RollingFile):
    """``videos/<key>/*.mp4``: the episodes' frames back to back, H.264 ``yuv420p`` through imageio-ffmpeg."""

    def __init__(self, root: Path, key: str, shape: tuple[int, ...], fps: int, limit_mb: float,
                 chunks_size: int) -> None:
        super().__init__(root, VIDEO_PATH.replace("{video_key}", key), limit_mb, chunks_size)
        self._size_wh, self._fps = (shape[1], shape[0]), fps

    def _open(self, tmp: Path) -> None:
        self._tmp = tmp
        self._encoder = imageio_ffmpeg.write_frames(
            str(tmp), self._size_wh, fps=self._fps, codec="libx264", pix_fmt_in="rgb24", pix_fmt_out=VIDEO_PIX_FMT,
            quality=None, macro_block_size=1, ffmpeg_log_level="error", output_params=_VIDEO_OUTPUT_PARAMS)
        self._encoder.send(None)

    def _write(self, payload: np.ndarray) -> None:
        for frame in payload:
            self._encoder.send(np.ascontiguousarray(frame))

    def _close(self) -> None:
        self._encoder.close()

    def _size(self) -> int:
        return self._tmp.stat().st_size


# --------------------------------------------------------------------------------------------- the writer
def _png(frame: np.ndarray) -> bytes:
    """Lossless PNG of a uint8 ``(H, W, 3)`` RGB frame (lerobot's ``write_image``, ``compress_level=6``)."""
    buffer = BytesIO()
    Image.fromarray(frame, mode="RGB").save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _dir_mode() -> int:
    """The mode ``mkdir`` gives a new folder: the file mode plus an execute bit wherever it can read."""
    mode = default_mode()
    return mode | ((mode & 0o444) >> 2)


class LeRobotV3Writer:
    """Writes a LeRobot v3.0 dataset (lerobot 0.4.4's format, see the module doc) episode by episode.

    Nothing appears at ``root`` before :meth:`finalize`, which renames the finished hidden folder onto it; a
    ``with`` block finalizes on a clean exit and :meth:`abort` s (removes everything written) on an exception.

    Args:
        root: the dataset folder to create; it must not exist, its parent must.
        fps: frames per second of every episode (int > 0); ``timestamp = frame_index / fps``.
        features: lerobot feature dicts, ``{key: {"dtype", "shape", "names"}}`` (module doc); at least one,
            keys without ``/`` and other than the default features. Their order is the column order.
        robot_type: ``info.json``'s ``robot_type`` (e.g. ``"mobile_base"``), or None.
        chunks_size, data_files_size_in_mb, video_files_size_in_mb: lerobot's file splitting (files per chunk
            folder; MiB past which the next episode starts a new data / video file), stored in ``info.json``.

    Raises:
        LeRobotFormatError: a bad argument (named), or ``root`` exists.
    """

    def __init__(self, root: str | Path, fps: int, features: Mapping[str, Mapping[str, Any]],
                 robot_type: str | None = None, *, chunks_size: int = DEFAULT_CHUNK_SIZE,
                 data_files_size_in_mb: float = DEFAULT_DATA_FILE_SIZE_IN_MB,
                 video_files_size_in_mb: float = DEFAULT_VIDEO_FILE_SIZE_IN_MB) -> None:
        self.root = Path(root)
        if not _positive_int(fps):
            raise LeRobotFormatError(f"fps: must be a positive int, got {fps!r}")
        if robot_type is not None and not isinstance(robot_type, str):
            raise LeRobotFormatError(f"robot_type: must be a string or None, got {robot_type!r}")
        if not _positive_int(chunks_size):
            raise LeRobotFormatError(f"chunks_size: must be a positive int, got {chunks_size!r}")
        for name, value in (("data_files_size_in_mb", data_files_size_in_mb),
                            ("video_files_size_in_mb", video_files_size_in_mb)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise LeRobotFormatError(f"{name}: must be a positive number of MiB, got {value!r}")
        self.features = _check_features(features)
        if self.root.exists():
            raise LeRobotFormatError(f"root: {self.root} already exists")
        if not self.root.parent.is_dir():
            raise LeRobotFormatError(f"root: the parent folder {self.root.parent} does not exist")
        self.fps, self.robot_type = int(fps), robot_type
        self._file_sizes = {"chunks_size": chunks_size, "data_files_size_in_mb": data_files_size_in_mb,
                            "video_files_size_in_mb": video_files_size_in_mb}
        self._video_keys = [k for k, f in self.features.items() if f["dtype"] == "video"]
        self._staging = Path(tempfile.mkdtemp(dir=self.root.parent, prefix=f".{self.root.name}.", suffix=".tmp"))
        self._data = _ParquetFiles(self._staging, _data_schema(self.features), data_files_size_in_mb, chunks_size)
        self._videos = {k: _VideoFiles(self._staging, k, self.features[k]["shape"], self.fps, video_files_size_in_mb,
                                       chunks_size) for k in self._video_keys}
        self._tasks: dict[str, int] = {}
        self._episodes: list[dict[str, Any]] = []
        self._stats: dict[str, dict[str, np.ndarray]] = {}
        self._frames = 0
        self._closed = False

    def __enter__(self) -> LeRobotV3Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._closed:
            return
        if exc_type is not None:
            self.abort()
            return
        try:
            self.finalize()
        except BaseException:
            self.abort()
            raise

    @property
    def num_episodes(self) -> int:
        """Episodes added so far."""
        return len(self._episodes)

    @property
    def num_frames(self) -> int:
        """Frames of the episodes added so far."""
        return self._frames

    def _columns(self, data: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """``data`` checked against the features: ``(N, {key: uint8 frames | array of the dtype | list[str]})``."""
        if not isinstance(data, Mapping):
            raise LeRobotFormatError(f"data: must be a mapping {{feature key: values}}, got {type(data).__name__}")
        missing, extra = sorted(set(self.features) - set(data)), sorted(set(data) - set(self.features))
        if missing or extra:
            raise LeRobotFormatError(f"data: keys must be the features; missing {missing}, unknown {extra}")
        values: dict[str, Any] = {}
        for key, spec in self.features.items():
            value = data[key]
            try:
                if isinstance(value, (str, bytes)):
                    raise TypeError(f"a single {type(value).__name__}")
                if spec["dtype"] == "string":
                    values[key] = list(value)
                elif spec["dtype"] in _CAMERA_DTYPES and _lazy_frames(value):
                    values[key] = value  # read frame by frame as it is written, never whole
                else:
                    values[key] = np.asarray(value)
                len(values[key])
            except (TypeError, ValueError) as err:
                raise LeRobotFormatError(f"data[{key!r}]: must hold one value per frame ({err})") from None
        lengths = {key: len(value) for key, value in values.items()}
        if len(set(lengths.values())) > 1:
            raise LeRobotFormatError(f"data: every feature needs one value per frame, got lengths {lengths}")
        n = next(iter(lengths.values()))
        if n == 0:
            raise LeRobotFormatError("data: empty episode (0 frames)")
        columns: dict[str, Any] = {}
        for key, spec in self.features.items():
            value, where, dtype, shape = values[key], f"data[{key!r}]", spec["dtype"], spec["shape"]
            if dtype in _CAMERA_DTYPES:
                if np.dtype(value.dtype) != np.uint8 or tuple(value.shape) != (n, *shape):
                    raise LeRobotFormatError(f"{where}: frames must be uint8 {(n, *shape)} RGB, "
                                             f"got {value.dtype} {value.shape}")
                columns[key] = value
            elif dtype == "string":
                if not all(isinstance(item, str) for item in value):
                    raise LeRobotFormatError(f"{where}: must be {n} strings")
                columns[key] = value
            else:
                array = value[:, None] if shape == (1,) and value.ndim == 1 else value
                if array.dtype.kind not in "biuf" or not np.can_cast(array.dtype, dtype, "same_kind"):
                    raise LeRobotFormatError(f"{where}: values of dtype {array.dtype} cannot be stored as {dtype}")
                if array.shape != (n, *shape):
                    raise LeRobotFormatError(f"{where}: shape must be {(n, *shape)}, got {array.shape}")
                array = array.astype(dtype)
                if not np.isfinite(array).all():
                    raise LeRobotFormatError(f"{where}: holds NaN or infinite values")
                columns[key] = array
        return n, columns

    def add_episode(self, task: str, data: Mapping[str, Any]) -> int:
        """Append one episode of ``N >= 1`` frames; returns its ``episode_index`` (0, 1, ...).

        Args:
            task: the episode's instruction (a non-empty string); equal strings share a ``task_index``.
            data: one entry per declared feature, ``N`` values each: camera features uint8 ``(N, H, W, 3)`` RGB
                (exactly uint8), or a lazy column declaring that ``shape`` and ``dtype`` and giving frames by index
                (:class:`sim.data.h5format.EpisodeFrames`: read a window at a time, never whole); numeric features an array ``(N, D)`` (or ``(N,)`` for shape ``(1,)``) that casts
                to the feature's dtype within its kind (float64 to float32, not float to int), finite; string
                features a sequence of ``N`` strings.

        Raises:
            LeRobotFormatError: a bad argument, named (missing or unknown keys, mismatched lengths, wrong dtype
                or shape, an empty episode), or the writer is finalized or aborted. Nothing is written then.
            OSError: writing failed (disk full, ffmpeg died); the writer is then unusable: :meth:`abort` it (a
                ``with`` block does).
        """
        if self._closed:
            raise LeRobotFormatError("add_episode: the writer is already finalized or aborted")
        if not isinstance(task, str) or not task.strip():
            raise LeRobotFormatError(f"task: must be a non-empty string, got {task!r}")
        n, columns = self._columns(data)
        episode_index, start = len(self._episodes), self._frames
        task_index = self._tasks.setdefault(task, len(self._tasks))
        frame_index = np.arange(n, dtype=np.int64)
        defaults = {"timestamp": frame_index / self.fps, "frame_index": frame_index,
                    "episode_index": np.full(n, episode_index, dtype=np.int64),
                    "index": np.arange(start, start + n, dtype=np.int64),
                    "task_index": np.full(n, task_index, dtype=np.int64)}

        stats = {}
        for key, spec in {**self.features, **DEFAULT_FEATURES}.items():
            value = columns[key] if key in columns else defaults[key]
            if spec["dtype"] in _CAMERA_DTYPES:
                stats[key] = _image_stats(value)
            elif spec["dtype"] != "string":
                stats[key] = _feature_stats(value.reshape(n, -1), count=n)

        arrays = []
        for field in self._data.schema:
            key = field.name
            if key in defaults:
                arrays.append(pa.array(defaults[key], type=field.type))
            elif self.features[key]["dtype"] == "image":
                arrays.append(pa.array([{"bytes": _png(f), "path": f"frame-{i:06d}.png"}
                                        for i, f in enumerate(columns[key])], type=field.type))
            elif self.features[key]["dtype"] == "string":
                arrays.append(pa.array(columns[key], type=field.type))
            elif pa.types.is_fixed_size_list(field.type):
                arrays.append(pa.FixedSizeListArray.from_arrays(columns[key].reshape(-1), type=field.type))
            else:
                arrays.append(pa.array(columns[key].reshape(-1), type=field.type))
        self._data.place(n)
        self._data.append(pa.Table.from_arrays(arrays, schema=self._data.schema), n)

        row: dict[str, Any] = {"episode_index": episode_index, "tasks": [task], "length": n,
                               "data/chunk_index": self._data.chunk_index, "data/file_index": self._data.file_index,
                               "dataset_from_index": start, "dataset_to_index": start + n}
        for key, videos in self._videos.items():
            before = videos.place(n)
            videos.append(columns[key], n)
            row |= {f"videos/{key}/chunk_index": videos.chunk_index, f"videos/{key}/file_index": videos.file_index,
                    f"videos/{key}/from_timestamp": before / self.fps,
                    f"videos/{key}/to_timestamp": (before + n) / self.fps}
        row |= {f"stats/{key}/{name}": value.tolist() for key, s in stats.items() for name, value in s.items()}
        row |= {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
        self._episodes.append(row)
        self._stats = _aggregate_stats([self._stats, stats]) if self._stats else stats
        self._frames += n
        return episode_index

    def finalize(self) -> Path:
        """Write the meta files and move the dataset to ``root``; returns ``root``.

        Raises:
            LeRobotFormatError: no episode was added, the writer is already closed, or ``root`` appeared
                meanwhile; the writer stays open then (a ``with`` block aborts it, else call :meth:`abort`).
        """
        if self._closed:
            raise LeRobotFormatError("finalize: the writer is already finalized or aborted")
        if not self._episodes:
            raise LeRobotFormatError("finalize: no episode was added (lerobot cannot load an empty dataset)")
        if self.root.exists():
            raise LeRobotFormatError(f"root: {self.root} appeared while the dataset was written")
        self._data.close()
        for videos in self._videos.values():
            videos.close()
        features = {k: dict(f, shape=list(f["shape"])) for k, f in {**self.features, **DEFAULT_FEATURES}.items()}
        for key in self._video_keys:
            height, width, channels = self.features[key]["shape"]
            features[key]["info"] = {"video.height": height, "video.width": width, "video.codec": VIDEO_CODEC,
                                     "video.pix_fmt": VIDEO_PIX_FMT, "video.is_depth_map": False,
                                     "video.fps": self.fps, "video.channels": channels, "has_audio": False}
        info = {"codebase_version": CODEBASE_VERSION, "robot_type": self.robot_type,
                "total_episodes": len(self._episodes), "total_frames": self._frames, "total_tasks": len(self._tasks),
                **self._file_sizes, "fps": self.fps, "splits": {"train": f"0:{len(self._episodes)}"},
                "data_path": DATA_PATH, "video_path": VIDEO_PATH if self._video_keys else None, "features": features}

        meta = self._staging / "meta"
        (meta / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
        _write_parquet(meta / "tasks.parquet", _tasks_table(list(self._tasks)))
        columns = {key: [row[key] for row in self._episodes] for key in self._episodes[0]}
        _write_parquet(self._staging / EPISODES_PATH.format(chunk_index=0, file_index=0), pa.table(columns))
        stats = {k: {name: v.tolist() for name, v in s.items()} for k, s in self._stats.items()}
        atomic_write_text(self._staging / STATS_PATH, json_text(stats, indent=4, ensure_ascii=False))
        atomic_write_text(self._staging / INFO_PATH, json_text(info, indent=4, ensure_ascii=False))
        self._staging.chmod(_dir_mode())
        self._staging.rename(self.root)
        self._closed = True
        return self.root

    def abort(self) -> None:
        """Stop writing and remove everything written so far (``root`` is never created)."""
        if self._closed:
            return
        self._closed = True
        for files in (self._data, *self._videos.values()):
            with contextlib.suppress(Exception):
                files.close()
        shutil.rmtree(self._staging, ignore_errors=True)


def _write_parquet(path: Path, table: pa.Table) -> None:
    with atomic_write(path) as tmp:
        pq.write_table(table, tmp, compression="snappy")


def _tasks_table(tasks: list[str]) -> pa.Table:
    """``meta/tasks.parquet`` as pandas writes lerobot's ``DataFrame({"task_index": ...}, index=tasks)``: the
    tasks in the ``__index_level_0__`` column, made the index again on reading by the ``pandas`` metadata
    (lerobot looks a task up by ``tasks.iloc[task_index].name``)."""
    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                     "numpy_type": "int64", "metadata": None},
                    {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode",
                     "numpy_type": "object", "metadata": None}],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",  # pandas 2's layout of this metadata; pandas 2.3 and 3.1 both read it back
    }
    schema = pa.schema([("task_index", pa.int64()), ("__index_level_0__", pa.string())],
                       metadata={"pandas": json.dumps(pandas_meta)})
    return pa.table([pa.array(range(len(tasks)), pa.int64()), pa.array(tasks, pa.string())], schema=schema)


# --------------------------------------------------------------------------------------------- reading back
@dataclass(frozen=True)
class LeRobotEpisode:
    """One episode read back by :func:`read_lerobot_dataset`.

    Attributes:
        episode_index: its index.
        tasks: its tasks (the ``tasks`` column of ``meta/episodes``; the writer gives each episode one).
        values: every feature over its ``N`` frames. Camera features: uint8 ``(N, H, W, 3)`` RGB (``"image"``:
            the written frames bit for bit; ``"video"``: decoded H.264, lossy). Numeric features: ``(N,)`` for
            shape ``(1,)``, else ``(N, D)``, in their dtype. String features: ``list[str]``. Plus the defaults:
            ``timestamp`` (float32, s), ``frame_index``, ``episode_index``, ``index``, ``task_index`` (int64).
    """

    episode_index: int
    tasks: list[str]
    values: dict[str, Any]

    def __len__(self) -> int:
        return len(self.values["index"])


@dataclass(frozen=True)
class LeRobotDatasetContents:
    """A whole dataset read back: ``meta/info.json``, ``meta/stats.json`` (each statistic an array), the tasks
    by ``task_index`` and the episodes in order."""

    info: dict[str, Any]
    stats: dict[str, dict[str, np.ndarray]]
    tasks: list[str]
    episodes: list[LeRobotEpisode]


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LeRobotFormatError(f"{path}: missing") from None
    except (OSError, ValueError) as err:
        raise LeRobotFormatError(f"{path}: unreadable ({err})") from None


def _parquet_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("chunk-*/file-*.parquet"))


def _read_table(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise LeRobotFormatError(f"{path}: unreadable parquet ({err})") from None


def _read_tasks(root: Path) -> list[str]:
    """The tasks by ``task_index``, from the pandas index column of ``meta/tasks.parquet``."""
    path = root / TASKS_PATH
    table = _read_table(path)
    pandas_meta = json.loads((table.schema.metadata or {}).get(b"pandas", b"{}"))
    index_columns = [c for c in pandas_meta.get("index_columns", []) if isinstance(c, str)]
    if len(index_columns) != 1 or index_columns[0] not in table.column_names or "task_index" not in table.column_names:
        raise LeRobotFormatError(f"{path}: needs a task_index column and the tasks as the pandas index")
    indices = table.column("task_index").to_pylist()
    if sorted(indices) != list(range(len(indices))):
        raise LeRobotFormatError(f"{path}: task_index must be 0..{len(indices) - 1}, got {indices}")
    tasks = [""] * len(indices)
    for task, index in zip(table.column(index_columns[0]).to_pylist(), indices):
        tasks[index] = task
    if len(set(tasks)) != len(tasks):
        raise LeRobotFormatError(f"{path}: tasks are not unique")
    return tasks


def _column_values(column: pa.ChunkedArray | pa.Array, spec: Mapping[str, Any]) -> Any:
    """A parquet column as :class:`LeRobotEpisode` ``values`` hold it."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if spec["dtype"] == "image":
        return np.stack([np.asarray(Image.open(BytesIO(png)).convert("RGB"))
                         for png in column.field("bytes").to_pylist()])
    if spec["dtype"] == "string":
        return column.to_pylist()
    if pa.types.is_fixed_size_list(column.type):
        return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size)
    return column.to_numpy(zero_copy_only=False)


def _decode_video(path: Path) -> np.ndarray:
    """Every frame of an mp4, uint8 ``(N, H, W, 3)`` RGB."""
    frames = imageio_ffmpeg.read_frames(str(path))
    width, height = next(frames)["size"]
    return np.stack([np.frombuffer(frame, np.uint8).reshape(height, width, 3) for frame in frames])


def read_lerobot_dataset(root: str | Path) -> LeRobotDatasetContents:
    """Read a LeRobot v3.0 dataset with pyarrow (no lerobot, no ``datasets``), all of it into memory: meant
    for tests and checks of exports, not for training.

    Raises:
        LeRobotFormatError: :func:`check_lerobot_dataset` finds problems (the message lists them).
    """
    root = Path(root)
    problems = check_lerobot_dataset(root)
    if problems:
        raise LeRobotFormatError(f"{root}: not a valid LeRobot {CODEBASE_VERSION} dataset: " + "; ".join(problems))
    info = _load_json(root / INFO_PATH)
    stats = {k: {name: np.asarray(v) for name, v in s.items()} for k, s in _load_json(root / STATS_PATH).items()}
    tasks = _read_tasks(root)
    episodes = pa.concat_tables(_read_table(p) for p in _parquet_files(root / "meta" / "episodes")).to_pylist()
    data = pa.concat_tables(_read_table(p) for p in _parquet_files(root / "data"))
    features = info["features"]
    videos: dict[str, np.ndarray] = {}
    out = []
    for episode in episodes:
        start, n = episode["dataset_from_index"], episode["length"]
        rows = data.slice(start, n)
        values = {k: _column_values(rows.column(k), spec) for k, spec in features.items() if spec["dtype"] != "video"}
        for key, spec in features.items():
            if spec["dtype"] == "video":
                path = root / info["video_path"].format(video_key=key, chunk_index=episode[f"videos/{key}/chunk_index"],
                                                        file_index=episode[f"videos/{key}/file_index"])
                if str(path) not in videos:
                    videos[str(path)] = _decode_video(path)
                first = round(episode[f"videos/{key}/from_timestamp"] * info["fps"])
                values[key] = videos[str(path)][first:first + n]
        out.append(LeRobotEpisode(episode["episode_index"], list(episode["tasks"]),
                                  {k: values[k] for k in features}))
    return LeRobotDatasetContents(info=info, stats=stats, tasks=tasks, episodes=out)


# --------------------------------------------------------------------------------------------- checking
_INFO_KEYS = ("codebase_version", "robot_type", "total_episodes", "total_frames", "total_tasks", "chunks_size",
              "data_files_size_in_mb", "video_files_size_in_mb", "fps", "splits", "data_path", "video_path",
              "features")
_EPISODE_COLUMNS = ("episode_index", "tasks", "length", "data/chunk_index", "data/file_index", "dataset_from_index",
                    "dataset_to_index", "meta/episodes/chunk_index", "meta/episodes/file_index")


def _check_info(info: Any) -> list[str]:
    if not isinstance(info, dict) or not isinstance(info.get("features"), dict):
        return [f"{INFO_PATH}: not a JSON object with a 'features' object"]
    missing = [k for k in _INFO_KEYS if k not in info]
    if missing:
        return [f"{INFO_PATH}: missing {missing}"]
    problems = []
    if info["codebase_version"] != CODEBASE_VERSION:
        problems.append(f"{INFO_PATH}: codebase_version is {info['codebase_version']!r}, not {CODEBASE_VERSION!r}")
    if not _positive_int(info["fps"]):
        problems.append(f"{INFO_PATH}: fps must be a positive int, got {info['fps']!r}")
    for key in ("total_episodes", "total_frames", "total_tasks"):
        if not _positive_int(info[key]):
            problems.append(f"{INFO_PATH}: {key} must be a positive int, got {info[key]!r}")
    if info["splits"] != {"train": f"0:{info['total_episodes']}"}:
        problems.append(f"{INFO_PATH}: splits is {info['splits']!r}, expected train 0:{info['total_episodes']}")
    if info["data_path"] != DATA_PATH:
        problems.append(f"{INFO_PATH}: data_path is {info['data_path']!r}, not {DATA_PATH!r}")
    features = info["features"]
    try:
        _check_features({k: f for k, f in features.items() if k not in DEFAULT_FEATURES})
    except LeRobotFormatError as err:
        problems.append(f"{INFO_PATH}: {err}")
    for key, spec in DEFAULT_FEATURES.items():
        found = features.get(key)
        if not isinstance(found, dict) or found.get("dtype") != spec["dtype"] or found.get("shape") != [1]:
            problems.append(f"{INFO_PATH}: default feature {key!r} must be {spec['dtype']} of shape [1], got {found!r}")
    video_keys = [k for k, f in features.items() if isinstance(f, dict) and f.get("dtype") == "video"]
    if info["video_path"] != (VIDEO_PATH if video_keys else None):
        problems.append(f"{INFO_PATH}: video_path is {info['video_path']!r} with video features {video_keys}")
    problems += [f"{INFO_PATH}: video feature {k!r} has no 'info'" for k in video_keys
                 if not isinstance(features[k].get("info"), dict)]
    return problems


def _png_problem(png: bytes, shape: Sequence[int]) -> str | None:
    """Why ``png`` is not an 8-bit RGB PNG of ``(H, W, 3)`` (from its IHDR chunk), or None."""
    if len(png) < 33 or png[:8] != _PNG_SIGNATURE or png[12:16] != b"IHDR":
        return "not a PNG"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    if (height, width) != tuple(shape[:2]) or png[24] != 8 or png[25] != 2:
        return f"PNG of {height}x{width}, bit depth {png[24]}, colour type {png[25]} (expected 8-bit RGB {shape})"
    return None


def _check_stats(stats: Any, features: Mapping[str, Any], total_frames: int) -> list[str]:
    if not isinstance(stats, dict):
        return [f"{STATS_PATH}: not a JSON object"]
    problems = []
    for key, spec in features.items():
        if spec["dtype"] == "string":
            continue
        found = stats.get(key)
        missing = [s for s in ("min", "max", "mean", "std", "count") if not isinstance(found, dict) or s not in found]
        if missing:
            problems.append(f"{STATS_PATH}: {key!r} lacks {missing}")
            continue
        camera = spec["dtype"] in _CAMERA_DTYPES
        expected = (3, 1, 1) if camera else (spec["shape"][0],)
        problems += [f"{STATS_PATH}: {key}/{name} has shape {np.shape(value)}, expected {expected}"
                     for name, value in found.items() if name != "count" and np.shape(value) != expected]
        if not camera and found["count"] != [total_frames]:
            problems.append(f"{STATS_PATH}: {key}/count is {found['count']}, expected [{total_frames}]")
    return problems


def _check_episodes(episodes: list[dict[str, Any]], info: Mapping[str, Any], tasks: list[str]) -> list[str]:
    features = info["features"]
    video_keys = [k for k, f in features.items() if f["dtype"] == "video"]
    needed = [*_EPISODE_COLUMNS, *(f"videos/{k}/{c}" for k in video_keys
                                   for c in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")),
              *(f"stats/{k}/{s}" for k, f in features.items() if f["dtype"] != "string"
                for s in ("min", "max", "mean", "std", "count"))]
    missing = [c for c in needed if episodes and c not in episodes[0]]
    if missing:
        return [f"meta/episodes: missing columns {missing}"]
    problems = []
    if [e["episode_index"] for e in episodes] != list(range(info["total_episodes"])):
        problems.append(f"meta/episodes: episode_index is not 0..{info['total_episodes'] - 1}")
    end = 0
    for e in episodes:
        where = f"meta/episodes: episode {e['episode_index']}"
        if e["dataset_from_index"] != end or e["dataset_to_index"] - e["dataset_from_index"] != e["length"]:
            problems.append(f"{where}: rows {e['dataset_from_index']}..{e['dataset_to_index']} with length "
                            f"{e['length']} do not follow row {end}")
        end = e["dataset_to_index"]
        if e["length"] < 1 or not e["tasks"] or not set(e["tasks"]) <= set(tasks):
            problems.append(f"{where}: length {e['length']}, tasks {e['tasks']} (known: {tasks})")
        for key in video_keys:
            start, stop = e[f"videos/{key}/from_timestamp"], e[f"videos/{key}/to_timestamp"]
            if start < 0 or abs(stop - start - e["length"] / info["fps"]) > TIMESTAMP_TOLERANCE_S:
                problems.append(f"{where}: {key} spans {start}..{stop} s for {e['length']} frames at {info['fps']} fps")
    if end != info["total_frames"]:
        problems.append(f"meta/episodes: the episodes hold {end} frames, info.json says {info['total_frames']}")
    return problems


def _check_data_file(table: pa.Table, path: str, first_row: int, episodes: list[dict[str, Any]],
                     info: Mapping[str, Any], tasks: list[str]) -> list[str]:
    """Problems of one data file whose rows start at dataset row ``first_row``."""
    columns = {k: f for k, f in info["features"].items() if f["dtype"] != "video"}
    if table.column_names != list(columns):
        return [f"{path}: columns {table.column_names}, expected {list(columns)}"]
    problems = [f"{path}: column {k!r} is {table.schema.field(k).type}, expected {_arrow_type(f)}"
                for k, f in columns.items() if table.schema.field(k).type != _arrow_type(f)]
    if problems:
        return problems
    n = table.num_rows
    index = table.column("index").to_numpy()
    if not np.array_equal(index, np.arange(first_row, first_row + n)):
        return [f"{path}: index is not {first_row}..{first_row + n - 1} in order"]
    for e in episodes:
        if e["dataset_to_index"] <= first_row or e["dataset_from_index"] >= first_row + n:
            continue
        where = f"{path}: episode {e['episode_index']}"
        wanted = info["data_path"].format(chunk_index=e["data/chunk_index"], file_index=e["data/file_index"])
        if wanted != path or e["dataset_from_index"] < first_row or e["dataset_to_index"] > first_row + n:
            problems.append(f"{where}: its rows must all be in {wanted}")
            continue
        rows = table.slice(e["dataset_from_index"] - first_row, e["length"])
        frame_index = rows.column("frame_index").to_numpy()
        task_indices = set(rows.column("task_index").to_pylist())
        if not (rows.column("episode_index").to_numpy() == e["episode_index"]).all():
            problems.append(f"{where}: rows with another episode_index")
        if not np.array_equal(frame_index, np.arange(e["length"])):
            problems.append(f"{where}: frame_index is not 0..{e['length'] - 1}")
        elif np.abs(rows.column("timestamp").to_numpy() - frame_index / info["fps"]).max() > TIMESTAMP_TOLERANCE_S:
            problems.append(f"{where}: timestamps are not frame_index / fps")
        if not task_indices <= set(range(len(tasks))) or not {tasks[t] for t in task_indices} <= set(e["tasks"]):
            problems.append(f"{where}: task_index {sorted(task_indices)} not among its tasks {e['tasks']}")
    for key, spec in columns.items():
        if spec["dtype"] == "image":
            bad = [(i, why) for i, png in enumerate(table.column(key).combine_chunks().field("bytes").to_pylist())
                   if (why := _png_problem(png or b"", spec["shape"]))]
            if bad:
                problems.append(f"{path}: {key} row {first_row + bad[0][0]}: {bad[0][1]} ({len(bad)} such rows)")
    return problems


def check_lerobot_dataset(root: str | Path) -> list[str]:
    """Problems that keep ``root`` from being a consistent LeRobot v3.0 dataset (empty: none found).

    Checks ``meta/info.json`` (fields, version, templates, features and the defaults), ``meta/tasks.parquet``
    (``task_index`` 0..T-1, unique tasks, the pandas index), ``meta/episodes`` (episode_index 0..E-1, contiguous
    ``dataset_from_index``/``dataset_to_index`` ranges matching ``length`` and the totals, known tasks, the
    columns incl. video and ``stats/`` ones, video time spans), the data files (exactly the files the episodes
    name, column names and types, ``index`` equal to the row position, each episode's rows in its file with its
    ``episode_index``, ``frame_index`` 0..N-1, ``timestamp = frame_index / fps``, one of its tasks, images 8-bit
    RGB PNGs of the declared size), the video files' presence and ``meta/stats.json``. Videos are not decoded.
    """
    root = Path(root)
    try:
        info = _load_json(root / INFO_PATH)
    except LeRobotFormatError as err:
        return [str(err)]
    problems = _check_info(info)
    if problems:
        return problems
    try:
        tasks = _read_tasks(root)
        episode_files = _parquet_files(root / "meta" / "episodes")
        if not episode_files:
            return ["meta/episodes: no parquet file"]
        episodes = pa.concat_tables(_read_table(p) for p in episode_files).to_pylist()
        stats = _load_json(root / STATS_PATH)
    except (LeRobotFormatError, pa.ArrowException) as err:
        return [str(err)]
    if len(tasks) != info["total_tasks"]:
        problems.append(f"{TASKS_PATH}: {len(tasks)} tasks, info.json says {info['total_tasks']}")
    problems += _check_episodes(episodes, info, tasks)
    problems += _check_stats(stats, info["features"], info["total_frames"])
    if problems:
        return problems
    named = {info["data_path"].format(chunk_index=e["data/chunk_index"], file_index=e["data/file_index"])
             for e in episodes}
    present = {p.relative_to(root).as_posix() for p in _parquet_files(root / "data")}
    if named != present:
        return [f"data: files {sorted(present)}, the episodes name {sorted(named)}"]
    first_row = 0
    for path in sorted(present):
        try:
            table = _read_table(root / path)
        except LeRobotFormatError as err:
            return [str(err)]
        problems += _check_data_file(table, path, first_row, episodes, info, tasks)
        first_row += table.num_rows
    if first_row != info["total_frames"]:
        problems.append(f"data: {first_row} rows, info.json says total_frames {info['total_frames']}")
    for key in (k for k, f in info["features"].items() if f["dtype"] == "video"):
        for e in episodes:
            path = info["video_path"].format(video_key=key, chunk_index=e[f"videos/{key}/chunk_index"],
                                             file_index=e[f"videos/{key}/file_index"])
            if not (root / path).is_file():
                problems.append(f"{path}: missing (episode {e['episode_index']})")
    return problems
