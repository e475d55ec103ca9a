"""The aggregator's connection to the key-holder: `he.scheme.KeyHolderLink` over gRPC."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import grpc
import numpy as np

from ..pki import PartyName
from ..rounds.chunks import join_float64
from ..rounds.pause import pause_point
from ..tls import TlsConfig
from ..v1 import common_pb2, keyholder_pb2, keyholder_pb2_grpc
from .rpc import channel, chunk_message, from_rpc_error, invoke

CALL_SECONDS = 30.0  # epochs and registrations are small; a key-holder that takes longer is in trouble


class KeyHolderClient:
    """`server` names the key-holder its certificate must carry (mutual TLS with `tls`)."""

    def __init__(self, address: str, tls: TlsConfig | None = None, *, server: PartyName | None = None,
                 insecure: bool = False) -> None:
        self._channel = channel(address, tls, server=server, insecure=insecure)
        self._stub = keyholder_pb2_grpc.KeyHolderStub(self._channel)

    def current_epoch(self, timeout: float = CALL_SECONDS) -> common_pb2.PublicEpoch:
        """Waits for the key-holder to come up (the aggregator may start first)."""
        return invoke(self._stub.GetEpoch, keyholder_pb2.EpochRequest(), timeout=timeout, wait_for_ready=True)

    def public_epoch_for_round(self, round_id: str) -> common_pb2.PublicEpoch:
        return invoke(self._stub.RegisterRound, keyholder_pb2.RegisterRoundRequest(round_id=round_id),
                      timeout=CALL_SECONDS)

    def release(self, round_id: str, vector_length: int, spec_hash: bytes, receipts: Sequence[common_pb2.Receipt],
                chunks: Sequence[bytes]) -> np.ndarray:
        """Send the aggregate ciphertexts and their receipts; return the released weighted sum."""
        header = keyholder_pb2.DecryptHeader(
            round_id=round_id, vector_length=vector_length, spec_hash=spec_hash,
            chunk_count=len(chunks), receipts=receipts,
        )

        def messages() -> Iterator[keyholder_pb2.DecryptMessage]:
            yield keyholder_pb2.DecryptMessage(header=header)
            for index, data in enumerate(chunks):
                yield chunk_message(keyholder_pb2.DecryptMessage, index, data)

        parts = []
        try:
            for chunk in self._stub.Decrypt(messages()):
                parts.append(chunk.data)
                pause_point("keyholder.answering")  # crash tests stop the aggregator mid-call here
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return join_float64(parts, vector_length)

    def close(self) -> None:
        self._channel.close()
