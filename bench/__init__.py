"""The load benchmark of issue 6 and its baselines (`make bench`; README, "Benchmarks")."""
