"""The docs' config reference (docs/hooks/config_reference.py): every flag and every YAML key, from the code."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import subprocess
import sys

import markdown
import pytest

from pipelines.embedding import config

HOOK = os.path.join(os.path.dirname(__file__), "..", "docs", "hooks", "config_reference.py")


@pytest.fixture(scope="module")
def hook():
    spec = importlib.util.spec_from_file_location("config_reference", HOOK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def page(hook):
    return hook.on_page_markdown(
        "# Jobs\n\nBefore.\n\n<!-- config-reference -->\n\nAfter.\n", page=None, config=None, files=None
    )


def _fields():
    return [(section, field) for group, section in config.SECTIONS.items() for field in dataclasses.fields(group)]


def test_the_marker_becomes_both_tables_and_the_rest_of_the_page_stays(page):
    assert "<!-- config-reference -->" not in page
    assert page.startswith("# Jobs\n\nBefore.\n\n### Command-line flags\n") and page.endswith("\n\nAfter.\n")
    assert "### YAML keys" in page


def test_a_page_without_the_marker_is_unchanged(hook):
    text = "# Other page\n\nNo reference here.\n"
    assert hook.on_page_markdown(text, page=None, config=None, files=None) == text


def test_every_flag_of_the_parser_is_listed_with_its_help(page, hook):
    flags = page.split("### YAML keys")[0]
    actions = [action for action in config.flag_parser()._actions if action.option_strings]
    rows = {tuple(re.findall(r"`(-[\w-]+)", line.split(" | ")[0])): line for line in flags.splitlines()}
    for action in actions:
        row = rows[tuple(action.option_strings)]
        assert hook._cell(action.help) in row
    for key in ("--input-format", "--input_format", "--overwrite", "--no-overwrite", "--config", "--verbose"):
        assert f"`{key}" in flags


def test_every_yaml_key_is_listed_with_its_section_type_default_and_description(page, hook):
    keys = page.split("### YAML keys")[1]
    for section, field in _fields():
        row = next(line for line in keys.splitlines() if f"| `{field.name}` |" in line)
        assert row.startswith(f"| {section} |")
        assert hook._cell(field.metadata["help"]) in row
    rows = {line.split(" | ")[1]: line for line in keys.splitlines() if line.startswith("| ") and "`" in line}
    assert "| integer | `1048576` |" in rows["`max_text_bytes`"]
    assert "| list of strings (or one comma-separated string) | `[]` |" in rows["`passthrough`"]
    assert "| [integer, integer] or null | — |" in rows["`image_size`"]
    assert "| boolean | `false` |" in rows["`overwrite`"]
    assert "| `pipelines/data/sample.txt` |" in rows["`input`"]  # the bundled sample, as it lies in the repository
    assert "`beam`" in rows and "`schedule`" in rows


def test_the_tables_render_as_html_tables_of_one_row_per_flag_and_key(page):
    html = markdown.markdown(page, extensions=["tables"])
    assert html.count("<table>") == 2
    flags = [action for action in config.flag_parser()._actions if action.option_strings]
    rows = html.count("<tr>") - 2  # the two header rows
    assert rows == len(flags) + len(_fields()) + 3  # and the `beam`, `schedule` and `publish` mappings
    assert "&lt;file&gt;:&lt;line or record number&gt;" in html  # escaped, not swallowed as an HTML tag


def test_the_hook_imports_neither_tensorflow_nor_beam():
    script = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('config_reference', {HOOK!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "module.reference()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'apache_beam', 'numpy')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"
