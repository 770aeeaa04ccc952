"""``remote`` policy: a client of the robot's HTTP inference server (``sim.serve``, or the team's
``Mobile_VLA/inference_server.py`` on their GPU server / the Jetson).

The API (``../shared/reference/ROBOT_AND_DATA.md`` section 6, ``TEAM_MODELS.md``):

- ``POST /reset`` (optional JSON ``{"instruction": str, "episode_seed": int}``) clears the server's frame history;
- ``POST /predict`` JSON ``{"image": <base64 JPEG>, "instruction": str}`` ->
  ``{"action": [linear_x, linear_y], "latency_ms": float, ...}``;
- ``GET /health``.

Authentication is the ``X-API-Key`` header; ``X-Session-Id`` selects one of ``sim.serve``'s per-client histories.
Like the robot's client, each frame is resized to ``image_size`` x ``image_size`` and JPEG-encoded before sending.

The team's server loads its model lazily inside the first ``/reset`` or ``/predict`` (many seconds for Kosmos-2),
so the first request of a client waits up to ``warmup_timeout``; and it keeps **one global frame history** for
all clients (no sessions: its ``/health`` has no ``sessions`` field), which :attr:`RemotePolicy.shares_history`
reports so that ``sim.eval`` can refuse ``--workers > 1`` (episodes would interleave in that history).
"""

from __future__ import annotations

import base64
import io
import json
import math
import threading
import time
from collections.abc import Mapping
from typing import Any

import httpx
import numpy as np
from PIL import Image

from foundations.errors import ConfigError, MobileVLAError
from policies.base import Policy


class RemotePolicyError(MobileVLAError, RuntimeError):
    """The inference server could not be reached or answered something unusable (the message names the URL)."""


