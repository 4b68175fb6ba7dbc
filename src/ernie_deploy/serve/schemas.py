"""Pydantic request and response schemas of every route (the OpenAPI document is built from them).

Native routes (`/v1/ner`, ...) forbid unknown fields, so a misspelt field is a 422 naming it;
the compatibility routes (OpenAI, Cohere / Jina rerank, PaddleNLP SimpleServing) ignore fields
they do not use, as the services they imitate do.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, WithJsonSchema, field_validator
from pydantic_core import PydanticCustomError

# What the server accepts, said in the schema but checked by the routes (so an empty text gets
# the 400 naming the fix, not a generic validation error): not blank, lists not empty.
NOT_BLANK = {"type": "string", "minLength": 1, "pattern": "\\S"}
Text = Annotated[str, WithJsonSchema(NOT_BLANK)]
TextList = Annotated[
    list[str], WithJsonSchema({"type": "array", "items": NOT_BLANK, "minItems": 1})
]
Texts = Union[Text, TextList]
InputType = Literal["query", "document", "passage", "search_query", "search_document"]
_TEXTS = Field(
    description="One text or a list of texts (non-empty strings).",
    examples=[["乔丹在北京打球", "科比来到重庆"]],
)
_MODEL = Field(
    default=None,
    description="The served model's name; optional when one model of the route's task is loaded.",
)
_TRUNCATE: Any = Field(
    default=None,
    description="Cut texts longer than the model (or the server's character limit) instead of "
    "answering 422; default: the server's --truncate.",
)


class _Native(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Compat(BaseModel):
    model_config = ConfigDict(extra="ignore")


# ---- native routes ---------------------------------------------------------------------------


class NerRequest(_Native):
    texts: Texts = _TEXTS
    model: Optional[str] = _MODEL


class ClassifyRequest(_Native):
    texts: Texts = _TEXTS
    model: Optional[str] = _MODEL
    top_k: Optional[int] = Field(
        default=None, ge=1, le=1000, description="List the k best labels (default: the model's)."
    )
    truncate: Optional[StrictBool] = _TRUNCATE


class EmbedRequest(_Native):
    texts: Texts = _TEXTS
    model: Optional[str] = _MODEL
    truncate: Optional[StrictBool] = _TRUNCATE
    prompt_name: Optional[str] = Field(
        default=None,
        description="One of the model's prompts (E5: query, passage), put before each text.",
    )
    input_type: Optional[InputType] = Field(
        default=None,
        description="query or document (Cohere's search_query / search_document too): the "
        "model's query or passage/document prompt, if it has one; prompt_name wins.",
    )


class TokenizeRequest(_Native):
    texts: Texts = _TEXTS
    model: Optional[str] = Field(
        default=None, description="Whose tokenizer; optional when one model is loaded."
    )


class Entity(BaseModel):
    text: str = Field(description="text[start:end] of the input.")
    label: str
    start: int = Field(description="Character offset into the input string.")
    end: int = Field(description="Character offset, exclusive.")
    score: float


class NerResult(BaseModel):
    text: str
    entities: list[Entity]


class NerResponse(BaseModel):
    model: str
    results: list[NerResult]


class LabelScore(BaseModel):
    label: str
    score: float


class ClassifyResult(BaseModel):
    text: str
    label: str
    score: float
    top_k: list[LabelScore]
    labels: list[str] = Field(description="Chosen labels (several for multi-label models).")


class ClassifyResponse(BaseModel):
    model: str
    results: list[ClassifyResult]


class EmbedResult(BaseModel):
    text: str
    embedding: list[float]


class EmbedResponse(BaseModel):
    model: str
    results: list[EmbedResult]


class Token(BaseModel):
    id: int
    token: str
    start: int = Field(description="Character offset into the input string.")
    end: int = Field(description="Character offset, exclusive.")


class TokenizeResult(BaseModel):
    text: str
    tokens: list[Token]


class TokenizeResponse(BaseModel):
    model: str
    results: list[TokenizeResult]


# ---- rerank: Cohere / Jina shape -----------------------------------------------------------


class Document(_Compat):
    text: Text


class RerankRequest(_Compat):
    query: Text = Field(examples=["乔丹"])
    documents: list[Union[Text, Document]] = Field(
        description="Strings, or objects with a 'text' field.",
        examples=[["乔丹在北京打球", "今天天气很好"]],
        json_schema_extra={"minItems": 1},
    )
    top_n: Optional[int] = Field(default=None, ge=1, description="Return the n best only.")
    return_documents: StrictBool = Field(default=False, description="Include each document's text.")
    model: Optional[str] = _MODEL
    truncate: Optional[StrictBool] = _TRUNCATE


class RerankHit(BaseModel):
    index: int = Field(description="The document's position in the request.")
    relevance_score: float = Field(description="sigmoid of the model's logit, in [0, 1].")
    document: Optional[Document] = None


class RerankUsage(BaseModel):
    total_tokens: int


class RerankResponse(BaseModel):
    model: str
    results: list[RerankHit]
    usage: RerankUsage


# ---- OpenAI embeddings -----------------------------------------------------------------------


class EmbeddingsRequest(_Compat):
    input: Texts = Field(examples=["乔丹在北京打球"])
    model: Optional[str] = _MODEL
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="base64: little-endian float32 bytes, as OpenAI sends them."
    )
    dimensions: Optional[int] = Field(
        default=None, ge=1, description="Must equal the model's size when given."
    )
    user: Optional[str] = None
    truncate: Optional[StrictBool] = _TRUNCATE

    @field_validator("input", mode="before")
    @classmethod
    def _no_token_ids(cls, value: Any) -> Any:
        """OpenAI also takes token ids (tiktoken's), which no BERT vocabulary reads: say so."""
        if isinstance(value, list) and value:
            first = value[0][0] if isinstance(value[0], list) and value[0] else value[0]
            if isinstance(first, int) and not isinstance(first, bool):
                raise PydanticCustomError("token_ids", TOKEN_IDS)
        return value


TOKEN_IDS = (
    "'input' holds token ids (OpenAI's tiktoken ids), which this server's models cannot read: "
    "send the texts themselves (LangChain: OpenAIEmbeddings(..., "
    "check_embedding_ctx_length=False))."
)


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: Union[list[float], str]


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


# ---- PaddleNLP SimpleServing -----------------------------------------------------------------


class SimpleServingData(_Compat):
    text: Union[Text, list[Union[Text, list[str]]]] = Field(
        description="A text, a list of texts, or texts split into characters (lists of str).",
        examples=[["乔丹在北京打球"]],
    )
    text_pair: Optional[Union[Text, list[Union[Text, list[str]]]]] = Field(
        default=None,
        description="Classification of pairs: one second text per text (afqmc, LCQMC).",
    )


class SimpleServingRequest(_Compat):
    data: SimpleServingData
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="prob_limit (multi-label threshold), max_seq_len (tokens per sequence) and "
        "truncation (default true: cut texts over max_seq_len) are used; batch_size is the "
        "server's.",
    )


class SimpleServingResponse(BaseModel):
    result: dict[str, Any] = Field(
        description='token_cls: {"value": [[{"entity", "label", "pos": [start, end]}]] (end '
        'inclusive), "tokens_label": [[tag id]]}; seq_cls: {"label": [index], "confidence": '
        '[p], "label_name": [name]}.'
    )


# ---- models, health, errors ------------------------------------------------------------------


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "ernie-deploy"
    task: str
    max_seq_length: int
    labels: list[str] = Field(default_factory=list)
    providers: list[str] = Field(default_factory=list)


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok", "starting", "stopping", "unhealthy"]
    models: Optional[list[str]] = Field(
        description="The served names; null when the docs are closed and no key was sent."
    )


class ErrorDetail(BaseModel):
    type: str = Field(description="Machine-readable kind, e.g. invalid_request, overloaded.")
    message: str = Field(description="One sentence naming the fix.")
    param: Optional[str] = None


class ErrorBody(BaseModel):
    error: ErrorDetail
