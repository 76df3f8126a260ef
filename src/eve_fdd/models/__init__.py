"""Backbone, adapters, LoRA and their composition, built from the profile by `registry`."""
