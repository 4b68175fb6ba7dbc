"""The model-building commands: `convert paddle | hf`, `optimize` and `quantize`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer

from ernie_deploy.errors import ErnieDeployError, exit_code

convert_app = typer.Typer(
    help="Convert a PaddlePaddle or Hugging Face model to a verified ONNX model directory.",
    no_args_is_help=True,
)

Out = Annotated[Path, typer.Argument(help="Model directory to write (must not exist).")]
Task = Annotated[
    Optional[str],
    typer.Option(help="token_cls, seq_cls, embedding or rerank (default: read from the source)."),
]
Labels = Annotated[
    Optional[str],
    typer.Option(help="Labels in output order: 'O,B-PER,I-PER' or a file, one per line."),
]
Tolerance = Annotated[
    Optional[float], typer.Option(help="Largest max abs diff accepted against the source.")
]
MaxLen = Annotated[
    Optional[int], typer.Option(help="max_seq_length recorded in the model's config.")
]
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace OUT once the new model is verified.")
]
TokenizerDir = Annotated[
    Optional[Path], typer.Option(help="Tokenizer directory, when the source has none.")
]


def _run(action: Callable[[], object]) -> None:
    """Run a command body: print its report, or one `error:` line and the exit code."""
    try:
        report = action()
    except ErnieDeployError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exit_code(exc)) from None
    for line in report.lines():  # type: ignore[attr-defined]
        typer.echo(line)


@convert_app.command("paddle")
def convert_paddle_cmd(
    src: Annotated[
        Path,
        typer.Argument(
            help="inference.json / .pdmodel (+ .pdiparams), its directory, "
            "or a PaddleNLP save dir (model_state.pdparams)."
        ),
    ],
    out: Out,
    task: Task = None,
    labels: Labels = None,
    tokenizer: TokenizerDir = None,
    opset: Annotated[int, typer.Option(help="ONNX opset for paddle2onnx.")] = 13,
    tolerance: Tolerance = None,
    max_seq_length: MaxLen = None,
    overwrite: Overwrite = False,
    trust_pickle: Annotated[
        bool,
        typer.Option(
            "--trust-pickle",
            help="Let Paddle unpickle model_state.pdparams, which runs any code the file names "
            "(default: only numpy arrays are read from it). Only for files you trust.",
        ),
    ] = False,
) -> None:
    """paddle2onnx, then Paddle vs ONNX Runtime on a probe batch; OUT is written only if they agree."""
    from ernie_deploy.convert.paddle import convert_paddle
    from ernie_deploy.convert.verify import DEFAULT_TOLERANCE

    typer.echo(f"converting {src} with paddle2onnx (opset {opset}) ...", err=True)
    _run(
        lambda: convert_paddle(
            src,
            out,
            task=task,
            labels=labels,
            tokenizer_dir=tokenizer,
            opset=opset,
            tolerance=DEFAULT_TOLERANCE if tolerance is None else tolerance,
            max_seq_length=max_seq_length,
            overwrite=overwrite,
            trust_pickle=trust_pickle,
        )
    )


@convert_app.command("hf")
def convert_hf_cmd(
    src: Annotated[Path, typer.Argument(help="Local Hugging Face model directory.")],
    out: Out,
    task: Task = None,
    labels: Labels = None,
    opset: Annotated[Optional[int], typer.Option(help="ONNX opset (default: optimum's).")] = None,
    tolerance: Tolerance = None,
    max_seq_length: MaxLen = None,
    overwrite: Overwrite = False,
) -> None:
    """optimum's ONNX export, then PyTorch vs ONNX Runtime on a probe batch; OUT only if they agree."""
    from ernie_deploy.convert.hf import convert_hf
    from ernie_deploy.convert.verify import DEFAULT_TOLERANCE

    typer.echo(f"exporting {src} with optimum ...", err=True)
    _run(
        lambda: convert_hf(
            src,
            out,
            task=task,
            labels=labels,
            opset=opset,
            tolerance=DEFAULT_TOLERANCE if tolerance is None else tolerance,
            max_seq_length=max_seq_length,
            overwrite=overwrite,
        )
    )


def optimize_cmd(
    model: Annotated[Path, typer.Argument(help="Model directory (or its .onnx file).")],
    out: Out,
    level: Annotated[
        str, typer.Option(help="O1 basic, O2 + transformer fusions, O3 + GELU approximation.")
    ] = "O2",
    tolerance: Tolerance = None,
    tokenizer: TokenizerDir = None,
    overwrite: Overwrite = False,
) -> None:
    """ONNX Runtime transformer fusions (Attention included on paddle2onnx graphs), verified."""
    from ernie_deploy.convert.optimize import optimize_model

    _run(
        lambda: optimize_model(
            model,
            out,
            level,
            tolerance=tolerance,
            overwrite=overwrite,
            tokenizer_dir=tokenizer,
        )
    )


def quantize_cmd(
    model: Annotated[Path, typer.Argument(help="Model directory (or its .onnx file).")],
    out: Out,
    preset: Annotated[
        str, typer.Option(help="avx512_vnni, avx512, avx2 or arm64 (as optimum-cli offers).")
    ] = "avx512_vnni",
    per_channel: Annotated[
        bool, typer.Option("--per-channel", help="One scale per output channel.")
    ] = False,
    row_scales: Annotated[
        bool,
        typer.Option(
            "--row-scales",
            help="One activation scale per token row, not per batch: a text's outputs no "
            "longer depend on the texts batched with it (some speed lost).",
        ),
    ] = False,
    eval_file: Annotated[
        Optional[Path],
        typer.Option(help="Labelled .jsonl: report the metric for fp32 and int8."),
    ] = None,
    tokenizer: TokenizerDir = None,
    overwrite: Overwrite = False,
) -> None:
    """Dynamic int8 quantisation; reports size and agreement with fp32 (and the metric delta)."""
    from ernie_deploy.convert.quantize import quantize_model

    _run(
        lambda: quantize_model(
            model,
            out,
            preset=preset,
            per_channel=per_channel,
            eval_file=eval_file,
            row_scales=row_scales,
            overwrite=overwrite,
            tokenizer_dir=tokenizer,
        )
    )


def register(app: typer.Typer) -> None:
    """Add these commands to the main app."""
    app.add_typer(convert_app, name="convert")
    app.command("optimize")(optimize_cmd)
    app.command("quantize")(quantize_cmd)
