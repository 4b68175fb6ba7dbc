"""tools/train_e5_heads.py --llrd, --label-smoothing, --rdrop, --train-on-dev and --prompt: each
parameter trains at the rate its depth says, the old two-group optimizer is unchanged when the decay
is 1 (so older runs resume on the same trajectory), the smoothed loss is the one the flag names, a
final fit trains on the dev texts too and leaves no dev-chosen best/, and a prompt goes before every
sentiment text."""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import train_e5_heads  # noqa: E402
from e5_trainer import E5Trainer  # noqa: E402

from tests.test_tool_soup import tiny_data, tiny_member  # noqa: E402


def trainer(tmp_path: Path, *flags: str) -> E5Trainer:
    base = tiny_member(tmp_path / "base", 1, layers=3)
    args = train_e5_heads.parse_args(
        ["sentiment", "--workdir", str(tmp_path / "w"), "--base", str(base), "--layers", "0"]
        + list(flags)
    )
    data = pickle.loads(tiny_data(tmp_path / "data.pkl").read_bytes())
    return E5Trainer(args, data)


def rates(t: E5Trainer) -> dict[str, tuple[float, float]]:
    """name -> (learning rate, weight decay) as the optimizer holds them."""
    where = {
        id(p): (g["initial_lr"], g["weight_decay"]) for g in t.opt.param_groups for p in g["params"]
    }
    return {n: where[id(p)] for n, p in t.model.named_parameters()}


def test_layer_wise_decay_gives_each_depth_its_rate(tmp_path: Path) -> None:
    t = trainer(tmp_path, "--llrd", "0.5", "--lr", "1e-3")
    got = rates(t)
    assert got["roberta.embeddings.word_embeddings.weight"] == (1e-3 * 0.5**4, 0.01)
    assert got["roberta.embeddings.LayerNorm.weight"] == (1e-3 * 0.5**4, 0.0)
    assert got["roberta.encoder.layer.0.attention.self.query.weight"] == (1e-3 * 0.5**3, 0.01)
    assert got["roberta.encoder.layer.2.output.dense.bias"] == (1e-3 * 0.5, 0.0)
    assert got["classifier.dense.weight"] == (1e-3, 0.01)
    assert got["classifier.out_proj.bias"] == (1e-3, 0.0)
    assert len(got) == sum(len(g["params"]) for g in t.opt.param_groups)


def test_no_decay_keeps_the_two_groups_older_runs_saved(tmp_path: Path) -> None:
    t = trainer(tmp_path)
    groups = t.opt.param_groups
    assert [(g["initial_lr"], g["weight_decay"]) for g in groups] == [(1e-4, 0.01), (1e-4, 0.0)]
    names = [n for n, _ in t.model.named_parameters()]
    plain = [n for n in names if not ("bias" in n or "LayerNorm" in n)]
    by_id = {id(p): n for n, p in t.model.named_parameters()}
    assert [by_id[id(p)] for p in groups[0]["params"]] == plain
    assert [by_id[id(p)] for p in groups[1]["params"]] == [n for n in names if n not in plain]


def test_label_smoothing_is_the_loss_of_the_step(tmp_path: Path) -> None:
    losses = {}
    for eps in ("0", "0.2"):
        t = trainer(tmp_path / eps, "--label-smoothing", eps, "--dropout", "0")
        batch = t.train_set[:4]
        ids, mask, lab = (t.tensor(x) for x in t.collate(batch))
        with torch.no_grad():
            logits = t.model(input_ids=ids, attention_mask=mask).logits
        logp = torch.log_softmax(logits, -1)
        want = -(
            (1 - float(eps)) * logp.gather(1, lab[:, None])[:, 0] + float(eps) / 2 * logp.sum(1)
        )
        losses[eps] = t.step(batch)
        assert losses[eps] == pytest.approx(float(want.mean()), rel=1e-5)
    assert losses["0"] != losses["0.2"]


def test_rdrop_adds_the_symmetric_kl_of_two_dropout_draws(tmp_path: Path) -> None:
    fn = torch.nn.functional
    plain = trainer(tmp_path / "plain", "--dropout", "0", "--label-smoothing", "0.1")
    still = trainer(
        tmp_path / "still", "--dropout", "0", "--label-smoothing", "0.1", "--rdrop", "4"
    )
    batch = plain.train_set[:4]
    # without dropout both draws agree: the KL term is 0 and the loss is the plain one
    assert still.step(batch) == pytest.approx(plain.step(batch), rel=1e-5)
    t = trainer(tmp_path / "drop", "--dropout", "0.5", "--rdrop", "1000")
    t.model.train()  # as run() trains
    ids, mask, lab = (t.tensor(x) for x in t.collate(batch))
    torch.manual_seed(t.args.seed * 1_000_003 + t.state["step"])  # the step's dropout draw
    with torch.no_grad():
        logits = t.model(input_ids=torch.cat([ids, ids]), attention_mask=torch.cat([mask, mask]))
    p, q = fn.log_softmax(logits.logits, -1).chunk(2)
    kl = ((p.exp() * (p - q)).sum(1) + (q.exp() * (q - p)).sum(1)).mean() / 2
    ce = -(torch.cat([p, q]).gather(1, torch.cat([lab, lab])[:, None])).mean()
    assert float(kl) > 1e-6  # two dropout draws differ (a tiny random head: small)
    assert t.step(batch) - float(ce) == pytest.approx(1000 * float(kl), rel=1e-3)


