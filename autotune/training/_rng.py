"""Seeding torch for one device: `seed(seed, device)`.

`torch.manual_seed` seeds every backend torch was built for; where CUDA is built in but not
initialised (every CPU run of the CUDA wheel), it queues the CUDA seed with a recorded
traceback (`traceback.format_stack()`): 0.15 ms a call in a loop here, ~0.6 ms inside a
trial's deep stack, twice a trial. A trial draws random numbers only on the CPU (model
initialisation, and dropout on the CPU) and on its own device.
"""

from __future__ import annotations

import torch


def seed(value: int, device: torch.device) -> None:
    """Seed the CPU generator and, for a CUDA device, the CUDA generators, as
    `torch.manual_seed(value)` seeds them."""
    torch.default_generator.manual_seed(value)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(value)
