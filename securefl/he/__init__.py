"""Homomorphic encryption (CKKS and packed BFV): presets, keys, the packing codec, per-round
sealed masks, signed key epochs and the keystore, the key-holder's release core, chunked
encryption and the encryption pool. No transport: the gRPC services call into it."""
