"""The robot's HTTP inference API over any registered policy, a drop-in for the team's
``Mobile_VLA/inference_server.py`` (the library of ``python -m sim.serve``; the same code can run on the Jetson).

API (as the robot's ``api_client_node.py`` sees the team's server; ``../shared/reference/TEAM_MODELS.md``;
errors are JSON ``{"detail": "..."}``):

- ``POST /predict`` ``{"image": <base64 JPEG/PNG>, "instruction": str[, "strategy": "receding_horizon" |
  "chunk_reuse"]}`` -> ``{"action": [linear_x, linear_y], "latency_ms": float, "model_name": str, "strategy":
  "receding_horizon", "source": "inferred", "buffer_status": {}, "step": int, "session": str}``. The first four
  fields after ``action`` are the team's (``strategy`` is accepted and ignored, as theirs does); ``step`` and
  ``session`` are ours. ``latency_ms`` is the policy's inference time (decoding excluded).
- ``POST /reset`` with an optional body ``{"instruction": str, "episode_seed": int}`` -> ``{"status": "success",
  "message": "History and buffer cleared", "session": str, "reset": "done" | "pending"}``. With an instruction
  the session's policy is reset at once; without one the reset happens at the next ``/predict``.
- ``GET /health`` (no key) -> ``{"status": "healthy", "model_loaded": true, "model_name": str, "device": str,
  "gpu_memory": {...} | null, "policy": str, "sessions": int, "auth": bool}``.
- ``GET /`` (no key) -> ``{"name": "Mobile VLA Inference API", "version": "1.0.0", "status": "running"}``;
  ``GET /test`` (key) -> ``{"message": "Test endpoint", "instruction": str, "action": [0.0, 0.0]}``.

Post-processing is the server's (:class:`policies.vla.PostProcessing`): x1.15 (x1 for the team's single-frame
heads from their ``.pth``, trained on raw labels: :func:`policies.vla.output_scale`), the first frame of an episode
forced to zero, clip to +-1.5. The 0.15 dead-zone belongs to the robot node, so it is off here unless
``--dead-zone`` (the simulator's own ``sim.eval`` applies it, as the robot would).

Sessions: the optional ``X-Session-Id`` header (1-64 chars of ``A-Za-z0-9._:-``; default ``"default"``, the only
one the robot's client uses) selects a session, each with its own policy instance (so its own frame history). A
session's first ``/predict`` resets its policy with that request's instruction; later instruction changes do not
reset it (call ``/reset``). At most ``max_sessions`` are kept; the least recently used one is closed when a new
one is needed. One client (host) holds at most ``max_sessions_per_client`` (4) of them: a new session beyond that
closes that client's own least recently used one, so a client that keeps reconnecting with new session ids never
closes the robot's session (only as many distinct clients as ``max_sessions / max_sessions_per_client`` can).

Where this server differs from the team's, and why (README "Inference server"): binds loopback by default (theirs
0.0.0.0: pass ``--host 0.0.0.0`` on the robot's network); loads the policy at start-up, so a broken one fails
before serving (theirs loads lazily in the first ``/reset`` or ``/predict``: ``model_loaded`` is always true
here); a missing key gets 403 (theirs raises inside its key check: 500); a policy error gets 500 with the reason
(theirs logs it and answers a zero action with 200); sessions; request body and image size limits; no driving
log files written.

Limits: more than ``max_connections`` (64) open connections -> 503; more than ``max_connections_per_client`` (a
quarter of those, 16) open connections from one client (remote IP) -> 503 for that client only (others are still
served: :func:`deadline_protocol`); request bodies over ``max_body_bytes`` (4 MiB) -> 413; images wider or taller than 1280x720 (the robot
camera) -> 413; body not JSON -> 400; missing fields or wrong types -> 422; bad base64, not a JPEG/PNG image or
a corrupt one -> 400; missing/wrong ``X-API-Key`` when a key is configured -> 403; the policy raising -> 500.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import io
import logging
import re
import secrets
import socket
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import APIKeyHeader
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError
from starlette.concurrency import run_in_threadpool

from envs.settings import MAX_IMAGE_SIZE  # largest accepted image: the robot camera's 1280x720
from foundations.errors import ConfigError
from policies.base import Policy

log = logging.getLogger("sim.serving")

#: Largest accepted request body (bytes).
MAX_BODY_BYTES = 4 * 1024 * 1024
#: Longest accepted instruction (characters).
MAX_INSTRUCTION_CHARS = 1024
#: Seconds a client has to send a whole request (headers and body), counted from its first byte.
READ_TIMEOUT_S = 10.0
#: Connections served at once; more are answered 503.
MAX_CONNECTIONS = 64
#: Share of ``max_connections`` one client (remote IP) may hold open by default (a quarter: 16 of 64).
CONNECTIONS_PER_CLIENT_SHARE = 4


def default_connections_per_client(max_connections: int) -> int:
    """Connections one client (remote IP) may hold open when not set: a quarter of ``max_connections``, at least 1."""
    return max(1, max_connections // CONNECTIONS_PER_CLIENT_SHARE)
#: Sessions kept at once (least recently used ones are closed).
MAX_SESSIONS = 16
#: Sessions one client (host) may hold; a new one beyond closes that client's own least recently used session.
MAX_SESSIONS_PER_CLIENT = 4
DEFAULT_SESSION = "default"
#: Environment variable holding the API key (the team server's name).
API_KEY_ENV = "VLA_API_KEY"
#: What the team's server answers at ``GET /``.
ROOT_INFO = {"name": "Mobile VLA Inference API", "version": "1.0.0", "status": "running"}
#: The instruction the team's ``/test`` endpoint reports.
TEST_INSTRUCTION = "Navigate to the brown pot"
_SESSION_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_IMAGE_FORMATS = ("JPEG", "PNG")


class PredictRequest(BaseModel):
    """Body of ``POST /predict``."""

    model_config = ConfigDict(extra="ignore")
    image: StrictStr = Field(description="base64 JPEG or PNG frame (RGB), at most 1280x720")
    instruction: StrictStr = Field(max_length=MAX_INSTRUCTION_CHARS, description="language instruction")
    strategy: Literal["chunk_reuse", "receding_horizon"] = Field(
        default="chunk_reuse", description="accepted for the team's clients; execution is the policy's own")


class ResetRequest(BaseModel):
    """Optional body of ``POST /reset``."""

    model_config = ConfigDict(extra="ignore")
    instruction: StrictStr | None = Field(default=None, max_length=MAX_INSTRUCTION_CHARS)
    episode_seed: StrictInt | None = Field(default=None, ge=0, lt=2**32,
                                           description="uint32, passed to the policy as info['episode_seed']")


class PredictResponse(BaseModel):
    """Body of the ``POST /predict`` answer: the team's fields (``action`` to ``buffer_status``) and ours (``step``,
    ``session``)."""

    action: list[float] = Field(description="[linear_x, linear_y] in label units (+-1.15)")
    latency_ms: float = Field(description="policy inference time (ms)")
    model_name: str
    strategy: str = Field(description="'receding_horizon' (a new prediction every frame), as the team's server")
    source: str = Field(description="'inferred', as the team's server")
    buffer_status: dict[str, Any]
    step: int = Field(description="predictions of this session since its last reset (1 = first)")
    session: str


class ResetResponse(BaseModel):
    """Body of the ``POST /reset`` answer: ``status`` ``"success"`` and ``message`` ``"History and buffer cleared"``
    as the team's server; ``session`` and ``reset`` are ours."""

    status: str
    message: str
    session: str
    reset: str = Field(description="'done' (reset with the given instruction) or 'pending' (at the next /predict)")


