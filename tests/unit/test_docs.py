"""The docs are where the code says they are, and the README stays a short guide.

A pointer is a Markdown file's name followed by a quoted section name, the forms the code and the
docs use: `README "The demo's levers"`, `README's "Use the champion"`, `docs/safety.md "Bounds"`,
`docs/architecture.md, "Step images"`. `README` means README.md. The file must exist and hold a
Markdown heading (a line starting with `#`, outside code blocks) that the name matches exactly, case
included, once the heading's `#`s, surrounding blanks and backticks are removed: the whole heading,
or its part before the first ": " (`"EXP7"` finds `## EXP7: poly LR …`, `"XLA"` finds
`## XLA: train.jit_compile`). A docs file named without a section (`docs/seed-log.md`) must exist.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = REPO / "docs"
# Where pointers live: the code, configs, scripts, and the docs themselves.
POINTER_TREES = ("src", "components", "pipelines", "benchmarks", "experiments", "scripts")
TEXT_SUFFIXES = {".py", ".sh", ".yaml", ".yml", ".md", ".toml", ".cfg", ".txt"}
# Where no "session N" label may appear.
LABEL_TREES = ("README.md", "docs", "src", "components", "pipelines", "tests", "benchmarks")
SKIPPED_PARTS = {"__pycache__", ".pytest_cache", "node_modules"}

DOC_FILE = r"(README(?:\.md)?|docs/[\w.-]+\.md)"
SECTION_POINTER = re.compile(DOC_FILE + r"""(?:'s)?,? "([^"\n]+)\"""")
FILE_MENTION = re.compile(r"(?<![\w/.-])" + r"(docs/[\w.-]+\.md)")
SESSION_LABEL = re.compile(r"session [0-9]", re.IGNORECASE)
MARKDOWN_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
README_MAX_LINES = 300


def text_files(*roots: str):
    """Every text file under the roots (a root may be a file), build output and caches left out."""
    for root in roots:
        path = REPO / root
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for p in candidates:
            rel = p.relative_to(REPO).parts
            if SKIPPED_PARTS & set(rel) or any(part.endswith(".egg-info") for part in rel):
                continue
            if p.suffix in TEXT_SUFFIXES or p.name == "Makefile":
                yield p


def doc_path(name: str) -> Path:
    return README if name in ("README", "README.md") else REPO / name


def headings(path: Path) -> set[str]:
    """The names a pointer may use for the file's headings (see the module docstring)."""
    names, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            text = line.lstrip("#").strip().replace("`", "")
            names.add(text)
            if ": " in text:
                names.add(text.split(": ", 1)[0])
    return names


def pointer_sources() -> list[Path]:
    return [*text_files(*POINTER_TREES), README, *sorted(DOCS.glob("*.md"))]


def test_every_pointer_names_a_section_its_file_has():
    seen, missing = 0, []
    for source in pointer_sources():
        text = source.read_text(encoding="utf-8")
        for n, line in enumerate(text.splitlines(), 1):
            for name, section in SECTION_POINTER.findall(line):
                seen += 1
                target = doc_path(name)
                where = f"{source.relative_to(REPO)}:{n}"
                if not target.is_file():
                    missing.append(f"{where}: {name} does not exist")
                elif section not in headings(target):
                    missing.append(f'{where}: {name} has no heading "{section}"')
    assert seen > 20, f"found only {seen} pointers: has the pointer form changed? (see the module docstring)"
    assert not missing, "\n".join(missing)


def test_every_docs_file_named_exists():
    missing = [f"{source.relative_to(REPO)}:{n}: {name}"
               for source in pointer_sources()
               for n, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1)
               for name in FILE_MENTION.findall(line) if not (REPO / name).is_file()]
    assert not missing, "\n".join(missing)


def test_relative_links_in_the_readme_and_docs_lead_to_files():
    broken = []
    for page in (README, *sorted(DOCS.glob("*.md"))):
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            for link in MARKDOWN_LINK.findall(line):
                if "://" not in link and not (page.parent / link).exists():
                    broken.append(f"{page.relative_to(REPO)}:{n}: {link}")
    assert not broken, "\n".join(broken)


def test_no_file_carries_a_session_label():
    found = [f"{path.relative_to(REPO)}:{n}: {line.strip()}"
             for path in text_files(*LABEL_TREES)
             for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
             if SESSION_LABEL.search(line)]
    assert not found, "say the date or the machine instead:\n" + "\n".join(found)


def test_the_readme_is_a_short_guide():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"


def test_the_readmes_docs_list_names_every_docs_page_and_each_exists():
    text = README.read_text(encoding="utf-8")
    section = text[text.index("\n## Docs\n"):]
    section = section[:section.find("\n## ", 1)] if "\n## " in section[1:] else section
    listed = set(re.findall(r"\]\((docs/[\w.-]+\.md)\)", section))
    assert listed, "README's Docs section links no docs page"
    assert all((REPO / page).is_file() for page in listed), sorted(p for p in listed if not (REPO / p).is_file())
    pages = {f"docs/{p.name}" for p in DOCS.glob("*.md")}
    assert pages <= listed, f"docs pages the README's Docs list leaves out: {sorted(pages - listed)}"


def test_the_readme_keeps_the_two_set_up_commands():
    text = README.read_text(encoding="utf-8")
    block = text[text.index("## Two commands"):]
    block = block[block.index("```bash\n") + 8:]
    block = block[:block.index("```")]
    assert [line.split()[:2] for line in block.splitlines() if line.strip()] == [["make", "demo"], ["make", "test"]]
