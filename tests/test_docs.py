"""The README and the documentation site (docs/, mkdocs.yml) stay true: the site builds with
no broken link, the README is short and links only to pages that exist, and every command a
page shows is run by `make docs-check` or a test, or exempt with a reason (tests/doc_commands.py
says how each is found)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from doc_commands import (
    ALL_CHECKED,
    CHAINS,
    EXEMPT,
    ROOT,
    Block,
    blocks,
    canonical,
    check,
    commands_in,
    commands_run_by_tests,
    documented,
    documented_commands,
    link_repository,
    missing_lines,
    unaccounted,
)

README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_LINES = 250
QUIET = dict(os.environ, NO_MKDOCS_2_WARNING="1")  # Material's notice about its successor


def build_site(config: Path, site: Path) -> subprocess.CompletedProcess:
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[test]')")
    pytest.importorskip("material", reason="mkdocs-material is not installed")
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config)]
    return subprocess.run(
        [*command, "--site-dir", str(site)], capture_output=True, text=True, env=QUIET
    )


def test_the_site_builds_with_no_warning(tmp_path):
    built = build_site(ROOT / "mkdocs.yml", tmp_path / "site")
    assert built.returncode == 0, built.stdout + built.stderr
    pages = sorted(path.stem for path in DOCS.glob("*.md"))
    assert pages and all((tmp_path / "site" / page).is_dir() or page == "index" for page in pages)
    assert (tmp_path / "site" / "index.html").is_file()


def test_the_nav_lists_every_page_and_nothing_else():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["docs_dir"] == "docs" and config["strict"] is True
    assert config["theme"]["name"] == "material"
    listed = [next(iter(entry.values())) for entry in config["nav"]]
    assert sorted(listed) == sorted(path.name for path in DOCS.glob("*.md"))


@pytest.mark.parametrize(
    "damage",
    [
        ("extra.md", "# A page the nav does not list\n"),
        ("index.md", "\nSee [nowhere](configuration.md#no-such-heading).\n"),
        ("index.md", "\nSee [nothing](no-such-page.md).\n"),
    ],
    ids=["page-not-in-nav", "broken-anchor", "broken-link"],
)
def test_the_strict_build_fails_on_what_would_break_the_site(tmp_path, damage):
    # The build must be strict about each of these, or the first test proves little.
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    name, text = damage
    with open(tmp_path / "docs" / name, "a") as page:
        page.write(text)
    built = build_site(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert built.returncode != 0, built.stdout + built.stderr


def test_the_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_LINES, f"README.md has {len(lines)} lines (at most {README_LINES})"


def heading_anchors(page: Path) -> set[str]:
    """The anchors mkdocs gives a page's headings (Python-Markdown's toc slugs)."""
    from markdown.extensions.toc import slugify

    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.M)
    return {slugify(re.sub(r"[`*]", "", heading), "-") for heading in headings}


def test_the_readme_links_only_to_docs_pages_that_exist():
    text = re.sub(r"^```.*?^```", "", README.read_text(), flags=re.M | re.S)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links, "the README links to no page"
    for link in links:
        target, _, anchor = link.partition("#")
        path = ROOT / target
        assert target.startswith("docs/") and path.is_file(), f"README links to {link}"
        assert path.suffix in (".md", ".png"), link
        if anchor:
            assert anchor in heading_anchors(path), f"{link}: {target} has no heading #{anchor}"
    pages = {link.partition("#")[0] for link in links if link.endswith(".md") or "#" in link}
    assert pages >= {"docs/index.md", "docs/layout.md"}


def test_the_readme_shows_the_first_sweep_config_as_it_is():
    shown = [block for block in blocks(README) if block.tag == "yaml"]
    assert len(shown) == 1
    assert "\n".join(shown[0].lines) + "\n" == (ROOT / "configs" / "first.yaml").read_text()
    assert ".venv/bin/lsurf sweep configs/first.yaml" in {c.key for c in documented_commands()}


def test_the_readme_keeps_its_two_setup_commands():
    commands = [c.key for c in documented_commands() if c.page == "README.md"]
    assert commands[:2] == ["make demo", "make test"]


def test_every_documented_command_is_run_or_exempt():
    commands = documented_commands()
    missing = unaccounted(commands)
    assert not missing, (
        "commands that nothing runs: add each to CHECKED in tests/doc_commands.py, run it in a"
        " test through documented(...), or exempt it there with the reason:\n"
        + "\n".join(f"  {command.page}:{command.line}: {command.key}" for command in missing)
    )
    shown = {command.key for command in commands}
    for listed in (ALL_CHECKED, EXEMPT, commands_run_by_tests()):
        stale = [text for text in listed if canonical(text) not in shown]
        assert not stale, f"listed, but no page shows them: {stale}"


def test_an_untested_command_is_found():
    page = Block("docs/new.md", 3, "", ("# a comment", ".venv/bin/lsurf sweep configs/new.yaml"))
    commands = commands_in(page)
    assert [command.key for command in commands] == [".venv/bin/lsurf sweep configs/new.yaml"]
    assert unaccounted(commands) == commands
    assert unaccounted(commands, checked=[".venv/bin/lsurf sweep configs/new.yaml"]) == []


def test_prompt_blocks_split_commands_from_what_they_print():
    block = Block(
        "docs/x.md",
        1,
        "console",
        ("$ make demo \\", "    --quiet", "printed one", "…/runs/x.h5", "$ make test", "ok"),
    )
    first, second = commands_in(block)
    assert (first.key, first.line, first.shown) == (
        "make demo --quiet",
        2,
        ("printed one", "…/runs/x.h5"),
    )
    assert (second.key, second.shown) == ("make test", ("ok",))
    assert missing_lines(first, "printed one\n/tmp/a/runs/x.h5\n") == []
    assert missing_lines(first, "printed two\n") == ["printed one", "…/runs/x.h5"]


def test_a_command_cannot_hide_in_an_output_block_or_an_unknown_one():
    with pytest.raises(ValueError, match="text block"):
        commands_in(Block("docs/x.md", 1, "text", ("output", "$ make bench")))
    with pytest.raises(ValueError, match="tag 'bash'"):
        commands_in(Block("docs/x.md", 1, "bash", ("make bench",)))


def test_a_wrong_key_stops_with_the_line_the_docs_show(tmp_path):
    command = documented(".venv/bin/lsurf sweep configs/first.yaml --set directions.norm=filters")
    link_repository(tmp_path)
    done = subprocess.run(
        ["bash", "-c", command.text], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stdout == "" and done.stderr.splitlines() == list(command.shown)
    assert not (tmp_path / "runs").exists()  # nothing written


@pytest.mark.parametrize("chain", list(CHAINS))
def test_the_documented_commands_run(tmp_path, chain):
    # What `make docs-check` runs: every command of the chain, as written (on small stand-ins).
    assert check(tmp_path, chain) == len(CHAINS[chain][0])
