"""Benchmarks of the harness itself: methods' speed side by side (`speed`), where a run's wall time
goes (`profile`). Command line: `python -m vh_bench.bench {speed,profile} [overrides...]`."""
