# The sandbox every hydra unit starts from (systemd.exec(5)); a module that needs less states
# the deviation and why, next to it. Scored by `systemd-analyze security` in
# python/tests/fleet/test_unit_security.py (every hydra unit at most 2.0).
{ lib }:

{
  NoNewPrivileges = true;
  CapabilityBoundingSet = [ "" ];
  AmbientCapabilities = [ "" ];
  ProtectSystem = "strict";
  ProtectHome = true;
  PrivateTmp = true;
  PrivateDevices = true;
  DevicePolicy = "closed";
  PrivateMounts = true;
  # The unit's users and groups only; the kernel still checks device and file access against
  # the real (supplementary) groups.
  PrivateUsers = true;
  ProtectKernelTunables = true;
  ProtectKernelModules = true;
  ProtectKernelLogs = true;
  ProtectControlGroups = true;
  ProtectClock = true;
  ProtectHostname = true;
  ProtectProc = "invisible";
  ProcSubset = "pid";
  RestrictAddressFamilies = [
    "AF_UNIX"
    "AF_INET"
    "AF_INET6"
  ];
  RestrictNamespaces = true;
  RestrictRealtime = true;
  RestrictSUIDSGID = true;
  LockPersonality = true;
  MemoryDenyWriteExecute = true;
  RemoveIPC = true;
  SystemCallArchitectures = "native";
  SystemCallFilter = [
    "@system-service"
    "~@privileged @resources"
  ];
  SystemCallErrorNumber = "EPERM";
  UMask = "0077";
  # Python services hold one socket per connection, scrape and probe, plus the engines' model
  # shards; systemd's default soft limit (1024) is too low for a busy host.
  LimitNOFILE = 65536;
}
