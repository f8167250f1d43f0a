"""Reading a Markdown table back as GitHub shows it, for tests."""

import markdown_it


def first_table(markdown: str) -> list[list[str]]:
    """The rows of the first table of `markdown`, each cell's text as GitHub shows it (GFM
    tables: markdown-it's table rule)."""
    tokens = markdown_it.MarkdownIt("commonmark").enable("table").parse(markdown)
    rows, row = [], []
    for index, token in enumerate(tokens):
        if token.type == "table_close":
            break
        if token.type == "tr_open":
            row = []
        elif token.type in ("th_open", "td_open"):
            row.append("".join(child.content for child in tokens[index + 1].children))
        elif token.type == "tr_close":
            rows.append(row)
    return rows


def html_in(markdown: str) -> list[str]:
    """Whatever of `markdown` a renderer would take for HTML (a tag, a comment), a link or an
    image rather than text, as CommonMark with GFM tables parses it."""
    tokens = markdown_it.MarkdownIt("commonmark").enable("table").parse(markdown)
    found = [token.content for token in tokens if token.type == "html_block"]
    live = ("html_inline", "link_open", "image")
    for token in tokens:
        found += [child.content for child in token.children or () if child.type in live]
    return found
