"""Manifests and model folders are untrusted input (issue 12, items 4 and 5)."""
import csv
import json
import os
import shutil

import pytest
import torch

from liverstiffness.cli.main import main
from liverstiffness.errors import InputError
from liverstiffness.manifest import COLUMNS, read_manifest
from liverstiffness.stiffness.ensemble import Ensemble


def _rows(manifest):
    with open(manifest, newline="") as fh:
        return list(csv.DictReader(fh))


def _write(path, rows, columns=COLUMNS):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def _absolute(rows, base):
    for r in rows:
        for col in ("t1w", "t2w", "dwi", "mask"):
            r[col] = str((base / r[col]).resolve())
    return rows


def _files_under(root):
    return {p for p in root.rglob("*")}


def test_escaping_case_id_is_refused_and_nothing_is_written(small_cohort, tiny_model, tmp_path, capsys):
    """The issue's manifest: case_id ../../escaped_case would have written two levels above --out."""
    manifest, _, _ = small_cohort
    rows = _absolute(_rows(manifest)[:2], manifest.parent)
    rows[1]["case_id"] = "../../escaped_case"
    work = tmp_path / "a" / "b"
    m = _write(work / "manifest.csv", rows)
    before = _files_under(tmp_path)
    assert main(["predict", "--manifest", str(m), "--model", str(tiny_model), "--out", str(work / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: manifest.csv line 3: case_id '../../escaped_case' is not a safe folder name: use letters, "
                   "digits, '.', '_' and '-', starting with a letter or digit, at most 128 characters")
    assert _files_under(tmp_path) == before                     # not even --out was created
    assert not (tmp_path / "escaped_case").exists()


@pytest.mark.parametrize("case_id", ["../x", "/etc/x", "a/b", "a\\b", ".hidden", "..", "CON", "nul.txt", "predictions.csv",
                                     "x" * 129, "émilie", "a b", "trailing.", ""])
def test_unsafe_case_ids_are_refused(small_cohort, tmp_path, case_id):
    manifest, _, _ = small_cohort
    rows = _absolute(_rows(manifest)[:1], manifest.parent)
    rows[0]["case_id"] = case_id
    with pytest.raises(InputError, match=r"line 2: case_id (is empty|.* is not a safe folder name)"):
        read_manifest(_write(tmp_path / "m.csv", rows), check_files=False)


def test_duplicate_ids_are_refused_also_when_they_differ_in_case(small_cohort, tmp_path):
    manifest, _, _ = small_cohort
    rows = _absolute(_rows(manifest)[:2], manifest.parent)
    rows[1]["case_id"] = rows[0]["case_id"].lower()
    with pytest.raises(InputError, match=r"line 3: case_id .* appears twice \(ignoring case"):
        read_manifest(_write(tmp_path / "m.csv", rows))


def test_relative_paths_follow_the_manifest_absolute_ones_are_kept_and_no_output_path_is_taken(
        small_cohort, tiny_model, tmp_path, monkeypatch):
    manifest, records, _ = small_cohort
    data = tmp_path / "data"
    shutil.copytree(records[0].t1w.parent, data / "exam")
    rows = _rows(manifest)[:1]
    r = rows[0]
    for col in ("t2w", "dwi", "mask"):
        r[col] = f"../data/exam/{col}.nii.gz"                  # relative to the manifest's folder
    r["t1w"] = str((data / "exam" / "t1w.nii.gz").resolve())   # absolute
    r["out"] = str(tmp_path / "stolen")                       # a column nobody asked for
    m = _write(tmp_path / "lists" / "manifest.csv", rows, COLUMNS + ("out",))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)                               # the current folder does not matter
    rec = read_manifest(m)[0]
    assert rec.t2w == (tmp_path / "lists" / "../data/exam/t2w.nii.gz") and rec.t1w.is_absolute()
    out = tmp_path / "out"
    assert main(["predict", "--manifest", str(m), "--model", str(tiny_model), "--maps", "none", "--no-montage",
                 "--quiet", "--out", str(out)]) == 0
    assert (out / r["case_id"] / "report.json").is_file()
    assert not (tmp_path / "stolen").exists() and list(elsewhere.iterdir()) == []


def test_mask_label_column_picks_the_liver_in_a_multi_label_mask(small_cohort, tmp_path):
    import numpy as np
    import SimpleITK as sitk

    manifest, records, _ = small_cohort
    m = sitk.ReadImage(str(records[0].mask))
    lab = sitk.Cast(m, sitk.sitkUInt8) * 3 + sitk.Cast(sitk.BinaryDilate(m, [3, 3, 1]) - m, sitk.sitkUInt8) * 7
    sitk.WriteImage(lab, str(tmp_path / "labels.nii.gz"))
    rows = _absolute(_rows(manifest)[:1], manifest.parent)
    rows[0]["mask"] = str(tmp_path / "labels.nii.gz")
    rows[0]["mask_label"] = "3"
    rec = read_manifest(_write(tmp_path / "m.csv", rows, COLUMNS + ("mask_label",)))[0]
    assert rec.mask_label == 3
    from liverstiffness.imageio import read_mask
    assert np.array_equal(sitk.GetArrayFromImage(read_mask(rec.mask, rec.mask_label)), sitk.GetArrayFromImage(m) > 0)
    rows[0]["mask_label"] = "2.5"
    with pytest.raises(InputError, match="mask_label: '2.5' is not a label value"):
        read_manifest(_write(tmp_path / "m2.csv", rows, COLUMNS + ("mask_label",)))


# ------------------------------------------------------------------------------ model folders
@pytest.fixture
def model_copy(tiny_model, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(tiny_model, dst, ignore=shutil.ignore_patterns("cache"))
    return dst


def _edit_meta(model_dir, change):
    meta = json.loads((model_dir / "model.json").read_text())
    change(meta)
    (model_dir / "model.json").write_text(json.dumps(meta))


class _RunsCode:
    """A pickle that would run a command when loaded by an unrestricted unpickler."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_weights_that_would_run_code_are_refused_without_running_it(model_copy, tmp_path):
    from liverstiffness.stiffness.checkpoint import sha256

    marker = tmp_path / "code_ran"
    torch.save({"weights": _RunsCode(marker)}, model_copy / "fold0.pt")
    _edit_meta(model_copy, lambda m: m["folds"][0].update(sha256=sha256(model_copy / "fold0.pt")))  # hash matches
    with pytest.raises(InputError, match=r"fold0\.pt: is not a tensors-only checkpoint \(UnpicklingError\); refused"):
        Ensemble.load(model_copy, "cpu")
    assert not marker.exists()


def test_a_changed_weight_file_is_refused_by_its_hash(model_copy, tmp_path, capsys):
    data = bytearray((model_copy / "fold1.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (model_copy / "fold1.pt").write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["predict", "--t1w", "x", "--t2w", "x", "--dwi", "x", "--mask", "x", "--model", str(model_copy),
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fold1.pt: SHA-256 does not match model.json" in err


@pytest.mark.parametrize("change, pattern", [
    (lambda m: m.update(format="liverstiffness-ensemble/4"),
     r"has format 'liverstiffness-ensemble/4', newer than this version of liverstiffness reads .*; update liverstiffness"),
    (lambda m: m.update(format="somebody-else/1"), r"has format 'somebody-else/1', which is not a liverstiffness model"),
    (lambda m: m["architecture"].update({"class": "SwinStiffness"}),
     r"asks for architecture 'SwinStiffness', which this version does not know \(known: StiffnessTransformer\)"),
    (lambda m: m["folds"][0].update(file="../fold0.pt"), r"names a weight file '\.\./fold0\.pt' that is not a plain file name"),
    (lambda m: m["folds"][0].pop("sha256"), r"gives no SHA-256 for weight file fold0\.pt"),
    (lambda m: m["architecture"].update(hidden_size=48), r"fold0\.pt: does not fit the architecture in model\.json"),
    (lambda m: m["architecture"].update(readout="median"), r"is incomplete or malformed \(ValueError: unknown readout 'median'"),
])
def test_model_json_asking_for_what_this_version_cannot_do_is_refused_by_name(model_copy, change, pattern):
    _edit_meta(model_copy, change)
    with pytest.raises(InputError, match=pattern) as exc:
        Ensemble.load(model_copy, "cpu")
    assert "\n" not in str(exc.value)
