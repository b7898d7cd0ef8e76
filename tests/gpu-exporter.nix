# The exporter on two machines with synthetic GPUs: the unit comes up, serves metrics, is
# reachable from the other machine only where the firewall was opened, and keeps its port
# across a restart.
{ pkgs, self }:

let
  exporterNode =
    { openFirewall }:
    { pkgs, ... }:
    {
      imports = [ self.nixosModules.gpu-exporter ];
      environment.systemPackages = [ pkgs.curl ];
      services.hydra-gpu-exporter = {
        enable = true;
        listenAddress = "0.0.0.0";
        inherit openFirewall;
        backends = [ "synthetic" ];
        settings = {
          expectedDevices.synthetic = 2;
          synthetic.devices = [
            {
              name = "vm gpu 0";
              vendor = "nvidia";
              memoryBytes = 25769803776;
              processCount = 3;
            }
            {
              name = "vm gpu 1 (fell off the bus)";
              vendor = "amd";
              memoryBytes = 8589934592;
              lost = true;
            }
          ];
        };
      };
    };
in
pkgs.testers.runNixOSTest {
  name = "hydra-gpu-exporter";

  nodes = {
    opened = exporterNode { openFirewall = true; };
    closed = exporterNode { openFirewall = false; };
  };

  testScript = ''
    start_all()

    for machine in (opened, closed):
        machine.wait_for_unit("hydra-gpu-exporter.service")
        machine.wait_for_open_port(9445)

    with subtest("metrics are served"):
        metrics = opened.succeed("curl -sf http://127.0.0.1:9445/metrics")
        assert 'hydra_gpu_up{index="0"' in metrics, metrics
        assert 'hydra_gpu_expected_devices{vendor="synthetic"} 2.0' in metrics, metrics
        assert 'hydra_gpu_exporter_collector_success{backend="synthetic"} 1.0' in metrics, metrics
        assert "hydra_gpu_process_memory_bytes{" in metrics, metrics
        lost = [line for line in metrics.splitlines() if line.startswith('hydra_gpu_up{index="1"')]
        assert lost and lost[0].endswith(" 0.0"), lost
        opened.succeed("curl -sf http://127.0.0.1:9445/healthz | grep -q ok")

    with subtest("the unit is hardened"):
        policy = opened.succeed("systemctl show -p DevicePolicy,DynamicUser hydra-gpu-exporter")
        assert "DevicePolicy=closed" in policy, policy
        assert "DynamicUser=yes" in policy, policy

    with subtest("the port is reachable only where the firewall is open"):
        closed.succeed("curl -sf --max-time 10 http://opened:9445/metrics | grep -q hydra_gpu_up")
        opened.fail("curl -sf --max-time 5 http://closed:9445/metrics")

    with subtest("a restart keeps the port"):
        before = opened.succeed("systemctl show -p MainPID --value hydra-gpu-exporter").strip()
        opened.succeed("systemctl restart hydra-gpu-exporter.service")
        opened.wait_for_unit("hydra-gpu-exporter.service")
        after = opened.succeed("systemctl show -p MainPID --value hydra-gpu-exporter").strip()
        assert before != after, f"MainPID {before} did not change"
        opened.wait_for_open_port(9445)
        closed.wait_until_succeeds(
            "curl -sf --max-time 5 http://opened:9445/metrics | grep -q hydra_gpu_up"
        )
  '';
}
