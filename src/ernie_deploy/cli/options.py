"""The model-loading flags `predict` and `batch` share, and the one `LoadOptions` they build."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ernie_deploy.options import LoadOptions

Task = Annotated[Optional[str], typer.Option(help="token_cls, seq_cls, embedding, rerank.")]
Tokenizer = Annotated[Optional[Path], typer.Option(help="Tokenizer directory.")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda[:N], tensorrt[:N].")]
Fp16 = Annotated[bool, typer.Option("--fp16", help="fp16 on CUDA (cc >= 7.0).")]
Labels = Annotated[
    Optional[str],
    typer.Option(
        help="Labels in output order: 'O,B-PER,I-PER' or a file, one per line (a bare "
        "paddle2onnx .onnx names none)."
    ),
]
MaxLen = Annotated[Optional[int], typer.Option(help="Tokens per sequence.")]
Threads = Annotated[
    Optional[int], typer.Option(help="ONNX Runtime threads (default: the usable CPUs).")
]
Truncate = Annotated[bool, typer.Option("--truncate", help="Cut over-long texts.")]
TopK = Annotated[int, typer.Option(help="seq_cls: labels listed per text.")]
MultiLabel = Annotated[
    bool, typer.Option("--multi-label", help="seq_cls: independent sigmoid per label.")
]
Strict = Annotated[
    bool, typer.Option("--strict", help="token_cls: drop I-X tags that do not continue X.")
]
Decode = Annotated[
    Optional[str],
    typer.Option(help="token_cls: argmax, or viterbi (best BIO-valid tag sequence)."),
]
Pooling = Annotated[Optional[str], typer.Option(help="embedding: cls or mean pooling.")]
Normalize = Annotated[
    Optional[bool],
    typer.Option("--normalize/--no-normalize", help="embedding: L2-normalise (default: yes)."),
]

PromptName = Annotated[
    Optional[str],
    typer.Option(
        help="embedding: the model's prompt to put before each text (E5: query, passage)."
    ),
]


def build_options(
    *,
    task: str | None,
    tokenizer: Path | None,
    device: str,
    fp16: bool,
    labels: str | None,
    max_seq_length: int | None,
    batch_size: int,
    threads: int | None,
    truncate: bool,
    top_k: int,
    multi_label: bool,
    strict: bool,
    decode: str | None,
    pooling: str | None,
    normalize: bool | None,
    prompt_name: str | None = None,
) -> LoadOptions:
    """The LoadOptions of a command line (flags left off keep the model directory's choice)."""
    return LoadOptions(
        task=task,
        device=device,
        fp16=fp16,
        labels=labels,  # type: ignore[arg-type]  # parsed (list or file) by LoadOptions
        tokenizer_dir=str(tokenizer) if tokenizer else None,
        max_seq_length=max_seq_length,
        batch_size=batch_size,
        threads=threads,
        truncate=truncate,
        strict=strict or None,
        top_k=top_k,
        multi_label=multi_label or None,
        pooling=pooling,
        normalize=normalize,
        decode=decode,
        prompt_name=prompt_name,
    )
