"""The large-body parse worker: a child process that parses spooled bodies for `parsing.Parsers`.

Run as `python -m controller.parse_worker`. It imports only the providers (no Kubernetes client, no
aiohttp), so it stays small, and it is started without multiprocessing because a spawned
multiprocessing child re-imports the parent's `__main__`, which for `fleet-webhook` is everything.

Protocol on stdin/stdout, requests answered in order: a frame is a 4-byte big-endian length and a
pickle. Request `(id, provider, method, headers, query, path)`; answer `(id, ("ok", events))` or
`(id, ("error", kind, msg))`. The id comes back with the answer so the receiver hands each answer
to the delivery that asked, never to one that asked after it gave up waiting (parsing.py).
Pickle is safe here: both ends are this program, and the pipe is private to the two processes.
"""

from __future__ import annotations

import pickle
import struct
import sys
from typing import IO, Any

from controller import providers as registry
from controller.providers.base import PayloadError, UnsupportedMediaType, WebhookRequest

HEADER = struct.Struct(">I")


def read_frame(stream: IO[bytes]) -> Any | None:
    """One decoded frame, or None at end of input."""
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (size,) = HEADER.unpack(head)
    return pickle.loads(stream.read(size))  # noqa: S301 - the parent process, see the module docstring


def decode(data: bytes) -> Any:
    """A frame's payload (without its length prefix) decoded."""
    return pickle.loads(data)  # noqa: S301 - the other end is this program, see the module docstring


def frame(value: Any) -> bytes:
    """`value` as one frame."""
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


def answer(provider: str, method: str, headers: dict[str, str], query: dict[str, str], path: str) -> Any:
    """Parse one spooled body; errors the receiver maps to 400/415 come back as values."""
    with open(path, "rb") as handle:
        body = handle.read()
    request = WebhookRequest(method=method, headers=headers, body=body, query=query)
    try:
        return ("ok", registry.by_name(provider).parse(request))
    except UnsupportedMediaType as exc:
        return ("error", "media", str(exc))
    except PayloadError as exc:
        return ("error", "payload", str(exc))


def main() -> None:
    """Serve requests until the parent closes stdin."""
    while (request := read_frame(sys.stdin.buffer)) is not None:
        request_id, *fields = request
        sys.stdout.buffer.write(frame((request_id, answer(*fields))))
        sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
