"""Which worker this process is: torchrun's RANK / WORLD_SIZE (and SLURM array variables for the teacher cache).

One reader of the environment for the trainer (`trainer.distributed.world`), the teacher cache
(`pipeline.teacher_cache.worker_position`) and the model card (`pipeline.model_card.hardware`).
"""

from __future__ import annotations

import os

from pipeline.errors import MimoError


def env_int(name: str, default: int = 0) -> int:
    """The environment variable `name` as an integer (`default` when unset or empty); a non-integer names it."""
    value = os.environ.get(name)
    try:
        return int(value or default)
    except ValueError:
        raise MimoError(f"environment variable {name}={value!r} is not an integer") from None


def torchrun_world() -> tuple[int, int]:
    """(rank, world size): torchrun's environment, else (0, 1)."""
    return env_int("RANK", 0), env_int("WORLD_SIZE", 1)
