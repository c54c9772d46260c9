"""diffcore benchmarks: scripts that print a table and write JSON (with the environment) to bench/results/."""
