"""A local S3 server (moto) on 127.0.0.1 and a random free port, for tests.

``s3_server()`` is a context manager yielding the endpoint URL; it sets the ``AWS_*``
environment that boto/s3fs read (endpoint, dummy credentials, region) for its duration and
stops the server at the end. moto enforces ``If-None-Match: *`` on PUT and on multipart
completion, which is what create-only writes rely on.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield endpoint
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()
