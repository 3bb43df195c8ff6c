"""mars_dist.engine: one trainer loop with its stages, the Task and Backend seams, the debug,
Accelerate and DeepSpeed backends (the only code that knows them), checkpoints, preemption."""
