"""Automatic liver mask: a MONAI segmentation model for T2-weighted MRI (training, inference, post-processing)."""
