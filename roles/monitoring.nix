# The fleet's monitoring host: Prometheus (scraping every host's GPU exporter and health agent,
# with the shipped rules), Alertmanager (fed by Prometheus and by every health agent, routing by
# severity to the operator's receivers), Grafana with the shipped dashboard (localhost only) and
# an nginx status page.
#
# Routing and inhibitions live in monitoring/alertmanager/alertmanager.json (read here and by the
# Python tests); this module only fills in the receivers the operator sets.
{
  config,
  lib,
  pkgs,
  hydraFleet,
  ...
}:

let
  cfg = config.hydra.roles.monitoring;
  fleet = import ../fleet.nix;
  inherit (lib) types;

  # Shipped with the exporter and the health agent (monitoring/ at the repository root).
  rulesDir = ../monitoring/rules;
  dashboardsDir = ../monitoring/dashboards;
  ruleFiles = map (name: rulesDir + "/${name}") (
    builtins.filter (lib.hasSuffix ".rules.yml") (builtins.attrNames (builtins.readDir rulesDir))
  );
  routing = lib.importJSON ../monitoring/alertmanager/alertmanager.json;

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

  amPort = config.services.prometheus.alertmanager.port;
  agent = "127.0.0.1:${toString config.services.hydra-health.port}";

  # Secrets reach Alertmanager (a DynamicUser service) as systemd credentials.
  credentialsDir = "/run/credentials/alertmanager.service";
  receiverNames = [
    "ntfy"
    "webhook"
  ];
  webhookConfig =
    name:
    let
      receiver = cfg.receivers.${name};
    in
    {
      inherit (receiver) url;
      send_resolved = true;
    }
    // lib.optionalAttrs (receiver.tokenFile != null) {
      http_config.authorization.credentials_file = "${credentialsDir}/${name}-token";
    };
  # Receiver "page" (severity critical) and "notify" (warning and the rest) each get every
  # configured receiver that lists that severity.
  takes =
    severity: name:
    cfg.receivers.${name}.url != null && builtins.elem severity cfg.receivers.${name}.severities;
  receiversFor = severity: map webhookConfig (builtins.filter (takes severity) receiverNames);
  receiverConfigs = {
    page = receiversFor "critical";
    notify = receiversFor "warning";
  };
  alertmanagerConfig = routing // {
    receivers = map (
      receiver:
      receiver
      // lib.optionalAttrs (receiverConfigs.${receiver.name} != [ ]) {
        webhook_configs = receiverConfigs.${receiver.name};
      }
    ) routing.receivers;
  };

  receiverOptions = name: example: {
    url = lib.mkOption {
      type = types.nullOr types.str;
      default = null;
      inherit example;
      description = ''
        URL Alertmanager POSTs its webhook JSON to for the ${name} receiver; null leaves it out.
        Not a secret: put credentials in `tokenFile`.
      '';
    };
    tokenFile = lib.mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/run/secrets/${name}-token";
      description = ''
        File holding the bearer token sent with every notification to the ${name} receiver.
        Read by systemd at start (LoadCredential); never copied into the Nix store.
      '';
    };
    severities = lib.mkOption {
      type = types.listOf (
        types.enum [
          "critical"
          "warning"
        ]
      );
      default =
        if name == "ntfy" then
          [ "critical" ]
        else
          [
            "critical"
            "warning"
          ];
      description = "Alert severities sent to the ${name} receiver.";
    };
  };

  statusPage = pkgs.writeTextDir "links.html" ''
    <!doctype html>
    <html lang="en">
    <head><meta charset="utf-8"><title>${config.networking.hostName}: hydra status</title></head>
    <body>
    <h1>${config.networking.hostName}</h1>
    <ul>
    <li><a href="/health">health agent: every check's state (JSON)</a></li>
    <li>Prometheus alerts: port ${toString config.services.prometheus.port}, <code>/alerts</code></li>
    <li>Alertmanager (silences, inhibited alerts): port ${toString amPort}</li>
    <li>Grafana: on this host only, <code>ssh -L 3000:127.0.0.1:3000 ${config.networking.hostName}</code></li>
    </ul>
    </body>
    </html>
  '';
