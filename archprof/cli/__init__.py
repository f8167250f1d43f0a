"""The `archprof` command: parse, call the library, render, map errors to exit codes.

Exit codes: 0 success, 1 a budget was exceeded, 2 bad input (one line on stderr), 141
standard output closed by its reader. `app` holds the commands: `one_model` (summary,
profile, memory, rf), `several_models` (compare, check, diff, zoo) and `explain` register
theirs on it."""

from archprof.cli import explain, one_model, several_models
from archprof.cli.app import app, main

__all__ = ["app", "explain", "main", "one_model", "several_models"]
