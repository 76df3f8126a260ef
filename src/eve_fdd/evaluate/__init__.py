"""Evaluation: detectors and metrics measured against the Shapes world's ground truth."""