class HealthResponse(BaseModel):
    """Body of the ``GET /health`` answer: ``status`` ``"healthy"``; the team's ``model_loaded``, ``model_name``,
    ``device`` (the policy's torch device, ``"cpu"`` if it has none) and ``gpu_memory`` (allocated / reserved GiB
    and the CUDA device name, None without CUDA); ours: ``policy`` (the registry name), ``sessions`` (open now) and
    ``auth`` (whether a key is required)."""

    status: str
    model_loaded: bool
    model_name: str
    device: str
    gpu_memory: dict[str, Any] | None
    policy: str
    sessions: int
    auth: bool


@dataclass
class _Session:
    policy: Policy
    lock: threading.Lock = field(default_factory=threading.Lock)
    pending_reset: bool = True
    reset_info: dict[str, Any] = field(default_factory=dict)
    steps: int = 0


class SessionStore:
    """Session id -> its own policy (built by ``factory``), LRU-bounded to ``max_sessions`` in all and to
    ``max_per_client`` created by one client; thread-safe.

    Raises (on construction):
        ConfigError: a bound < 1.
    """

    def __init__(self, factory: Callable[[], Policy], max_sessions: int = MAX_SESSIONS,
                 max_per_client: int = MAX_SESSIONS_PER_CLIENT) -> None:
        if max_sessions < 1 or max_per_client < 1:
            raise ConfigError(f"max_sessions and max_per_client must be >= 1, got {max_sessions}, {max_per_client}")
        self.factory = factory
        self.max_sessions = max_sessions
        self.max_per_client = max_per_client
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._owners: dict[str, str] = {}  # session id -> the client that created it
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session_id: str, client: str = "") -> _Session:
        """The session, created when new by ``client`` (its host): first that client's least recently used session
        is closed if it holds ``max_per_client``, then the least recently used of all if the store is full."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None:
                self._sessions.move_to_end(session_id)
                return session
            policy = self.factory()
            if not isinstance(policy, Policy):
                raise TypeError(f"policy factory returned {type(policy).__name__}, not a Policy")
            own = [sid for sid in self._sessions if self._owners.get(sid) == client]  # least recently used first
            for sid in own[:max(0, len(own) - self.max_per_client + 1)]:
                self._close(sid)
            session = self._sessions[session_id] = _Session(policy)
            self._owners[session_id] = client
            while len(self._sessions) > self.max_sessions:
                self._close(next(iter(self._sessions)))
            return session

    def _close(self, session_id: str) -> None:
        old = self._sessions.pop(session_id)
        self._owners.pop(session_id, None)
        log.info("closing least recently used session %r", session_id)
        with contextlib.suppress(Exception):
            old.policy.close()

    def close(self) -> None:
        """Close every session's policy."""
        with self._lock:
            for session in self._sessions.values():
                with contextlib.suppress(Exception):
                    session.policy.close()
            self._sessions.clear()


