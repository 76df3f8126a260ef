"""Instruction generation with llama-cpp-python, and the small GGUF model for the Shapes profile."""
