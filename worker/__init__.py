"""unsub-relay workers: intake, durable per-connection batching, delivery to providers."""

__version__ = "0.1.0"
