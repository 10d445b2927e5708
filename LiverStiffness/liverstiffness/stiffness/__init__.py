"""The stiffness model: a 3-D vision transformer over the liver crop with clinical tokens
(``network``), covariate encoding (``covariates``), and self-describing checkpoints
(``checkpoint``) that hold a cross-validation ensemble with its calibration."""
