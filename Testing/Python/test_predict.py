
"""Predicting one exam and a batch: report, attention maps, rollout, errors, resume, devices."""
import csv
import json
import shutil
import warnings
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.visualize import GradCAM, VanillaGrad

from liverstiffness.batch import predict_manifest
from liverstiffness.cli.main import main
from liverstiffness.manifest import ExamRecord
from liverstiffness.mre import categorize
from liverstiffness.predict import PredictOptions, predict_exam
from liverstiffness.stiffness.attention import _AsLogits, compute_maps, rollout, times_uniform
from liverstiffness.stiffness.ensemble import Ensemble
from liverstiffness.stiffness.network import ModelConfig, StiffnessTransformer


@pytest.fixture(scope="module")
def ens(tiny_model):
    return Ensemble.load(tiny_model, "cpu")


@pytest.fixture(scope="module")
def report(ens, one_case, tmp_path_factory):
    out = tmp_path_factory.mktemp("pred") / "case"
    inp = one_case
    return predict_exam(inp, ens, out, PredictOptions(detail_maps=True)), out


def test_report_schema_and_physical_range(report):
    rep, out = report
    saved = json.loads((out / "report.json").read_text())
    assert saved == json.loads(rep.to_json()) and saved["schema_version"] == 3
    assert 0.5 < rep.stiffness_kpa < 30
    lo, hi = rep.interval_kpa
    assert lo < rep.stiffness_kpa < hi and rep.interval_coverage == 0.9
    cat = categorize(rep.stiffness_kpa)
    assert rep.category == cat.label and rep.category_band_kpa == [cat.low_kpa, cat.high_kpa]
    assert [b["low_kpa"] for b in rep.mre_bands] == [0.0, 2.5, 2.9, 3.5, 5.0]
    assert len(rep.fold_predictions_kpa) == 2
    assert set(rep.timings_s) >= {"read", "qa", "preprocess", "model", "attention", "write", "total"}
    assert set(rep.model["sha256"]) == {"fold0.pt", "fold1.pt"} and rep.model["synthetic_training_data"]
    assert rep.inputs["t1w"]["spacing_mm"] and rep.device == "cpu"
    assert set(rep.sequence_contributions_kpa) == {"t1w", "t2w", "dwi"}
    att = rep.attention
    assert att["unit"].startswith("times the uniform share") and 0 < att["image_token_share"] <= 1
    for kind in ("rollout", "gradcam", "saliency_t2w", "layer0_head1"):
        summary = att["maps"][kind]
        assert 0.1 <= summary["top10_share"] <= 1 and 0 < summary["normalised_entropy"] <= 1
        assert summary["informative"] == (summary["top10_share"] >= 0.15)
        assert summary["liver_mean_times_uniform"] >= 0
    assert rep.mask_qa["ok"] is True and rep.adc_available is True
    assert (out / "attention_montage.png").stat().st_size > 10000


def test_attention_maps_on_t1w_grid_in_their_own_unit(report, one_case):
    """Maps lie on the T1w grid, cover the model's crop (spleen included), keep their unit
    (times the uniform share: no min–max stretch) and come with the liver mask on that grid."""
    rep, out = report
    t1 = sitk.ReadImage(str(one_case.t1w))
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(one_case.mask))) > 0
    names = rep.outputs["attention_maps"]
    assert names["rollout"] == "attention.nii.gz"
    assert {"gradcam", "saliency_t1w", "saliency_t2w", "saliency_dwi", "saliency_adc", "layer0", "layer1_head1"} <= set(names)
    liver = sitk.ReadImage(str(out / rep.outputs["liver_mask"]))
    assert np.array_equal(sitk.GetArrayFromImage(liver) > 0, mask)
    for name in ("attention.nii.gz", "attention_gradcam.nii.gz", "attention_layer0_head0.nii.gz",
                 "attention_saliency_t2w.nii.gz"):
        img = sitk.ReadImage(str(out / name))
        assert img.GetSize() == t1.GetSize()
        assert np.allclose(img.GetOrigin(), t1.GetOrigin()) and np.allclose(img.GetSpacing(), t1.GetSpacing())
        a = sitk.GetArrayFromImage(img)
        assert a.min() >= 0 and a[mask].std() > 0.001
        assert (a[~mask] > 0).sum() > (a[mask] > 0).sum()     # the crop reaches well beyond the liver
        assert 0.05 < a[a > 0].mean() < 20                     # around 1 (uniform), not stretched to [0, 1]


