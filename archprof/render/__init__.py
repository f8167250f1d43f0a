"""Rich tables. Rendering knows nothing of torch: it takes a Report (or plain rows).

One module per view; `base` holds what they share (fitting a table to the terminal)."""

from archprof.render.base import to_text
from archprof.render.compare import budget_table, comparison_table, diff_tables
from archprof.render.fields import receptive_field_table
from archprof.render.memory import measured_table, memory_table, memory_totals_table
from archprof.render.profile import profile_table
from archprof.render.summary import not_counted_table, summary_table, totals_table, zoo_table

__all__ = [
    "budget_table",
    "comparison_table",
    "diff_tables",
    "measured_table",
    "memory_table",
    "memory_totals_table",
    "not_counted_table",
    "profile_table",
    "receptive_field_table",
    "summary_table",
    "to_text",
    "totals_table",
    "zoo_table",
]