def test_bad_values_and_the_wrong_task_are_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for flag, value, says in (
        ("--llrd", "0", "'0' is not a number above 0 and at most 1"),
        ("--llrd", "1.5", "'1.5' is not a number above 0 and at most 1"),
        ("--label-smoothing", "1", "'1' is not a number at least 0 and below 1"),
        ("--rdrop", "-1", "'-1' is not a number at least 0"),
    ):
        with pytest.raises(SystemExit) as stop:
            train_e5_heads.parse_args(["sentiment", "--workdir", "w", flag, value])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and says in err and err.count("\n") == 1
    assert isinstance(train_e5_heads.parse_args(["ner", "--workdir", "w"]), argparse.Namespace)
    work, base = tmp_path / "w", tiny_member(tmp_path / "base", 1)
    code = train_e5_heads.main(
        ["ner", "--workdir", str(work), "--base", str(base), "--label-smoothing", "0.1"]
    )
    assert code == 2 and "with the sentiment task only" in capsys.readouterr().err
    assert not work.exists()
    code = train_e5_heads.main(["ner", "--workdir", str(work), "--base", str(base), "--rdrop", "1"])
    assert code == 2 and "with the sentiment task only" in capsys.readouterr().err
    assert not work.exists()


def test_train_on_dev_trains_on_dev_and_chooses_nothing_by_it(tmp_path: Path) -> None:
    base = tiny_member(tmp_path / "base", 1, layers=2)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):  # final/ copies them
        (base / name).write_text("{}", "utf-8")
    steps = {}
    for flags in ([], ["--train-on-dev"]):
        work = tmp_path / ("td" if flags else "plain")
        work.mkdir()
        shutil.copy(tiny_data(tmp_path / "data.pkl"), work / "data.pkl")
        args = ["sentiment", "--workdir", str(work), "--base", str(base), "--layers", "0"]
        args += ["--epochs", "1", "--batch-size", "4", "--eval-minutes", "0", "--threads", "1"]
        assert train_e5_heads.main(args + flags) == 0
        log = [json.loads(line) for line in (work / "history.jsonl").read_text().splitlines()]
        evals = [r for r in log if r.get("kind") == "eval"]
        assert evals and evals[-1]["dev"]["n"] == 8 and evals[-1]["heldout"]["n"] == 8
        steps[bool(flags)] = json.loads((work / "DONE").read_text())["step"]
        info = json.loads((work / "final" / "training_info.json").read_text())
        assert info["hparams"]["train_on_dev"] is bool(flags)
        assert (work / "best").exists() is not bool(flags)
    assert steps == {False: 2, True: 4}  # 8 training texts, then 8 + 8 dev, in batches of 4


def test_train_on_dev_is_refused_where_there_is_no_dev_to_add(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tiny_member(tmp_path / "base", 1)
    for task, extra in (("ner", []), ("sentiment", ["--dev-size", "0"])):
        work = tmp_path / task
        code = train_e5_heads.main(
            [task, "--workdir", str(work), "--base", str(base), "--train-on-dev", *extra]
        )
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "--dev-size above 0" in err
        assert not work.exists()


def test_prompt_goes_before_every_text_and_counts_against_max_len(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import e5_heads_data as hd

    tok = hd.load_tokenizer(ROOT / "src" / "ernie_deploy" / "models" / "sentiment-zh-e5")
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    texts = ["房间很干净，服务也好。", "位置不太好"]
    plain, cut = hd.sentiment_ids(tok, texts, 128)
    asked, _ = hd.sentiment_ids(tok, texts, 128, "query: ")
    prompt = tok.encode("query:", add_special_tokens=False).ids
    assert cut == 0 and len(prompt) == 3
    for p, a in zip(plain, asked):
        assert p[0] == a[0] == bos and p[-1] == a[-1] == eos
        assert a.tolist() == [bos, *prompt, *p[1:].tolist()]  # the text's pieces are unchanged
    short, cut = hd.sentiment_ids(tok, texts, 8, "query: ")
    assert cut == 2 and all(len(x) == 8 for x in short)
    assert short[0].tolist() == asked[0][:7].tolist() + [eos]
    work, base = tmp_path / "w", tiny_member(tmp_path / "base", 1)
    code = train_e5_heads.main(
        ["ner", "--workdir", str(work), "--base", str(base), "--prompt", "query: "]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--prompt puts words before each text" in err and err.count("\n") == 1
    assert not work.exists()
