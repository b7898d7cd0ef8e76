"""`hydra-deploy`: a health-gated switch that cannot strand a host.

The operator's side (`operator.py`) builds the system, shows the closure difference, copies the
closure and starts one transient unit on the host; from then on it only follows that unit's
journal and reads its result. The host's side (`host.py`) runs inside that unit: it records the
running system, takes the host's deploy lock, arms a dead-man timer, activates the new system
with `switch-to-configuration test`, runs the gate (`gate.py`) and then commits (profile + boot
default) or re-activates the recorded system. Whatever happens to the operator, its terminal or
the connection, the host finishes on its own.
"""
