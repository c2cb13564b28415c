"""A local stack of real processes: Redis (configured or embedded), the provider sandbox, workers
and the scheduler. Used by `unsub demo`, the end-to-end tests and the benchmarks."""
