"""In-process tests of the app factory, the batcher and the settings (no subprocess, no port)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import ernie_deploy
from ernie_deploy.errors import ConfigError, InputTooLongError
from ernie_deploy.serve import ServeSettings, create_app
from ernie_deploy.serve.batcher import Batcher, BatchLimits, QueuedEngine, cut_batches
from ernie_deploy.serve.inputs import check_inputs
from ernie_deploy.serve.settings import (
    build_settings,
    merge_models,
    parse_model_arg,
    read_config,
)
from ernie_deploy.serve.status import ERROR_TABLE, status_for

Scenario = Callable[[Any, httpx.AsyncClient], Awaitable[None]]


def run_app(models: dict[str, Any], settings: ServeSettings, scenario: Scenario) -> None:
    """Run `scenario(app, client)` against the app inside its lifespan."""

    async def main() -> None:
        app = create_app(models, settings)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            before = await client.get("/health")
            assert before.status_code == 503 and before.json()["status"] == "starting"
            async with app.router.lifespan_context(app):
                await scenario(app, client)
            after = await client.get("/health")
            assert after.status_code == 503 and after.json()["status"] == "stopping"

    asyncio.run(main())


@pytest.fixture(scope="module")
def ner(lookup_ner: Path) -> Any:
    return ernie_deploy.load(lookup_ner, device="cpu")


def test_in_process_app_serves_and_reports_readiness(ner: Any) -> None:
    async def scenario(app: Any, client: httpx.AsyncClient) -> None:
        assert (await client.get("/health")).json() == {"status": "ok", "models": ["ner"]}
        texts = [f"乔丹在北京{'打球' * i}" for i in range(8)]
        responses = await asyncio.gather(
            *(client.post("/v1/ner", json={"texts": t}) for t in texts)
        )
        alone = [r.to_dict() for r in ner.predict(texts)]
        assert [r.json()["results"][0] for r in responses] == alone

    run_app({"ner": ner}, ServeSettings(max_wait_ms=20), scenario)


def test_a_failing_model_is_a_500_and_the_server_keeps_serving(ner: Any) -> None:
    real = ner.engine.model.session

    class FlakySession:  # ORT's own session, failing once the way ORT fails
        calls = 0

        def run(self, names: Any, feeds: Any) -> Any:
            FlakySession.calls += 1
            if FlakySession.calls == 1:
                raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : simulated")
            return real.run(names, feeds)

    async def scenario(app: Any, client: httpx.AsyncClient) -> None:
        ner.engine.model.session = FlakySession()
        try:
            failed = await client.post("/v1/ner", json={"texts": "乔丹"})
            ok = await client.post("/v1/ner", json={"texts": "乔丹"})
        finally:
            ner.engine.model.session = real
        assert failed.status_code == 500
        assert failed.json()["error"]["type"] == "model_error"
        assert "simulated" in failed.json()["error"]["message"]
        assert ok.status_code == 200
        assert (await client.get("/health")).status_code == 200

    run_app({"ner": ner}, ServeSettings(), scenario)


def test_request_options_stay_with_their_request(bag_cls: Path) -> None:
    cls = ernie_deploy.load(bag_cls, task="seq_cls", device="cpu")

    async def scenario(app: Any, client: httpx.AsyncClient) -> None:
        bodies = [{"texts": "北京的天气", "top_k": k} for k in (1, 5, 2, 15, 3)]
        responses = await asyncio.gather(*(client.post("/v1/classify", json=b) for b in bodies))
        assert [len(r.json()["results"][0]["top_k"]) for r in responses] == [1, 5, 2, 15, 3]
        assert cls.top_k == 1 and cls.truncate is False  # the loaded predictor is untouched

    run_app({"cls": cls}, ServeSettings(max_wait_ms=20), scenario)


def test_batcher_rows_come_back_to_their_callers(ner: Any) -> None:
    batcher = Batcher("ner", ner.engine.model, ner.engine.tokenizer.pad_id, BatchLimits(64, 4, 50))
    seen: list[Any] = []
    batcher.on_batch = seen.append
    batcher.start()
    texts = [["乔丹在北京打球" * (i + 1), "科比"] for i in range(6)]
    out: dict[int, list[Any]] = {}
    engines = [QueuedEngine(ner.engine, batcher) for _ in texts]
    for engine in engines:  # as the registry does on admission: the batcher waits for them
        engine.expect()

    def work(i: int) -> None:
        out[i] = [r.to_dict() for r in _with_engine(ner, engines[i]).predict(texts[i])]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    batcher.stop()
    assert not batcher.alive
    for i in range(6):
        assert out[i] == [r.to_dict() for r in ner.predict(texts[i])]
    assert all(s.rows <= 4 and (s.rows == 1 or s.padded_tokens <= 64) for s in seen)
    assert max(s.requests for s in seen) > 1


def _with_engine(predictor: Any, engine: Any) -> Any:
    import copy

    clone = copy.copy(predictor)
    clone.engine = engine
    return clone


def test_cut_batches_respects_rows_and_padded_tokens() -> None:
    rows = [(None, i, n) for i, n in enumerate([50, 40, 30, 30, 10, 10, 10, 5])]
    limits = BatchLimits(max_batch_tokens=100, max_batch_size=3, max_padding=1.5)
    batches = list(cut_batches(rows, limits))  # type: ignore[arg-type]
    assert [[n for _, _, n in b] for b in batches] == [[50, 40], [30, 30, 10], [10, 10, 5]]
    alone = list(cut_batches([(None, 0, 500)], BatchLimits(max_batch_tokens=100)))  # type: ignore[list-item]
    assert len(alone) == 1  # a row over the budget still runs, alone


def test_cut_batches_keeps_padding_bounded() -> None:
    lengths = [300, 280, 150, 140, 40, 38, 36, 8, 7, 6, 5]
    rows = [(None, i, n) for i, n in enumerate(lengths)]
    batches = list(cut_batches(rows, BatchLimits(max_batch_size=32, max_padding=1.5)))  # type: ignore[arg-type]
    assert [[n for _, _, n in b] for b in batches] == [
        [300, 280, 150, 140],
        [40, 38, 36, 8],
        [7, 6, 5],
    ]
    for b in batches:
        widths = [n for _, _, n in b]
        assert len(widths) * widths[0] <= 1.5 * sum(widths)
    assert [r for b in batches for r in b] == rows  # every row once, in order


def test_input_limits() -> None:
    settings = ServeSettings(max_texts=2, max_chars=5)
    assert check_inputs("abc", settings) == ["abc"]
    assert check_inputs(["abcdefgh"], settings, truncate=True) == ["abcde"]
    with pytest.raises(InputTooLongError, match="at most 5"):
        check_inputs(["abcdefgh"], settings)
    with pytest.raises(ernie_deploy.errors.InputError, match="at most 2"):
        check_inputs(["a", "b", "c"], settings)


def test_error_table_orders_subclasses_first() -> None:
    classes = [cls for cls, _, _ in ERROR_TABLE]
    for i, cls in enumerate(classes):
        assert not any(issubclass(cls, earlier) for earlier in classes[:i]), cls
    assert status_for(ernie_deploy.errors.EmptyInputError("x")) == (400, "empty_input")
    assert status_for(ValueError("x")) == (500, "server_error")


def test_model_arguments_and_config(tmp_path: Path) -> None:
    assert parse_model_arg("ner=/m/ner_dir").name == "ner"
    assert parse_model_arg("/models/msra-ner/").name == "msra-ner"
    assert parse_model_arg("/models/tnews.onnx").name == "tnews"
    with pytest.raises(ConfigError, match="not usable"):
        parse_model_arg("a b=/x")
    with pytest.raises(ConfigError, match="Two models are named"):
        merge_models([parse_model_arg("a=/x")], [parse_model_arg("a=/y")])
    config = tmp_path / "serve.toml"
    config.write_text(
        'port = 9000\nmax_wait_ms = 2\n[models]\nner = "ner-zh"\n'
        '[models.emb]\npath = "/m/bge"\ntask = "embedding"\n',
        encoding="utf-8",
    )
    values, models = read_config(config)
    assert [(m.name, m.path, m.options.task) for m in models] == [
        ("ner", "ner-zh", None),
        ("emb", "/m/bge", "embedding"),
    ]
    settings = build_settings(values, port=8001, max_queue=None)
    assert (settings.port, settings.max_wait_ms, settings.max_queue) == (8001, 2, 256)
    for bad, match in [
        ("prot = 1\n", "unknown keys prot"),
        ('api_key = "x"\n', "keep secrets out"),
        ('[models.a]\npath = "/x"\ndevise = "cpu"\n', "unknown keys devise"),
        ("port = [\n", "not valid UTF-8 TOML"),
    ]:
        config.write_text(bad, encoding="utf-8")
        with pytest.raises(ConfigError, match=match):
            read_config(config)
    with pytest.raises(ConfigError, match="max_queue must be a positive integer"):
        build_settings({"max_queue": 0})
    with pytest.raises(ConfigError, match="max_padding must be a number of at least 1"):
        build_settings({"max_padding": 0.5})
    assert build_settings({"max_padding": 2}).max_padding == 2
    assert "secret" not in repr(ServeSettings(api_key="secret"))


def test_config_values_of_the_wrong_type_and_paths_beside_the_config(tmp_path: Path) -> None:
    for values, match in (
        ({"host": 1}, "host must be an address"),
        ({"port": 18736.5}, "port must be a whole number"),
        ({"port": True}, "port must be a whole number"),
        ({"port": "18736"}, "port must be a whole number"),
        ({"port": 70000}, "port must be a whole number"),
    ):
        with pytest.raises(ConfigError, match=match):
            build_settings(values)
    # a relative model path is read from the config's folder, where a service keeps both
    folder = tmp_path / "etc"
    (folder / "mymodel").mkdir(parents=True)
    config = folder / "serve.toml"
    config.write_text(
        '[models]\nmine = "mymodel"\nner = "ner-zh"\n[models.t]\npath = "mymodel"\n',
        encoding="utf-8",
    )
    _, models = read_config(config)
    assert [m.path for m in models] == [str(folder / "mymodel"), "ner-zh", str(folder / "mymodel")]


def test_serve_says_where_it_listens_and_checks_the_log_level(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from ernie_deploy import cli
    from ernie_deploy.serve import run

    loaded: list[object] = []
    monkeypatch.setattr(run, "load_models", lambda specs, notify: loaded.append(specs) or {})
    monkeypatch.setattr(run, "serve", lambda models, settings, log_level="info", sock=None: 0)
    runner = CliRunner()
    bad = runner.invoke(cli.app, ["serve", "ner-zh", "--log-level", "loud"])
    assert bad.exit_code != 0 and "Traceback" not in bad.output
    assert "--log-level 'loud' is not a level: use critical" in bad.stderr and not loaded
    picked = runner.invoke(cli.app, ["serve", "ner-zh", "--port", "0", "--no-playground"])
    assert picked.exit_code == 0, picked.output
    line = next(x for x in picked.stderr.splitlines() if x.startswith("listening on"))
    port = int(line.rsplit(":", 1)[1])
    assert line.startswith("listening on http://127.0.0.1:") and 0 < port < 65536


def test_every_load_option_is_settable_per_served_model(lookup_ner: Path, tmp_path: Path) -> None:
    from ernie_deploy.serve.run import load_models

    config = tmp_path / "serve.toml"
    config.write_text(
        f'[models.ner]\npath = "{lookup_ner}"\ndecode = "viterbi"\nstrict = true\n'
        'labels = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]\n'
        'max_seq_length = 64\ndevice = "cpu"\n',
        encoding="utf-8",
    )
    _, models = read_config(config)
    options = models[0].options
    assert (options.decode, options.strict, options.max_seq_length) == ("viterbi", True, 64)
    (ner,) = load_models(models, notify=lambda line: None).values()
    assert (ner.decode, ner.strict, ner.engine.max_seq_length) == ("viterbi", True, 64)
    for bad, match in [
        ('decode = "beam"\n', "Unknown decode 'beam'"),
        ("top_k = 0\n", "top_k must be a positive integer"),
        ('pooling = "max"\n', "Unknown pooling 'max'"),
    ]:
        config.write_text(f'[models.a]\npath = "/x"\n{bad}', encoding="utf-8")
        with pytest.raises(ConfigError, match=match):
            read_config(config)
