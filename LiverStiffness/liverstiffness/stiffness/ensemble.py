"""Running a trained model folder: device choice, the fold ensemble, and its interval."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..bundle_layout import model_folder
from ..devices import resolve_device
from .checkpoint import DEMO_MODEL_DIR, EnsembleMeta, load_models, read_meta
from .network import StiffnessTransformer


@torch.no_grad()
def predict_log(models: list[StiffnessTransformer], images, cov, known, device: torch.device, batch: int = 32,
                amp: bool = False, variant: str = "full") -> np.ndarray:
    """ln(kPa) of every model for every exam: [M, N]. Float32 on every device unless ``amp``
    (bfloat16 autocast) is asked for: on the demo model bfloat16 moved estimates by up to
    0.03 kPa, three times the CPU/GPU agreement we promise, for no time that matters at inference.

    ``variant``: "full", or an ablation of ``augment.ABLATIONS`` (e.g. "without_t2w",
    "without_image_tokens"): the inputs the model sees, as in training's input dropout.
    """
    from .augment import ablation_inputs

    out = np.zeros((len(models), len(images)), np.float64)
    for s in range(0, len(images), batch):
        x = torch.as_tensor(np.asarray(images[s:s + batch]), dtype=torch.float32, device=device)
        c = torch.as_tensor(np.asarray(cov[s:s + batch]), dtype=torch.float32, device=device)
        k = torch.as_tensor(np.asarray(known[s:s + batch]), dtype=torch.bool, device=device)
        present, use_tokens = ablation_inputs(models[0].sequences_present(x).cpu().numpy(), variant)
        p = torch.as_tensor(present, device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            for m, net in enumerate(models):
                out[m, s:s + batch] = net(x, c, k, p, use_tokens).float().cpu().numpy()
    return out


# A category is given only from sequences whose out-of-fold estimates of the training cohort reach
# this Pearson r (ln kPa): below it the estimate explains under a quarter of the variance, and its
# interval spans normal to advanced fibrosis. For the demo model: all three 0.69, T2w + DWI 0.65,
# T1w + DWI 0.63, DWI 0.59; T1w + T2w 0.39, T2w 0.26, T1w 0.20 get none.
MIN_SUBSET_R_FOR_CATEGORY = 0.5


@dataclass
class Ensemble:
    model_dir: Path
    meta: EnsembleMeta
    models: list[StiffnessTransformer]
    device: torch.device
    _features: dict | None = field(default=None, repr=False)   # feature_distribution(), read once

    @classmethod
    def load(cls, model_dir: str | Path | None = None, device: str = "auto") -> Ensemble:
        model_dir = model_folder(model_dir) if model_dir else DEMO_MODEL_DIR    # a MONAI bundle: its models/
        meta = read_meta(model_dir)
        dev = resolve_device(device)
        return cls(model_dir, meta, load_models(model_dir, meta, dev), dev)

    def feature_distribution(self) -> dict | None:
        """The held-out training exams' head-feature distribution (embedding_ood), checked against
        its SHA-256 in model.json; None for a model folder without one."""
        entry = self.meta.feature_distribution
        if not entry:
            return None
        if self._features is None:
            from ..errors import InputError
            from . import embedding_ood
            from .checkpoint import sha256

            path = Path(self.model_dir) / entry["file"]
            if Path(entry["file"]).name != entry["file"] or not path.is_file():
                raise InputError(f"model {self.model_dir}", f"feature distribution {entry['file']} is missing")
            if sha256(path) != entry["sha256"]:
                raise InputError(path, "SHA-256 does not match model.json (file changed or corrupt)")
            self._features = embedding_ood.load(path)
        return self._features

    def feature_check(self, image, cov, known, subset: str) -> dict | None:
        """The exam's distance from the training exams in the head's feature space (one exam)."""
        from .embedding_ood import check, head_features

        parts = self.feature_distribution()
        if parts is None:
            return None
        feats = [head_features(m, image, cov, known, self.device)[0] for m in self.models]
        return check(parts, feats, subset)

    def category_withheld(self, subset: str) -> str | None:
        """Why no category is given for exams with ``subset`` of the sequences, or None: the
        subset's out-of-fold r in training is below MIN_SUBSET_R_FOR_CATEGORY, or was not measured."""
        from .augment import SUBSET_VARIANTS
        from .interval import FULL, subset_label

        if subset == FULL:
            return None
        names = subset_label(subset)
        cv = (self.meta.metrics.get("cross_validation") or {}).get("ablation") or {}
        r = (cv.get(SUBSET_VARIANTS[subset]) or {}).get("pearson_r")
        if r is None:
            return f"this model's accuracy from {names} alone was not measured: no category"
        if r < MIN_SUBSET_R_FOR_CATEGORY:
            return (f"from {names} alone this model's estimates do not separate the fibrosis stages (out-of-fold "
                    f"r {r:.2f} in training, below {MIN_SUBSET_R_FOR_CATEGORY}): no category")
        return None

    def to(self, device: torch.device) -> Ensemble:
        self.models = [m.to(device) for m in self.models]
        self.device = device
        return self

    def with_cpu_fallback(self, run):
        """``run()``; when the GPU runs out of memory, the ensemble moves to the CPU (for good: the
        next exam would run out too) and ``run()`` is repeated there. Returns its result and the
        warning given, or None."""
        try:
            return run(), None
        except torch.cuda.OutOfMemoryError:
            message = "CUDA ran out of memory: ran on the CPU instead"
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            torch.cuda.empty_cache()
            self.to(torch.device("cpu"))
            return run(), message

    def predict(self, images, cov, known, variant: str = "full", subset: str | None = None) -> dict:
        """Per exam: kPa (geometric mean of the folds), each fold's ln(kPa) [K, N], CV+ interval, SD on ln scale.

        ``subset``: the sequences the exams have ("t2w", "t1w+t2w", …; see ``interval.subset_key``),
        whose out-of-fold residuals calibrate the interval; by default the variant's (an ablation
        that leaves out sequences), else all three. ``interval_note``: a warning when the model has
        no calibration for that subset."""
        from .augment import SUBSET_VARIANTS

        logs = predict_log(self.models, images, cov, known, self.device, variant=variant)
        mean, sd = logs.mean(0), logs.std(0, ddof=1) if len(self.models) > 1 else np.zeros(logs.shape[1])
        if subset is None:
            subset = next((key for key, v in SUBSET_VARIANTS.items() if v == variant), None)
        cal = self.meta.calibration
        low, high = cal.interval(logs, subset) if cal else (np.full_like(mean, np.nan),) * 2
        return {"kpa": np.exp(mean), "fold_log": logs, "low": low, "high": high, "sd_log": sd,
                "coverage": cal.coverage if cal else None, "subset": subset,
                "interval_note": cal.residuals_for(subset)[1] if cal else None}
