"""gRPC plumbing shared by every service: error translation, server start-up, channels."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc

from ..errors import ERROR_METADATA_KEY, SecureFLError

log = logging.getLogger(__name__)

# Every payload is streamed in chunks far below this; larger messages are refused by gRPC
# with RESOURCE_EXHAUSTED before they reach a handler.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


def _abort(context: grpc.ServicerContext, error: SecureFLError) -> None:
    context.set_trailing_metadata(((ERROR_METADATA_KEY, type(error).__name__),))
    context.abort(error.status, str(error))


def translate_errors(method: Callable) -> Callable:
    """Turn a SecureFLError raised by a servicer method into its gRPC status; log and hide
    anything unexpected behind INTERNAL."""

    def handle(exc: Exception, context: grpc.ServicerContext) -> None:
        if isinstance(exc, SecureFLError):
            _abort(context, exc)
        log.exception("unexpected error in %s", method.__name__)
        context.abort(grpc.StatusCode.INTERNAL, "internal error")

    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def stream_wrapper(self: Any, request: Any, context: grpc.ServicerContext):
            try:
                yield from method(self, request, context)
            except Exception as exc:
                handle(exc, context)
        return stream_wrapper

    @functools.wraps(method)
    def unary_wrapper(self: Any, request: Any, context: grpc.ServicerContext):
        try:
            return method(self, request, context)
        except Exception as exc:
            handle(exc, context)
    return unary_wrapper


def start_server(register: Callable[[grpc.Server], None], host: str, port: int, workers: int = 32,
                 credentials: grpc.ServerCredentials | None = None) -> tuple[grpc.Server, int]:
    """Start a server with modest limits; returns it and the bound port (port 0 picks one)."""
    return bind_server(register, f"{host}:{port}", workers, credentials)


def bind_server(register: Callable[[grpc.Server], None], address: str, workers: int = 32,
                credentials: grpc.ServerCredentials | None = None) -> tuple[grpc.Server, int]:
    """Start a server on any gRPC address (`host:port`, `unix:/path`); returns it and the bound port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=_OPTIONS)
    register(server)
    bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot bind {address}")
    server.start()
    return server, bound


def channel(address: str, credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
    if credentials is None:
        return grpc.insecure_channel(address, options=_OPTIONS)
    return grpc.secure_channel(address, credentials, options=_OPTIONS)
