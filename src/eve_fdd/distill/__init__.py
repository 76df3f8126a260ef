"""Factorized Diffusion Distillation (METHOD.md sections 2, 4, 5): one file per role.

- `batch.py`        what one FDD data point is: y = (c_out, c_instruct, c_vid) + the edited first frame
- `teachers.py`     the frozen edit teacher (backbone + ControlNet, per frame) and video
                    teacher (backbone + temporal layers, per clip): predictions and DDIM samples
- `student.py`      backbone + LoRA + both frozen adapters; generation through k steps with gradients
- `losses.py`       SDS in the x0-space form, hinge losses, the SDS weighting c(t)
"""
