"""Choosing the compute device and sizing batches to its memory.

``--device`` accepts ``auto`` (the GPU when present), ``cpu``, ``cuda`` or ``cuda:N``. Under
torchrun each rank takes its local GPU (``cuda:LOCAL_RANK``, modulo the GPU count, so ranks
share GPUs when there are fewer) when the choice is ``auto`` or ``cuda``. The syntax is
checked by :class:`cli.options.DeviceType` without torch; whether the device exists is
checked here, when torch is loaded anyway.
"""

from __future__ import annotations

import click

# Bytes of input per batch on the CPU: large enough to amortise per-call overhead (tens of
# short files), small enough that the work arrays (padding, FFT, a multiple of the input)
# keep the peak memory modest.
CPU_BATCH_BYTES = 16 * 2**20
# A batch may use this fraction of the free GPU memory (FFT methods need several copies).
GPU_MEMORY_FRACTION = 1 / 8
MAX_BATCH = 4096


def resolve_device(choice: str, local_rank: int | None = None):
    """The ``torch.device`` for a ``--device`` value.

    Raises:
        click.BadParameter: CUDA asked for but absent, or a GPU index out of range.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    import torch

    if choice == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if choice == "auto":
        if not available:
            return torch.device("cpu")
        # More ranks than GPUs (e.g. a test with 2 ranks on 1 GPU): ranks share them.
        return torch.device("cuda", (local_rank or 0) % torch.cuda.device_count())
    if not available:
        raise click.BadParameter(
            f"{choice!r} asked for, but CUDA is not available here", param_hint="'--device'"
        )
    count = torch.cuda.device_count()
    index = int(choice.split(":")[1]) if ":" in choice else (local_rank or 0) % count
    if index >= count:
        raise click.BadParameter(
            f"{choice!r}: this machine has {count} GPU(s)",
            param_hint="'--device'",
        )
    return torch.device("cuda", index)


def initial_batch_size(bytes_per_item: int, device) -> int:
    """How many equal-shape signals to stack into one device batch at first.

    On a GPU the size follows the free memory; a CUDA out-of-memory error still halves it
    (see :func:`is_out_of_memory`).

    Example:
        >>> import torch
        >>> initial_batch_size(2**20, torch.device("cpu"))
        16
    """
    if device.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        budget = int(free * GPU_MEMORY_FRACTION)
    else:
        budget = CPU_BATCH_BYTES
    return int(max(1, min(MAX_BATCH, budget // max(1, bytes_per_item))))


def is_out_of_memory(err: BaseException) -> bool:
    """Whether an exception is a device out-of-memory error (worth retrying smaller)."""
    import torch

    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def release_cached_memory(device) -> None:
    """Give the caching allocator's free blocks back before a smaller retry."""
    if device.type == "cuda":
        import torch

        torch.cuda.empty_cache()