class RemotePolicy(Policy):
    """Actions from a remote inference server over HTTP (the deployed robot's API).

    Args:
        url: base URL of the server, e.g. ``"http://127.0.0.1:8000"``.
        api_key: sent as the ``X-API-Key`` header when given.
        timeout: read timeout (s) of a request: the longest wait for the server's answer (the robot's client uses
            1.0 s); also the write and pool timeout.
        connect_timeout: connect timeout (s).
        warmup_timeout: read timeout (s) of the client's first request, which may carry the server's lazy model
            load.
        max_response_bytes: a larger answer is refused without being read whole.
        retries: extra attempts after a transport failure (connection refused/reset, timeout); HTTP error
            statuses are never retried. Note that a retried ``/predict`` that had in fact reached the server
            may add the same frame twice to its history.
        jpeg_quality: JPEG quality (1-95) of the frames sent.
        image_size: frames are resized to ``image_size`` x ``image_size`` px (bilinear) before encoding, as the
            robot's client does (224).
        session_id: sent as ``X-Session-Id`` when given, so several clients can share one server.
        backoff: seconds slept before retry ``k`` are ``backoff * 2**(k-1)``.
        transport: an ``httpx`` transport (tests use ``httpx.MockTransport``); default: real network.

    Observations must hold ``"image"`` (uint8 ``(H, W, 3)`` RGB, or float in ``[0, 1]``) and ``"instruction"``
    (``str``; the one given to :meth:`reset` is used when absent). Actions are float32 ``(3,)``: the server's
    ``[linear_x, linear_y]`` in label units with ``angular_z = 0``.

    Besides the base class's client-side ``latencies_ms`` (round trip, ms), ``server_latencies_ms`` holds the
    ``latency_ms`` the server reported for each step of the episode (NaN when it sent none).

    Raises:
        ConfigError: bad constructor arguments, or (from :meth:`act`) an observation without a usable image.
        TypeError: (from :meth:`act`) a non-``str`` instruction.
        RemotePolicyError: (from :meth:`reset`, :meth:`act`, :meth:`health`) connection refused, timeout after
            all retries, HTTP 4xx/5xx, a body that is not JSON, or an action that is missing, not a list of 2
            (or 3) numbers, or not finite.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        timeout: float = 2.0,
        connect_timeout: float = 2.0,
        warmup_timeout: float = 120.0,
        max_response_bytes: int = 1 << 20,
        retries: int = 2,
        jpeg_quality: int = 95,
        image_size: int = 224,
        session_id: str | None = None,
        backoff: float = 0.05,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"url must start with http:// or https://, got {url!r}")
        for label, value in (("timeout", timeout), ("connect_timeout", connect_timeout),
                             ("warmup_timeout", warmup_timeout), ("max_response_bytes", max_response_bytes)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"{label} must be a positive number, got {value!r}")
        if int(retries) < 0:
            raise ConfigError(f"retries must be >= 0, got {retries}")
        if not 1 <= int(jpeg_quality) <= 95:
            raise ConfigError(f"jpeg_quality must be in 1..95, got {jpeg_quality}")
        if int(image_size) <= 0:
            raise ConfigError(f"image_size must be positive (px), got {image_size}")
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.warmup_timeout = float(warmup_timeout)
        self.max_response_bytes = int(max_response_bytes)
        self._warm = False
        self._shares_history: bool | None = None
        self.retries = int(retries)
        self.jpeg_quality = int(jpeg_quality)
        self.image_size = int(image_size)
        self.backoff = float(backoff)
        self.server_latencies_ms: list[float] = []
        headers = {}
        if api_key:
            headers["X-API-Key"] = str(api_key)
        if session_id:
            headers["X-Session-Id"] = str(session_id)
        self._client_args = {"base_url": self.url, "headers": headers,
                             "timeout": httpx.Timeout(self.timeout, connect=self.connect_timeout), "transport": transport}
        self._client = httpx.Client(**self._client_args)
        self._aborted = threading.Event()

    # ------------------------------------------------------------------ public helpers
    def health(self) -> dict[str, Any]:
        """``GET /health`` -> the server's JSON object; raises :class:`RemotePolicyError` when unreachable."""
        return self._request("GET", "/health")

    @property
    def shares_history(self) -> bool:
        """True when the server keeps one frame history for every client (the team's server: its ``/health``
        reports no ``sessions``); False for ``sim.serve``, or when the server cannot be asked (its episodes will
        report the error)."""
        if self._shares_history is None:
            try:
                self._shares_history = "sessions" not in self.health()
            except RemotePolicyError:
                return False
        return self._shares_history

    def close(self) -> None:
        """Close the HTTP connection pool. Safe to call twice."""
        self._client.close()

    def encode_image(self, image: Any) -> str:
        """Resize an RGB frame to ``image_size`` squared and return it as base64 JPEG text (ASCII ``str``).

        Args:
            image: uint8 ``(H, W, 3)`` RGB (or float in ``[0, 1]``, or ``(H, W)`` grey).

        Raises:
            ConfigError: not a 2-D grey or ``(H, W, 3)`` array.
        """
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ConfigError(f"{self.name}: observation['image'] must be (H, W, 3) RGB, got shape {arr.shape}")
        if arr.dtype != np.uint8:
            if np.issubdtype(arr.dtype, np.floating) and arr.size and float(np.nanmax(arr)) <= 1.0:
                arr = arr * 255.0
            arr = np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8)
        frame = Image.fromarray(np.ascontiguousarray(arr))  # uint8 (H, W, 3) -> RGB
        if frame.size != (self.image_size, self.image_size):
            frame = frame.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        frame.save(buf, format="JPEG", quality=self.jpeg_quality)
        return base64.b64encode(buf.getvalue()).decode("ascii")

    # ------------------------------------------------------------------ Policy hooks
    def _reset(self, instruction: str, info: dict[str, Any]) -> None:
        self.server_latencies_ms = []
        body: dict[str, Any] = {"instruction": instruction}
        if info.get("episode_seed") is not None:  # lets a seeded server-side policy reproduce an episode
            body["episode_seed"] = int(info["episode_seed"])
        self._request("POST", "/reset", json=body)

    def _act(self, observation: Mapping[str, Any]) -> np.ndarray:
        if "image" not in observation:
            raise ConfigError(
                f"{self.name}: the observation has no 'image' (keys: {sorted(observation)}); build the environment "
                "with 'image' in obs_keys"
            )
        instruction = observation.get("instruction", self.instruction)
        if not isinstance(instruction, str):
            raise TypeError(f"{self.name}: observation['instruction'] must be str, got {type(instruction).__name__}")
        payload = {
            "image": self.encode_image(observation["image"]),
            "instruction": instruction,
        }
        data = self._request("POST", "/predict", json=payload)
        action = self._parse_action(data)
        latency = data.get("latency_ms")
        ok = isinstance(latency, (int, float)) and not isinstance(latency, bool)
        self.server_latencies_ms.append(float(latency) if ok else math.nan)
        return action

    # ------------------------------------------------------------------ internals
    def _parse_action(self, data: dict[str, Any]) -> np.ndarray:
        where = f"{self.url}/predict"
        if "action" not in data:
            raise RemotePolicyError(f"{where}: response has no 'action' (keys: {sorted(data)})")
        raw = data["action"]
        if not isinstance(raw, list) or len(raw) not in (2, 3):
            raise RemotePolicyError(f"{where}: 'action' must be a list of 2 numbers [linear_x, linear_y], got {raw!r}")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw):
            raise RemotePolicyError(f"{where}: 'action' must hold numbers, got {raw!r}")
        action = np.asarray(raw, dtype=np.float32)
        if not np.all(np.isfinite(action)):
            raise RemotePolicyError(f"{where}: 'action' is not finite: {raw!r}")
        return action

    def _abort(self) -> None:
        """Watchdog of :meth:`_request`: close the connection under a request past its deadline (the blocked read
        then fails at once)."""
        self._aborted.set()
        self._client.close()

    def _renew_if_aborted(self) -> bool:
        """After the watchdog closed the client, open a new one; returns whether it had."""
        if not self._aborted.is_set():
            return False
        self._aborted.clear()
        self._client = httpx.Client(**self._client_args)
        return True

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """Send one request with retries on transport errors; return the JSON object of a 2xx answer. The first
        request that reaches the server waits up to ``warmup_timeout`` for its answer (a lazy model load).

        Each attempt has a total deadline of ``connect_timeout`` + the read timeout, whatever the server does: the
        read timeout alone restarts with every byte, so a server trickling its answer would hold the client for
        ever."""
        where = f"{self.url}{path}"
        attempts = self.retries + 1
        read = self.timeout if self._warm or path == "/health" else max(self.timeout, self.warmup_timeout)
        timeout = httpx.Timeout(self.timeout, connect=self.connect_timeout, read=read)
        budget = self.connect_timeout + read
        for attempt in range(1, attempts + 1):
            watchdog = threading.Timer(budget, self._abort)
            watchdog.daemon = True
            watchdog.start()
            try:
                with self._client.stream(method, path, timeout=timeout, **kwargs) as response:
                    body = self._read_capped(response, f"{method} {where}")
                break
            except (httpx.TransportError, RuntimeError) as exc:
                if self._renew_if_aborted():
                    raise RemotePolicyError(f"{method} {where}: no complete answer within {budget:g} s (connect "
                                            f"{self.connect_timeout:g} s + read {read:g} s)") from None
                if not isinstance(exc, httpx.TransportError):
                    raise
                if attempt == attempts:
                    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
                    raise RemotePolicyError(
                        f"{method} {where} {kind} after {attempts} attempt(s) "
                        f"(connect {self.connect_timeout:g} s, read {read:g} s): {type(exc).__name__}: {exc}"
                    ) from exc
                time.sleep(self.backoff * 2 ** (attempt - 1))
            finally:
                watchdog.cancel()
        self._renew_if_aborted()  # the watchdog may have fired just as the answer completed
        if path != "/health":
            self._warm = True
        if response.status_code >= 400:
            raise RemotePolicyError(f"{method} {where} returned HTTP {response.status_code}: {_detail(body)}")
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise RemotePolicyError(f"{method} {where}: response is not valid JSON: {body[:200]!r}") from exc
        if not isinstance(data, dict):
            raise RemotePolicyError(f"{method} {where}: expected a JSON object, got {type(data).__name__}")
        return data

    def _read_capped(self, response: httpx.Response, where: str) -> bytes:
        """The body, refused once it passes ``max_response_bytes`` (without reading the rest)."""
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_response_bytes:
            raise RemotePolicyError(f"{where}: response of {int(declared)} bytes exceeds {self.max_response_bytes}")
        chunks, size = [], 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > self.max_response_bytes:
                raise RemotePolicyError(f"{where}: response exceeds {self.max_response_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


def _detail(body: bytes) -> str:
    """The server's error message (FastAPI's ``{"detail": ...}``) or the start of the body."""
    try:
        data = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace") or "(empty body)"
    if isinstance(data, dict) and "detail" in data:
        return str(data["detail"])[:500]
    return str(data)[:200]
