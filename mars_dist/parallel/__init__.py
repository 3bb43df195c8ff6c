"""Distribution as the library below the engine sees it: the launcher's process group
(process_group.py), the context a backend hands to tasks and models (context.py) and the
sharding plan a model declares (sharding.py). Plain torch.distributed only: what a backend does
with DeepSpeed, FSDP or DTensor stays in mars_dist/engine/backends/."""
