"""Property-based tests (hypothesis) of the input contract (issue 12, item 7): whatever is wrong
with a header, the voxels or a manifest, ``predict`` either gives an estimate that is right (the
undamaged exam's, within tolerance) or says in its report what it found — or it stops with
exit 2, one line, and nothing written; and nothing is ever written outside ``--out``.

Examples are derandomised (the same ones on every run) and few, on small exams, to stay fast.
"""
import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from liverstiffness.cli.main import main

pytestmark = pytest.mark.slow   # hypothesis runs many estimates

SETTINGS = {"deadline": None, "derandomize": True, "database": None,
            "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]}
#: "The same estimate": within this many kPa or this share of it.
TOLERANCE_KPA, TOLERANCE_REL = 0.1, 0.05


def _predict(rec, out, capsys, model=None, **files):
    paths = {"t1w": rec.t1w, "t2w": rec.t2w, "dwi": rec.dwi, "mask": rec.mask}
    paths.update(files)
    argv = ["predict", "--dwi-b", ",".join(f"{b:g}" for b in rec.dwi_b), "--maps", "none", "--no-montage",
            "--quiet", "--out", str(out), "--age", "55", "--sex", "F", "--bmi", "28"]
    if model:
        argv += ["--model", str(model)]
    for k, v in paths.items():
        argv += [f"--{k}", str(v)]
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err.strip()


def _check_contract(code, err, out, clean_kpa, names):
    """Exit 2: one line naming a damaged input, nothing written. Exit 0: the clean estimate, or
    a report that says what it found."""
    assert code in (0, 2), err
    event(f"exit {code}" + (f": {err.split(': ', 2)[-1][:40]}" if code == 2 else ""))
    if code == 2:
        assert len(err.splitlines()) == 1 and err.startswith("error: "), err
        assert any(n in err for n in names), err
        assert not out.exists()
        return None
    rep = json.loads((out / "report.json").read_text())
    event("same estimate" if abs(rep["stiffness_kpa"] - clean_kpa) <= max(TOLERANCE_KPA, TOLERANCE_REL * clean_kpa)
          else "changed, with warnings")
    same = abs(rep["stiffness_kpa"] - clean_kpa) <= max(TOLERANCE_KPA, TOLERANCE_REL * clean_kpa)
    assert same or rep["warnings"], (f"silent change: {clean_kpa} → {rep['stiffness_kpa']} kPa with no warning", err)
    return rep


@pytest.fixture(scope="module")
def clean(one_case, tmp_path_factory):
    """The undamaged exam's estimate with the shipped model (the reference for 'right')."""
    out = tmp_path_factory.mktemp("clean") / "out"
    assert main(["predict", "--t1w", str(one_case.t1w), "--t2w", str(one_case.t2w), "--dwi", str(one_case.dwi),
                 "--dwi-b", ",".join(f"{b:g}" for b in one_case.dwi_b), "--mask", str(one_case.mask),
                 "--maps", "none", "--no-montage", "--quiet", "--out", str(out), "--age", "55", "--sex", "F",
                 "--bmi", "28"]) == 0
    return json.loads((out / "report.json").read_text())["stiffness_kpa"]


# --------------------------------------------------------------------------- damaged headers
def _nrrd_header(img: sitk.Image, raw_name: str, **damage) -> str:
    sp = np.array(img.GetSpacing())
    d = np.array(img.GetDirection()).reshape(3, 3)
    cols = d * sp                                    # columns: the physical step of each index axis
    cols = cols * np.asarray(damage.get("scale", (1.0, 1.0, 1.0)))
    cols[0, 1] += damage.get("skew", 0.0)
    origin = np.array(img.GetOrigin()) + np.asarray(damage.get("shift", (0.0, 0.0, 0.0)))
    sizes = list(img.GetSize())
    sizes[2] += damage.get("extra_slices", 0)
    vec = lambda v: "(" + ",".join(repr(float(x)) for x in v) + ")"
    return "\n".join([
        "NRRD0004", f"type: {damage.get('type', 'float')}", "dimension: 3", "space: left-posterior-superior",
        f"sizes: {' '.join(str(s) for s in sizes)}",
        f"space directions: {' '.join(vec(cols[:, i]) for i in range(3))}",
        f"endian: {damage.get('endian', 'little')}", "encoding: raw", f"space origin: {vec(origin)}",
        f"data file: {raw_name}", "", ""])


_scale = st.sampled_from([1.0, -1.0, 0.0, 1e-3, 0.5, 0.97, 1.03, 1.2, 2.0, 1e3, math.nan])
# One field damaged at a time (several at once mostly make the file unreadable, which is the
# least interesting outcome).
header_damage = st.one_of(
    st.fixed_dictionaries({"scale": st.tuples(_scale, _scale, _scale)}),
    st.fixed_dictionaries({"skew": st.sampled_from([0.05, 0.5, 4.0])}),
    st.fixed_dictionaries({"shift": st.tuples(*[st.sampled_from([0.0, 2.0, -3.0, 15.0, -40.0, 1e5, math.inf])] * 3)}),
    st.fixed_dictionaries({"extra_slices": st.sampled_from([-1, 1, -5])}),
    st.fixed_dictionaries({"type": st.sampled_from(["short", "double", "uchar"])}),
    st.fixed_dictionaries({"endian": st.just("big")}),
    st.just({}),
)


@settings(max_examples=20, **SETTINGS)
@given(damage=header_damage)
def test_damaged_t2w_headers(one_case, clean, tmp_path_factory, capsys, damage):
    work = tmp_path_factory.mktemp("hdr")
    img = sitk.ReadImage(str(one_case.t2w))
    sitk.GetArrayFromImage(img).astype("<f4").tofile(work / "t2w.raw")
    (work / "t2w.nhdr").write_text(_nrrd_header(img, "t2w.raw", **damage))
    out = work / "out"
    code, err = _predict(one_case, out, capsys, t2w=work / "t2w.nhdr")
    _check_contract(code, err, out, clean, ["t2w"])


# ------------------------------------------------------------------------------ damaged voxels
def _damage(arr: np.ndarray, kind: str, where: float, rng: np.random.Generator) -> np.ndarray:
    a = arr.copy()
    k = int(where * (a.shape[0] - 1))
    if kind == "nan_voxels":
        idx = tuple(rng.integers(0, n, 20) for n in a.shape)
        a[idx] = np.nan
    elif kind == "inf_voxel":
        a[k, a.shape[1] // 2, a.shape[2] // 2] = np.inf
    elif kind == "nan_slice":
        a[k] = np.nan
    elif kind == "zero_slice":
        a[k] = 0.0
    elif kind == "constant":
        a[:] = float(np.median(a))
    elif kind == "negative":
        a = -a
    elif kind == "dropout_box":                    # a signal void in part of the image
        a[k:k + 3, : a.shape[1] // 3, : a.shape[2] // 3] = 0.0
    return a


@settings(max_examples=14, **SETTINGS)
@given(sequence=st.sampled_from(["t1w", "t2w", "dwi"]),
       kind=st.sampled_from(["nan_voxels", "inf_voxel", "nan_slice", "zero_slice", "constant", "negative", "dropout_box"]),
       where=st.floats(0.0, 1.0), seed=st.integers(0, 2 ** 16))
def test_damaged_voxels(one_case, clean, tmp_path_factory, capsys, sequence, kind, where, seed):
    work = tmp_path_factory.mktemp("vox")
    src = sitk.ReadImage(str(getattr(one_case, sequence)))
    arr = sitk.GetArrayFromImage(src)
    rng = np.random.default_rng(seed)
    if sequence == "dwi":                           # 4-D: damage one b-value's volume
        b = int(rng.integers(0, arr.shape[0]))
        arr[b] = _damage(arr[b], kind, where, rng)
    else:
        arr = _damage(arr, kind, where, rng)
    img = sitk.GetImageFromArray(arr, isVector=False)
    img.CopyInformation(src)
    path = work / f"{sequence}.nii.gz"
    sitk.WriteImage(img, str(path))
    out = work / "out"
    code, err = _predict(one_case, out, capsys, **{sequence: path})
    _check_contract(code, err, out, clean, [sequence])


@settings(max_examples=8, **SETTINGS)
@given(sequence=st.sampled_from(["t1w", "t2w", "dwi"]), log_factor=st.floats(-3.0, 3.0))
def test_intensity_scale_does_not_change_the_estimate(one_case, clean, tmp_path_factory, capsys, sequence, log_factor):
    """MR intensities are in arbitrary units (a factor of 10 or more between vendors): scaling a
    sequence by any positive factor must give the same estimate, silently."""
    work = tmp_path_factory.mktemp("scale")
    src = sitk.ReadImage(str(getattr(one_case, sequence)))
    img = sitk.GetImageFromArray(sitk.GetArrayFromImage(src) * np.float32(10.0 ** log_factor), isVector=False)
    img.CopyInformation(src)
    path = work / f"{sequence}.nii.gz"
    sitk.WriteImage(img, str(path))
    out = work / "out"
    code, err = _predict(one_case, out, capsys, **{sequence: path})
    assert code == 0, err
    rep = json.loads((out / "report.json").read_text())
    assert rep["stiffness_kpa"] == pytest.approx(clean, abs=0.02), (sequence, 10 ** log_factor)


# ---------------------------------------------------------------------------------- manifests
hostile_ids = st.one_of(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True),
    st.sampled_from(["../../escaped_case", "..", ".", "/tmp/abs", "a/../../b", "C:\\x", "~", "con", ".hidden", "a\x00b",
                     "x" * 300, "ü", " lead", "predictions.csv"]),
    st.text(min_size=0, max_size=12),
)


@settings(max_examples=30, **SETTINGS)
@given(rows=st.lists(st.tuples(hostile_ids, st.sampled_from(["relative", "absolute", "missing", "up"])),
                     min_size=1, max_size=3),
       extra_column=st.booleans())
def test_hostile_manifests_write_nothing_outside_out(one_case, tiny_model, tmp_path_factory, capsys, rows, extra_column):
    sandbox = tmp_path_factory.mktemp("sandbox")
    lists = sandbox / "lists" / "deeper"
    shutil.copytree(one_case.t1w.parent, lists / "exam")
    shutil.copytree(one_case.t1w.parent, sandbox / "up_exam")
    header = ["case_id", "patient_id", "site", "vendor", "field_strength", "t1w", "t2w", "dwi", "dwi_b", "mask", "age",
              "sex", "bmi", "pdff", "stiffness_kpa"] + (["out"] if extra_column else [])
    with open(lists / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for case_id, how in rows:
            base = {"relative": "exam", "absolute": str((lists / "exam").resolve()), "missing": "nowhere",
                    "up": "../../up_exam"}[how]
            files = [f"{base}/{n}.nii.gz" for n in ("t1w", "t2w", "dwi")] + [f"{base}/mask.nii.gz"]
            w.writerow([case_id, "P1", "A", "GE", "1.5", *files[:3], ";".join(f"{b:g}" for b in one_case.dwi_b),
                        files[3], "50", "F", "27", "", ""] + ([str(sandbox / "stolen")] if extra_column else []))
    before = {p for p in sandbox.rglob("*")}
    out = sandbox / "out"
    capsys.readouterr()
    code = main(["predict", "--manifest", str(lists / "manifest.csv"), "--model", str(tiny_model), "--maps", "none",
                 "--no-montage", "--no-qa", "--quiet", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    new = {p for p in sandbox.rglob("*")} - before
    assert all(out in p.parents or p == out for p in new), sorted(str(p) for p in new)   # nothing outside --out
    assert code in (0, 2), err
    if code == 2:
        assert len(err.splitlines()) == 1 and err.startswith("error: manifest.csv line "), err
        assert new == set()
        return
    with open(out / "predictions.csv", newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    assert [r["case_id"] for r in table] == [cid for cid, _ in rows]
    for r, (cid, how) in zip(table, rows):
        assert r["status"] == ("error" if how == "missing" else "ok"), r
        assert (out / cid / "report.json").is_file() == (how != "missing")
    assert {p.name for p in out.iterdir() if p.is_dir()} == {cid for cid, how in rows if how != "missing"}
    assert not (sandbox / "stolen").exists()
    assert all(Path(p).name != "escaped_case" for p in new)
