"""The docs: the README's Quickstart, its exit codes as the CLI has them, and the site that
`mkdocs build --strict` makes of docs/ (every page in the nav, every link and anchor resolved)."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
import tomllib

import pytest

from .conftest import ROOT

README = ROOT / "README.md"


def section(title: str) -> str:
    """The README's `## title` section, up to the next `## ` heading."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_quickstart_is_two_commands_and_ci_runs_the_second():
    quickstart = section("Quickstart")
    blocks = re.findall(r"```bash\n(.*?)```", quickstart, re.S)
    assert len(blocks) == 1 and quickstart.count("```") == 2
    commands = blocks[0].strip().splitlines()
    assert len(commands) == 2, commands
    install, tests = commands
    assert install.startswith("pip install -e . && scaffold new-backbone examples/swin3d/")
    assert (ROOT / install.split()[-1]).is_file()
    assert tests == "pip install -e '.[test]' && pytest"
    ci = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert ci[-1].replace(" --quiet", "") == tests  # the same command, less pip's chatter
    # The test command installs what the site's build (below) needs, so CI builds the docs.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    names = {re.split(r"[<>=\[ ]", req)[0] for req in extras["test"]}
    assert {re.split(r"[<>=\[ ]", req)[0] for req in extras["docs"]} <= names
    assert {"mkdocs", "mkdocs-material"} <= names


def cli_exit_codes() -> tuple[set[int], dict[str, set[int]]]:
    """The codes scaffold/cli.py exits with (`typer.Exit(N)`, `sys.exit(N)`), and each command's
    codes as its docstring's `Exit codes:` line states them."""
    tree = ast.parse((ROOT / "scaffold" / "cli.py").read_text(encoding="utf-8"))
    codes = {0}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("Exit", "exit")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            codes.add(node.args[0].value)
    per_command: dict[str, set[int]] = {}
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for deco in node.decorator_list:
            if isinstance(deco, ast.Call) and getattr(deco.func, "attr", "") == "command":
                named = [a.value for a in deco.args if isinstance(a, ast.Constant)]
                line = re.search(r"Exit codes: (.*)", ast.get_docstring(node) or "")
                assert line, f"{node.name}'s docstring states no exit codes"
                stated = {int(n) for n in re.findall(r"(?:^|, )(\d+) ", line.group(1))}
                per_command[named[0] if named else node.name] = stated
    return codes, per_command


def test_every_exit_code_is_in_the_readme_with_what_it_means():
    codes, per_command = cli_exit_codes()
    assert {0, 1, 2, 3, 130} <= codes
    commands = section("Commands")
    table = dict(re.findall(r"^\| (\d+) \| (.+) \|$", commands, re.M))
    assert {int(code) for code in table} == codes
    assert all(len(meaning.split()) >= 3 for meaning in table.values()), table
    # Each command's row gives the codes its --help gives, each with what it means.
    assert set(per_command) == {"inspect", "new-backbone", "verify", "update", "report"}
    for name, stated in per_command.items():
        row = re.search(rf"^\| `scaffold {name} .*\| (.+?) \|$", commands, re.M)
        assert row, f"no row for scaffold {name}"
        assert {int(n) for n in re.findall(r"(?:^|, )(\d+) \w", row.group(1))} == stated, name


def load_hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_links_become_the_sites_links():
    relink = load_hooks().relink
    text = (
        "[a](docs/model.md#the-head) [b](CHANGELOG.md) [c](https://example.org/docs/x.md) "
        "[d](#quickstart) | `--task a\\|b` | a\\|b |"
    )
    assert relink(text) == (
        "[a](model.md#the-head) [b](changelog.md) [c](https://example.org/docs/x.md) "
        "[d](#quickstart) | `--task a|b` | a\\|b |"
    )


def test_the_readme_lists_every_page_of_the_site():
    nav = re.findall(r"^  - .*: (\S+\.md)$", (ROOT / "mkdocs.yml").read_text(), re.M)
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert set(nav) == pages and len(nav) == len(pages)
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)", README.read_text(encoding="utf-8")))
    assert linked == pages - {"index.md", "changelog.md"}


def test_the_site_builds_strict(tmp_path):
    try:
        import material  # noqa: F401
        import mkdocs  # noqa: F401
    except ImportError:
        pytest.skip("mkdocs and mkdocs-material are not installed: pip install -e '.[docs]'")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for page in (ROOT / "docs").glob("*.md"):
        path = site / ("index.html" if page.stem == "index" else f"{page.stem}/index.html")
        assert path.is_file(), page.name
    home = (site / "index.html").read_text(encoding="utf-8")
    assert 'id="quickstart"' in home and 'href="model/"' in home
    # the ladder starts at rung 0 on the site, as on GitHub
    assert '<ol start="0"' in (site / "verification" / "index.html").read_text(encoding="utf-8")
    assert "Keep a Changelog" in (site / "changelog" / "index.html").read_text(encoding="utf-8")
