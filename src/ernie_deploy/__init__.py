"""ernie-deploy: ERNIE / BERT-family NLP models (NER, classification, embedding, rerank) on ONNX Runtime.

>>> import ernie_deploy
>>> ner = ernie_deploy.load("ner_model_dir")              # doctest: +SKIP
>>> ner(["北京的涮肉，重庆的火锅"])[0].entities            # doctest: +SKIP
"""

from typing import TYPE_CHECKING

from ernie_deploy.api import load
from ernie_deploy.errors import ErnieDeployError
from ernie_deploy.options import LoadOptions
from ernie_deploy.tasks.embedding import Embedder
from ernie_deploy.tasks.rerank import Reranker
from ernie_deploy.tasks.results import (
    EmbeddingResult,
    Entity,
    LabelScore,
    RerankHit,
    RerankResult,
    SeqClsResult,
    TokenClsResult,
)
from ernie_deploy.tasks.seq_cls import SequenceClassifier
from ernie_deploy.tasks.token_cls import TokenClassifier

if TYPE_CHECKING:
    from ernie_deploy.convert.tune import tune

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """`ernie_deploy.tune`, imported on first use (convert needs the heavy extras)."""
    if name == "tune":
        from ernie_deploy.convert.tune import tune

        return tune
    raise AttributeError(f"module 'ernie_deploy' has no attribute {name!r}")


__all__ = [
    "Embedder",
    "EmbeddingResult",
    "Entity",
    "ErnieDeployError",
    "LabelScore",
    "LoadOptions",
    "RerankHit",
    "RerankResult",
    "Reranker",
    "SeqClsResult",
    "SequenceClassifier",
    "TokenClassifier",
    "TokenClsResult",
    "load",
    "tune",
]
