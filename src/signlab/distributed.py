"""One process or many: `torchrun --nproc_per_node=N -m signlab train …` trains with DistributedDataParallel.

Every rank draws the same epoch order (seeded by seed and epoch) and takes its own slice of each global
batch, so the global batch, the learning-rate schedule and resume are those of a single process. A slice may
be one image short (the batch need not divide by the world size): train weights each rank's loss by its share.

What differs from one process: each rank draws its own augmentation and dropout (seeded by rank), and
BatchNorm normalises over each rank's slice (SyncBatchNorm, `--sync-bn`, runs on CUDA only); rank 0's running
statistics become every rank's at the end of each epoch. Without BatchNorm and random augmentation, two
processes reach one process's weights up to float summation order (tests/test_distributed.py).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
            device, backend = torch.device("cuda", local_rank), "nccl"
        else:
            device, backend = torch.device("cpu"), "gloo"
        if not torch_dist.is_initialized():
            torch_dist.init_process_group(backend)
        return cls(rank, world, device)

    def wrap(self, model: nn.Module) -> nn.Module:
        if self.world <= 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        # No buffer broadcast before every forward: BatchNorm running statistics are only read in evaluation,
        # so rank 0's become everyone's once, at the end of each epoch (sync_buffers).
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)

    def shard(self, batch_indices: np.ndarray) -> np.ndarray:
        return batch_indices[self.rank::self.world]

    def sum(self, values: list[float]) -> list[float]:
        """Each value summed over all ranks (float64), in one all-reduce; bools count the ranks that set them."""
        if self.world <= 1:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64)
        torch_dist.all_reduce(t)
        return t.tolist()

    def sync_buffers(self, model: nn.Module) -> None:
        """BatchNorm running statistics drift apart per rank (each sees its own shard, unless --sync-bn);
        rank 0's become everyone's at epoch ends, before validation and the checkpoint."""
        if self.world > 1:
            for buffer in model.buffers():
                torch_dist.broadcast(buffer, src=0)

    def replicas_agree(self, model: nn.Module) -> bool:
        """True when every rank holds bit-identical parameters and buffers (compared by checksum)."""
        if self.world <= 1:
            return True
        h = hashlib.sha256()
        for t in model.state_dict().values():
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        digest = torch.tensor([int.from_bytes(h.digest()[i:i + 7], "little") for i in (0, 7, 14, 21)])
        gathered = [torch.zeros_like(digest) for _ in range(self.world)]
        torch_dist.all_gather(gathered, digest)
        return all(torch.equal(g, gathered[0]) for g in gathered)

    def barrier(self) -> None:
        if self.world > 1:
            torch_dist.barrier()

    def close(self) -> None:
        if self.world > 1 and torch_dist.is_initialized():
            torch_dist.barrier()
            torch_dist.destroy_process_group()
