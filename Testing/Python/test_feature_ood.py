"""The out-of-distribution check in the network's feature space (stiffness/embedding_ood.py)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from liverstiffness.errors import InputError
from liverstiffness.stiffness import embedding_ood
from liverstiffness.stiffness.ensemble import Ensemble


def _features(rng, n, shift=0.0, d=24):
    """Features on a low-dimensional subspace with noise, like pooled tokens."""
    basis = np.linspace(0.5, 1.5, d * 4).reshape(4, d)
    return rng.normal(size=(n, 4)) @ basis + 0.05 * rng.normal(size=(n, d)) + shift


def test_fit_flags_about_one_percent_of_like_exams_and_shifted_ones():
    rng = np.random.default_rng(0)
    part = embedding_ood.fit_fold(_features(rng, 400))
    like = embedding_ood.score_fold(part, _features(rng, 2000)) / float(part["threshold"])
    assert 0.0 < np.mean(like > 1) < 0.04               # ~1 % by construction, a few % on new draws
    # Off the training subspace (a new direction): caught by the residual term.
    off = _features(rng, 200) + rng.normal(size=(1, 24)) * 0.5
    assert np.mean(embedding_ood.score_fold(part, off) / float(part["threshold"]) > 1) > 0.95
    # Far along a training direction: caught by the whitened distance.
    far = _features(rng, 200) + 6 * np.linspace(0.5, 1.5, 24)
    assert np.mean(embedding_ood.score_fold(part, far) / float(part["threshold"]) > 1) > 0.95


def test_save_load_and_check_per_fold(tmp_path):
    rng = np.random.default_rng(1)
    parts = {(subset, k): embedding_ood.fit_fold(_features(rng, 300, shift=k)) for subset in ("t1w+t2w+dwi", "t2w")
             for k in range(2)}
    sha = embedding_ood.save(tmp_path / "f.npz", parts)
    assert len(sha) == 64
    loaded = embedding_ood.load(tmp_path / "f.npz")
    assert set(loaded) == set(parts)
    typical = [_features(rng, 1, shift=k)[0] for k in range(2)]
    res = embedding_ood.check(loaded, typical, "t2w")
    assert res["subset"] == "t2w" and len(res["per_fold"]) == 2 and isinstance(res["in_distribution"], bool)
    odd = [f + 10.0 for f in typical]
    assert embedding_ood.check(loaded, odd, "t2w")["in_distribution"] is False
    assert embedding_ood.check(loaded, typical, "dwi") is None   # no distribution for that subset


def test_too_few_held_out_exams_give_no_distribution(tiny_model):
    """The tiny model's folds hold out 4 exams each: no 99th percentile from that, no check."""
    import json as _json
    meta = _json.loads((tiny_model / "model.json").read_text())
    assert "feature_distribution" not in meta and not (tiny_model / embedding_ood.FILE).exists()
    assert Ensemble.load(tiny_model, "cpu").feature_distribution() is None


def test_a_changed_distribution_file_is_refused(tiny_model, tmp_path):
    model = tmp_path / "m"
    shutil.copytree(tiny_model, model, ignore=shutil.ignore_patterns("cache"))
    rng = np.random.default_rng(2)
    parts = {("t1w+t2w+dwi", k): embedding_ood.fit_fold(_features(rng, 100)) for k in range(2)}
    sha = embedding_ood.save(model / embedding_ood.FILE, parts)
    meta = json.loads((model / "model.json").read_text())
    meta["feature_distribution"] = embedding_ood.describe_entry(sha)
    (model / "model.json").write_text(json.dumps(meta))
    assert set(Ensemble.load(model, "cpu").feature_distribution()) == set(parts)
    with open(model / embedding_ood.FILE, "ab") as fh:
        fh.write(b"x")
    with pytest.raises(InputError, match="SHA-256 does not match"):
        Ensemble.load(model, "cpu").feature_distribution()
