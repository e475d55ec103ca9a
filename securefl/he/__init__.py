"""CKKS homomorphic encryption: presets, keys, chunked encryption, the encryption pool."""
