# l hardware: Threadripper PRO 3945WX (Zen 2), AMD MI50 + Radeon Pro W7500. The file-system
# entries below are placeholders: replace the marked block with what
# `nixos-generate-config --show-hardware-config` prints on this machine.
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
  boot.kernelModules = [ "kvm-amd" ];

  hardware.enableRedistributableFirmware = true;
  hardware.cpu.amd.updateMicrocode = lib.mkDefault config.hardware.enableRedistributableFirmware;

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