def test_the_same_exam_twice_gives_the_same_answer(ens, report, one_case, tmp_path):
    """Maps and contributions must leave the models in eval mode: with dropout left on, the next
    exam of a batch (and the contributions of this one) would come out noisy."""
    rep, out = report
    assert not any(m.training for m in ens.models)
    inp = one_case
    again = predict_exam(inp, ens, tmp_path / "again", PredictOptions(detail_maps=True, montage=False))
    for key in ("stiffness_kpa", "fold_predictions_kpa", "interval_kpa", "sequence_contributions_kpa"):
        assert getattr(again, key) == getattr(rep, key), key
    for name in ("attention.nii.gz", "attention_gradcam.nii.gz", "attention_layer1_head0.nii.gz"):
        a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(d / name))) for d in (out, tmp_path / "again"))
        assert np.allclose(a, b, atol=1e-5), name


@pytest.mark.slow
def test_real_t2_case_runs_end_to_end_with_maps_on_its_own_grid(ens, real_data, tmp_path):
    """CHAOS T2-SPIR (real anatomy, a y axis that runs posterior→anterior) in every sequence slot,
    a one-b-value DWI, and its manual liver mask: the estimate comes out with a warning about the
    missing ADC, and the maps lie on that grid, inside the mask."""
    img = real_data / "chaos_t2spir" / "image_1.nii.gz"
    lab = sitk.ReadImage(str(real_data / "chaos_t2spir" / "label_1.nii.gz"))
    liver = sitk.GetArrayFromImage(lab) == 1
    mask = sitk.GetImageFromArray(liver.astype(np.uint8))
    mask.CopyInformation(lab)
    sitk.WriteImage(mask, str(tmp_path / "liver.nii.gz"))
    inp = ExamRecord(case_id="real", patient_id="", t1w=img, t2w=img, dwi=img, mask=tmp_path / "liver.nii.gz", dwi_b=(800.0,))
    rep = predict_exam(inp, ens, tmp_path / "out", PredictOptions(montage=False))
    assert 0.5 < rep.stiffness_kpa < 30 and rep.adc_available is False
    assert any("no ADC map" in w for w in rep.warnings) and rep.mask_qa["ok"] is True
    att = sitk.ReadImage(str(tmp_path / "out" / "attention.nii.gz"))
    t2 = sitk.ReadImage(str(img))
    assert att.GetSize() == t2.GetSize() and np.allclose(att.GetDirection(), t2.GetDirection())
    a = sitk.GetArrayFromImage(att)
    assert a.min() >= 0 and a[liver].mean() > 0 and a[liver].std() > 0.001


def test_rollout_matches_a_hand_computation():
    a1 = torch.tensor([[[[0.5, 0.25, 0.25], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8]],
                        [[0.7, 0.2, 0.1], [0.3, 0.3, 0.4], [0.2, 0.2, 0.6]]]])      # [B=1, heads=2, T=3, T]
    a2 = torch.tensor([[[[0.2, 0.4, 0.4], [0.5, 0.25, 0.25], [0.3, 0.3, 0.4]],
                        [[0.4, 0.4, 0.2], [0.1, 0.8, 0.1], [0.6, 0.2, 0.2]]]])
    hand = np.eye(3)
    for a in (a1, a2):
        m = a[0].numpy().mean(axis=0) + np.eye(3)
        m = m / m.sum(axis=1, keepdims=True)
        hand = m @ hand
    out = rollout([a1, a2])
    assert out.shape == (1, 3)
    # The mean readout: its flow is the mean of the rows.
    assert np.allclose(out[0].numpy(), hand.mean(axis=0), atol=1e-6)
    # A pooled readout weighs the rows by its own weights over the tokens.
    w = torch.tensor([[0.1, 0.3, 0.6]])
    assert np.allclose(rollout([a1, a2], w)[0].numpy(), w[0].numpy() @ hand, atol=1e-6)


