"""Generated protobuf and gRPC modules (scripts/generate_protos.py). Do not edit."""
