# Hardware of the NVIDIA hosts (hydra-ai, hydra-compute) until each has its own: the file-system
# entries below are placeholders. On a machine, copy this file to hosts/<host>/hardware.nix,
# import that instead, and replace the marked block with what
# `nixos-generate-config --show-hardware-config` prints there.
{
  config,
  lib,
  ...
}:

{
  nixpkgs.hostPlatform = "x86_64-linux";

  boot.initrd.availableKernelModules = [
    "nvme"
    "xhci_pci"
    "ahci"
    "usbhid"
    "usb_storage"
    "sd_mod"
  ];

  # The operator's notes do not record this machine's CPU vendor: microcode for both is
  # harmless (the kernel loads only the matching one). Keep the line nixos-generate-config writes.
  hardware.enableRedistributableFirmware = true;
  hardware.cpu.amd.updateMicrocode = lib.mkDefault config.hardware.enableRedistributableFirmware;
  hardware.cpu.intel.updateMicrocode = lib.mkDefault config.hardware.enableRedistributableFirmware;

  # ---- REPLACE: file systems from nixos-generate-config --------------------------------------
  fileSystems."/" = {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
  };
  fileSystems."/boot" = {
    device = "/dev/disk/by-label/BOOT";
    fsType = "vfat";
    options = [
      "fmask=0077"
      "dmask=0077"
    ];
  };
  swapDevices = [ ];
  # ---- end REPLACE ---------------------------------------------------------------------------
}
