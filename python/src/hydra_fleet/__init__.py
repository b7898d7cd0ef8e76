"""hydra: GPU exporter, inference launcher and health agent for a NixOS GPU fleet."""

__version__ = "0.1.0"
