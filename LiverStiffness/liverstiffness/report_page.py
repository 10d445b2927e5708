"""A one-page, self-contained HTML report for people: the key numbers, the category with the
cut-off table used, the sequences used (and each missing one with why), mask QA, the montage, the
series used and the model card's disclaimer; from a model trained on elastograms also its stiffness
map (its montage, its regional means and that it is a model estimate, not a measurement).

It prints on one A4 page (the stiffness map, when there is one, on a second); the montages are
embedded, so the file can be mailed or archived alone. Everything shown comes from report.json
(the numbers are not recomputed).
"""
from __future__ import annotations

import base64
import datetime
import html
from pathlib import Path

from .report import Report

LABELS = {"t1w": "T1w", "t2w": "T2w", "dwi": "DWI"}    # as preprocess.SEQUENCE_LABELS (no pipeline import)


def model_card_disclaimer(model_dir: Path | None) -> str:
    """The model card's warning block (its '>' lines) and intended use, as plain text."""
    card = Path(model_dir) / "MODEL_CARD.md" if model_dir else None
    if card is None or not card.is_file():
        return ""
    lines = card.read_text(encoding="utf-8").splitlines()
    quote = " ".join(line.lstrip("> ").strip() for line in lines if line.startswith(">"))
    intended, take = [], False
    for line in lines:
        if line.startswith("## "):
            take = line.strip() == "## Intended use"
            continue
        if take and line.strip():
            intended.append(line.strip())
    text = " ".join(part for part in (quote, " ".join(intended)) if part)
    return text.replace("**", "").replace("`", "")


def _e(value) -> str:
    return html.escape(str(value))


def _bands_rows(report: Report) -> str:
    rows = []
    chosen = report.category
    for b in report.mre_bands:
        high = f"{b['high_kpa']:g}" if b.get("high_kpa") is not None else ""
        mark = ' class="here"' if b["label"] == chosen else ""
        rows.append(f"<tr{mark}><td>{b['low_kpa']:g}</td><td>{high}</td><td>{_e(b['label'])}</td></tr>")
    return "".join(rows)


def _qa_lines(report: Report) -> str:
    flags = report.qa_flags
    if report.mask_qa is None:
        return "<li>Mask QA was skipped.</li>"
    if not flags:
        return "<li>No mask QA flag.</li>"
    return "".join(f"<li><b>{_e(f.get('code'))}</b> ({_e(f.get('severity'))}): {_e(f.get('message'))}</li>" for f in flags)


def _sequences_html(report: Report) -> str:
    """"Sequences used: T2w" and, for each one missing, why (not given, or the user's reason)."""
    used = ", ".join(LABELS.get(s, s) for s in report.sequences_used)
    text = f"<p id=sequences><b>Sequences used:</b> {_e(used)}"
    if report.sequences_missing:
        why = "; ".join(f"no {LABELS.get(s, s)}: {reason}" for s, reason in report.sequences_missing.items())
        text += (f" <span class=missing>(not used: {_e(why)})</span><br><span class=small>The interval is that of "
                 f"exams with the same sequences ({_e(report.interval_basis)}).</span>")
    return text + "</p>"


def _missing_rows(report: Report) -> str:
    return "".join(f"<tr><td>{_e(LABELS.get(s, s))}</td><td colspan=2>not used: {_e(reason)}</td></tr>"
                   for s, reason in report.sequences_missing.items())


def _series_rows(report: Report) -> str:
    study = report.study
    if not study:
        return "".join(f"<tr><td>{_e(k.upper())}</td><td colspan=2>{_e(v.get('source', ''))}</td></tr>"
                       for k, v in report.inputs.items()) + _missing_rows(report)
    rows = []
    for role, c in study.get("chosen", {}).items():
        rows.append(f"<tr><td>{_e(role.upper())}</td><td>#{_e(c.get('series_number'))} {_e(c.get('description'))}</td>"
                    f"<td>{_e(c.get('how'))}</td></tr>")
    mask = report.mask or {}
    rows.append(_missing_rows(report))
    rows.append(f"<tr><td>Mask</td><td colspan=2>{_e(mask.get('source', ''))} {_e(mask.get('path', '') or '')}</td></tr>")
    return "".join(rows)


