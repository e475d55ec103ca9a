"""The aggregator's connection to the key-holder."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np

from ..pki import PartyName
from ..rounds.chunks import join_float64
from ..tls import TlsConfig
from ..v1 import common_pb2, keyholder_pb2, keyholder_pb2_grpc
from .rpc import channel, from_rpc_error



class KeyHolderClient:
    """`server` names the key-holder its certificate must carry (mutual TLS with `tls`)."""

    def __init__(self, address: str, tls: TlsConfig | None = None, *, server: PartyName | None = None,
                 insecure: bool = False) -> None:
        self._channel = channel(address, tls, server=server, insecure=insecure)
        self._stub = keyholder_pb2_grpc.KeyHolderStub(self._channel)

    def public_context(self, timeout: float = 30.0) -> keyholder_pb2.PublicContext:
        try:
            return self._stub.GetPublicContext(
                keyholder_pb2.PublicContextRequest(), timeout=timeout, wait_for_ready=True
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def decrypt(self, round_id: str, vector_length: int, spec_hash: bytes,
                receipts: list[common_pb2.Receipt], chunks: list[bytes]) -> np.ndarray:
        """Send the aggregate ciphertext and its receipts; return the decrypted sum."""
        header = keyholder_pb2.DecryptHeader(
            round_id=round_id, vector_length=vector_length, spec_hash=spec_hash,
            chunk_count=len(chunks), receipts=receipts,
        )

        def messages() -> Iterator[keyholder_pb2.DecryptMessage]:
            yield keyholder_pb2.DecryptMessage(header=header)
            for index, data in enumerate(chunks):
                yield keyholder_pb2.DecryptMessage(chunk=common_pb2.Chunk(index=index, data=data))

        try:
            parts = [chunk.data for chunk in self._stub.Decrypt(messages())]
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return join_float64(parts, vector_length)

    def close(self) -> None:
        self._channel.close()
