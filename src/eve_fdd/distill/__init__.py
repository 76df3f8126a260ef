"""Factorized Diffusion Distillation (METHOD.md sections 2, 4, 5, 8): one file per role.

- `batch.py`           one data point: y = (c_out, c_instruct, c_vid), the task label, the edited first frame
- `data.py`            data points from the instructions and videos tables; the Shapes ground truth (evaluation only)
- `teachers.py`        the frozen edit teacher (backbone + ControlNet, per frame) and video teacher
                       (backbone + temporal layers, per clip): predictions and DDIM samples; the
                       concept teacher (backbone + a fused subject/style LoRA) for `fdd_personal`
- `student.py`         backbone + LoRA + both frozen adapters; generation through k steps with gradients
- `losses.py`          SDS in the x0-space form, hinge losses, the SDS weighting c(t)
- `discriminators.py`  D_e and D_v: trainable heads on a frozen DINO
- `pool.py`            the teachers' samples, generated once and refreshed slowly (ours)
- `fdd.py`             one iteration: `student_step` and `discriminator_step`
- `run.py`             FDD in the shared training loop (two roles), progress GIFs, the timestep histogram
- `variants.py`        the ablations as settings
"""
