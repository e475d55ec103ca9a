"""gRPC services: aggregator, key-holder, and their round and audit stores."""
