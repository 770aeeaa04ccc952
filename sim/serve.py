"""Serve any registered policy over the robot's HTTP inference API, as a drop-in for the team's
``Mobile_VLA/inference_server.py`` (the same code can run on the Jetson).

Usage::

    python -m sim.serve --policy NAME [--checkpoint FILE] [--config ROBOVLMS.json] [--backbone auto]
        [--backbone-path DIR] [--clip-path P] [--device cpu|cuda] [--host 127.0.0.1] [--port 8000]
        [--api-key KEY] [--dead-zone] [--policy-arg KEY=VALUE ...] [--max-connections 64]
        [--max-connections-per-client N]

``--policy-arg KEY=VALUE`` pairs are passed to :func:`policies.make_policy` (values are parsed as Python/JSON
literals when possible, else kept as strings), e.g. ``--policy random --policy-arg seed=3``. The API key comes
from ``--api-key`` or, as for the team's server, the ``VLA_API_KEY`` environment variable (which keeps it out of
the process list); without either, no key is asked for. The API, its limits and where it differs from the team's
server: :mod:`sim.serving.server`.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence

from foundations.errors import ConfigError
from policies import make_policy, names, vla_names
from sim.cli import (
    MAX_SECONDS,
    ArgumentParser,
    add_model_source_arguments,
    add_policy_arg_argument,
    command,
    float_in,
    int_in,
    model_source_kwargs,
    parse_policy_args,
)
from sim.evaluation.config import policy_spec
from sim.evaluation.runner import PolicyBuildError
from sim.serving.server import (
    API_KEY_ENV,
    CONNECTIONS_PER_CLIENT_SHARE,
    MAX_BODY_BYTES,
    MAX_CONNECTIONS,
    MAX_SESSIONS,
    MAX_SESSIONS_PER_CLIENT,
    READ_TIMEOUT_S,
    create_app,
    uvicorn_config,
)

log = logging.getLogger("sim.serve")


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


@command
def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 after a clean shutdown, 2 for bad arguments or a policy that
    cannot be built)."""
    import uvicorn

    parser = ArgumentParser(
        prog="python -m sim.serve",
        description="Serve a registered policy over the robot's inference API (POST /predict, POST /reset, "
        "GET /health, GET /, GET /test), as the team's inference server.",
        epilog=f"registered policies: {', '.join(names())}",
    )
    parser.add_argument("--policy", required=True, help="registered policy name, e.g. robovlms, case2, sb3:PATH.zip")
    add_model_source_arguments(parser)
    add_policy_arg_argument(parser)
    parser.add_argument("--dead-zone", action="store_true",
                        help="apply the robot node's 0.15 dead-zone here too (off: the team's server leaves it to "
                             "the robot)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only; the team's "
                                                            "server binds 0.0.0.0)")
    parser.add_argument("--port", type=int_in(0, 65535), default=8000)
    parser.add_argument("--api-key", default=os.environ.get(API_KEY_ENV),
                        help=f"required X-API-Key (default: ${API_KEY_ENV}, as the team's server; none = no auth)")
    parser.add_argument("--max-sessions", type=int_in(1, 100_000), default=MAX_SESSIONS)
    parser.add_argument("--max-sessions-per-client", type=int_in(1, 100_000), default=MAX_SESSIONS_PER_CLIENT,
                        help="sessions one client (host) may hold; a new one closes its own least recently used")
    parser.add_argument("--max-body-mb", type=float_in(0, 1024, low_open=True), default=MAX_BODY_BYTES / 2**20)
    parser.add_argument("--read-timeout", type=float_in(0, MAX_SECONDS, low_open=True), default=READ_TIMEOUT_S,
                        help="seconds a client has to send a whole request; slower connections are closed")
    parser.add_argument("--max-connections", type=int_in(1, 100_000), default=MAX_CONNECTIONS,
                        help="connections served at once; more are answered 503")
    parser.add_argument("--max-connections-per-client", type=int_in(1, 100_000), default=None,
                        help="connections one client (remote IP) may hold open; more from it are answered 503 while "
                             f"other clients are still served (default: 1/{CONNECTIONS_PER_CLIENT_SHARE} of "
                             "--max-connections, at least 1)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be in 0..65535, got {args.port}")
    if args.max_sessions < 1 or args.max_body_mb <= 0 or args.max_connections < 1 or not args.read_timeout > 0:
        parser.error("--max-sessions, --max-body-mb, --max-connections and --read-timeout must be positive")
    if args.max_connections_per_client is not None and args.max_connections_per_client > args.max_connections:
        parser.error(f"--max-connections-per-client ({args.max_connections_per_client}) must be at most "
                     f"--max-connections ({args.max_connections})")
    base = args.policy.partition(":")[0]
    vla = base in vla_names()
    source = model_source_kwargs(args)
    if source and not vla:
        parser.error(f"--{next(iter(source)).replace('_', '-')} applies to the VLA policies ({', '.join(vla_names())})")
    spec = policy_spec(args.policy, model_source=source, policy_args=parse_policy_args(args.policy_arg),
                       threads=None)
    kwargs = dict(spec.kwargs)
    if vla or base == "onnx":
        kwargs.setdefault("dead_zone", args.dead_zone)

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if not _is_loopback(args.host) and not args.api_key:
        log.warning("serving on %s without an API key: anyone on the network can drive this policy", args.host)
    try:
        app = create_app(lambda: make_policy(args.policy, **kwargs), api_key=args.api_key,
                         max_sessions=args.max_sessions, max_sessions_per_client=args.max_sessions_per_client,
                         max_body_bytes=int(args.max_body_mb * 2**20))
    except Exception as exc:  # noqa: BLE001 - report, do not trace back, a policy that cannot be built
        raise PolicyBuildError(f"cannot build policy {args.policy!r}: {type(exc).__name__}: {exc}") from None
    with bind(args.host, args.port) as sock:  # a busy port: one line, exit 2 (not uvicorn's log and exit 1)
        uvicorn.Server(uvicorn_config(app, read_timeout=args.read_timeout, max_connections=args.max_connections,
                                      max_connections_per_client=args.max_connections_per_client,
                                      host=args.host, port=args.port, log_level=args.log_level)).run(sockets=[sock])
    return 0


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``SO_REUSEADDR``, as uvicorn binds), handed to uvicorn.

    Raises:
        ConfigError: the address is in use or cannot be bound (one line naming ``--host`` / ``--port``).
    """
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=2048)
    except socket.gaierror as exc:  # a host name or address that does not resolve (its errno is negative)
        raise ConfigError(f"--host {host}: not a valid address or known host name ({exc.strerror or exc})") from None
    except OSError as exc:
        reason = exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc))
        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({reason}); is another server "
                          "running? choose another --port") from None


if __name__ == "__main__":
    raise SystemExit(main())