def decode_image(text: str, max_size: tuple[int, int] = MAX_IMAGE_SIZE) -> np.ndarray:
    """Base64 JPEG/PNG (optionally a ``data:`` URL) -> uint8 ``(H, W, 3)`` RGB.

    Raises:
        HTTPException: 400 for bad base64, an empty payload, not a JPEG/PNG image or a corrupt one; 413 for an
            image wider than ``max_size[0]`` or taller than ``max_size[1]`` px (checked before decoding pixels).
    """
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise HTTPException(400, f"'image' is not valid base64: {exc}") from None
    if not raw:
        raise HTTPException(400, "'image' is empty")
    try:
        with Image.open(io.BytesIO(raw), formats=_IMAGE_FORMATS) as img:
            width, height = img.size
            if width > max_size[0] or height > max_size[1]:
                raise HTTPException(
                    413,
                    f"image is {width}x{height} px; at most {max_size[0]}x{max_size[1]} is accepted",
                )
            rgb = img.convert("RGB")
    except UnidentifiedImageError:
        raise HTTPException(400, "'image' is not a JPEG or PNG image") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise HTTPException(400, f"'image' could not be decoded: {exc}") from None
    return np.asarray(rgb, dtype=np.uint8)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) more than ``limit`` bytes without buffering them all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise HTTPException(400, "bad Content-Length header") from None
        if size > limit:
            raise HTTPException(413, f"request body is {size} bytes; at most {limit} are accepted")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(model: type[BaseModel], body: bytes) -> Any:
    """Validate a JSON body with ``model``: 400 if it is not JSON, 422 listing the bad fields otherwise."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if any(e["type"] == "json_invalid" for e in errors):
            raise HTTPException(400, "request body is not valid JSON") from None
        if any(e["type"] == "model_type" for e in errors):
            raise HTTPException(422, "request body must be a JSON object") from None
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in errors)
        raise HTTPException(422, f"invalid request: {problems}") from None


def create_app(
    policy_factory: Callable[[], Policy],
    api_key: str | None = None,
    *,
    max_sessions: int = MAX_SESSIONS,
    max_sessions_per_client: int = MAX_SESSIONS_PER_CLIENT,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_image_size: tuple[int, int] = MAX_IMAGE_SIZE,
    preload: bool = True,
) -> FastAPI:
    """Build the inference server's FastAPI app (see the module doc for the API).

    Args:
        policy_factory: called with no argument for each new session; returns a fresh :class:`Policy` (share
            heavy weights inside the factory if many sessions are expected).
        api_key: required in ``X-API-Key`` for ``/predict``, ``/reset`` and ``/test`` when given (``/health`` and
            ``/`` stay open).
        max_sessions: sessions kept at once (LRU).
        max_sessions_per_client: sessions one client (host) may hold (its own LRU one is closed for a new one).
        max_body_bytes: largest request body (bytes).
        max_image_size: largest image ``(width, height)`` px.
        preload: build the default session's policy now, so a broken policy fails at start-up.

    Raises:
        Whatever ``policy_factory`` raises, when ``preload`` is True.
    """
    store = SessionStore(policy_factory, max_sessions, max_sessions_per_client)
    first = store.get(DEFAULT_SESSION).policy if preload else None
    policy_name = first.name if first is not None else "policy"
    settings = getattr(first, "settings", None)
    model_name = getattr(settings, "model_name", None) or policy_name
    device = str(getattr(first, "device", "cpu"))
    key_header = APIKeyHeader(
        name="X-API-Key",
        auto_error=False,
        description="required when the server has a key",
    )

    def check_key(key: str | None = Depends(key_header)) -> None:
        if api_key and not (key and secrets.compare_digest(key.encode(), api_key.encode())):
            raise HTTPException(403, "Invalid API Key")

    def session_id(request: Request) -> str:
        sid = request.headers.get("x-session-id", DEFAULT_SESSION)
        if not _SESSION_RE.match(sid):
            raise HTTPException(400, "X-Session-Id must be 1-64 characters of A-Za-z0-9._:-")
        return sid

    def get_session(sid: str, request: Request) -> _Session:
        try:
            return store.get(sid, request.client.host if request.client else "")
        except Exception as exc:  # report a broken factory as a server error
            log.exception("could not build a policy for session %r", sid)
            raise HTTPException(500, f"could not build the policy: {type(exc).__name__}: {exc}") from None

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        store.close()

    app = FastAPI(
        title="mobile-vla-sim inference server",
        description="The robot's inference API: POST /predict, POST /reset, GET /health.",
        lifespan=lifespan,
    )
    app.state.sessions = store

    def predict_sync(session: _Session, image: np.ndarray, instruction: str) -> tuple[np.ndarray, float, int]:
        with session.lock:
            if session.pending_reset:
                session.policy.reset(instruction, session.reset_info)
                session.pending_reset, session.reset_info, session.steps = False, {}, 0
            start = time.perf_counter()
            action = session.policy.act({"image": image, "instruction": instruction})
            session.steps += 1
            return action, (time.perf_counter() - start) * 1e3, session.steps

    @app.post(
        "/predict",
        response_model=PredictResponse,
        dependencies=[Depends(check_key)],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
            }
        },
    )
    async def predict(request: Request, sid: str = Depends(session_id)) -> PredictResponse:
        """Next action ``[linear_x, linear_y]`` for one frame and instruction."""
        body = _parse(PredictRequest, await _read_body(request, max_body_bytes))
        image = await run_in_threadpool(decode_image, body.image, max_image_size)  # CPU work off the event loop
        session = get_session(sid, request)
        try:
            action, latency_ms, step = await run_in_threadpool(predict_sync, session, image, body.instruction)
        except Exception as exc:  # any policy failure is the server's fault
            log.exception("policy failed in session %r", sid)
            raise HTTPException(500, f"policy {session.policy.name} failed: {type(exc).__name__}: {exc}") from None
        return PredictResponse(
            action=[float(v) for v in action[:2]],
            latency_ms=latency_ms,
            model_name=model_name,
            strategy="receding_horizon",
            source="inferred",
            buffer_status={},
            step=step,
            session=sid,
        )

    @app.post(
        "/reset",
        response_model=ResetResponse,
        dependencies=[Depends(check_key)],
        openapi_extra={
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": ResetRequest.model_json_schema()}},
            }
        },
    )
    async def reset(request: Request, sid: str = Depends(session_id)) -> ResetResponse:
        """Start a new episode for the session (clears the policy's history)."""
        raw = await _read_body(request, max_body_bytes)
        body = _parse(ResetRequest, raw) if raw.strip() else ResetRequest()
        session = get_session(sid, request)
        info = {} if body.episode_seed is None else {"episode_seed": body.episode_seed}

        def reset_sync() -> str:
            with session.lock:
                session.steps = 0
                if body.instruction is None:
                    session.pending_reset, session.reset_info = True, info
                    return "pending"
                session.policy.reset(body.instruction, info)
                session.pending_reset, session.reset_info = False, {}
                return "done"

        try:
            state = await run_in_threadpool(reset_sync)
        except Exception as exc:  # any reset failure is the server's fault
            log.exception("policy reset failed in session %r", sid)
            raise HTTPException(
                500,
                f"policy {session.policy.name} reset failed: {type(exc).__name__}: {exc}",
            ) from None
        return ResetResponse(status="success", message="History and buffer cleared", session=sid, reset=state)

    @app.get("/health", response_model=HealthResponse)
    async def health() -> HealthResponse:
        """Liveness: the team's fields (``model_loaded``, ``model_name``, ``device``, ``gpu_memory``) and ours."""
        return HealthResponse(status="healthy", model_loaded=len(store) > 0 or preload, model_name=model_name,
                              device=device, gpu_memory=_gpu_memory(), policy=policy_name, sessions=len(store),
                              auth=bool(api_key))

    @app.get("/")
    async def root() -> dict[str, str]:
        """The team's banner."""
        return dict(ROOT_INFO)

    @app.get("/test", dependencies=[Depends(check_key)])
    async def test() -> dict[str, Any]:
        """The team's key check endpoint (no inference)."""
        return {"message": "Test endpoint", "instruction": TEST_INSTRUCTION, "action": [0.0, 0.0]}

    return app


def _gpu_memory() -> dict[str, Any] | None:
    """The team's ``gpu_memory`` field: allocated / reserved GiB and the device name, or ``None`` without CUDA."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return {"allocated_gb": torch.cuda.memory_allocated() / 1024**3,
            "reserved_gb": torch.cuda.memory_reserved() / 1024**3, "device_name": torch.cuda.get_device_name(0)}


def deadline_protocol(read_timeout: float, max_per_client: int | None = None) -> type:
    """uvicorn's h11 protocol with a deadline on receiving each request (``read_timeout`` s from its first byte,
    or from the connection, to its last byte). uvicorn has none: a client trickling a byte every few seconds would
    hold a connection open for ever (slowloris). A request not received in time gets its connection closed; the
    app's own work (the model's inference) is not limited.

    uvicorn offers no public hook for this (its ``timeout_keep_alive`` bounds only the idle time between requests,
    and an ASGI middleware runs only once the headers are in), so this subclasses its ``H11Protocol`` and reads its
    ``cycle`` and ``conn``: the dependency is pinned to the uvicorn releases it was tested on (``pyproject.toml``),
    and ``tests/test_run_integrity.py`` fails on a release outside that range or without those members.

    With ``max_per_client``, one client (remote IP, from the transport's public ``peername``) holds at most that many
    open connections: uvicorn's ``limit_concurrency`` counts all clients together, so one client opening (or
    re-opening) connections could hold every slot and starve the robot. A connection beyond the client's share is
    answered ``503`` (``{"detail": "too many connections from <ip> ..."}``, ``Connection: close``) at once, never
    reaches uvicorn (so it takes none of ``max_connections``) and is closed when the client closes it, or after 1 s."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    open_per_host: dict[str, int] = {}  # connections being served, per remote IP (this server's, one event loop)
    warned: set[str] = set()  # hosts refused since they were last under their share (one log line each)

    class DeadlineH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _host: str | None = None  # counted in open_per_host
        _refused: asyncio.TimerHandle | None = None  # a connection beyond its client's share

        def _arm(self) -> None:
            if self._deadline is None:
                self._deadline = self.loop.call_later(read_timeout, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                log.warning("closing a connection from %s: request not received within %g s", self.client,
                            read_timeout)
                self.transport.close()

        def connection_made(self, transport) -> None:  # type: ignore[override]
            peer = transport.get_extra_info("peername")
            host = str(peer[0]) if isinstance(peer, (tuple, list)) and peer else ""
            if max_per_client is not None and open_per_host.get(host, 0) >= max_per_client:
                self._refuse(transport, host)
                return
            open_per_host[host] = open_per_host.get(host, 0) + 1
            self._host = host
            super().connection_made(transport)
            self._arm()

        def _refuse(self, transport, host: str) -> None:
            if host not in warned:
                warned.add(host)
                log.warning("refusing connections from %s: it already holds %d (--max-connections-per-client)",
                            host, max_per_client)
            body = (b'{"detail":"too many connections from ' + host.encode("ascii", "replace") + b": at most "
                    + str(max_per_client).encode() + b' per client; close one and retry"}')
            transport.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n"
                            b"retry-after: 1\r\n\r\n" + body)
            if transport.can_write_eof():
                transport.write_eof()  # the answer is sent; keep reading (and dropping) until the client closes,
            self._refused = self.loop.call_later(1.0, transport.close)  # so no reset loses the answer

        def data_received(self, data: bytes) -> None:
            if self._refused is not None:
                return  # a refused connection's request: already answered
            if self.cycle is None or self.cycle.response_complete:
                self._arm()  # a new request starts
            super().data_received(data)
            if self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR):
                self._disarm()  # received in full

        def eof_received(self) -> bool | None:
            if self._refused is not None:
                return None  # the client has read the 503 and closed: close too
            return super().eof_received()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._refused is not None:
                self._refused.cancel()
                return
            if self._host is not None:
                left = open_per_host.get(self._host, 1) - 1
                if left > 0:
                    open_per_host[self._host] = left
                else:
                    open_per_host.pop(self._host, None)
                warned.discard(self._host)
                self._host = None
            self._disarm()
            super().connection_lost(exc)

    return DeadlineH11Protocol


