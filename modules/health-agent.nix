# services.hydra-health: the health agent (checks with hard deadlines, budgeted restarts,
# a durable alert outbox, /metrics and /status) and the config the deploy gate reads.
#
# The agent runs as the system user `hydra-health`. It may restart exactly the units its
# checks name as remediation targets: a polkit rule allows
# org.freedesktop.systemd1.manage-units for those unit names (verbs start/restart) to that
# user, and nothing else. The rule is installed as /etc/polkit-1/rules.d/60-hydra-health.rules,
# the same mechanism `security.polkit.extraConfig` uses (it writes 10-nixos.rules), without
# taking over the host's single extraConfig string.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.hydra-health;
  jsonFormat = pkgs.formats.json { };

  credentialsDir = "/run/credentials/hydra-health.service";
  inherit (import ./lib/addresses.nix { inherit lib; }) localHost;
  urlTypes = [
    "http"
    "gpu"
  ];

  remediateType = lib.types.submodule {
    options = {
      action = lib.mkOption {
        type = lib.types.enum [
          "restart"
          "command"
        ];
        default = "restart";
        description = "Restart the unit with systemctl, or run `command`.";
      };
      unit = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "hydra-inference-llm.service";
        description = "Unit to restart (default: the check's `unit`).";
      };
      command = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ ];
        example = [
          "/run/current-system/sw/bin/clear-queue"
          "llm"
        ];
        description = "Argv to run for action `command`.";
      };
      timeout = lib.mkOption {
        type = lib.types.numbers.positive;
        default = 90;
        description = "Seconds the restart or command may take.";
      };
    };
  };

  checkType = lib.types.submodule {
    options = {
      type = lib.mkOption {
        type = lib.types.enum [
          "http"
          "tcp"
          "systemd"
          "gpu"
          "command"
        ];
        description = "Check kind. `gpu` scrapes the GPU exporter's /metrics at `url`.";
      };
      url = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "http://127.0.0.1:8080/health";
        description = "URL for `http` and `gpu` checks.";
      };
      host = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        description = "Host for a `tcp` check.";
      };
      port = lib.mkOption {
        type = lib.types.nullOr lib.types.port;
        default = null;
        description = "Port for a `tcp` check.";
      };
      unit = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "hydra-inference-llm.service";
        description = "The unit this check watches (`systemd` checks) and restarts (remediation).";
      };
      command = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ ];
        description = "Argv for a `command` check; exit status 0 passes.";
      };
      method = lib.mkOption {
        type = lib.types.enum [
          "GET"
          "HEAD"
          "POST"
        ];
        default = "GET";
        description = "HTTP method of an `http` check.";
      };
      jsonBody = lib.mkOption {
        type = lib.types.nullOr jsonFormat.type;
        default = null;
        example = {
          model = "llm";
          prompt = "ping";
          max_tokens = 1;
        };
        description = "JSON request body (with `method = \"POST\"`): an end-to-end probe such as a one-token completion.";
      };
      expectStatus = lib.mkOption {
        type = lib.types.listOf lib.types.int;
        default = [ ];
        description = "HTTP statuses that pass (empty: any 2xx or 3xx).";
      };
      bodyMatch = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        description = "Regular expression the HTTP body must contain.";
      };
      interval = lib.mkOption {
        type = lib.types.numbers.positive;
        default = 15;
        description = "Seconds between runs (each check starts at a random offset).";
      };
      timeout = lib.mkOption {
        type = lib.types.numbers.positive;
        default = 5;
        description = "Total deadline of one run in seconds; a hung peer costs at most this.";
      };
      connectTimeout = lib.mkOption {
        type = lib.types.numbers.positive;
        default = 2;
        description = "Seconds to wait for a TCP connection.";
      };
      failureThreshold = lib.mkOption {
        type = lib.types.ints.positive;
        default = 3;
        description = "Consecutive failures before the check is down.";
      };
      successThreshold = lib.mkOption {
        type = lib.types.ints.positive;
        default = 2;
        description = "Consecutive passes before the check is up again.";
      };
      startupGrace = lib.mkOption {
        type = lib.types.numbers.nonnegative;
        default = 0;
        description = "Seconds after start (and after each restart) in which failures do not count.";
      };
      dependsOn = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ ];
        description = "Checks this one depends on; while one is down this check is blocked (no alert, no restart).";
      };
      remediate = lib.mkOption {
        type = lib.types.nullOr remediateType;
        default = null;
        description = "What to do when the check is down (null: alert only).";
      };
    };
  };

  # ---- checks contributed by the other hydra services ----------------------------------

  exporter = lib.attrByPath [ "services" "hydra-gpu-exporter" ] { enable = false; } config;
  inference = lib.attrByPath [ "services" "hydra-inference" ] { enable = false; } config;
  exporterOn = exporter.enable or false;
  inferenceOn = inference.enable or false;
  exporterHost = localHost (exporter.listenAddress or "127.0.0.1");
  exporterBase = "http://${exporterHost}:${toString (exporter.port or 9445)}";

  exporterChecks = lib.optionalAttrs exporterOn {
    gpu-exporter = {
      type = "http";
      url = "${exporterBase}/healthz";
      unit = "hydra-gpu-exporter.service";
      interval = 15;
      timeout = 5;
      remediate = { };
    };
    gpus = {
      type = "gpu";
      url = "${exporterBase}/metrics";
      interval = 30;
      timeout = 10;
      dependsOn = [ "gpu-exporter" ];
    };
  };

  instances = if inferenceOn then inference.instances or { } else { };
  instanceCheck =
    name: inst:
    {
      unit = "hydra-inference-${name}.service";
      interval = 30;
      timeout = 10;
      connectTimeout = 3;
      startupGrace = 300;
      dependsOn = lib.optional (exporterOn && (inst.gpus or [ ]) != [ ]) "gpus";
      # A user service is not the system manager's to restart: watch it, alert only.
      remediate = if inst.userService or false then null else { };
    }
    // (
      if (inst.probeUrl or null) != null then
        {
          type = "http";
          url = inst.probeUrl;
        }
      else
        {
          type = "tcp";
          host = localHost (inst.host or "127.0.0.1");
          inherit (inst) port;
        }
    );
  instanceChecks = lib.mapAttrs' (
    name: inst: lib.nameValuePair "inference-${name}" (instanceCheck name inst)
  ) instances;

  gatewayOn = inferenceOn && (inference.gateway.enable or false);
  gatewayChecks = lib.optionalAttrs gatewayOn {
    inference-gateway = {
      type = "http";
      url = inference.gateway.probeUrl;
      unit = "hydra-inference-gateway.service";
      interval = 30;
      timeout = 10;
      startupGrace = 120;
      dependsOn = lib.attrNames instanceChecks;
      remediate = { };
    };
  };

  autoChecks = lib.optionalAttrs cfg.autoChecks (exporterChecks // instanceChecks // gatewayChecks);

  # Options and auto checks as the JSON the agent reads (nulls and unset fields dropped).
  normalise =
    check:
    let
      full = {
        command = [ ];
        expectStatus = [ ];
        dependsOn = [ ];
        remediate = null;
      }
      // check;
      clean = lib.filterAttrs (_: v: v != null && v != [ ]) full;
    in
    clean
    // lib.optionalAttrs (full.remediate != null) {
      remediate = lib.filterAttrs (_: v: v != null && v != [ ]) full.remediate;
    };
  allChecks = lib.mapAttrs (_: normalise) (autoChecks // cfg.checks);

  restartUnitOf =
    _: c:
    let
      r = c.remediate or null;
    in
    lib.optional (r != null && (r.action or "restart") == "restart") (r.unit or c.unit or null);
  restartUnits = lib.unique (lib.concatLists (lib.mapAttrsToList restartUnitOf allChecks));

  sinks =
    lib.optionalAttrs (cfg.alerts.alertmanager.url != null) {
      alertmanager = {
        inherit (cfg.alerts.alertmanager) url resendInterval;
      };
    }
    // lib.optionalAttrs (cfg.alerts.ntfy.url != null) {
      ntfy = {
        inherit (cfg.alerts.ntfy) url topic;
      }
      // lib.optionalAttrs (cfg.alerts.ntfy.tokenFile != null) {
        tokenFile = "${credentialsDir}/ntfy-token";
      };
    }
    // lib.optionalAttrs (cfg.alerts.webhook.url != null) {
      webhook = {
        inherit (cfg.alerts.webhook) url;
      }
      // lib.optionalAttrs (cfg.alerts.webhook.headersFile != null) {
        headersFile = "${credentialsDir}/webhook-headers";
      };
    }
    // lib.optionalAttrs (cfg.alerts.redis.url != null) {
      redis = {
        inherit (cfg.alerts.redis) url stream;
      }
      // lib.optionalAttrs (cfg.alerts.redis.passwordFile != null) {
        passwordFile = "${credentialsDir}/redis-password";
      };
    };

  credential =
    name: url: file:
    lib.optional (url != null && file != null) "${name}:${file}";
  credentials =
    credential "ntfy-token" cfg.alerts.ntfy.url cfg.alerts.ntfy.tokenFile
    ++ credential "webhook-headers" cfg.alerts.webhook.url cfg.alerts.webhook.headersFile
    ++ credential "redis-password" cfg.alerts.redis.url cfg.alerts.redis.passwordFile;

  # What the deploy gate reads from /etc: the checks, no secrets.
  gateSettings = {
    systemctl = "${pkgs.systemd}/bin/systemctl";
    checks = allChecks;
    gate = {
      inherit (cfg.gate) passes timeout;
    };
  };

  agentSettings = lib.recursiveUpdate (
    gateSettings
    // {
      inherit (cfg) listenAddress port;
      stateDir = "/var/lib/hydra-health";
      budget = {
        inherit (cfg.budget) maxPerHour backoffBase backoffMax;
      };
      alerts.sinks = sinks;
    }
  ) cfg.settings;

  configFile = jsonFormat.generate "hydra-health.json" agentSettings;

  polkitRule = ''
    // hydra-health may start/restart exactly the units its checks remediate.
    polkit.addRule(function (action, subject) {
      if (action.id == "org.freedesktop.systemd1.manage-units" &&
          subject.user == "hydra-health") {
        var units = ${builtins.toJSON restartUnits};
        var verb = action.lookup("verb");
        if (units.indexOf(action.lookup("unit")) >= 0 &&
            (verb == "restart" || verb == "start")) {
          return polkit.Result.YES;
        }
      }
    });
  '';

  nullOrStr =
    { example, description }:
    lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      inherit example description;
    };
