"""hydra-launch: start one inference engine pinned to its GPUs, after a preflight."""