def uvicorn_config(app: FastAPI, *, read_timeout: float = READ_TIMEOUT_S, max_connections: int = MAX_CONNECTIONS,
                   max_connections_per_client: int | None = None, **kwargs: Any):
    """The ``uvicorn.Config`` the server runs with: :func:`deadline_protocol`, at most ``max_connections`` open
    connections (more are answered 503), at most ``max_connections_per_client`` of them from one remote IP (default
    :func:`default_connections_per_client`; more are answered 503 at once), idle keep-alive connections closed after
    5 s.

    Raises:
        ConfigError: a limit < 1, or ``max_connections_per_client`` above ``max_connections``.
    """
    import uvicorn

    per_client = (default_connections_per_client(max_connections) if max_connections_per_client is None
                  else max_connections_per_client)
    if max_connections < 1 or not 1 <= per_client <= max_connections:
        raise ConfigError(f"--max-connections-per-client must be in [1, --max-connections = {max_connections}], "
                          f"got {per_client}")
    return uvicorn.Config(app, http=deadline_protocol(read_timeout, per_client), limit_concurrency=max_connections,
                          timeout_keep_alive=5, **kwargs)


@contextlib.contextmanager
def serve_in_thread(
    app: FastAPI,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    log_level: str = "warning",
    timeout: float = 10.0,
    read_timeout: float = READ_TIMEOUT_S,
    max_connections: int = MAX_CONNECTIONS,
    max_connections_per_client: int | None = None,
) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread (:func:`uvicorn_config`); yields its base URL
    (``"http://127.0.0.1:PORT"``).

    ``port=0`` picks a free port. The server is stopped (and the thread joined) on exit.

    Raises:
        RuntimeError: the server did not start within ``timeout`` seconds.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn_config(app, read_timeout=read_timeout, max_connections=max_connections,
                                           max_connections_per_client=max_connections_per_client,
                                           log_level=log_level))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="sim.serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {host}:{sock.getsockname()[1]} within {timeout:g} s")
            time.sleep(0.01)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
