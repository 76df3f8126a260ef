"""Adapter training: one loop (accelerate) with safetensors checkpoints and resume."""
