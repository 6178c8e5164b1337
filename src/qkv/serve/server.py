"""Run the app under uvicorn on a socket bound here (so ``--port 0`` picks a free port and we print it)."""

from __future__ import annotations

import ipaddress
import socket
import sys

import uvicorn

from qkv.serve.app import create_app
from qkv.training.runtime import resolve_device

__all__ = ["serve"]


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(run: str, *, host: str = "127.0.0.1", port: int = 8000, device: str = "auto", max_batch: int = 16,
          queue_size: int = 64, timeout: float = 60.0) -> int:
    """Load ``run``, bind ``host:port`` and serve until interrupted; prints the URL first.

    Args:
        run: a run or checkpoint directory.
        host: the address to listen on (loopback by default; anything else is reachable by other machines).
        port: TCP port; 0 picks a free one.
        device: ``auto`` (GPU if any), ``cpu``, ``cuda``...
        max_batch, queue_size, timeout: see :func:`~qkv.serve.create_app`.
    """
    if not 0 <= port <= 65535:
        raise ValueError(f"--port must lie in [0, 65535], got {port}")
    if max_batch < 1 or queue_size < 1:
        raise ValueError(f"--max-batch ({max_batch}) and --queue-size ({queue_size}) must be >= 1")
    app = create_app(run, max_batch=max_batch, queue_size=queue_size, timeout=timeout,
                     device=str(resolve_device(device)))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # connections made from now on wait in the backlog until uvicorn accepts them
    except OSError as e:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port}: {e.strerror}") from e
    bound = sock.getsockname()[1]
    if not _is_loopback(host):
        print(f"qkv serve: warning: listening on {host}, reachable from other machines", file=sys.stderr)
    print(f"qkv serve: {app.state.engine.backend.task} model at http://{host}:{bound}/ (Ctrl-C stops)", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    return 0
