"""``make bench``: figures for the goals in issue #6, measured side by side in one run.

Not tests: nothing here asserts a speed. Results go to bench/results.json and bench/results.md.
"""
