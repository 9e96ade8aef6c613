"""Several processes: the process group (DDP, torch.distributed) and parameter sharding (FSDP2)."""
