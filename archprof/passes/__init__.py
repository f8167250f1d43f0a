"""Passes: plain functions from the captured graph (and its layer groups) to columns."""
