"""The study harness: task x estimator x seed tables at stated budgets, and a gradient-quality diagnostic.

Run from the repository root: `python -m benchmarks.study --help` (see `benchmarks/study/README.md`).
"""
