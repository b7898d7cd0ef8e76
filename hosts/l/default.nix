# l: the ROCm workstation (Threadripper PRO 3945WX, MI50 + W7500) and the fleet's monitoring.
# Every engine is pinned to one card; clients reach them through the LiteLLM gateway on 4000,
# so the engines listen on loopback only.
{
  config,
  lib,
  pkgs,
  hydraFleet,
  ...
}:

let
  # Shipped with the exporter and the health agent (monitoring/ at the repository root).
  rulesDir = ../../monitoring/rules;
  dashboardsDir = ../../monitoring/dashboards;
  ruleFiles = map (name: rulesDir + "/${name}") (
    builtins.filter (lib.hasSuffix ".rules.yml") (builtins.attrNames (builtins.readDir rulesDir))
  );

  # One scrape job per job label of the fleet's scrape-target file (the same targets
  # hydra-storage's Prometheus reads), plus this host's own node exporter and Prometheus.
  fleetTargets = hydraFleet.scrapeTargets;
  fleetJobs = lib.unique (map (target: target.labels.job) fleetTargets);
  fleetScrapeConfigs = map (job: {
    job_name = job;
    static_configs = builtins.filter (target: target.labels.job == job) fleetTargets;
  }) fleetJobs;
  local = job: port: {
    job_name = job;
    static_configs = [
      {
        targets = [ "127.0.0.1:${toString port}" ];
        labels.host = config.networking.hostName;
      }
    ];
  };

  # ROCm builds for every target nixpkgs lists (gfx906 and gfx1102 among them). Overriding the
  # package's rocmGpuTargets from config.hydra.rocm.gpuTargets gives a smaller, local build.
  llamaCppRocm = pkgs.llama-cpp.override { rocmSupport = true; };

  agent = "127.0.0.1:${toString config.services.hydra-health.port}";

  statusPage = pkgs.writeTextDir "index.html" ''
    <!doctype html>
    <html lang="en">
    <head><meta charset="utf-8"><title>l: hydra status</title></head>
    <body>
    <h1>l</h1>
    <ul>
    <li><a href="/health">health agent: every check's state (JSON)</a></li>
    <li><a href="http://l:9090/alerts">Prometheus alerts</a> (port 9090)</li>
    <li>LiteLLM gateway (OpenAI API): port 4000, master key required</li>
    <li>Grafana: on this host only, <code>ssh -L 3000:127.0.0.1:3000 l</code></li>
    </ul>
    </body>
    </html>
  '';
in
{
  imports = [
    ./hardware.nix
    ../common.nix
  ];

  networking.hostName = "l";
  system.stateVersion = "26.05";

  hydra.gpus = [
    {
      vendor = "amd";
      model = "Instinct MI50";
      vramGiB = 32;
      arch = "gfx906";
      index = 0;
    }
    {
      vendor = "amd";
      model = "Radeon Pro W7500";
      vramGiB = 8;
      arch = "gfx1102";
      index = 1;
    }
  ];

  services.hydra-gpu-exporter.backends = [ "amdgpu" ];

  services.hydra-inference = {
    enable = true;
    instances.ollama = {
      engine = "ollama";
      package = pkgs.ollama-rocm;
      gpus = [ 0 ];
      port = 11434;
      # Shares the MI50 with llama-mi50: together about 20 GiB of its 32.
      model = "llama3.1:8b";
      contextLength = 8192;
      modelInfo = (import ../models.nix)."llama-3.1-8b-q4_k_m";
    };
    instances.llama-mi50 = {
      engine = "llama-cpp";
      package = llamaCppRocm;
      gpus = [ 0 ];
      port = 8090;
      model = "/var/lib/hydra/models/Qwen2.5-14B-Instruct-Q4_K_M.gguf";
      contextLength = 32768;
      modelInfo = (import ../models.nix)."qwen2.5-14b-q4_k_m";
    };
    instances.llama-w7500 = {
      engine = "llama-cpp";
      package = llamaCppRocm;
      gpus = [ 1 ];
      port = 8091;
      model = "/var/lib/hydra/models/Qwen2.5-7B-Instruct-Q4_K_M.gguf";
      contextLength = 8192;
      modelInfo = (import ../models.nix)."qwen2.5-7b-q4_k_m";
    };
    # LiteLLM: the one LAN entry point, OpenAI API, routes to every instance above.
    gateway = {
      enable = true;
      listenAddress = "0.0.0.0";
      port = 4000;
      masterKeyFile = "/run/secrets/litellm-master-key";
      openFirewall = true;
    };
  };

  services.prometheus = {
    enable = true;
    port = 9090;
    listenAddress = "0.0.0.0";
    retentionTime = "30d";
    globalConfig = {
      scrape_interval = "15s";
      evaluation_interval = "15s";
    };
    scrapeConfigs = fleetScrapeConfigs ++ [
      (local "node" config.services.prometheus.exporters.node.port)
      (local "prometheus" config.services.prometheus.port)
    ];
    inherit ruleFiles;
    exporters.node = {
      enable = true;
      listenAddress = "127.0.0.1";
      port = 9100;
    };
  };

  services.grafana = {
    enable = true;
    settings = {
      server = {
        http_addr = "127.0.0.1";
        http_port = 3000;
      };
      # Secrets by path: Grafana reads $__file{...} at start.
      security = {
        admin_password = "$__file{/run/secrets/grafana-admin-password}";
        secret_key = "$__file{/run/secrets/grafana-secret-key}";
      };
    };
    provision = {
      enable = true;
      datasources.settings = {
        apiVersion = 1;
        datasources = [
          {
            name = "Prometheus";
            uid = "prometheus";
            type = "prometheus";
            url = "http://127.0.0.1:${toString config.services.prometheus.port}";
            isDefault = true;
          }
        ];
      };
      dashboards.settings = {
        apiVersion = 1;
        providers = [
          {
            name = "hydra";
            options.path = dashboardsDir;
          }
        ];
      };
    };
  };

  # Status page for the LAN on 8080: links, and the health agent's /status proxied.
  services.nginx = {
    enable = true;
    virtualHosts.status = {
      listen = [
        {
          addr = "0.0.0.0";
          port = 8080;
        }
      ];
      root = statusPage;
      locations."/health".proxyPass = "http://${agent}/status";
    };
  };

  # Reached from the LAN besides SSH, the exporter, the agent and the gateway (opened by their
  # modules): Prometheus (hydra-storage's Grafana may query it) and the status page.
  networking.firewall.allowedTCPPorts = [
    config.services.prometheus.port
    8080
  ];
}