in
{
  imports = [ ./gpus.nix ];

  options.services.hydra-health = {
    enable = lib.mkEnableOption "the hydra health agent (checks, restarts, durable alerts)";

    package = lib.mkPackageOption pkgs "hydra-fleet" { };

    listenAddress = lib.mkOption {
      type = lib.types.str;
      default = "127.0.0.1";
      example = "0.0.0.0";
      description = "Address of the agent's HTTP server (`/metrics`, `/healthz`, `/status`).";
    };

    port = lib.mkOption {
      type = lib.types.port;
      default = 9446;
      description = "Port of the agent's HTTP server.";
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Open {option}`port` in the firewall (for a Prometheus on another host).";
    };

    checks = lib.mkOption {
      type = lib.types.attrsOf checkType;
      default = { };
      example = lib.literalExpression ''
        {
          comfyui = {
            type = "http";
            url = "http://127.0.0.1:8188/system_stats";
            unit = "hydra-inference-comfyui.service";
            remediate = { };
          };
        }
      '';
      description = "Checks by name; a name also produced by `autoChecks` replaces that check.";
    };

    autoChecks = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        Let every enabled hydra service contribute its checks: the GPU exporter (`/healthz`,
        restart on failure, and a `gpu` check of its metrics), each inference instance (its
        probe URL or TCP port, restart of `hydra-inference-<name>.service`, depending on the
        `gpus` check when it uses GPUs) and the gateway (depending on every instance).
      '';
    };

    budget = {
      maxPerHour = lib.mkOption {
        type = lib.types.ints.between 0 100;
        default = 3;
        description = "Remediations per service per rolling hour before the agent stops and escalates.";
      };
      backoffBase = lib.mkOption {
        type = lib.types.numbers.nonnegative;
        default = 30;
        description = "Seconds before the second attempt; doubles per attempt, with jitter.";
      };
      backoffMax = lib.mkOption {
        type = lib.types.numbers.nonnegative;
        default = 900;
        description = "Longest wait between attempts in seconds.";
      };
    };

    alerts = {
      alertmanager = {
        url = nullOrStr {
          example = "http://hydra-storage:9093";
          description = "Alertmanager base URL (alerts are POSTed to /api/v2/alerts).";
        };
        resendInterval = lib.mkOption {
          type = lib.types.numbers.positive;
          default = 60;
          description = "Seconds between re-posts of firing alerts (they expire after four).";
        };
      };
      ntfy = {
        url = nullOrStr {
          example = "https://ntfy.sh";
          description = "ntfy server URL.";
        };
        topic = lib.mkOption {
          type = lib.types.str;
          default = "hydra";
          description = "ntfy topic.";
        };
        tokenFile = nullOrStr {
          example = "/run/secrets/ntfy-token";
          description = "File with the ntfy access token (passed with LoadCredential).";
        };
      };
      webhook = {
        url = nullOrStr {
          example = "http://127.0.0.1:5678/webhook/hydra";
          description = "URL receiving each alert as a JSON POST.";
        };
        headersFile = nullOrStr {
          example = "/run/secrets/webhook-headers";
          description = "File of `Name: value` header lines sent with each POST (passed with LoadCredential).";
        };
      };
      redis = {
        url = nullOrStr {
          example = "redis://127.0.0.1:6379/0";
          description = "Redis URL; each alert is XADDed to `stream`.";
        };
        stream = lib.mkOption {
          type = lib.types.str;
          default = "hydra:alerts";
          description = "Redis stream name.";
        };
        passwordFile = nullOrStr {
          example = "/run/secrets/redis-password";
          description = "File with the Redis password (passed with LoadCredential).";
        };
      };
    };

    gate = {
      passes = lib.mkOption {
        type = lib.types.ints.positive;
        default = 3;
        description = "Passes in a row every check needs for a deployment to be kept.";
      };
      timeout = lib.mkOption {
        type = lib.types.numbers.positive;
        default = 300;
        description = "Seconds the deploy gate waits before rolling back.";
      };
    };

    settings = lib.mkOption {
      type = lib.types.submodule { freeformType = jsonFormat.type; };
      default = { };
      example = {
        flap.high = 0.4;
        alerts.retryMax = 120;
      };
      description = "Merged over the generated agent configuration (keys as in its JSON).";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions =
      lib.mapAttrsToList (name: c: {
        assertion = lib.all (d: allChecks ? ${d}) (c.dependsOn or [ ]);
        message = "services.hydra-health.checks.${name}.dependsOn names a check that does not exist; known checks: ${lib.concatStringsSep ", " (lib.attrNames allChecks)}.";
      }) allChecks
      ++ lib.mapAttrsToList (name: c: {
        assertion = !(lib.elem c.type urlTypes) || c ? url;
        message = "services.hydra-health.checks.${name}: a ${c.type} check needs `url`.";
      }) allChecks
      ++ lib.mapAttrsToList (name: c: {
        assertion =
          !(c ? remediate)
          || (c.remediate.action or "restart") != "restart"
          || c.remediate ? unit
          || c ? unit;
        message = "services.hydra-health.checks.${name}: remediation restarts a unit; set `unit` (or `remediate.unit`).";
      }) allChecks;

    users.users.hydra-health = {
      isSystemUser = true;
      group = "hydra-health";
      description = "hydra health agent";
    };
    users.groups.hydra-health = { };

    security.polkit.enable = lib.mkIf (restartUnits != [ ]) true;
    environment.etc."polkit-1/rules.d/60-hydra-health.rules" = lib.mkIf (restartUnits != [ ]) {
      text = polkitRule;
    };
    environment.etc."hydra-health/config.json".source =
      jsonFormat.generate "hydra-health-gate.json" gateSettings;
    environment.systemPackages = [ cfg.package ];

    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall [ cfg.port ];

    systemd.services.hydra-health = {
      description = "hydra health agent";
      wantedBy = [ "multi-user.target" ];
      after = [
        "network.target"
        "polkit.service"
      ];
      startLimitBurst = 5;
      startLimitIntervalSec = 600;
      serviceConfig = {
        Type = "notify";
        NotifyAccess = "main";
        ExecStart = "${lib.getExe' cfg.package "hydra-health"} run --config ${configFile}";
        Restart = "on-failure";
        RestartSec = 2;
        RestartSteps = 5;
        RestartMaxDelaySec = 60;
        User = "hydra-health";
        Group = "hydra-health";
        StateDirectory = "hydra-health";
        StateDirectoryMode = "0750";
        # systemctl talks to the manager over D-Bus; polkit decides per unit.
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        DevicePolicy = "closed";
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
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
        SystemCallArchitectures = "native";
        SystemCallFilter = [
          "@system-service"
          "~@privileged"
        ];
        CapabilityBoundingSet = "";
        UMask = "0077";
      }
      // lib.optionalAttrs (credentials != [ ]) { LoadCredential = credentials; };
    };
  };
}
