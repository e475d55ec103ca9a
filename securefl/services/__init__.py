"""gRPC transport: the aggregator, key-holder and PSI services, their settings, health service,
per-caller caps and Prometheus metrics, and how they are started and drained (`launch`)."""