in
{
  options.hydra.roles.monitoring = {
    enable = lib.mkEnableOption "the fleet's monitoring stack: Prometheus, Alertmanager, Grafana, status page";

    alertmanager = {
      listenAddress = lib.mkOption {
        type = types.str;
        default = "0.0.0.0";
        description = ''
          Address Alertmanager listens on. Every host's health agent posts to it, so it listens
          on the LAN by default.
        '';
      };
      openFirewall = lib.mkOption {
        type = types.bool;
        default = true;
        description = "Open Alertmanager's port so the other hosts' health agents reach it.";
      };
    };

    receivers = {
      ntfy = receiverOptions "ntfy" "https://ntfy.sh/hydra-alerts?template=alertmanager";
      webhook = receiverOptions "webhook" "http://hydra-storage:5678/webhook/hydra-alerts";
    };

    statusPort = lib.mkOption {
      type = types.port;
      default = 8080;
      description = "Port of the nginx status page (links, and the health agent's /status).";
    };

    grafana = {
      adminPasswordFile = lib.mkOption {
        type = types.str;
        default = "/run/secrets/grafana-admin-password";
        description = "File with Grafana's admin password (read by Grafana at start).";
      };
      secretKeyFile = lib.mkOption {
        type = types.str;
        default = "/run/secrets/grafana-secret-key";
        description = "File with Grafana's secret key (read by Grafana at start).";
      };
    };
  };

  config = lib.mkIf cfg.enable {
    warnings = lib.optional (cfg.receivers.ntfy.url == null && cfg.receivers.webhook.url == null) ''
      hydra.roles.monitoring: no receiver is set; alerts reach Alertmanager but nobody hears them.
      Set hydra.roles.monitoring.receivers.ntfy.url or .webhook.url.
    '';

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
        (local "alertmanager" amPort)
      ];
      inherit ruleFiles;
      alertmanagers = [
        { static_configs = [ { targets = [ "127.0.0.1:${toString amPort}" ]; } ]; }
      ];
      exporters.node = {
        enable = true;
        listenAddress = "127.0.0.1";
        port = 9100;
      };
      alertmanager = {
        enable = true;
        port = 9093;
        inherit (cfg.alertmanager) listenAddress openFirewall;
        configuration = alertmanagerConfig;
      };
    };

    systemd.services.alertmanager.serviceConfig.LoadCredential = lib.concatMap (
      name:
      let
        receiver = cfg.receivers.${name};
      in
      lib.optional (receiver.url != null && receiver.tokenFile != null)
        "${name}-token:${toString receiver.tokenFile}"
    ) receiverNames;

    # This host's agent reports to the Alertmanager beside it (the others: hosts/common.nix),
    # and serves the fleet page (/fleet) from every NixOS host's agent.
    services.hydra-health.alerts.alertmanager.url = "http://127.0.0.1:${toString amPort}";
    services.hydra-health.settings.fleet = lib.mapAttrsToList (name: host: {
      inherit name;
      url = "http://${host.address}:${toString fleet.scrapePorts.hydra-health}";
    }) (lib.filterAttrs (_: host: host.nixos) fleet.hosts);

    services.grafana = {
      enable = true;
      settings = {
        server = {
          http_addr = "127.0.0.1";
          http_port = 3000;
        };
        # Secrets by path: Grafana reads $__file{...} at start.
        security = {
          admin_password = "$__file{${cfg.grafana.adminPasswordFile}}";
          secret_key = "$__file{${cfg.grafana.secretKeyFile}}";
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

    # Status page for the LAN: the fleet page at /, links at /links.html, this agent at /health.
    services.nginx = {
      enable = true;
      virtualHosts.status = {
        listen = [
          {
            addr = "0.0.0.0";
            port = cfg.statusPort;
          }
        ];
        root = statusPage;
        # The fleet page (every host's agent on one page) and this host's agent's JSON.
        locations."= /".proxyPass = "http://${agent}/fleet";
        locations."/health".proxyPass = "http://${agent}/status";
      };
    };

    # Reached from the LAN: Prometheus (hydra-storage's Grafana may query it) and the status page.
    networking.firewall.allowedTCPPorts = [
      config.services.prometheus.port
      cfg.statusPort
    ];
  };
}
