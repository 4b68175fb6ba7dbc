"""Batch jobs over large corpora: `ernie-deploy batch MODEL INPUT OUTPUT`, in-process or on Ray.

>>> from ernie_deploy.batch import BatchOptions, BatchModel, run_batch
>>> run_batch(BatchModel("ner-zh"), "docs.jsonl", "tags.jsonl", BatchOptions())  # doctest: +SKIP

Inputs are jsonl / csv / parquet files or folders (`source`), outputs jsonl or parquet written
in input order and resumable (`sink`); the local engine and the Ray engine (`ray_engine`, the
`[ray]` extra) run the same predict calls on the same chunks (`job`).
"""

from __future__ import annotations

from ernie_deploy.batch.job import BatchModel, BatchOptions, Report, run_batch

__all__ = ["BatchOptions", "BatchModel", "Report", "run_batch"]
