"""`infer.py` / `ernie-deploy infer`: the ERNIE 3.0 deployment guide's command line and printed lines."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from ernie_deploy.errors import ErnieDeployError, InputError, TokenizerNotFoundError
from ernie_deploy.options import LoadOptions
from ernie_deploy.outputs import atomic_text, check_output
from ernie_deploy.textio import JsonlWriter, Line, chunked, iter_records, result_record, text_lines

GUIDE_LABELS = {
    "token_cls": ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"),
    "seq_cls": (
        "news_story",
        "news_culture",
        "news_entertainment",
        "news_sports",
        "news_finance",
        "news_house",
        "news_car",
        "news_edu",
        "news_tech",
        "news_military",
        "news_travel",
        "news_world",
        "news_stock",
        "news_agriculture",
        "news_game",
    ),
}
DEMO_TEXTS = {
    "token_cls": [
        "北京的涮肉，重庆的火锅，成都的小吃都是极具特色的美食。",
        "乔丹、科比、詹姆斯和姚明都是篮球界的标志性人物。",
    ],
    "seq_cls": [
        "未来自动驾驶真的会让酒驾和疲劳驾驶成历史吗？",
        "黄磊接受华少快问快答，不光智商逆天，情商也不逊黄渤",
    ],
}
DEMO_TEXTS["embedding"] = DEMO_TEXTS["seq_cls"]
DEMO_RERANK_QUERY = "自动驾驶会让酒驾成为历史吗？"
DEMO_TEXTS["rerank"] = DEMO_TEXTS["seq_cls"] + DEMO_TEXTS["token_cls"]
SEPARATOR = "-----------------------------"
NAME_CLASH_FIX = (
    "infer.py writes the results under their own names (`ernie-deploy predict --result-prefix "
    "pred_` puts a prefix before them)"
)
BACKEND = ">>> [InferBackend]"


def build_parser(prog: str = "infer.py") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Predict with an ERNIE / BERT ONNX model the way the ERNIE 3.0 guide's "
        "infer.py does, with exact character offsets and no silent truncation.",
    )
    p.add_argument(
        "--task_name",
        default="seq_cls",
        help="seq_cls, token_cls, embedding or rerank (default seq_cls).",
    )
    p.add_argument(
        "--model_name_or_path",
        default="ernie-3.0-medium-zh",
        help="Directory with the tokenizer (vocab.txt or tokenizer.json); "
        "default: the model's own directory.",
    )
    p.add_argument(
        "--model_path",
        default=None,
        help="The .onnx file, a model directory or a bundled model name; "
        "default: the task's bundled model (ernie-deploy models).",
    )
    p.add_argument(
        "--max_seq_length",
        type=int,
        default=128,
        help="Tokens per sequence incl. special tokens; NER windows longer texts.",
    )
    p.add_argument(
        "--use_fp16",
        action="store_true",
        help="fp16 on a CUDA GPU of compute capability >= 7.0 (ignored on CPU).",
    )
    p.add_argument(
        "--decode",
        choices=("argmax", "viterbi"),
        default=None,
        help="token_cls tag decoding (default: the model's config, else argmax).",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda[:N] or tensorrt[:N].")
    p.add_argument("--batch_size", type=int, default=32, help="Sequences per session.run.")
    p.add_argument(
        "--text",
        action="append",
        default=None,
        help="A text to predict (repeatable); default: the guide's demo texts.",
    )
    p.add_argument(
        "--input_file",
        default=None,
        help="A .txt file (one text per line), or .jsonl / .csv / .parquet (see --text_field).",
    )
    p.add_argument(
        "--text_field",
        default="text",
        help="The .jsonl field or .csv / .parquet column holding the text (default: text).",
    )
    p.add_argument("--output_file", default=None, help="Write results as jsonl here.")
    p.add_argument("--overwrite", action="store_true", help="Replace an existing --output_file.")
    p.add_argument("--query", default=None, help="rerank: the query the texts are ranked for.")
    return p


def main(argv: Sequence[str] | None = None, prog: str = "infer.py") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        return _run(args)
    except ErnieDeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, InputError) else 1
    except KeyboardInterrupt:
        print("error: interrupted: the results written so far are kept.", file=sys.stderr)
        return 130
    except OSError as exc:
        return os_failure(exc)


def os_failure(exc: OSError) -> int:
    """Exit code for an OSError no layer turned into a sentence: in practice writing the results
    failed (a full disk, stdout closed by `| head`). stdout is pointed at /dev/null so Python's
    own flush at exit does not print a second traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    if isinstance(exc, BrokenPipeError):
        return 1  # the reader went away: nothing to say
    where = f" ({exc.filename})" if exc.filename else ""
    print(
        f"error: reading or writing failed{where}: {exc.strerror or exc}: free some space or "
        "write somewhere else; the results written so far are kept.",
        file=sys.stderr,
    )
    return 1


