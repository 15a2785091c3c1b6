"""Benchmarks run against the real platform (not part of the installed package): serving's
delivery modes (bench/serving) and the loop's quality on drifting streams (bench/loop)."""
