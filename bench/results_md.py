"""A script's own section of bench/RESULTS.md, replaced in place (between ``<!-- mark -->`` comments).

Shared by the benchmarks (``bench_predict.py``) and by the scripts in ``recipes/`` and ``experiments/``
that record their tables here; imported as ``results_md`` by the scripts in this folder and as
``bench.results_md`` by those (run from the repository root with ``python -m``). No other imports of
this repository, so that both work.
"""
from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(lines: list[str], mark: str = "bench_predict") -> None:
    """Replace the ``mark`` section of RESULTS.md (bench_clinical.py keeps its own)."""
    text = RESULTS.read_text() if RESULTS.is_file() else ""
    block = f"<!-- {mark} -->\n" + "\n".join(lines).rstrip() + f"\n<!-- /{mark} -->\n"
    pattern = re.compile(rf"<!-- {mark} -->.*?<!-- /{mark} -->\n", re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda m: block, text)
    else:   # first run of the sectioned format: the old single-section file is replaced
        text = block + "".join(m.group(0) for m in re.finditer(r"<!-- (bench_\w+) -->.*?<!-- /\1 -->\n", text, re.DOTALL)
                               if m.group(1) != mark)
    RESULTS.write_text(text)
