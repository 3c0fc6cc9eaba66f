"""eval/manifest.json against the data's MANIFEST.md, and the derivations that read only data files.

These need the real data directory (../shared/data or $MLTP_DATA_DIR) and skip when it is absent.
"""
from __future__ import annotations

import importlib.util

import pytest

from eval import fetch as F
from eval.manifest import MANIFEST_JSON, Upstream, load, parse_markdown, render_markdown, to_json


def manifest_script():
    spec = importlib.util.spec_from_file_location("manifest_script", MANIFEST_JSON.parents[1] / "scripts" / "manifest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_manifest_json_is_up_to_date_with_manifest_md(data_dir):
    built = manifest_script().build((data_dir / "MANIFEST.md").read_text())
    assert to_json(built) == MANIFEST_JSON.read_text(), "eval/manifest.json is stale: run scripts/manifest.py"


def test_every_file_of_manifest_md_has_a_recipe_with_pinned_upstreams(data_dir):
    rows = {r.file: r for r in parse_markdown((data_dir / "MANIFEST.md").read_text())}
    entries = load()
    assert sorted(e.file for e in entries) == sorted(rows)
    for e in entries:
        assert (e.sha256, e.size, e.licence) == (rows[e.file].sha256, rows[e.file].size, rows[e.file].licence)
        for up in e.upstreams():
            assert len(up.commit) == 40 and up.repo in rows[e.file].source, e.file
    made_first = [e.file for e in entries if not e.local_inputs()]
    for e in entries:  # inputs from the data directory are made before what reads them
        assert all(f in made_first for f in e.local_inputs()), e.file


def test_rendered_manifest_reads_back_as_the_same_rows(data_dir):
    rows = parse_markdown((data_dir / "MANIFEST.md").read_text())
    assert sorted(parse_markdown(render_markdown(load())), key=lambda r: r.file) == sorted(rows, key=lambda r: r.file)


@pytest.mark.parametrize("entry", [e for e in load() if e.local_inputs()], ids=lambda e: e.file)
def test_derivations_from_data_files_reproduce_the_staged_file(data_dir, entry):
    # make() checks sha256 and size against the manifest and raises FetchError when they differ
    content = F.make(entry, upstreams=None, data_dir=data_dir)
    assert content == F.stored_content(data_dir / entry.file)


def test_manifest_md_parser_names_the_bad_line():
    text = "| family | dataset | file | split | rows | size | sha256 | source | licence | faithful |\n|---|\n| a | b |\n"
    with pytest.raises(ValueError, match="line 3: 2 cells"):
        parse_markdown(text)
    with pytest.raises(ValueError, match="not an upstream spec"):
        Upstream.parse("owner/repo:path")


def test_every_entry_names_a_known_derivation_and_pinned_inputs():
    from eval.derive import DERIVATIONS

    for e in load():
        assert e.derivation in DERIVATIONS, e.file
        assert e.inputs and all(s.startswith("data:") or len(Upstream.parse(s).commit) == 40 for s in e.inputs), e.file
