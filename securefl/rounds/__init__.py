"""The round engine and the scheme interface: the protocol core every transport drives.

Nothing here imports a transport (gRPC, Flower): transports authenticate callers, decode their
messages and hand them to `RoundEngine`; every protocol rule lives here or in a scheme."""
