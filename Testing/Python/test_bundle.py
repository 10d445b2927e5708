"""MONAI bundles (`liverstiffness export-bundle`): both shipped models exported, their metadata verified
by MONAI's own `verify_metadata` against the vendored schema with no network, the bundle's inference
config run by `python -m monai.bundle run` giving what `predict` and `segment` give on the same files,
`--model`/`--seg-model` taking a bundle, and changed bundles refused with one line."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from liverstiffness.bundle import SegmentationBundle, StiffnessBundle
from liverstiffness.bundle_export import SCHEMA_FILE, SCHEMA_SHA256, verify_metadata
from liverstiffness.cli.main import main
from liverstiffness.errors import InputError
from liverstiffness.segmentation.model_folder import DEFAULT_SEG_MODEL_DIR
from liverstiffness.stiffness.checkpoint import DEMO_MODEL_DIR
from liverstiffness.stiffness.covariates import COVARIATES

# Any download would go through this dead proxy and fail: the checks below run offline or not at all.
OFFLINE = {**os.environ, "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}
NUMBERS = ("stiffness_kpa", "interval_kpa", "interval_coverage", "category", "fold_predictions_kpa", "ensemble_sd_log")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """The shipped demo model and liver segmenter, each exported as a bundle: {"stiffness": B, "segmentation": B}."""
    root = tmp_path_factory.mktemp("bundles")
    for name, src in (("stiffness", DEMO_MODEL_DIR), ("segmentation", DEFAULT_SEG_MODEL_DIR)):
        assert main(["export-bundle", str(src), str(root / name)]) == 0
    return {"stiffness": root / "stiffness", "segmentation": root / "segmentation"}


def _monai(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monai.bundle", *args], capture_output=True, text=True, env=OFFLINE,
                          timeout=300)


def _exam_args(case, style: str) -> list[str]:
    """The same exam as `predict` options (style "cli") or as `monai.bundle run` overrides ("bundle")."""
    f = case.facts
    pairs = [("t1w", case.t1w), ("t2w", case.t2w), ("dwi", case.dwi), ("mask", case.mask),
             ("dwi-b" if style == "cli" else "dwi_b", ",".join(f"{b:g}" for b in case.dwi_b)),
             ("age", f.age), ("sex", f.sex), ("bmi", f.bmi), ("pdff", f.pdff)]
    return [a for k, v in pairs if v is not None for a in (f"--{k}", str(v))]


def test_the_vendored_schema_is_monais_file():
    assert _sha(SCHEMA_FILE) == SCHEMA_SHA256
    schema = json.loads(SCHEMA_FILE.read_text())
    assert {"schema", "version", "monai_version", "network_data_format"} <= set(schema["required"])


@pytest.mark.parametrize("kind, source", [("stiffness", DEMO_MODEL_DIR), ("segmentation", DEFAULT_SEG_MODEL_DIR)])
def test_a_bundle_holds_the_model_folder_unchanged_with_its_card(bundles, kind, source):
    b = bundles[kind]
    assert (b / "configs" / "metadata.json").is_file() and (b / "configs" / "inference.json").is_file()
    files = sorted(f.name for f in source.iterdir() if f.is_file())
    assert sorted(f.name for f in (b / "models").iterdir()) == files
    assert all(_sha(b / "models" / name) == _sha(source / name) for name in files)     # SHA-256s in the JSON still hold
    assert (b / "docs" / "README.md").read_bytes() == (source / "MODEL_CARD.md").read_bytes()
    if kind == "segmentation":      # CC BY-SA weights: their licence travels with them
        assert (b / "docs" / "LICENSE-WEIGHTS.md").read_bytes() == (source / "LICENSE-WEIGHTS.md").read_bytes()
        assert "docs/LICENSE-WEIGHTS.md" in json.loads((b / "configs" / "metadata.json").read_text())["copyright"]


@pytest.mark.parametrize("kind", ["stiffness", "segmentation"])
def test_monai_verify_metadata_passes_offline(bundles, kind):
    """MONAI's own command, given the vendored schema: it finds the file and downloads nothing (a
    download would fail through the dead proxy)."""
    res = _monai("verify_metadata", "--meta_file", str(bundles[kind] / "configs" / "metadata.json"),
                 "--filepath", str(SCHEMA_FILE), "--hash_val", SCHEMA_SHA256, "--hash_type", "sha256")
    assert res.returncode == 0, res.stderr[-2000:]
    log = res.stdout + res.stderr
    assert "skipped downloading" in log and "metadata is verified with no error" in log
    verify_metadata(bundles[kind])          # the same check in-process, as export-bundle runs it


def test_metadata_that_breaks_the_schema_is_refused(bundles, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(bundles["stiffness"], b)
    meta_file = b / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    del meta["task"]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="does not follow MONAI's bundle metadata schema"):
        verify_metadata(b)


def test_the_inference_config_carries_ensemble_preprocessing_covariates_and_calibration(bundles):
    from monai.bundle import ConfigParser

    model = json.loads((DEMO_MODEL_DIR / "model.json").read_text())
    config = ConfigParser(json.loads((bundles["stiffness"] / "configs" / "inference.json").read_text()))
    entry = config.get_parsed_content("model")
    assert entry["ensemble"]["folds"] == [{"file": f["file"], "sha256": f["sha256"]} for f in model["folds"]]
    assert entry["ensemble"]["architecture"] == model["architecture"]
    assert entry["preprocessing"] == {"input_spec": model["input_spec"], "preprocess": model["preprocess"]}
    assert entry["covariates"]["order"] == list(COVARIATES)
    assert entry["interval_calibration"] == model["calibration"]
    seg = json.loads((DEFAULT_SEG_MODEL_DIR / "seg_model.json").read_text())
    seg_entry = ConfigParser(json.loads((bundles["segmentation"] / "configs" / "inference.json").read_text())
                             ).get_parsed_content("model")
    assert seg_entry["inference"] == seg["inference"] and seg_entry["preprocessing"]["input_spec"] == seg["input_spec"]
    assert [f["sha256"] for f in seg_entry["ensemble"]["folds"]] == [f["sha256"] for f in seg["folds"]]


def test_a_config_that_no_longer_describes_its_model_is_refused_with_one_line(bundles, tmp_path, capsys):
    b = tmp_path / "b"
    shutil.copytree(bundles["stiffness"], b)
    config = json.loads((b / "configs" / "inference.json").read_text())
    config["model"]["interval_calibration"]["coverage"] = 0.5
    predictor = StiffnessBundle(str(b), config["model"], "cpu")
    with pytest.raises(SystemExit) as stop:
        predictor.run({}, {}, tmp_path / "out")
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and "interval_calibration" in err
    assert not (tmp_path / "out").exists()


def test_model_and_seg_model_take_a_bundle(bundles):
    from liverstiffness.segmentation.infer import LiverSegmenter
    from liverstiffness.stiffness.ensemble import Ensemble

    ens = Ensemble.load(bundles["stiffness"], "cpu")
    assert ens.model_dir == bundles["stiffness"] / "models" and len(ens.models) == len(ens.meta.folds)
    seg = LiverSegmenter.load(bundles["segmentation"], "cpu")
    assert seg.model_dir == bundles["segmentation"] / "models" and len(seg.networks) == len(seg.meta.folds)


def test_serve_takes_a_bundle_and_refuses_what_is_neither(bundles, tmp_path):
    """`serve --model` (the web page) accepts a bundle as predict does, and its model card reads from
    the bundle's models/; a folder that is neither is refused in one line."""
    from liverstiffness.errors import InputError
    from LiverStiffnessWeb.launcher import ServeOptions, check_options
    from LiverStiffnessWeb.model_info import describe_model

    assert check_options(ServeOptions(model=str(bundles["stiffness"]))).model == str(bundles["stiffness"])
    assert describe_model(str(bundles["stiffness"]))["name"] == describe_model(None)["name"]
    with pytest.raises(InputError, match="is not a model folder or a MONAI bundle"):
        check_options(ServeOptions(model=str(tmp_path)))