@pytest.mark.parametrize("readout", ["mean", "attention", "attention_max"])
def test_readout_weights_follow_the_visible_tokens(readout):
    """The readout's weights (the maps' last step) are a distribution over the tokens the model was
    given: none on hidden image tokens, and the estimate does not depend on what they hold."""
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=16, mlp_dim=32, num_layers=1, num_heads=2, readout=readout)
    net = StiffnessTransformer(cfg).eval()
    x = torch.rand(2, cfg.in_channels, *cfg.img_size) + 0.1
    x[:, cfg.mask_channel] = 0
    x[:, cfg.mask_channel, 8:16, 10:30, 20:40] = 1
    cov, known = torch.zeros(2, cfg.n_covariates), torch.zeros(2, cfg.n_covariates, dtype=torch.bool)
    with torch.no_grad():
        net(x, cov, known)
        w = net.readout_weights()
        if readout == "mean":
            assert w is None
            return
        assert w.shape == (2, cfg.n_prefix + int(np.prod(cfg.grid))) and torch.allclose(w.sum(1), torch.ones(2))
        blind = net(x, cov, known, use_image_tokens=False)
        assert float(net.readout_weights()[:, cfg.n_prefix:].abs().max()) == 0.0
        # Outside the liver the image reaches the estimate only through the image tokens.
        y = x.clone()
        y[:, :cfg.mask_channel, :, :, :10] *= 3.0
        assert torch.allclose(net(y, cov, known, use_image_tokens=False), blind, atol=1e-5)
        assert not torch.allclose(net(y, cov, known), net(x, cov, known), atol=1e-4)


def test_model_json_written_before_the_readout_options_keeps_the_mean_readout():
    old = ModelConfig(readout="mean", liver_relative=False, linear_readout=False).to_dict()
    for key in ("readout", "liver_relative", "linear_readout"):
        old.pop(key)
    cfg = ModelConfig.from_dict(old)
    assert (cfg.readout, cfg.liver_relative, cfg.linear_readout) == ("mean", False, False)
    assert StiffnessTransformer(cfg).stem[0].conv.in_channels == cfg.in_channels
    assert StiffnessTransformer(ModelConfig()).stem[0].conv.in_channels == cfg.in_channels + len(cfg.log_channels)
    with pytest.raises(ValueError, match="unknown readout 'median'"):
        ModelConfig.from_dict({**old, "readout": "median"})


def test_saliency_and_gradcam_match_monai_run_separately(ens):
    """compute_maps takes the input gradient from GradCAM's own backward pass: it must equal
    MONAI's VanillaGrad, and GradCAM must be unchanged by it (fold average of each)."""
    torch.manual_seed(3)
    channels = ens.meta.spec.channels
    x = torch.rand(1, len(channels), *ens.models[0].cfg.img_size)
    x[0, channels.index("mask")] = (torch.rand(x.shape[2:]) > 0.4).float()
    cov, known = torch.zeros(1, 4), torch.ones(1, 4, dtype=torch.bool)
    maps, _ = compute_maps(ens.models, x, cov, known, channels)
    sal, cam = 0, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for net in ens.models:
            wrapped = _AsLogits(net)
            grad = VanillaGrad(wrapped)(x.clone(), index=0, cov=cov, known=known)[0]
            sal = sal + np.stack([times_uniform(g) for g in (grad * x[0]).abs().numpy()]) / len(ens.models)
            gc = GradCAM(nn_module=wrapped, target_layers="net.stem.1", postprocessing=lambda m: m)
            cam = cam + times_uniform(gc(x.clone(), class_idx=0, cov=cov, known=known)[0, 0].detach().numpy()) / len(ens.models)
    for c, name in enumerate(channels):
        if name != "mask":
            assert np.allclose(maps[f"saliency_{name}"], sal[c], rtol=1e-4, atol=1e-6), name
            assert sal[c].std() > 0, name
    assert np.allclose(maps["gradcam"], cam, atol=1e-5) and cam.std() > 0


