"""The run record: what execution writes and results and the report read, in one typed shape.

``schema`` holds the pydantic models of ``metadata.json`` (run, mode, point, workload) with
``RunRecord.save``/``RunRecord.load`` (files of the first layout load too); ``jsonl`` is the one
reader, tag index and repairer of the bench client's result files. Both sit below execution and
results, so neither stage imports the other.
"""
