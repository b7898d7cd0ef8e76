# services.hydra-health: the health agent (checks with hard deadlines, budgeted restarts,
# a durable alert outbox, /metrics and /status) and the config the deploy gate reads.
#
# The agent runs as the system user `hydra-health`. It may restart exactly the units its
# checks name as remediation targets: a polkit rule allows
# org.freedesktop.systemd1.manage-units for those unit names (verbs start/restart) to that
# user, and nothing else. The rule is installed as /etc/polkit-1/rules.d/60-hydra-health.rules,
# the same mechanism `security.polkit.extraConfig` uses (it writes 10-nixos.rules), without
# taking over the host's single extraConfig string.
#
# It knows no other service: each hydra module adds its own checks to
# services.hydra-health.checks while the agent is enabled.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.hydra-health;
  service = import ../lib/service.nix { inherit lib; };
  jsonFormat = pkgs.formats.json { };

  credentialsDir = "/run/credentials/hydra-health.service";

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

  # The checks as the JSON the agent reads (nulls and unset fields dropped).
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
  allChecks = lib.mapAttrs (_: normalise) cfg.checks;

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

  configFile =
    if cfg.configFile != null then
      cfg.configFile
    else
      jsonFormat.generate "hydra-health.json" agentSettings;
  gateFile = jsonFormat.generate "hydra-health-gate.json" gateSettings;

  checkable = service.inStore configFile;

  # `hydra-health check --static` validates (checks, dependencies, sinks) and runs no check.
  checked = service.checkedFile pkgs {
    name = "hydra-health-check";
    inherit (cfg) package;
    command = lib.concatMapStringsSep " && " (
      file: "hydra-health check --static --config ${lib.escapeShellArg "${file}"}"
    ) ([ configFile ] ++ lib.optional (cfg.configFile == null) gateFile);
  };

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
  imports = [
    ../config-checks.nix
    # For hydra.deploy.agent, which this module sets so the deploy gate asks the agent.
    ../deploy.nix
  ];

  options.services.hydra-health =
    service.listenerOptions {
      what = "the agent's HTTP server (`/metrics`, `/healthz`, `/status`)";
      port = 9446;
    }
    // {
      enable = lib.mkEnableOption "the hydra health agent (checks, restarts, durable alerts)";

      package = lib.mkPackageOption pkgs "hydra-fleet" { };

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
        description = ''
          Checks by name. Every hydra module adds its own here while
          {option}`services.hydra-health.autoChecks` is on; a check of the same name set by the
          host replaces that one.
        '';
      };

      autoChecks = lib.mkOption {
        type = lib.types.bool;
        default = true;
        description = ''
          Let every enabled hydra service contribute its checks to
          {option}`services.hydra-health.checks` (each module says which: the GPU exporter its
          `/healthz` and a `gpu` check of its metrics, each inference instance its readiness URL
          or port, the gateway its readiness).
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
        description = ''
          The agent's JSON configuration file, RFC 42 style (keys as in its documentation),
          merged over what the options above generate. Validated at build time by
          `hydra-health check --static`.
        '';
      };

      configFile = service.configFileOption "services.hydra-health.settings";
    };

  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      (service.listenersConfig { "services.hydra-health" = cfg; })
      {
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
        environment.etc."hydra-health/config.json".source = gateFile;
        # What the deploy gate must find answering before a new system becomes the default.
        hydra.deploy.agent = {
          unit = "hydra-health.service";
          healthz = "http://${service.localEndpoint cfg}/healthz";
        };
        hydra.configChecks.hydra-health = lib.mkIf checkable checked;
        environment.etc."hydra-health/check.txt" = lib.mkIf checkable { source = checked; };
        environment.systemPackages = [ cfg.package ];

        systemd.services.hydra-health = service.mkUnit {
          description = "hydra health agent";
          wantedBy = [ "multi-user.target" ];
          after = [
            "network.target"
            "polkit.service"
          ];
          serviceConfig = {
            Type = "notify";
            NotifyAccess = "main";
            ExecStart = "${lib.getExe' cfg.package "hydra-health"} run --config ${configFile}";
            User = "hydra-health";
            Group = "hydra-health";
            StateDirectory = "hydra-health";
            StateDirectoryMode = "0750";
            # Remediation is `systemctl restart` over D-Bus (AF_UNIX), decided by polkit per unit.
            LoadCredential = credentials;
          };
        };
      }
    ]
  );

  meta.maintainers = [ ];
}
