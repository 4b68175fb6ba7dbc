"""The exception hierarchy: every error ernie-deploy raises on purpose is defined here.

Each message is one sentence that says what is wrong and names the fix. Entry
points (CLI, HTTP) map the classes to exit codes and status codes; nothing else
should need to parse a message.
"""

from __future__ import annotations


class ErnieDeployError(Exception):
    """Base class: a problem the user can fix, reported without a traceback."""


class ModelNotFoundError(ErnieDeployError):
    """The model file or directory does not exist or holds no ONNX graph."""


class ModelLoadError(ErnieDeployError):
    """The ONNX file exists but ONNX Runtime cannot load it (corrupt or unsupported)."""


class UntrustedPickleError(ModelLoadError):
    """A checkpoint's pickle asks to run code; it is read only when the user says they trust it."""


class TokenizerNotFoundError(ErnieDeployError):
    """No tokenizer files (tokenizer.json or vocab.txt) where one was expected."""


class ConfigError(ErnieDeployError):
    """A config file or argument is malformed or inconsistent."""


class UnknownTaskError(ConfigError):
    """The task name is not one of the supported tasks, or cannot be inferred."""


class LabelMismatchError(ConfigError):
    """The number of labels differs from the size of the model's output."""


class UnsupportedGraphError(ErnieDeployError):
    """The graph declares inputs or outputs this tool cannot feed or read."""


class ProviderNotAvailableError(ErnieDeployError):
    """An explicitly requested execution provider is not installed."""


class InputError(ErnieDeployError):
    """Bad user input (maps to exit code 2 / HTTP 4xx)."""


class EmptyInputError(InputError):
    """No texts, or an empty text, where one is required."""


class InputEncodingError(InputError):
    """An input file is not valid UTF-8."""


class InputTooLongError(InputError):
    """A text exceeds the model's maximum length and truncation was not requested."""


class MissingDependencyError(ErnieDeployError):
    """An optional extra ([paddle], [hf], [gpu], [serve]) is needed but not installed."""


class OutputExistsError(InputError):
    """A command would overwrite an existing output path without --overwrite."""


class VerificationError(ErnieDeployError):
    """A converted model's outputs differ from the source's beyond the tolerance."""


def first_line(exc: BaseException, limit: int = 300, *, last: bool = False) -> str:
    """How a foreign library's error is quoted inside one of ours: the first (or `last`)
    non-empty line of its message, at most `limit` characters, or its class name."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[-1 if last else 0][:limit]


def exit_code(exc: ErnieDeployError) -> int:
    """The CLI's exit status for an error: 2 for bad input, 1 for everything else."""
    return 2 if isinstance(exc, InputError) else 1


# HTTP serving (ernie_deploy.serve maps each to a status code).


class UnknownModelError(InputError):
    """A request names a model the server has not loaded for that route (HTTP 404)."""


class RequestTooLargeError(InputError):
    """A request body is larger than the server accepts (HTTP 413)."""


class UnauthorizedError(InputError):
    """A request lacks the server's API key or carries a wrong one (HTTP 401)."""


class OverloadedError(ErnieDeployError):
    """A model's request queue is full: retry later or raise the queue limit (HTTP 429)."""


class NotReadyError(ErnieDeployError):
    """The server is starting or shutting down and takes no requests (HTTP 503)."""


class ModelRunError(ErnieDeployError):
    """ONNX Runtime failed while running a loaded model (HTTP 500)."""
