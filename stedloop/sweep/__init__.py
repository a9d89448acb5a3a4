"""Simulation sweeps: many simulated sessions (seeds x optimizer settings x objectives x
samples), run one after another or as Ray tasks, summarised in one table and plots.

``spec`` reads a sweep file (TOML); ``judge`` holds the frame objectives and the expected
value a proposal is judged by; ``cells`` runs one job (a simulated session or a chunk of the
dense grid); ``plan`` turns a sweep into jobs and their results back; ``engine`` runs the
jobs (in-process, or on Ray, imported only then); ``table`` and ``plots`` write the results.
``benchmarks/bench_optimizer.py`` uses the same pieces.
"""
