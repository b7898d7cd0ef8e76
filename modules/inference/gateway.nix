# services.hydra-inference.gateway: LiteLLM in front of the host's instances, one model name
# per instance (the instance name), started by hydra-launch after them.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inference = config.services.hydra-inference;
  cfg = inference.gateway;
  service = import ../lib/service.nix { inherit lib; };
  jsonFormat = pkgs.formats.json { };
  yamlFormat = pkgs.formats.yaml { };
  engines = import ./engines.nix { inherit lib pkgs; };

  stateDir = "/var/lib/hydra-inference/gateway";
  instanceUnits = map (name: "hydra-inference-${name}.service") (
    lib.attrNames (lib.filterAttrs (_: inst: !inst.userService) inference.instances)
  );

  envName = name: "HYDRA_API_KEY_" + lib.toUpper (lib.replaceStrings [ "-" "." ] [ "_" "_" ] name);
  keyedInstances = lib.filterAttrs (_: inst: inst.apiKeyFile != null) inference.instances;

  generatedConfig = yamlFormat.generate "litellm.yaml" (
    lib.recursiveUpdate {
      model_list = lib.mapAttrsToList (name: inst: {
        model_name = name;
        litellm_params = {
          # openai/<model>: LiteLLM sends <model> on to the instance.
          model = "openai/${(engines.factsOf inst.engine).model name inst}";
          api_base = "http://${service.localEndpoint inst}/v1";
          api_key = if inst.apiKeyFile == null then "none" else "os.environ/${envName name}";
        };
      }) inference.instances;
      general_settings = lib.optionalAttrs (cfg.masterKeyFile != null) {
        master_key = "os.environ/LITELLM_MASTER_KEY";
      };
    } cfg.settings
  );
  configFile = if cfg.configFile != null then cfg.configFile else generatedConfig;

  # Secrets come from systemd credentials at start; nothing secret is in the store. Each is the
  # file's first line, as hydra-launch reads an apiKeyFile.
  readSecret = var: credential: ''
    IFS= read -r ${var} < "$CREDENTIALS_DIRECTORY/${credential}" || [ -n "''${${var}:-}" ]
    export ${var}
  '';
  gatewayScript = pkgs.writeShellScript "hydra-inference-gateway" ''
    set -eu
    ${lib.optionalString (cfg.masterKeyFile != null) (readSecret "LITELLM_MASTER_KEY" "masterKey")}
    ${lib.concatStrings (
      lib.mapAttrsToList (name: _: readSecret (envName name) "apiKey-${name}") keyedInstances
    )}
    exec ${lib.escapeShellArgs [
      (lib.getExe' cfg.package "litellm")
      "--host"
      cfg.listenAddress
      "--port"
      (toString cfg.port)
      "--config"
      "${configFile}"
    ]}
  '';

  gatewayLaunch = jsonFormat.generate "hydra-inference-gateway.json" {
    name = "gateway";
    engine = "command";
    inherit (cfg) listenAddress port;
    command = [ "${gatewayScript}" ];
    # LiteLLM's readiness makes no model calls.
    probePath = "/health/readiness";
  };

  health = config.services.hydra-health;
in
{
  options.services.hydra-inference.gateway =
    service.listenerOptions {
      what = "the LiteLLM gateway";
      port = 4000;
    }
    // {
      enable = lib.mkEnableOption "the LiteLLM gateway routing a model name to each instance";
      package = lib.mkPackageOption pkgs "litellm" { };
      masterKeyFile = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "/run/secrets/litellm-master-key";
        description = "File holding the LiteLLM master key (passed with LoadCredential; never in the store).";
      };
      settings = lib.mkOption {
        type = lib.types.submodule { freeformType = yamlFormat.type; };
        default = { };
        example = {
          router_settings.num_retries = 2;
        };
        description = ''
          LiteLLM's config file, RFC 42 style (<https://docs.litellm.ai/docs/proxy/configs>),
          merged over the generated `model_list` (one model per instance) and master key.
        '';
      };
      configFile = service.configFileOption "services.hydra-inference.gateway.settings";
    };

  config = lib.mkIf (inference.enable && cfg.enable) (
    lib.mkMerge [
      (service.listenersConfig { "services.hydra-inference.gateway" = cfg; })
      {
        assertions = [
          {
            assertion =
              !(cfg.masterKeyFile != null && lib.hasPrefix builtins.storeDir cfg.masterKeyFile);
            message = "services.hydra-inference.gateway.masterKeyFile is in the Nix store, which is world-readable; point it at a runtime secret.";
          }
        ];

        services.hydra-health.checks = lib.mkIf (health.enable && health.autoChecks) {
          inference-gateway = lib.mkDefault {
            type = "http";
            url = "http://${service.localEndpoint cfg}/health/readiness";
            unit = "hydra-inference-gateway.service";
            interval = 30;
            timeout = 10;
            startupGrace = 120;
            dependsOn = map (name: "inference-${name}") (lib.attrNames inference.instances);
            remediate = { };
          };
        };

        systemd.services.hydra-inference-gateway = service.mkUnit {
          description = "hydra inference gateway (LiteLLM)";
          wantedBy = [ "multi-user.target" ];
          after = [ "network-online.target" ] ++ instanceUnits;
          wants = [ "network-online.target" ] ++ instanceUnits;
          startLimitIntervalSec = 1800;
          # As nixpkgs' services.litellm sets it: the package is in the read-only store and the
          # host may have no route to the internet.
          environment = {
            HOME = stateDir;
            # LiteLLM rewrites its packaged UI at start; the store copy is read-only.
            LITELLM_NON_ROOT = "true";
            LITELLM_UI_PATH = "${stateDir}/ui";
            CUSTOM_TIKTOKEN_CACHE_DIR = "${stateDir}/tiktoken-cache";
            # The bundled copies instead of fetching them from GitHub at start.
            LITELLM_LOCAL_MODEL_COST_MAP = "True";
            LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS = "True";
            LITELLM_LOCAL_BLOG_POSTS = "True";
            LITELLM_LOCAL_POLICY_TEMPLATES = "True";
            # No telemetry.
            SCARF_NO_ANALYTICS = "True";
            DO_NOT_TRACK = "True";
            ANONYMIZED_TELEMETRY = "False";
          };
          serviceConfig = {
            Type = "notify";
            NotifyAccess = "main";
            ExecStart = "${
              lib.getExe' inference.package "hydra-launch"
            } run --config ${gatewayLaunch}";
            TimeoutStartSec = "5min";
            KillMode = "mixed";
            DynamicUser = true;
            StateDirectory = [
              "hydra-inference/gateway"
              "hydra-inference/gateway/ui"
              "hydra-inference/gateway/tiktoken-cache"
            ];
            WorkingDirectory = stateDir;
            LoadCredential =
              lib.optional (cfg.masterKeyFile != null) "masterKey:${cfg.masterKeyFile}"
              ++ lib.mapAttrsToList (
                name: inst: "apiKey-${name}:${inst.apiKeyFile}"
              ) keyedInstances;
            # Deviations, as nixpkgs' services.litellm leaves them: its Python dependencies
            # (cffi callbacks, tokenizers) may map writable code, read /proc/meminfo and
            # /proc/cpuinfo (psutil, thread pools) and set CPU affinity.
            MemoryDenyWriteExecute = false;
            ProcSubset = "all";
            SystemCallFilter = [
              "@system-service"
              "~@privileged"
            ];
          };
        };
      }
    ]
  );
}
