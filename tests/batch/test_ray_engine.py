"""`batch --engine ray` on a local Ray instance: the same rows as the local engine, actor deaths survived.

One Ray instance (2 CPUs, no dashboard) serves the whole module and is shut down after it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ernie_deploy.batch import BatchModel, BatchOptions, run_batch
from ernie_deploy.batch.ray_engine import BatchWorker, run_ray
from ernie_deploy.cli import app
from ernie_deploy.options import LoadOptions
from tests.batch.conftest import read_jsonl, write_jsonl

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pq = pytest.importorskip("pyarrow.parquet")

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level="WARNING",
        # the workers import this module (DyingWorker) as the tests do
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
    )
    yield
    ray.shutdown()


def test_token_cls_rows_equal_the_local_engine(
    lookup_ner: Path, corpus: Path, tmp_path: Path
) -> None:
    local, remote = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    args = [str(lookup_ner), str(corpus), "--text-column", "doc", "--batch-size", "64"]
    done = runner.invoke(app, ["batch", *args[:2], str(local), *args[2:]])
    assert done.exit_code == 0, done.output
    result = runner.invoke(
        app, ["batch", *args[:2], str(remote), *args[2:], "--engine", "ray", "--num-actors", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "ray: 2 actor(s) x 1 thread(s)" in result.stderr
    assert remote.read_bytes() == local.read_bytes()  # row for row, byte for byte
    assert len(read_jsonl(remote)) == 300


def test_seq_cls_parquet_with_shipped_model_equals_local(
    bag_cls: Path, corpus: Path, tmp_path: Path
) -> None:
    model = BatchModel(str(bag_cls), LoadOptions(task="seq_cls", top_k=2))
    local, remote = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    run_batch(model, corpus, local, BatchOptions(text_column="doc", batch_size=50))
    # the model's files travel through the object store, as for a cluster without shared disk
    options = BatchOptions(
        text_column="doc", batch_size=50, engine="ray", num_actors=1, ship_model=True
    )
    report = run_batch(model, corpus, remote, options)
    assert report.written == 300
    assert pq.read_table(remote).to_pylist() == pq.read_table(local).to_pylist()
    assert len(pq.read_table(remote).column("top_k")[0]) == 2


def test_job_stopped_locally_resumes_on_ray(
    lookup_ner: Path, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.batch.test_local import Crash, crash_after

    model = BatchModel(str(lookup_ner))
    fresh, out = tmp_path / "fresh.jsonl", tmp_path / "out.jsonl"
    run_batch(model, corpus, fresh, BatchOptions(text_column="doc", batch_size=100))
    with monkeypatch.context() as m:
        crash_after(m, 1)
        with pytest.raises(Crash):
            run_batch(model, corpus, out, BatchOptions(text_column="doc", batch_size=100))
    options = BatchOptions(text_column="doc", batch_size=100, engine="ray", num_actors=1)
    report = run_batch(model, corpus, out, options)
    assert (report.resumed_from, report.written) == (100, 200)
    assert out.read_bytes() == fresh.read_bytes()


class DyingWorker(BatchWorker):
    """Kills its own process (once, across restarts: a flag file) when it meets row `KILL_ROW`."""

    KILL_ROW = 130

    def __init__(self, *args: Any, flag: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flag = flag

    def __call__(self, batch: Any) -> Any:
        if self.KILL_ROW in batch["_row"].to_pylist():
            try:
                os.close(os.open(self.flag, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                os._exit(1)  # the actor dies mid-job, its batch unfinished
        return super().__call__(batch)


def test_killed_actor_still_yields_every_row_once(
    lookup_ner: Path, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = BatchModel(str(lookup_ner))
    local = tmp_path / "local.jsonl"
    run_batch(model, corpus, local, BatchOptions(text_column="doc", batch_size=32))
    flag = tmp_path / "killed"
    import ernie_deploy.batch.ray_engine as engine

    def run_with_dying(*args: Any, **kwargs: Any) -> None:
        run_ray(*args, worker_cls=_dying_cls(str(flag)), **kwargs)

    monkeypatch.setattr(engine, "run_ray", run_with_dying)
    out = tmp_path / "ray.jsonl"
    options = BatchOptions(text_column="doc", batch_size=32, engine="ray", num_actors=2)
    report = run_batch(model, corpus, out, options)
    assert flag.exists()  # an actor did die
    ids = [r["id"] for r in read_jsonl(out)]
    assert sorted(ids) == list(range(300)) and len(set(ids)) == 300
    assert out.read_bytes() == local.read_bytes()
    assert report.written == 300


def _dying_cls(flag: str) -> type:
    class Dying(DyingWorker):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, flag=flag, **kwargs)

    return Dying


def test_bad_row_on_an_actor_is_one_sentence_and_keeps_earlier_rows(
    bag_cls: Path, tmp_path: Path
) -> None:
    src = write_jsonl(
        tmp_path / "in.jsonl", [{"text": "北京" * (40 if i == 7 else 2)} for i in range(10)]
    )
    out = tmp_path / "out.jsonl"
    args = ["--task", "seq_cls", "--max-seq-length", "16", "--batch-size", "2"]
    result = runner.invoke(
        app,
        ["batch", str(bag_cls), str(src), str(out), *args, "--engine", "ray", "--num-actors", "1"],
    )
    assert result.exit_code == 2
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert error == [
        "error: Text 7 has 80 tokens but the model takes 14 (max_seq_length 16 with special "
        "tokens): shorten it, raise max_seq_length, or ask for truncation (truncate=True / "
        "--truncate)."
    ]
    assert [r["id"] for r in read_jsonl(out)] == list(range(6))  # the chunks before it