def _png(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def _stiffness_map_html(report: Report, folder: Path) -> str:
    """The stiffness map's section (a model trained on elastograms): its montage (0–8 kPa, as
    elastograms), the note that it is a model estimate, the liver mean and the regional means;
    "" for a report without a map."""
    sm = report.stiffness_map
    if not sm:
        return ""
    montage = Path(folder) / report.outputs.get("stiffness_map_montage", "stiffness_map_montage.png")
    reference = LABELS.get((report.preprocessing or {}).get("reference_sequence", "t1w"), "T1w")
    img = (f'<img id=stiffness-map-montage alt="Stiffness map (kPa, 0–8) over the {reference}, liver outlined" '
           f'src="data:image/png;base64,{_png(montage)}">' if "stiffness_map_montage" in report.outputs
           and montage.is_file() else "")
    note = str(sm.get("note") or "a model estimate, not a measurement").strip().rstrip(".")
    mean = sm.get("liver_mean_kpa")
    regions = "".join(f"<tr><td>{_e(name)}</td><td>{v:.2f}</td></tr>"
                      for name, v in (sm.get("regions_kpa") or {}).items() if v is not None)
    table = (f"<table id=stiffness-regions><tr><th>region</th><th>mean {_e(sm.get('unit', 'kPa'))}</th></tr>{regions}</table>"
             if regions else "")
    by = f"<p class=small>Regions by {_e(sm['regions_by'])}.</p>" if sm.get("regions_by") else ""
    mean_text = f" Liver mean {mean:.2f} {_e(sm.get('unit', 'kPa'))}." if mean is not None else ""
    return (f"<div class=map><h2>Stiffness map (model estimate, not a measurement)</h2>{img}"
            f"<p class=warnsmall id=stiffness-map-note>{_e(note[:1].upper() + note[1:])}.{mean_text}</p>"
            f"{table}{by}</div>")


def write_report_page(path: Path, report: Report, folder: Path, model_dir: Path | None = None) -> Path:
    """Write the HTML page for ``report`` (its montage looked up in ``folder``); returns ``path``."""
    path = Path(path)
    montage = Path(folder) / report.outputs.get("montage", "attention_montage.png")
    img = ""
    if montage.is_file():
        data = _png(montage)
        reference = LABELS.get((report.preprocessing or {}).get("reference_sequence", "t1w"), "T1w")
        img = (f'<img alt="Attention rollout over the {reference}, liver outlined" src="data:image/png;base64,{data}">'
               f"<p class=small>Where the model looked (attention rollout, {_e(report.attention.get('unit', ''))}); "
               "the liver is outlined. It explains the estimate; it is not a stiffness map.</p>")
    lo, hi = report.interval_kpa
    table = report.cutoff_table or {"name": "mayo-60hz", "reference": ""}
    model = report.model or {}
    disclaimer = model_card_disclaimer(model_dir)
    synthetic = model.get("synthetic_training_data")
    warnings = "".join(f"<li>{_e(w)}</li>" for w in report.warnings)
    facts = report.patient or {}
    facts_text = ", ".join(f"{k} {v}" for k, v in facts.items() if v is not None) or "none given"
    hashes = "; ".join(f"{_e(f)} {_e(h[:12])}…" for f, h in model.get("sha256", {}).items())
    label = report.stiffness_label
    if disclaimer:
        disclaimer_html = f"<p class={'warn' if synthetic else 'small'}>{_e(disclaimer)}</p>"
    else:
        disclaimer_html = ""
    version = _e(report.software.get("liverstiffness", ""))
    mask_source = _e((report.mask or {}).get("source", "given"))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(label)}: {report.stiffness_kpa:.2f} kPa</title>
<style>
@page {{ size: A4; margin: 12mm; }}
body {{ font: 10.5pt/1.35 system-ui, sans-serif; max-width: 190mm; margin: auto; color: #111; }}
h1 {{ font-size: 14pt; margin: 0 0 4px; }} h2 {{ font-size: 11pt; margin: 10px 0 3px; }}
.warn {{ border: 2px solid #b00; background: #fff3f3; padding: 6px 8px; font-weight: 600; }}
.key {{ display: flex; gap: 18px; align-items: baseline; margin: 8px 0; }}
.kpa {{ font-size: 26pt; font-weight: 700; }} .cat {{ font-size: 14pt; }}
table {{ border-collapse: collapse; font-size: 9.5pt; }} td, th {{ border: 1px solid #bbb; padding: 1px 6px; text-align: left; }}
tr.here td {{ background: #ffe9a8; font-weight: 600; }} .missing {{ color: #8a4b00; }}
img {{ width: 100%; }} .small {{ font-size: 8.5pt; color: #444; margin: 2px 0; }}
.cols {{ display: flex; gap: 14px; }} .cols > div {{ flex: 1; }} ul {{ margin: 2px 0; padding-left: 18px; }}
.map {{ break-before: page; }} .warnsmall {{ font-size: 9pt; font-weight: 600; margin: 2px 0; }}
</style></head><body>
<h1>{_e(label)}</h1>
{disclaimer_html}
<div class=key><span class=kpa>{report.stiffness_kpa:.2f} kPa</span>
<span>{report.interval_coverage:.0%} interval {lo:.2f}–{hi:.2f} kPa</span>
<span class=cat>{_e(report.category)}</span></div>
{_sequences_html(report)}
<p class=small>The value estimates what 60 Hz MR elastography would measure (shear stiffness). It is not a transient-elastography
(FibroScan) kPa, which is a different, larger quantity. Category from the cut-off table <b>{_e(table['name'])}</b>:
{_e(table.get('reference', ''))}.</p>
<div class=cols><div><h2>Cut-off table {_e(table['name'])}</h2>
<table><tr><th>from kPa</th><th>below kPa</th><th>category</th></tr>{_bands_rows(report)}</table></div>
<div><h2>Liver mask</h2><ul><li>{mask_source} mask</li>{_qa_lines(report)}</ul>
{f'<h2>Warnings</h2><ul>{warnings}</ul>' if warnings else ''}</div></div>
{img}
<div class=cols><div><h2>Series used</h2><table>{_series_rows(report)}</table>
<p class=small>Patient facts used: {_e(facts_text)}.</p></div>
<div><h2>Model</h2><p class=small>{_e(model.get('name', ''))} {_e(model.get('version', ''))}; weights {hashes}<br>
{_e(model.get('intended_use', ''))}</p></div></div>
{_stiffness_map_html(report, folder)}
<p class=small>LiverStiffness {version}, {datetime.datetime.now():%Y-%m-%d %H:%M};
full details in report.json.</p>
</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path
