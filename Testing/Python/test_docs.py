"""The README and the pages under docs/ stay short, addressed, and true to the command line.

(a) the README is at most 230 lines (none longer than 130 characters) and every docs page starts with a line
    "Who this is for: ...";
(b) every ``liverstiffness <command> ... --flag`` written in README.md and docs/*.md (code blocks and inline code; also
    inline code that starts with a command name, such as ``train-seg --swa``) names a command that exists and flags
    that exist for that command. The truth is the command line's own ``--help``, run as ``python -m liverstiffness``
    in a subprocess (whatever the package's layout), once per command;
(c) every relative link (and reference-style link definition) points at a file of the repository, and a ``#fragment``
    into a Markdown page at one of its headings;
(d) nothing refers to a folder outside the repository (such as ``../shared``).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
README_MAX_LINES = 230
README_MAX_LINE_CHARS = 130

FENCE = re.compile(r"^(```|~~~)[^\n]*\n(.*?)^\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`([^`]+)`")
FLAG = re.compile(r"(?<![\w-])(--[A-Za-z0-9][\w-]*)")
INVOCATION = re.compile(r"liverstiffness[ \t]+(.*)$", re.DOTALL)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^[ ]{0,3}\[[^\]]+\]:[ \t]*<?(\S+?)>?(?:[ \t]+.*)?$", re.MULTILINE)
PARENT_PATH = re.compile(r"(?<![\w.])((?:\.\./)+[\w.\-/]*)")
# Paths that leave the repository on purpose: examples of what is refused (a hostile manifest's case_id).
REFUSED_EXAMPLES = {"../../escaped_case"}
SEPARATORS = re.compile(r"\s(?:\||&&|;|\|\|)\s|\s#.*|\s>\s")


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


# --- (a) ------------------------------------------------------------------------------------------------------------

def test_readme_is_short_and_narrow():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move detail to docs/"
    wide = [f"README.md:{i}: {len(line)} characters" for i, line in enumerate(lines, 1) if len(line) > README_MAX_LINE_CHARS]
    assert not wide, f"README.md lines longer than {README_MAX_LINE_CHARS} characters:\n" + "\n".join(wide)


def test_there_are_docs_pages():
    assert DOCS, "docs/ holds no pages"


@pytest.mark.parametrize("page", DOCS, ids=rel)
def test_each_docs_page_says_who_it_is_for(page):
    lines = [line.strip() for line in page.read_text(encoding="utf-8").splitlines() if line.strip()]
    body = [line for line in lines if not line.startswith("#")]     # after the page's title
    assert body and body[0].startswith("Who this is for:"), (
        f"{rel(page)}: the first line under the title must be 'Who this is for: ...', not {body[0] if body else 'nothing'!r}")


# --- (b) ------------------------------------------------------------------------------------------------------------

def _run_help(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-m", "liverstiffness", *args, "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _flags_in_help(text: str) -> set[str]:
    """The ``--flags`` of a help text: those in its usage block and those that open an option line."""
    flags: set[str] = set()
    usage = re.search(r"^usage:.*?(?:\n\s*\n|\Z)", text, re.MULTILINE | re.DOTALL)
    if usage:
        flags.update(FLAG.findall(usage.group(0)))
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("-"):
            flags.update(FLAG.findall(re.split(r"\s{2,}", stripped)[0]))
    return flags


@cache
def top_level_help() -> str:
    done = _run_help()
    assert done.returncode == 0, f"`python -m liverstiffness --help` failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
    return done.stdout


def top_level_flags() -> frozenset[str]:
    return frozenset(_flags_in_help(top_level_help()))


@cache
def command_flags(command: str) -> frozenset[str] | None:
    """The flags of ``liverstiffness COMMAND``, or None when there is no such command."""
    top_level_help()                        # the command line itself starts, so a failure below is the command's
    done = _run_help(command)
    if done.returncode != 0:
        return None
    return frozenset(_flags_in_help(done.stdout))


def code_snippets(text: str):
    """(line number, code) for every logical line of a fenced block and every inline code span outside them. In a
    block, a line ending in ``\\`` goes on on the next one, and an indented line that starts with an option
    (``--x`` or ``[--x``) goes on the one before, as a synopsis is written."""
    for fence in FENCE.finditer(text):
        first = line_of(text, fence.start(2))
        logical: list[list] = []                    # [line number, code, ends with a backslash]
        for k, line in enumerate(fence.group(2).splitlines()):
            continues = bool(logical) and (logical[-1][2] or re.match(r"\s+\[?--", line) is not None)
            stripped = line.rstrip()
            backslash = stripped.endswith("\\")
            code = stripped[:-1] if backslash else stripped
            if continues:
                logical[-1][1] += " " + code
                logical[-1][2] = backslash
            else:
                logical.append([first + k, code, backslash])
        for start, code, _ in logical:
            yield start, code
    rest = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    for span in INLINE_CODE.finditer(rest):
        yield line_of(rest, span.start()), span.group(1).replace("\n", " ")


def invocations(code: str, commands: frozenset[str]):
    """(command or None, top-level flags, flags) for each ``liverstiffness ...`` in one snippet of code; a snippet
    that starts with a command's name and a flag (``train-seg --swa 0.8``) counts too."""
    pieces = re.split(r"(?:^|(?<=[\s/(\"'=]))(?=liverstiffness[ \t])", code)
    found = []
    first = pieces[0].split()
    if len(first) > 1 and first[0] in commands and first[1].startswith("--"):
        found.append((first[0], [], FLAG.findall(SEPARATORS.split(" " + pieces[0] + " ")[0])))
    for piece in pieces[1:]:
        m = INVOCATION.match(piece)
        if not m:
            continue
        words = SEPARATORS.split(" " + m.group(1) + " ")[0].split()
        top = []
        while words and words[0].startswith("-"):
            top.append(words.pop(0))
        if not words:
            found.append((None, top, []))
            continue
        command = words[0]
        if not re.fullmatch(r"[a-z][a-z0-9-]*", command):        # COMMAND, <command>, ...: a placeholder
            found.append((None, top, []))
            continue
        found.append((command, top, FLAG.findall(" ".join(words[1:]))))
    return found


def _known_commands_in(pages) -> frozenset[str]:
    """The commands of the command line: words listed by its ``--help`` (``{a,b}`` or an indented list) or following
    ``liverstiffness`` somewhere in the docs, for which ``liverstiffness WORD --help`` succeeds."""
    help_text = top_level_help()
    words = set(re.findall(r"^ {2,6}([a-z][a-z0-9-]*)(?: {2,}|$)", help_text, re.MULTILINE))
    for group in re.findall(r"\{([a-z0-9,-]+)\}", help_text):
        words.update(group.split(","))
    for page in pages:
        for _, code in code_snippets(page.read_text(encoding="utf-8")):
            words.update(re.findall(r"(?:^|(?<=[\s/(\"'=]))liverstiffness[ \t]+([a-z][a-z0-9-]*)", code))
    return frozenset(w for w in words if command_flags(w) is not None)


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_documented_commands_and_flags_exist(page):
    commands = _known_commands_in(PAGES)
    text = page.read_text(encoding="utf-8")
    problems = []
    for line, code in code_snippets(text):
        for command, top, flags in invocations(code, commands):
            unknown_top = [f for f in top if f.startswith("--") and f not in top_level_flags()]
            for flag in unknown_top:
                problems.append(f"{rel(page)}:{line}: `liverstiffness {flag}`: the command line has no option {flag}")
            if command is None:
                continue
            known = command_flags(command)
            if known is None:
                problems.append(f"{rel(page)}:{line}: `liverstiffness {command}`: no such command")
                continue
            for flag in flags:
                if flag not in known:
                    problems.append(f"{rel(page)}:{line}: `liverstiffness {command}` has no option {flag}")
    assert not problems, "documented commands or options that the command line does not have:\n" + "\n".join(problems)


def test_the_flag_check_finds_a_wrong_flag():
    """The checker itself: a made-up option and a made-up command are caught, real ones pass."""
    commands = frozenset({"predict", "train-seg"})
    found = invocations("OMP_NUM_THREADS=1 torchrun -m liverstiffness predict --t1w F \\ --no-such-flag  # --comment",
                        commands)
    assert found == [("predict", [], ["--t1w", "--no-such-flag"])]
    assert invocations("train-seg --swa 0.8 --runs 2", commands) == [("train-seg", [], ["--swa", "--runs"])]
    assert invocations("liverstiffness COMMAND --help", commands) == [(None, [], [])]
    assert invocations("liverstiffness/cutoffs.py", commands) == []
    assert "--t1w" in command_flags("predict") and "--no-such-flag" not in command_flags("predict")
    assert command_flags("no-such-command") is None


# --- (c) and (d) ----------------------------------------------------------------------------------------------------

def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    heading = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


@cache
def anchors(page: Path) -> frozenset[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return frozenset(_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.MULTILINE))


def links(text: str):
    prose = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    prose = INLINE_CODE.sub(lambda m: " " * len(m.group(0)), prose)
    for pattern in (LINK, REFERENCE_DEFINITION):
        for m in pattern.finditer(prose):
            yield line_of(prose, m.start()), m.group(1)


def _inside(path: Path) -> bool:
    try:
        path.resolve().relative_to(ROOT)
        return True
    except ValueError:
        return False


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_relative_links_point_at_files_of_the_repository(page):
    problems = []
    for line, target in links(page.read_text(encoding="utf-8")):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):       # https:, mailto:
            continue
        path_part, _, fragment = target.partition("#")
        dest = (page.parent / path_part) if path_part else page
        if not _inside(dest):
            problems.append(f"{rel(page)}:{line}: link {target!r} leaves the repository")
        elif not dest.exists():
            problems.append(f"{rel(page)}:{line}: link {target!r}: {dest.resolve().relative_to(ROOT)} does not exist")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest.resolve()):
            problems.append(f"{rel(page)}:{line}: link {target!r}: {rel(dest.resolve())} has no heading #{fragment}")
    assert not problems, "broken links:\n" + "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_nothing_refers_to_a_folder_outside_the_repository(page):
    text = page.read_text(encoding="utf-8")
    link_paths = {target.partition("#")[0] for _, target in links(text)}
    problems = []
    for m in PARENT_PATH.finditer(text):
        path = m.group(1)
        if path in link_paths or path in REFUSED_EXAMPLES:
            continue                                        # a link: resolved against its page, checked above
        if not _inside(ROOT / path):                        # commands and paths in text run from the repository root
            problems.append(f"{rel(page)}:{line_of(text, m.start())}: {path!r} is outside the repository")
    for m in re.finditer(r"\.\./shared|(?<![\w/])shared/data\b", text):
        problems.append(f"{rel(page)}:{line_of(text, m.start())}: {m.group(0)!r} names a folder outside the repository")
    assert not problems, "\n".join(sorted(set(problems)))
