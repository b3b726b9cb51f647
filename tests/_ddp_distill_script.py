"""Run under torchrun by test_distill.py: fine-tune, distill a tiny MLP; save each rank's result.

Usage: ``torchrun --nproc_per_node 2 tests/_ddp_distill_script.py OUT_DIR``. Writes
``OUT_DIR/rank<r>.pt`` with the student's final state_dict, the losses and the step counts.
"""

from __future__ import annotations

import os
import sys

import torch
from torch import nn

from optimizer.distill import DistillConfig, distill_, distill_blocks_, fine_tune_


def mlp(hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, 4))


def main(out_dir: str) -> None:
    rank = int(os.environ["RANK"])
    gen = torch.Generator().manual_seed(0)  # the same teacher and data on every rank
    teacher = mlp(32)
    with torch.no_grad():
        for p in teacher.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    x = torch.randn(16 * 16, 8, generator=gen)
    y = teacher(x).argmax(1).detach()
    data = [(x[i : i + 16], y[i : i + 16]) for i in range(0, len(x), 16)]

    # Different initial weights per rank: DDP's broadcast from rank 0 must make them agree.
    torch.manual_seed(100 + rank)
    student = mlp(8)
    cfg = DistillConfig(epochs=3, lr=1e-2, progress=rank == 0)
    tuned = fine_tune_(student, data, cfg)
    # The group made by the first call is reused by the second (re-creating one can hang).
    assert torch.distributed.is_initialized(), "fine_tune_ did not set up the process group"
    cfg = DistillConfig(epochs=3, lr=1e-2, features=[("0", "0")], alpha=0.5)
    distilled = distill_(student, teacher, data, cfg)
    cfg = DistillConfig(epochs=2, lr=1e-2, blocks=[("0", "0"), ("2", "2")], progress=False)
    blockwise = distill_blocks_(student, teacher, data, cfg, parallel=True)
    torch.save(
        {
            "state_dict": student.state_dict(),
            "fine_tune_losses": tuned.epoch_losses,
            "fine_tune_steps": tuned.steps,
            "distill_losses": distilled.epoch_losses,
            "distill_steps": distilled.steps,
            "block_losses": blockwise.block_losses,
            "world_size": torch.distributed.get_world_size(),
        },
        os.path.join(out_dir, f"rank{rank}.pt"),
    )


if __name__ == "__main__":
    main(sys.argv[1])
