"""Shared checks for CLI failures run through typer's CliRunner."""

from __future__ import annotations


def one_error(result: object) -> str:
    """The CLI failed the way users should see it: a non-zero exit, no traceback, exactly one
    `error:` line; that line."""
    assert result.exit_code != 0, result.output  # type: ignore[attr-defined]
    exc = result.exception  # type: ignore[attr-defined]
    assert exc is None or isinstance(exc, SystemExit), repr(exc)
    stderr = result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]
