"""Run uvicorn workers on a pre-bound listener whose accepted sockets get ``TCP_NODELAY``.

``uvicorn --workers N`` binds the listener itself with ``proto`` 0; accepted sockets inherit
it and asyncio only sets ``TCP_NODELAY`` on sockets that report ``IPPROTO_TCP``, so Nagle's
algorithm stays on and every keep-alive request after the first waits for the client's
delayed ACK, ≈ 40 ms on Linux (uvicorn issue #3149). Here the listener is created with
``IPPROTO_TCP`` and handed to uvicorn's own multiprocess supervisor, as ``uvicorn.main.run``
does, so everything else is stock uvicorn.

    python bench/peers/nodelay.py bench.peers.fastapi_app:plain --port 8000 --workers 2
"""

from __future__ import annotations

import argparse
import socket

import uvicorn
from uvicorn.supervisors import Multiprocess


def listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket created with ``IPPROTO_TCP`` (what asyncio checks)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("app")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    config = uvicorn.Config(
        args.app,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
    )
    Multiprocess(config, sockets=[listener(args.host, args.port)]).run()


if __name__ == "__main__":
    main()
