"""Where a Paddle model to convert is, and which kind: a static inference model or a PaddleNLP save dir."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ernie_deploy.convert.paddle_weights import PICKLED_WEIGHTS, SAFE_WEIGHTS
from ernie_deploy.errors import ModelNotFoundError


@dataclass(frozen=True)
class PaddleSource:
    """Where the Paddle model is and which kind it is."""

    kind: str  # "static" | "dygraph"
    directory: Path  # holds the tokenizer / config files (the source dir)
    program: Path | None = None  # static: .json or .pdmodel
    params: Path | None = None  # static: .pdiparams

    @property
    def static_files(self) -> tuple[Path, Path]:
        """(program, params) of a static model."""
        if self.program is None or self.params is None:
            raise ModelNotFoundError(f"{self.directory} is not a static Paddle model.")
        return self.program, self.params

    @property
    def label(self) -> str:
        if self.kind == "static":
            return f"Paddle static model {self.program}"
        return f"PaddleNLP checkpoint {self.directory}"


def find_source(src: str | Path) -> PaddleSource:
    """Tell a static inference model from a dygraph save dir; name the fix when it is neither."""
    src = Path(src).expanduser()
    if not src.exists():
        raise ModelNotFoundError(
            f"{src} does not exist: pass a Paddle inference model (.json/.pdmodel + .pdiparams) "
            "or a PaddleNLP save dir (model_state.pdparams)."
        )
    if src.is_file():
        if src.suffix not in (".json", ".pdmodel", ".pdiparams"):
            raise ModelNotFoundError(
                f"{src} is not a Paddle program: pass the .json / .pdmodel file or its directory."
            )
        prefix = src.with_suffix("")
        return _static(prefix, src.parent)
    if (src / PICKLED_WEIGHTS).is_file() or (src / SAFE_WEIGHTS).is_file():
        return PaddleSource("dygraph", src)
    prefixes = sorted(
        p.with_suffix("")
        for p in src.glob("*.pdiparams")
        if p.with_suffix(".json").is_file() or p.with_suffix(".pdmodel").is_file()
    )
    if not prefixes:
        raise ModelNotFoundError(
            f"No Paddle model in {src}: expected inference.json or inference.pdmodel with "
            "inference.pdiparams (paddle.jit.save), or model_state.pdparams (save_pretrained)."
        )
    if len(prefixes) > 1:
        names = ", ".join(p.name for p in prefixes)
        raise ModelNotFoundError(
            f"{src} holds several Paddle programs ({names}): pass the .json/.pdmodel file to use."
        )
    return _static(prefixes[0], src)


def _static(prefix: Path, directory: Path) -> PaddleSource:
    params = prefix.with_suffix(".pdiparams")
    program = next(
        (p for p in (prefix.with_suffix(".json"), prefix.with_suffix(".pdmodel")) if p.is_file()),
        None,
    )
    if program is None or not params.is_file():
        raise ModelNotFoundError(
            f"{prefix}.json / .pdmodel and {params.name} must both exist: copy the complete "
            "output of paddle.jit.save."
        )
    return PaddleSource("static", directory, program, params)
