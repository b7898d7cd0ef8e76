"""hydra-health: checks with hard deadlines, budgeted remediation, a durable alert outbox,
and the health-gated NixOS switch."""
