"""Results stage: result files and run records into one pandas frame, and the checks on it.

``load`` reads every bench_serving JSONL version met so far (through ``sglbench.record``) and
joins each row with its run's record; ``checks`` holds the sanity and fairness checks.
"""