@pytest.mark.slow
def test_batch_with_a_corrupt_case_completes_and_resumes(ens, small_cohort, tmp_path):
    manifest, records, _ = small_cohort
    base = manifest.parent
    rows = manifest.read_text().splitlines()
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    (bad_dir / "t2w.nii.gz").write_bytes(b"corrupt")
    header, first, second, third = rows[0], rows[1], rows[2], rows[3]
    cols = header.split(",")
    fix = lambda row: ",".join(v if c not in ("t1w", "t2w", "dwi", "mask") or v.startswith("/") else str(base / v)
                               for c, v in zip(cols, row.split(",")))  # noqa: E731
    broken = fix(second).split(",")
    broken[cols.index("t2w")] = str(bad_dir / "t2w.nii.gz")
    m2 = tmp_path / "batch.csv"
    m2.write_text("\n".join([header, fix(first), ",".join(broken), fix(third)]) + "\n")
    out = tmp_path / "out"
    opts = PredictOptions(gradient_maps=False, montage=False)
    result = predict_manifest(m2, ens, out, opts, progress=False)
    table = list(csv.DictReader(open(out / "predictions.csv")))
    assert [r["case_id"] for r in table] == [records[0].case_id, records[1].case_id, records[2].case_id]
    assert [r["status"] for r in table] == ["ok", "error", "ok"]
    assert "t2w" in table[1]["error"] and "cannot be read" in table[1]["error"]
    assert float(table[0]["stiffness_kpa"]) > 0 and table[0]["category"]
    done = out / records[0].case_id / "report.json"
    stamp = done.stat().st_mtime_ns
    shutil.copy(records[1].t2w, bad_dir / "t2w.nii.gz")       # the bad file gets fixed
    predict_manifest(m2, ens, out, opts, progress=False)
    table = list(csv.DictReader(open(out / "predictions.csv")))
    assert [r["status"] for r in table] == ["ok", "ok", "ok"]
    assert done.stat().st_mtime_ns == stamp                    # finished cases were skipped
    assert len(result) == 3


@pytest.mark.slow
def test_batch_workers_give_the_serial_answers(tiny_model, small_cohort, tmp_path, capsys):
    """--workers 2: each case in a worker process, the same rows and reports as one at a time."""
    manifest, records, _ = small_cohort
    lines = manifest.read_text().splitlines()
    m4 = manifest.parent / "four.csv"                          # paths in it stay relative to the cohort
    m4.write_text("\n".join(lines[:5]) + "\n")
    base = ["predict", "--manifest", str(m4), "--model", str(tiny_model), "--maps", "none", "--no-montage", "--quiet"]
    assert main(base + ["--out", str(tmp_path / "serial")]) == 0
    assert main(base + ["--workers", "2", "--out", str(tmp_path / "parallel")]) == 0
    assert "4 of 4 exam(s) done" in capsys.readouterr().out
    serial, parallel = (list(csv.DictReader(open(tmp_path / d / "predictions.csv"))) for d in ("serial", "parallel"))
    assert [r["case_id"] for r in parallel] == [r.case_id for r in records[:4]]
    for a, b in zip(serial, parallel):
        assert b["status"] == "ok" and float(b["stiffness_kpa"]) == pytest.approx(float(a["stiffness_kpa"]), abs=0.002)
        assert (tmp_path / "parallel" / b["case_id"] / "attention.nii.gz").is_file()


