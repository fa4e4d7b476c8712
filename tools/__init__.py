"""Build scripts and the synthetic data generator: run by people and benchmarks, not by the product."""