def _run(args: argparse.Namespace) -> int:
    from ernie_deploy.api import load
    from ernie_deploy.runtime.model_dir import TASKS, find_model

    if args.task_name not in TASKS:
        raise InputError(f"Unknown --task_name {args.task_name!r}: use one of {', '.join(TASKS)}.")
    if args.model_path is None:
        from ernie_deploy.runtime.bundled import DEFAULTS, default_model

        bundled = default_model(args.task_name)
        if bundled is None:
            raise InputError(
                f"No model given and no bundled {args.task_name} model: pass --model_path "
                f"with the .onnx file (or model directory); bundled: "
                + ", ".join(f"{t} ({n})" for t, n in DEFAULTS.items())
                + "."
            )
        args.model_path = str(bundled)
    tok_dir = _tokenizer_dir(args)
    if args.text and args.input_file:
        raise InputError("Pass texts with --text or --input_file, not both.")
    if args.output_file:  # before the model is loaded
        inputs = [args.input_file] if args.input_file else []
        check_output(args.output_file, inputs, flag="--output_file", overwrite=args.overwrite)
    options = LoadOptions(
        task=args.task_name,
        device=args.device,
        fp16=args.use_fp16,
        tokenizer_dir=str(tok_dir) if tok_dir else None,
        max_seq_length=args.max_seq_length,
        batch_size=args.batch_size,
        truncate=True,
        decode=args.decode,
    )
    print(f"{BACKEND} Creating Engine ...")
    try:
        files = find_model(args.model_path, tok_dir)
    except TokenizerNotFoundError as exc:
        if tok_dir is not None:
            raise
        raise TokenizerNotFoundError(
            f"{str(exc).rstrip('.')}; infer.py does not download {args.model_name_or_path!r} "
            "from a model hub, so --model_name_or_path must name a local directory."
        ) from None
    if args.task_name in GUIDE_LABELS and not files.config.labels:
        options = options.updated(labels=GUIDE_LABELS[args.task_name])
    predictor = load(args.model_path, options=options)
    _warn_truncation(predictor, args.task_name)
    model = predictor.model
    print(f"{BACKEND} Use {'GPU' if model.on_gpu else 'CPU'} to inference ...")
    if model.fp16_active:
        print(f"{BACKEND} Use FP16 to inference ...")
    for notice in model.notices:
        print(f"{BACKEND} {notice}")
    print(f"{BACKEND} Engine Created ...")

    records = _records(args)
    output = atomic_text(Path(args.output_file)) if args.output_file else nullcontext(None)
    with output as out:
        writer = JsonlWriter(out) if out else None
        if args.task_name == "rerank":
            return _rerank(predictor, args.query or DEMO_RERANK_QUERY, records, writer)
        for chunk in chunked(records, 256):
            texts = [r.text for r in chunk]
            for line, result in zip(chunk, predictor.predict(texts)):  # type: ignore[union-attr]
                _print_result(args.task_name, result)
                if writer:
                    writer.write(result_record(line.record, result, fix=NAME_CLASH_FIX))
    return 0


def _tokenizer_dir(args: argparse.Namespace) -> Path | None:
    """The guide's --model_name_or_path names a hub model; here only a local directory counts."""
    given = Path(args.model_name_or_path).expanduser()
    if given.is_dir():
        return given
    if args.model_name_or_path != build_parser().get_default("model_name_or_path"):
        return given  # find_model reports it missing, with the fix
    return None  # the default hub name: use the tokenizer beside the model


def _records(args: argparse.Namespace) -> Iterator[Line]:
    if args.input_file:
        return iter_records(args.input_file, args.text_field, text_flag="--text_field")
    texts = args.text if args.text else DEMO_TEXTS[args.task_name]
    for i, text in enumerate(texts):
        if not text.strip():
            raise InputError(f"--text number {i + 1} is empty: pass non-empty texts.")
    return text_lines(texts)


def _warn_truncation(predictor: Any, task: str) -> None:
    """One stderr line per text (or rerank query + document) the model sees cut, told by the
    engine as it cuts (no second tokenization)."""
    engine = getattr(predictor, "engine", None)
    if task == "token_cls" or engine is None:
        return  # NER windows long texts: nothing is cut
    what = "query + document" if task == "rerank" else "input"

    def warn(text: str, tokens: int, limit: int) -> None:
        print(
            f"warning: {what} of {tokens} tokens truncated to {limit} "
            f"(--max_seq_length {engine.max_seq_length}): {text[:30]}...",
            file=sys.stderr,
        )

    engine.on_truncate = warn


def _print_result(task: str, result: Any) -> None:
    print("input data:", result.text)
    if task == "token_cls":
        print("The model detects all entities:")
        for e in result.entities:
            print("entity:", e.text, "  label:", e.label, "  pos:", [e.start, e.end - 1])
    elif task == "seq_cls":
        print("seq cls result:")
        print("label:", result.label, "  confidence:", result.score)
    else:
        vec = result.vector
        head = ", ".join(f"{x:.6f}" for x in vec[:4])
        print(f"embedding: dim {len(vec)}   [{head}, ...]")
    print(SEPARATOR)


def _rerank(predictor: Any, query: str, records: Iterator[Line], writer: Any) -> int:
    docs = [r.text for r in records]
    result = predictor.rerank(query, docs)
    print("query:", query)
    for rank, hit in enumerate(result.hits, start=1):
        print(
            "rank:", rank, "  score:", hit.score, "  index:", hit.index, "  document:", hit.document
        )
        if writer:
            writer.write({"query": query, "rank": rank, **hit.to_dict()})
    print(SEPARATOR)
    return 0
