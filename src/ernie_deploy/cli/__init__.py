"""The command lines: `ernie-deploy` (typer, one module per command group) and the guide's infer.py.

`app` is the typer application and `main` the console-script entry point; `infer` holds the
ERNIE 3.0 guide's `infer.py` contract, `options` the model-loading flags the commands share.
"""

from ernie_deploy.cli.app import app, main

__all__ = ["app", "main"]
