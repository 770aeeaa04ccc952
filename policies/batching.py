"""Batched inference: one process holds the models, many environment workers send it their observations.

:class:`PolicyBatchServer` serves :class:`~policies.base.BatchablePolicy` models (the VLA heads, the ensemble) to
environment workers over authenticated :mod:`multiprocessing.connection` sockets (a Unix socket on one machine, TCP
across a Ray cluster). Each worker holds one connection and, per policy, one episode state in the server (frame
history, chunk executor, first-step rule: :class:`~policies.vla.VLAEpisode`), so episodes never mix. **Dynamic
batching**: when a request arrives the server waits at most ``max_wait_ms`` for the other connected workers'
requests (or until ``max_batch`` are in), then advances every waiting episode of a policy with one
:meth:`~policies.base.BatchablePolicy.act_batch`: one backbone call per instruction, one head forward per window
length. The actions equal unbatched execution to float tolerance (``tests/test_batching.py``).

:class:`BatchedPolicyClient` is the worker's side: a :class:`~policies.base.Policy` whose ``reset``/``act`` are
round trips over the worker's :class:`ServerLink`. A call cut short (a step timeout) drops its connection, so a
late answer is never read as the next one; a server that is gone makes ``act`` raise :class:`PolicyServerError`
at once, and one that stops answering (a lost node) after :data:`ANSWER_TIMEOUT_S`; nothing waits on it for ever.

Wire format (pickled tuples, only between processes that share the random ``authkey``)::

    worker -> server  ("reset", policy, instruction) | ("act", policy, {"image": uint8 (H, W, 3), "instruction": str})
    server -> worker  ("ok", action float32 (action_dim,) | None) | ("error", "Type: message")
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener, wait
from typing import Any

import numpy as np

from foundations.errors import ConfigError, MobileVLAError
from policies.base import BatchablePolicy, Policy

#: Default longest wait (ms) for more requests once one arrived. A closed-loop step of the simulator costs
#: ~20 ms of physics and rendering per worker, so workers drift apart by a few ms; waiting longer than that only
#: adds latency.
DEFAULT_MAX_WAIT_MS = 5.0
_IDLE_POLL_S = 0.05  # how often an idle server notices new workers and a stop request


#: Longest wait (s) for the server's answer to one call: a server on a lost node is given up after it (a batch of the
#: largest model on a CPU takes seconds; the policies are built before the server accepts anyone).
ANSWER_TIMEOUT_S = 600.0


def _poke(address: str | tuple[str, int]) -> None:
    """Connect to ``address`` and hang up at once, without the handshake: wakes a thread blocked in ``accept()``."""
    family = socket.AF_INET if isinstance(address, tuple) else socket.AF_UNIX
    with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        sock.connect(address)


class PolicyServerError(MobileVLAError, RuntimeError):
    """The batched policy server refused a request (the message says why) or cannot be reached."""


@dataclasses.dataclass(frozen=True)
class ServerAddress:
    """Where workers reach a :class:`PolicyBatchServer`.

    Attributes:
        address: Unix socket path, or ``(host, port)``.
        authkey: the shared secret of the connection handshake.
        policies: the policy names it serves.
    """

    address: str | tuple[str, int]
    authkey: bytes
    policies: tuple[str, ...]

    def connect(self) -> Connection:
        """A new connection to the server.

        Raises:
            PolicyServerError: the server cannot be reached or refused the key.
        """
        try:
            return Client(self.address, authkey=self.authkey)
        except (OSError, EOFError) as exc:
            raise PolicyServerError(f"cannot reach the batched policy server at {self.address}: "
                                    f"{type(exc).__name__}: {exc}") from None


@dataclasses.dataclass
class BatchStats:
    """What a server did for one policy: ``requests`` act requests answered in ``batches`` batched calls."""

    requests: int = 0
    batches: int = 0

    @property
    def mean_batch(self) -> float:
        """Act requests per batched call (0 before the first)."""
        return self.requests / self.batches if self.batches else 0.0


class PolicyBatchServer:
    """Serves batchable policies to many workers with dynamic batching (see the module docstring).

    Args:
        build: ``name -> policy``, called once per name by :meth:`start`; a policy that is not a
            :class:`~policies.base.BatchablePolicy`, or whose build raises, answers every request for it with an
            error naming the cause.
        policies: the names served (others are refused).
        max_batch: most requests in one batch (None: no limit).
        max_wait_ms: longest wait for more requests once one arrived (ms, >= 0).
        address: ``None`` (a fresh Unix socket), a socket path, or ``(host, port)`` (port 0: any free one).

    Raises:
        ConfigError: ``max_batch < 1`` or ``max_wait_ms < 0``.
        OSError: the address cannot be bound.
    """

    def __init__(self, build: Callable[[str], Policy], policies: tuple[str, ...], *, max_batch: int | None = None,
                 max_wait_ms: float = DEFAULT_MAX_WAIT_MS, address: str | tuple[str, int] | None = None) -> None:
        if max_batch is not None and max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
        if not max_wait_ms >= 0:
            raise ConfigError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self._build = build
        self.max_batch = max_batch
        self.max_wait_s = float(max_wait_ms) / 1e3
        authkey = secrets.token_bytes(32)
        self._listener = Listener(address, "AF_INET" if isinstance(address, tuple) else "AF_UNIX", authkey=authkey)
        self.address = ServerAddress(self._listener.address, authkey, tuple(policies))
        self.stats = {name: BatchStats() for name in policies}
        self._policies: dict[str, Policy] = {}
        self._build_errors: dict[str, str] = {}
        self._clients: dict[Connection, dict[str, Any]] = {}  # connection -> policy name -> episode state
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifetime
    def start(self) -> ServerAddress:
        """Build every served policy (here, so that no worker's first step waits for a build; a build that fails
        is reported to each request for that policy), then serve in two daemon threads (accepting, batching);
        returns :attr:`address`."""
        for name in self.address.policies:
            try:
                self._policy(name)
            except PolicyServerError:
                pass
        for target in (self._accept_loop, self._serve_loop):
            thread = threading.Thread(target=target, name=f"policy-batch-{target.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self.address

    def close(self) -> None:
        """Stop serving, close every connection (workers' pending calls fail at once) and the policies."""
        self._stop.set()
        if self._threads:  # wake the accepting thread: closing its socket does not interrupt accept()
            _poke(self.address.address)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)
        self._close_listener()
        with self._lock:
            for conn in self._clients:
                conn.close()
            self._clients.clear()
        for policy in self._policies.values():
            policy.close()
        self._policies.clear()

    def _close_listener(self) -> None:
        try:
            self._listener.close()
        except OSError:
            pass

    def __enter__(self) -> PolicyBatchServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ threads
    def _accept_loop(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    conn = self._listener.accept()
                except (OSError, EOFError, AuthenticationError):  # closed, or a peer that failed the handshake
                    continue
                if self._stop.is_set():
                    conn.close()
                    return
                with self._lock:
                    self._clients[conn] = {}
        finally:  # nobody accepts any more: new workers are refused at once instead of waiting
            self._close_listener()

    def _serve_loop(self) -> None:
        try:
            while not self._stop.is_set():
                batch = self._gather()
                if batch:
                    self._handle(batch)
        finally:  # whatever stops this loop, no worker is left waiting for an answer
            self._stop.set()
            _poke(self.address.address)
            with self._lock:
                for conn in self._clients:
                    conn.close()

    def _gather(self) -> dict[Connection, tuple]:
        """The requests of one batch: those waiting now, plus those arriving within ``max_wait_s``."""
        with self._lock:
            connections = list(self._clients)
        if not connections:
            self._stop.wait(_IDLE_POLL_S)
            return {}
        limit = min(self.max_batch or len(connections), len(connections))
        batch: dict[Connection, tuple] = {}
        self._receive(wait(connections, _IDLE_POLL_S), batch, limit)
        deadline = time.monotonic() + self.max_wait_s
        while batch and len(batch) < limit:
            remaining = deadline - time.monotonic()
            others = [c for c in connections if c not in batch and not c.closed]
            if remaining <= 0 or not others:
                break
            ready = wait(others, remaining)
            if not ready:
                break
            self._receive(ready, batch, limit)
        return batch

    def _receive(self, ready: list, batch: dict[Connection, tuple], limit: int) -> None:
        for conn in ready:
            if len(batch) >= limit:
                return
            try:
                message = conn.recv()
            except (EOFError, OSError):  # the worker is gone: so is its episode state
                self._drop(conn)
                continue
            batch[conn] = message

    def _drop(self, conn: Connection) -> None:
        with self._lock:
            self._clients.pop(conn, None)
        conn.close()

    def _reply(self, conn: Connection, status: str, value: Any) -> None:
        try:
            conn.send((status, value))
        except (OSError, ValueError):
            self._drop(conn)

    # ------------------------------------------------------------------ requests
    def _policy(self, name: str) -> BatchablePolicy:
        if name not in self.address.policies:
            raise PolicyServerError(f"this server does not serve policy {name!r} (it serves "
                                    f"{', '.join(self.address.policies)})")
        if name in self._build_errors:
            raise PolicyServerError(self._build_errors[name])
        if name not in self._policies:
            try:
                policy = self._build(name)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - reported to every request for it
                self._build_errors[name] = f"building the policy: {type(exc).__name__}: {exc}"
                raise PolicyServerError(self._build_errors[name]) from None
            if not isinstance(policy, BatchablePolicy):
                self._build_errors[name] = f"{name} is a {type(policy).__name__}, which cannot run batched"
                raise PolicyServerError(self._build_errors[name])
            self._policies[name] = policy
        return self._policies[name]  # type: ignore[return-value]

    def _handle(self, batch: dict[Connection, tuple]) -> None:
        from policies.backbones.base import as_uint8_nhwc

        acts: dict[str, list[tuple[Connection, Any, Mapping[str, Any]]]] = collections.defaultdict(list)
        for conn, message in batch.items():
            try:
                kind, name, payload = message
                policy = self._policy(name)
                states = self._clients.get(conn)
                if states is None:
                    continue
                if kind == "reset":
                    states[name] = states.get(name) or policy.new_episode()
                    policy.start_episode(states[name], str(payload))
                    self._reply(conn, "ok", None)
                elif kind == "act":
                    if name not in states:
                        raise PolicyServerError(f"{name}: act before reset")
                    # a bad frame (dtype, shape, a size the exported graph cannot take) fails its own request only
                    getattr(policy, "check_frame", as_uint8_nhwc)(payload["image"])
                    acts[name].append((conn, states[name], payload))
                else:
                    raise PolicyServerError(f"unknown request {kind!r}")
            except Exception as exc:  # noqa: BLE001 - a bad request fails that request only
                self._reply(conn, "error", f"{type(exc).__name__}: {exc}")
        for name, items in acts.items():
            policy = self._policies[name]
            try:
                actions = policy.act_batch([state for _, state, _ in items], [obs for *_, obs in items])
            except Exception as exc:  # noqa: BLE001 - the policy's failure ends these episodes, not the server
                for conn, _, _ in items:
                    self._reply(conn, "error", f"{type(exc).__name__}: {exc}")
                continue
            self.stats[name].requests += len(items)
            self.stats[name].batches += 1
            for (conn, _, _), action in zip(items, actions):
                self._reply(conn, "ok", np.asarray(action, dtype=np.float32))


class ServerLink:
    """One worker's connection to a :class:`PolicyBatchServer`, shared by its :class:`BatchedPolicyClient` s (one
    call at a time). Connects on first use; a call cut short (a step timeout, a lost server) closes the connection,
    whose stream may hold half a message or a late answer, and the next call connects afresh (a new connection has
    no episode state: its next call is a ``reset``).

    Args:
        address: the server's :class:`ServerAddress`.
        answer_timeout_s: longest wait for one answer (s), after which the call raises :class:`PolicyServerError`.
    """

    def __init__(self, address: ServerAddress, answer_timeout_s: float = ANSWER_TIMEOUT_S) -> None:
        self.address = address
        self.answer_timeout_s = float(answer_timeout_s)
        self._conn: Connection | None = None

    @property
    def policies(self) -> tuple[str, ...]:
        """The policy names the server serves."""
        return self.address.policies

    def call(self, kind: str, name: str, payload: Any) -> Any:
        """One request and its answer (see the module docstring).

        Raises:
            PolicyServerError: the server refused the request, or cannot be reached.
        """
        if self._conn is None:
            self._conn = self.address.connect()
        try:
            self._conn.send((kind, name, payload))
            if not self._conn.poll(self.answer_timeout_s):
                raise PolicyServerError(f"the batched policy server at {self.address.address} did not answer within "
                                        f"{self.answer_timeout_s:g} s (its node lost?)")
            status, value = self._conn.recv()
        except BaseException as exc:
            self.close()
            if isinstance(exc, (EOFError, OSError)) and not isinstance(exc, TimeoutError):
                raise PolicyServerError(f"the batched policy server is gone ({type(exc).__name__}: {exc}); its "
                                        "process was stopped or died") from None
            raise
        if status != "ok":
            raise PolicyServerError(f"batched policy server: {value}")
        return value

    def close(self) -> None:
        """Close the connection (the server forgets this worker's episodes). Safe to call twice."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class BatchedPolicyClient(Policy):
    """The policy ``name`` as served by a :class:`PolicyBatchServer`: ``reset``/``act`` are round trips over the
    worker's :class:`ServerLink`; this environment's episode state lives in the server.

    Observations: ``{"image": uint8 (H, W, 3) RGB, "instruction": str, ...}`` (only those two are sent).
    Actions: what the served policy returns (float32 ``(action_dim,)``, label units).

    Raises:
        PolicyServerError: (from ``reset``/``act``) the server refused the request (the cause is in the message:
            a policy error, a bad frame) or is gone.
    """

    def __init__(self, link: ServerLink, name: str) -> None:
        super().__init__()
        self.name = name
        self.link = link

    def _reset(self, instruction: str, info: dict[str, Any]) -> None:
        del info  # the served policies never read the privileged scene
        self.link.call("reset", self.name, instruction)

    def _act(self, observation: Mapping[str, Any]) -> np.ndarray:
        return self.link.call("act", self.name, {"image": observation["image"],
                                                 "instruction": observation.get("instruction", self.instruction)})


__all__ = ["ANSWER_TIMEOUT_S", "DEFAULT_MAX_WAIT_MS", "BatchStats", "BatchedPolicyClient", "PolicyBatchServer", "PolicyServerError",
           "ServerAddress", "ServerLink"]