def test_a_bundle_with_a_changed_weight_file_is_refused_with_one_line(bundles, one_case, tmp_path, capsys):
    for kind, weight in (("stiffness", "fold1.pt"), ("segmentation", "run0_fold3.pt")):
        b = tmp_path / kind
        shutil.copytree(bundles[kind], b)
        data = bytearray((b / "models" / weight).read_bytes())
        data[-100] ^= 1
        (b / "models" / weight).write_bytes(bytes(data))
        capsys.readouterr()
        if kind == "stiffness":
            code = main(["predict", *_exam_args(one_case, "cli"), "--model", str(b), "--device", "cpu",
                         "--out", str(tmp_path / "out")])
        else:
            code = main(["segment", "--image", str(one_case.t2w), "--model", str(b), "--device", "cpu",
                         "--out", str(tmp_path / "mask.nii.gz")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.count("\n") == 0 and "SHA-256 does not match" in err and weight in err
        model = json.loads((b / "configs" / "inference.json").read_text())["model"]
        with pytest.raises(SystemExit) as stop:     # the bundle's own entry refuses it the same way
            if kind == "stiffness":
                StiffnessBundle(str(b), model, "cpu").run(
                    {"t1w": one_case.t1w, "t2w": one_case.t2w, "dwi": one_case.dwi, "mask": one_case.mask},
                    {}, tmp_path / "out")
            else:
                SegmentationBundle(str(b), model, "cpu").run(one_case.t2w, tmp_path / "mask.nii.gz")
        assert stop.value.code == 2 and "SHA-256 does not match" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "mask.nii.gz").exists()


def test_export_refuses_what_it_cannot_export_with_one_line(bundles, tmp_path, capsys):
    no_licence = tmp_path / "seg_no_licence"
    shutil.copytree(DEFAULT_SEG_MODEL_DIR, no_licence)
    (no_licence / "LICENSE-WEIGHTS.md").unlink()
    changed = tmp_path / "changed"
    shutil.copytree(DEMO_MODEL_DIR, changed)
    (changed / "fold0.pt").write_bytes((changed / "fold0.pt").read_bytes() + b"\0")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    cases = [(tmp_path, tmp_path / "o1", "is neither a stiffness model folder"),
             (no_licence, tmp_path / "o2", "LICENSE-WEIGHTS.md"),
             (changed, tmp_path / "o3", "SHA-256 does not match"),
             (DEMO_MODEL_DIR, full, "is not an empty folder")]
    for src, out, problem in cases:
        capsys.readouterr()
        assert main(["export-bundle", str(src), str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("error: ") and problem in err
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3")) and sorted(full.iterdir()) == [full / "keep.txt"]
    assert not list(tmp_path.glob(".*partial*"))         # no staging folder left behind
    again = tmp_path / "again"                             # a bundle exports again as the folder it holds
    assert main(["export-bundle", str(bundles["stiffness"]), str(again)]) == 0
    assert (again / "configs" / "inference.json").read_text() == \
        (bundles["stiffness"] / "configs" / "inference.json").read_text()


def _report(folder: Path) -> dict:
    r = json.loads((folder / "report.json").read_text())
    return {k: r[k] for k in NUMBERS}


@pytest.mark.slow
def test_monai_bundle_run_gives_what_predict_gives(bundles, one_case, tmp_path):
    """`python -m monai.bundle run` with the bundle's inference config, `predict --model BUNDLE` and
    `predict` with the model folder: the same estimate, interval and category."""
    b = bundles["stiffness"]
    assert main(["predict", *_exam_args(one_case, "cli"), "--model", str(DEMO_MODEL_DIR), "--device", "cpu",
                 "--out", str(tmp_path / "cli")]) == 0
    assert main(["predict", *_exam_args(one_case, "cli"), "--model", str(b), "--device", "cpu",
                 "--out", str(tmp_path / "cli_bundle")]) == 0
    res = _monai("run", "--config_file", str(b / "configs" / "inference.json"),
                 "--meta_file", str(b / "configs" / "metadata.json"), "--bundle_root", str(b),
                 *_exam_args(one_case, "bundle"), "--device", "cpu", "--output_dir", str(tmp_path / "monai"))
    assert res.returncode == 0, res.stderr[-3000:]
    expected = _report(tmp_path / "cli")
    assert _report(tmp_path / "cli_bundle") == expected
    assert _report(tmp_path / "monai") == expected
    assert json.loads((tmp_path / "monai" / "report.json").read_text())["model"]["path"] == str(b / "models")
    assert "kPa" in res.stdout


@pytest.mark.slow
def test_monai_bundle_run_gives_what_segment_gives(bundles, one_case, tmp_path):
    b = bundles["segmentation"]
    assert main(["segment", "--image", str(one_case.t2w), "--device", "cpu", "--out", str(tmp_path / "cli.nii.gz")]) == 0
    assert main(["segment", "--image", str(one_case.t2w), "--model", str(b), "--device", "cpu",
                 "--out", str(tmp_path / "cli_bundle.nii.gz")]) == 0
    res = _monai("run", "--config_file", str(b / "configs" / "inference.json"), "--bundle_root", str(b),
                 "--image", str(one_case.t2w), "--device", "cpu", "--output", str(tmp_path / "monai.nii.gz"),
                 "--report", str(tmp_path / "monai.json"))
    assert res.returncode == 0, res.stderr[-3000:]
    masks = [sitk.ReadImage(str(tmp_path / f"{n}.nii.gz")) for n in ("cli", "cli_bundle", "monai")]
    arrays = [sitk.GetArrayFromImage(m) for m in masks]
    assert arrays[0].sum() > 0
    assert all(np.array_equal(arrays[0], a) for a in arrays[1:])
    assert all(m.GetOrigin() == masks[0].GetOrigin() and m.GetSpacing() == masks[0].GetSpacing() for m in masks)
    assert json.loads((tmp_path / "monai.json").read_text())["model"]["path"] == str(b / "models")
