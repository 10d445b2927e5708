"""Messages as the page shows them: one line, naming the input by the name the user knows, never
a path on the server (its data folder, a session's temporary folder, the model's folder) and never
a reader's internals.

The core's messages name files by their full path (right for the command line, where the path is
the user's own); the page keeps the file's name, or its path inside ``--data``.
"""
from __future__ import annotations

import re
from pathlib import Path

# The folders of an absolute path (POSIX or Windows), up to its last component: a path begins
# after a space, a quote, a bracket or the start, never inside a word ("mm/s", "0/50/800").
_FOLDERS = re.compile(r"(?<![\w.~@+-])(?:[A-Za-z]:)?[/\\](?:[^\s/\\'\"()\[\]:;,]+[/\\])+")
# What ITK says when it cannot read a file: its own words, and the path again.
_ITK = re.compile(r"\s*\((?:sitk::ERROR|ITK ERROR|Exception thrown)[^)]*\)?.*$", re.I)
UNREADABLE = "cannot be read as an image: not a NIfTI, NRRD, MetaImage or DICOM file, or a damaged one"


def public(text: str | None, data: Path | None = None) -> str:
    """``text`` without server paths (a file keeps its name; under ``data``, its path inside it)
    and without a reader's internals, on one line."""
    text = " ".join(str(text or "").split())
    if data is not None:
        for root in {str(data), str(Path(data).resolve())}:
            text = text.replace(root.rstrip("/\\") + "/", "").replace(root, "the data folder")
    text = _FOLDERS.sub("", text)
    if _ITK.search(text):
        text = _ITK.sub("", text)
        text = text.replace("cannot be read as an image", UNREADABLE) if "cannot be read as an image" in text else text
    return text


def read_problem(problem: str) -> str:
    """A reader's problem with a file (``InputError.problem``) as the page says it."""
    if problem.startswith("cannot be read as an image"):
        return UNREADABLE
    return public(problem)
