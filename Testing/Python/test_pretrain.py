"""Self-supervised pretraining (``liverstiffness pretrain``) on tiny data: the reconstruction loss
falls, the folder is checked like a model folder, and ``train --init-from`` starts from its encoder
with a fresh readout."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from liverstiffness.cli.main import main
from liverstiffness.errors import InputError
from liverstiffness.preprocess import PreprocessOptions
from liverstiffness.stiffness.network import ModelConfig, StiffnessTransformer
from liverstiffness.stiffness.pretrain import (
    ENCODER_FILE,
    META_FILE,
    READOUT_PREFIXES,
    PatchReconstruction,
    PretrainConfig,
    pretrain,
    read_pretrained,
)

pytestmark = pytest.mark.slow   # trains (small) networks

TINY = ModelConfig(hidden_size=32, mlp_dim=64, num_layers=2, num_heads=2)


@pytest.fixture(scope="module")
def pretrained(small_cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrained")
    cfg = PretrainConfig(epochs=15, batch_size=4, register=False, workers=1, seed=0, model=TINY)
    return pretrain(small_cohort[0], out, cfg, progress=False)


def test_reconstruction_loss_falls_and_the_folder_says_what_it_holds(pretrained):
    meta = json.loads((pretrained / META_FILE).read_text())
    loss = meta["loss_per_epoch"]
    assert len(loss) == 15 and np.mean(loss[-3:]) < 0.85 * loss[0], loss
    assert meta["format"] == "liverstiffness-pretrained-encoder/1" and meta["trained_on"]["n_exams"] == 8
    assert meta["architecture"]["hidden_size"] == 32 and meta["settings"]["mask_ratio"] == 0.5
    cfg, spec, options, state = read_pretrained(pretrained)
    assert cfg == TINY and options.register is False
    assert not [k for k in state if k.startswith(READOUT_PREFIXES)]          # the readout is not pretrained
    assert {k for k in StiffnessTransformer(TINY).state_dict() if not k.startswith(READOUT_PREFIXES)} == set(state)


def test_masks_hide_exactly_their_share_of_the_crop():
    rec = PatchReconstruction(StiffnessTransformer(TINY))
    mask = rec.patch_mask(3, 0.5, torch.Generator().manual_seed(1), "cpu")
    n = int(np.prod(TINY.grid))
    assert mask.shape == (3, n) and (mask.sum(dim=1) == round(0.5 * n)).all()
    voxels = rec.voxel_mask(mask)
    assert voxels.shape == (3, 1, *TINY.img_size) and torch.allclose(voxels.mean(dim=(1, 2, 3, 4)), torch.tensor(0.5))
    assert not torch.equal(mask[0], mask[1])                                 # a new draw per exam


def test_train_init_from_a_pretrained_folder_starts_from_its_encoder(pretrained, small_cohort, tmp_path):
    from liverstiffness.stiffness.data import load_cohort
    from liverstiffness.stiffness.loop import DistInfo
    from liverstiffness.stiffness.train import TrainConfig, adopt_init_model, train_fold

    cfg = TrainConfig(epochs=1, lr=1e-12, batch_size=4, register=False, init_from=str(pretrained))
    states = adopt_init_model(cfg)
    assert cfg.model == TINY and cfg.register is False and len(states) == 1  # the folder's architecture is taken over
    data = load_cohort(small_cohort[1], cfg.spec, PreprocessOptions(register=False), tmp_path / "cache", 1, False)
    net, _ = train_fold(data.subset(range(6)), data.subset(range(6, 8)), cfg, 0, torch.device("cpu"), DistInfo(),
                        "t", lambda e: None, states[0])
    after = net.state_dict()
    for key in ("blocks.0.attn.qkv.weight", "stem.0.conv.weight", "patch_embedding.position_embeddings"):
        assert torch.allclose(after[key], states[0][key], atol=1e-6), key
    assert float(after["head.2.bias"]) == pytest.approx(float(data.subset(range(6)).log_kpa.mean()), abs=1e-3)

    # End to end on the command line: a model folder whose architecture is the pretrained one.
    out = tmp_path / "model"
    assert main(["train", "--manifest", str(small_cohort[0]), "--out", str(out), "--folds", "2", "--epochs", "1",
                 "--init-from", str(pretrained), "--no-register", "--workers", "1", "--quiet"]) == 0
    arch = json.loads((out / "model.json").read_text())["architecture"]
    assert arch["hidden_size"] == 32 and arch["num_layers"] == 2


def test_a_changed_encoder_is_refused_in_one_line(pretrained, small_cohort, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(pretrained, bad)
    with open(bad / ENCODER_FILE, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(InputError, match="does not match the SHA-256"):
        read_pretrained(bad)
    code = main(["train", "--manifest", str(small_cohort[0]), "--out", str(tmp_path / "m"), "--folds", "2",
                 "--init-from", str(bad), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "encoder.pt" in err and not (tmp_path / "m").exists()
