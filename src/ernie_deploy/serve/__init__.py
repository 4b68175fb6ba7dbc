"""HTTP serving: FastAPI app factory, request schemas, dynamic batcher (needs the [serve] extra).

>>> import ernie_deploy
>>> from ernie_deploy.serve import ServeSettings, create_app
>>> app = create_app({"ner": ernie_deploy.load("ner-zh")}, ServeSettings())  # doctest: +SKIP

`ernie-deploy serve NAME=PATH ...` loads, warms and runs the same app under uvicorn.
Importing this package costs nothing: FastAPI is imported with `create_app`.
"""

from __future__ import annotations

from typing import Any

from ernie_deploy.serve.settings import ModelSpec, ServeSettings

__all__ = ["ModelSpec", "ServeSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from ernie_deploy.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'ernie_deploy.serve' has no attribute {name!r}")
