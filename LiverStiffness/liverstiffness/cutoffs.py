"""Named, configurable cut-off tables that turn an MRE-equivalent stiffness (kPa) into a category.

The estimate is an *MRE-equivalent* liver stiffness: the shear stiffness a 60 Hz MR elastography
exam would measure. It is not a transient-elastography (FibroScan) value, whose kPa are a
different quantity (Young's modulus, typically about three times larger); tables for that
method must not be used here.

Shipped tables (``--cutoffs NAME``; a JSON file of the same form may be given instead):

- ``mayo-60hz`` (default): the consensus MRE bands used since the first release (``mre.MRE_BANDS``).
- ``nafld-liang-2023``: fibrosis-stage cut-offs of MRE in NAFLD, ≥F2 3.14, ≥F3 3.53, F4 4.45 kPa,
  from Liang et al., J Hepatol 2023 (individual participant data meta-analysis).

A table file: ``{"name": ..., "reference": ..., "bands": [{"low_kpa": 0, "label": ...}, ...]}``,
bands in increasing order of their lower edge, the first at 0; a value on an edge belongs to the
higher band.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .mre import MRE_BANDS, Category

CATEGORY_WITHHELD = "not assessed"   # the report's category when the sequences used cannot support one
STIFFNESS_LABEL = "MRE-equivalent liver stiffness"


@dataclass(frozen=True)
class CutoffTable:
    name: str
    reference: str
    bands: tuple[tuple[float, str], ...]      # (lower edge, kPa inclusive; label), increasing

    def categorize(self, kpa: float) -> Category:
        """The band that holds ``kpa`` (an edge belongs to the higher band)."""
        chosen = 0
        for i, (edge, _) in enumerate(self.bands):
            if kpa >= edge:
                chosen = i
        high = self.bands[chosen + 1][0] if chosen + 1 < len(self.bands) else None
        return Category(self.bands[chosen][1], self.bands[chosen][0], high)

    def band_table(self) -> list[dict]:
        return [self.categorize(edge).as_dict() for edge, _ in self.bands]

    def describe(self) -> str:
        """One line: '< 2.5 normal; 2.5–2.9 ...; ≥ 5 cirrhosis'."""
        parts = []
        for b in self.band_table():
            if b["low_kpa"] == 0:
                parts.append(f"< {b['high_kpa']:g} {b['label']}")
            elif b["high_kpa"] is None:
                parts.append(f"≥ {b['low_kpa']:g} {b['label']}")
            else:
                parts.append(f"{b['low_kpa']:g}–{b['high_kpa']:g} {b['label']}")
        return "; ".join(parts) + " (kPa)"

    def as_dict(self) -> dict:
        return {"name": self.name, "reference": self.reference, "bands": self.band_table()}


TABLES: dict[str, CutoffTable] = {t.name: t for t in (
    CutoffTable("mayo-60hz", "MR elastography consensus bands at 60 Hz (Mayo Clinic reading, as in mre.MRE_BANDS)",
                MRE_BANDS),
    CutoffTable("nafld-liang-2023", "Liang et al., J Hepatol 2023: MRE cut-offs for fibrosis stage in NAFLD "
                "(>=F2 3.14, >=F3 3.53, F4 4.45 kPa)",
                ((0.0, "below the F2 cut-off (F0-F1 likely)"), (3.14, ">=F2 (significant fibrosis)"),
                 (3.53, ">=F3 (advanced fibrosis)"), (4.45, "F4 (cirrhosis)"))),
)}
DEFAULT_TABLE = "mayo-60hz"


def _check(table: CutoffTable, where: str) -> CutoffTable:
    edges = [e for e, _ in table.bands]
    if not table.bands or edges[0] != 0 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise InputError(where, "bands must start at 0 kPa and increase")
    if any(not str(label).strip() for _, label in table.bands):
        raise InputError(where, "every band needs a label")
    return table


def load_cutoffs(name_or_path: str | None = None) -> CutoffTable:
    """A shipped table by name, or a table from a JSON file; default ``mayo-60hz``."""
    key = name_or_path or DEFAULT_TABLE
    if key in TABLES:
        return TABLES[key]
    path = Path(key)
    where = f"--cutoffs {key}"
    if not path.is_file():
        raise InputError(where, f"is neither a shipped table ({', '.join(TABLES)}) nor a file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        bands = tuple((float(b["low_kpa"]), str(b["label"])) for b in data["bands"])
        table = CutoffTable(str(data["name"]), str(data.get("reference", "")), bands)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InputError(where, f"is not a cut-off table ({type(exc).__name__}: {exc}); see liverstiffness/cutoffs.py") from None
    return _check(table, where)
