"""The `archprof` command: parse, call the library, render, map errors to exit codes.

Exit codes: 0 success, 1 a budget was exceeded, 2 bad input (one line on stderr), 141
standard output closed by its reader. `app` holds the commands: `one_model` (summary,
profile, memory, rf) and `several_models` (compare, check, diff, zoo) register theirs on it."""

from archprof.cli import one_model, several_models
from archprof.cli.app import app, main

__all__ = ["app", "main", "one_model", "several_models"]