@pytest.mark.slow
def test_auto_and_forced_cpu_agree(tiny_model, one_case, tmp_path):
    res = {}
    for device in ("auto", "cpu"):
        ens = Ensemble.load(tiny_model, device)
        res[device] = predict_exam(one_case, ens, tmp_path / device, PredictOptions(gradient_maps=False, montage=False, qa=False))
    assert abs(res["auto"].stiffness_kpa - res["cpu"].stiffness_kpa) <= 0.01
    if not torch.cuda.is_available():
        assert res["auto"].device == "cpu"


@pytest.mark.slow
def test_cuda_out_of_memory_falls_back_to_the_cpu_with_a_warning(tiny_model, one_case, report, tmp_path, monkeypatch):
    """The first attempt runs out of GPU memory (simulated: no GPU here): the exam is repeated on
    the CPU, the report says so, and the answer is the normal one."""
    import liverstiffness.predict as predict_module

    real, calls = predict_module.compute_maps, []

    def runs_out_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(predict_module, "compute_maps", runs_out_once)
    ens = Ensemble.load(tiny_model, "cpu")
    inp = one_case
    with pytest.warns(RuntimeWarning, match="CUDA ran out of memory"):
        rep = predict_exam(inp, ens, tmp_path / "oom", PredictOptions(detail_maps=True, montage=False))
    assert len(calls) == 2 and ens.device.type == "cpu" and rep.device == "cpu"
    assert "CUDA ran out of memory: ran on the CPU instead" in rep.warnings
    assert rep.stiffness_kpa == report[0].stiffness_kpa


def test_cli_predict_one_exam_and_bad_inputs(tiny_model, one_case, tmp_path, capsys):
    args = ["predict", "--t1w", str(one_case.t1w), "--t2w", str(one_case.t2w), "--dwi", str(one_case.dwi),
            "--dwi-b", ",".join(str(b) for b in one_case.dwi_b), "--mask", str(one_case.mask),
            "--age", "50", "--sex", "F", "--model", str(tiny_model), "--maps", "none", "--no-montage"]
    assert main(args + ["--out", str(tmp_path / "ok")]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("MRE-equivalent liver stiffness ") and "kPa" in line and "not for clinical use" in line
    cases = [
        (["--t1w", str(tmp_path / "nope.nii.gz")], "t1w .*nope.nii.gz: file not found"),
        (["--age", "250"], "patient age: 250.0 years is outside"),
        (["--device", "cuda"] if not torch.cuda.is_available() else ["--model", str(tmp_path)], "cuda|model.json"),
        (["--model", str(tmp_path)], "is not a model folder"),
        (["--workers", "-1"], "--workers: must be 0 or more"),
    ]
    for extra, pattern in cases:
        out = tmp_path / "never"
        argv = list(args)
        for k in range(0, len(extra), 2):
            if extra[k] in argv:
                argv[argv.index(extra[k]) + 1] = extra[k + 1]
            else:
                argv += extra[k:k + 2]
        assert main(argv + ["--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error: ")
        import re
        assert re.search(pattern, err), err
        assert not out.exists()


def test_empty_mask_stops_predict_with_a_clear_error(ens, one_case, tmp_path):
    m = sitk.ReadImage(str(one_case.mask))
    empty = sitk.Image(m.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(m)
    sitk.WriteImage(empty, str(tmp_path / "empty.nii.gz"))
    from liverstiffness.errors import InputError
    inp = replace(one_case, mask=tmp_path / "empty.nii.gz")
    with pytest.raises(InputError, match="mask .*empty"):
        predict_exam(inp, ens, tmp_path / "o")
    assert not (tmp_path / "o").exists()
