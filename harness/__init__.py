"""Real services for the test suite and the benchmarks: PostgreSQL, Redis, S3, worker clusters, tokens."""
