"""hydra-gpu-exporter: Prometheus metrics for NVIDIA and AMD GPUs in one schema."""
