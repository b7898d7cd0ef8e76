# hydra-deploy between two machines: a deployer that runs `hydra-deploy switch --target-host`
# and a target whose deploy runs in its own transient unit.
#
# The systems deployed are small stand-ins whose switch-to-configuration wraps the target's
# booted system, so no second NixOS has to be built: "good" passes its gate and is committed
# (the system profile moves to it); "broken-engine" starts an engine that never becomes ready,
# so the gate fails and good is re-activated with the profile unchanged; "netcut" takes the
# target's network down during the gate, so the deployer loses the target: the target rolls
# back by itself (its gate needs the LAN), is reachable again, and the deployer reads the
# outcome once it is.
{ pkgs, self }:

let
  ip = "${pkgs.iproute2}/bin/ip";
  systemctl = "${pkgs.systemd}/bin/systemctl";
  quick = {
    interval = 1;
    timeout = 1;
    connectTimeout = 1;
  };
  gateConfig =
    passes: checks:
    (pkgs.formats.json { }).generate "gate.json" {
      inherit systemctl checks;
      gate = {
        inherit passes;
        timeout = 20;
      };
    };
  hostJson = (pkgs.formats.json { }).generate "host.json" {
    agent = {
      unit = "hydra-health.service";
      healthz = "http://127.0.0.1:9446/healthz";
    };
  };
  # Reaching the deployer's sshd: the gate's proof that the target is still on the LAN.
  uplink = quick // {
    type = "tcp";
    host = "deployer";
    port = 22;
  };
  standIn =
    {
      name,
      activate,
      checks,
      passes ? 2,
    }:
    pkgs.runCommand "hydra-deploy-test-${name}" { } ''
      mkdir -p $out/bin $out/etc/hydra-deploy $out/etc/hydra-health
      cp ${hostJson} $out/etc/hydra-deploy/host.json
      cp ${gateConfig passes checks} $out/etc/hydra-health/config.json
      cp ${pkgs.writeShellScript "switch-to-configuration-${name}" ''
        set -eu
        case "$1" in
          test | switch)
            ${activate}
            /run/booted-system/bin/switch-to-configuration test
            # what `test` does to /run/current-system, for this stand-in
            ln -sfn "$(cd "$(dirname "$0")/.." && pwd)" /run/current-system
            ;;
          boot) echo "boot entry: ${name}" ;;
        esac
      ''} $out/bin/switch-to-configuration
    '';
  good = standIn {
    name = "good";
    activate = ''
      ${ip} link set eth1 up
      ${systemctl} stop engine.service || true
    '';
    checks = { inherit uplink; };
  };
  brokenEngine = standIn {
    name = "broken-engine";
    activate = "${systemctl} start --no-block engine.service";
    checks = {
      inherit uplink;
      engine = quick // {
        type = "systemd";
        unit = "engine.service";
      };
    };
  };
  # Cut 2 s into the gate, which needs 6 passes in a row (at least 5 s) to pass.
  netcut = standIn {
    name = "netcut";
    activate = "(sleep 2; ${ip} link set eth1 down) &";
    checks = { inherit uplink; };
    passes = 6;
  };
  # `nix build` prints the system named by $DEPLOY_SYSTEM; the stand-ins are already in the
  # target's store (they are part of its system), so `nix copy` has nothing to do.
  fakeNix = pkgs.writeShellScript "nix" ''
    case "$1" in
      build) echo "$DEPLOY_SYSTEM" ;;
      copy) exit 0 ;;
      *) exit 1 ;;
    esac
  '';
in
pkgs.testers.runNixOSTest {
  name = "deploy";

  nodes.deployer =
    { pkgs, ... }:
    {
      imports = [ self.nixosModules.default ];
      services.openssh.enable = true;
      environment.systemPackages = [ pkgs.openssh ];
    };

  nodes.target =
    { pkgs, ... }:
    {
      imports = [ self.nixosModules.default ];
      services.openssh.enable = true;
      services.hydra-health = {
        enable = true;
        checks.sshd = quick // {
          type = "systemd";
          unit = "sshd.service";
        };
      };
      # An engine that never tells systemd it is ready.
      systemd.services.engine.serviceConfig = {
        Type = "notify";
        ExecStart = "${pkgs.coreutils}/bin/sleep infinity";
        TimeoutStartSec = "infinity";
      };
      # The stand-in systems are part of this system, hence valid paths in its store.
      environment.etc."hydra-deploy-test/good".source = good;
      environment.etc."hydra-deploy-test/broken-engine".source = brokenEngine;
      environment.etc."hydra-deploy-test/netcut".source = netcut;
    };

  testScript = ''
    import shlex

    start_all()
    target.wait_for_unit("hydra-health.service")
    target.wait_for_unit("sshd.service")
    deployer.wait_for_unit("sshd.service")

    # root@deployer may log in to the target; ssh gives up fast on a dead link
    deployer.succeed("mkdir -p -m 700 /root/.ssh")
    deployer.succeed("ssh-keygen -q -t ed25519 -N ''' -f /root/.ssh/id_ed25519")
    key = deployer.succeed("cat /root/.ssh/id_ed25519.pub").strip()
    target.succeed(f"mkdir -p -m 700 /root/.ssh && echo {shlex.quote(key)} >> /root/.ssh/authorized_keys")
    deployer.succeed(
        "printf 'Host *\\n  StrictHostKeyChecking no\\n  UserKnownHostsFile /dev/null\\n"
        "  ConnectTimeout 3\\n  ServerAliveInterval 2\\n  ServerAliveCountMax 2\\n'"
        " > /root/.ssh/config"
    )
    deployer.succeed("ssh root@target true")
    target.succeed("nix-env -p /nix/var/nix/profiles/system --set $(readlink -f /run/booted-system)")

    def deploy(name):
        system = target.succeed(f"readlink -f /etc/hydra-deploy-test/{name}").strip()
        code, output = deployer.execute(
            f"DEPLOY_SYSTEM={system} HYDRA_DEPLOY_NIX=${fakeNix}"
            " hydra-deploy switch --flake /flake#target --target-host root@target"
            " --gate-timeout 20 --activation-timeout 60 --deadman-margin 30 2>&1",
            timeout=600,
        )
        print(output)
        return system, code, output

    def profile():
        return target.succeed("readlink -f /nix/var/nix/profiles/system").strip()

    with subtest("a healthy system is committed and becomes the profile's generation"):
        good, code, output = deploy("good")
        assert code == 0, f"exit {code}"
        assert profile() == good
        assert target.succeed("readlink -f /run/current-system").strip() == good

    with subtest("an engine that never becomes ready: rolled back, boot default unchanged"):
        _, code, output = deploy("broken-engine")
        assert code == 2, f"exit {code}"
        assert "engine: engine.service is activating" in output, output
        assert profile() == good
        assert target.succeed("readlink -f /run/current-system").strip() == good
        target.fail("systemctl is-active engine.service")

    with subtest("a system that cuts the network: the target rolls back by itself"):
        _, code, output = deploy("netcut")
        assert code == 2, f"exit {code}"
        assert "lost the connection to target" in output, output
        assert "uplink" in output.splitlines()[-1], output
        assert profile() == good
        target.succeed("ip link show eth1 | grep -q 'state UP'")
        deployer.wait_until_succeeds("ssh root@target true", timeout=60)
        # the dead-man timer of every deploy is disarmed
        target.fail("systemctl list-timers --all --no-legend | grep -q 'hydra-deploy-.*-deadman'")
  '';
}
