# services.hydra-inference: inference engines started by hydra-launch (one unit per instance,
# Type=notify: "active" means the model answers) and a LiteLLM gateway started after them.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.hydra-inference;
  jsonFormat = pkgs.formats.json { };
  yamlFormat = pkgs.formats.yaml { };
  gpuAccess = import ./lib/gpu-access.nix { inherit lib; };

  unitName = name: "hydra-inference-${name}";

  defaultPorts = {
    tabbyapi = 5000;
    ollama = 11434;
    llama-cpp = 8080;
    vllm = 8000;
  };

  # The binary hydra-launch runs for each engine (command: the instance's own argv).
  engineBinary = {
    tabbyapi = pkg: lib.getExe pkg;
    ollama = pkg: lib.getExe' pkg "ollama";
    llama-cpp = pkg: lib.getExe' pkg "llama-server";
    vllm = pkg: lib.getExe' pkg "vllm";
  };

  # A wildcard bind is probed and routed on loopback.
  inherit (import ./lib/addresses.nix { inherit lib; }) isLoopback localHost;
  hostPort =
    inst:
    let
      host = localHost inst.host;
      bracketed = if lib.hasInfix ":" host then "[${host}]" else host;
    in
    "${bracketed}:${toString inst.port}";

  probePath =
    inst:
    if inst.engine == "command" then
      inst.probePath
    else if inst.engine == "ollama" then
      "/"
    else
      "/health";

  # The inventory entries of an instance's GPUs, in its order (unknown indices: see assertions).
  gpuFacts =
    inst:
    lib.filter (gpu: gpu != null) (
      map (index: lib.findFirst (g: g.index == index) null config.hydra.gpus) inst.gpus
    );

  envName = name: "HYDRA_API_KEY_" + lib.toUpper (lib.replaceStrings [ "-" "." ] [ "_" "_" ] name);

  instanceConfig =
    name: inst:
    lib.filterAttrs (_: v: v != null) {
      inherit name;
      inherit (inst)
        engine
        host
        port
        contextLength
        cacheType
        settings
        environment
        modelInfo
        hsaOverrideGfxVersion
        readiness
        ;
      gpus = map (g: lib.filterAttrs (_: v: v != null) g) (gpuFacts inst);
      model = if inst.model == "" then null else inst.model;
      command = if inst.engine == "command" then inst.command else null;
      probePath = if inst.engine == "command" then inst.probePath else null;
      executable =
        if inst.engine == "command" then null else engineBinary.${inst.engine} inst.package;
      # systemd's LoadCredential copy; a user service reads the file itself.
      apiKeyFile =
        if inst.apiKeyFile == null then
          null
        else if inst.userService then
          inst.apiKeyFile
        else
          "$CREDENTIALS_DIRECTORY/apiKey";
    };

  configFile =
    name: inst: jsonFormat.generate "hydra-inference-${name}.json" (instanceConfig name inst);

  hardening = {
    NoNewPrivileges = true;
    ProtectSystem = "strict";
    PrivateTmp = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    ProtectHostname = true;
    RestrictSUIDSGID = true;
    RestrictRealtime = true;
    LockPersonality = true;
    SystemCallArchitectures = "native";
    RestrictAddressFamilies = [
      "AF_UNIX"
      "AF_INET"
      "AF_INET6"
      "AF_NETLINK"
    ];
    # No MemoryDenyWriteExecute: PyTorch/Triton (TabbyAPI, vLLM) JIT-compile kernels.
  };

  restart = {
    Restart = "on-failure";
    RestartSec = "5s";
    RestartSteps = 10;
    RestartMaxDelaySec = "10min";
    # 78: the configuration cannot work (does not fit, driver too old); restarting will not help.
    RestartPreventExitStatus = [ 78 ];
  };

  instanceUnit =
    name: inst:
    let
      access = gpuAccess {
        gpus = gpuFacts inst;
        compute = true;
      };
      deps = map (n: "${unitName n}.service") inst.startAfter;
    in
    {
      description = "hydra inference instance ${name} (${inst.engine})";
      wantedBy = [ (if inst.userService then "default.target" else "multi-user.target") ];
      after =
        deps
        ++ lib.optionals (!inst.userService) (
          [
            "network-online.target"
            "systemd-modules-load.service"
          ]
          ++ access.units
        );
      wants = deps ++ lib.optionals (!inst.userService) ([ "network-online.target" ] ++ access.units);
      startLimitBurst = 5;
      startLimitIntervalSec = 1800;
      environment = access.environment;
      unitConfig = lib.optionalAttrs inst.userService { ConditionUser = inst.user; };
      serviceConfig = {
        Type = "notify";
        NotifyAccess = "main";
        ExecStart = "${lib.getExe' cfg.package "hydra-launch"} run --config ${configFile name inst}";
        # Loads take minutes; hydra-launch extends this while the engine makes progress.
        TimeoutStartSec = "15min";
        TimeoutStopSec = "2min";
        # SIGTERM to hydra-launch only: it stops the engine's process group and waits for the
        # GPU memory to be released; systemd kills what is left after TimeoutStopSec.
        KillMode = "mixed";
        StateDirectory = "hydra-inference/${name}";
      }
      // restart
      // lib.optionalAttrs (!inst.userService) (
        hardening
        // {
          DevicePolicy = "closed";
          DeviceAllow = access.deviceAllow;
          SupplementaryGroups = access.supplementaryGroups;
          ProtectHome = if inst.user == null then true else "read-only";
          LoadCredential = lib.optional (inst.apiKeyFile != null) "apiKey:${inst.apiKeyFile}";
        }
        // (if inst.user == null then { DynamicUser = true; } else { User = inst.user; })
      );
    };

  systemInstances = lib.filterAttrs (_: inst: !inst.userService) cfg.instances;
  userInstances = lib.filterAttrs (_: inst: inst.userService && inst.user != null) cfg.instances;

  # LiteLLM: one model name per instance (the instance name), routed to its OpenAI endpoint.
  gatewayConfig = lib.recursiveUpdate {
    model_list = lib.mapAttrsToList (name: inst: {
      model_name = name;
      litellm_params = {
        # openai/<model>: LiteLLM sends <model> on; Ollama needs its own model name.
        model = "openai/${if inst.engine == "ollama" then inst.model else name}";
        api_base = "http://${hostPort inst}/v1";
        api_key = if inst.apiKeyFile == null then "none" else "os.environ/${envName name}";
      };
    }) cfg.instances;
    general_settings = lib.optionalAttrs (cfg.gateway.masterKeyFile != null) {
      master_key = "os.environ/LITELLM_MASTER_KEY";
    };
  } cfg.gateway.settings;

  keyedInstances = lib.filterAttrs (_: inst: inst.apiKeyFile != null) cfg.instances;

  # Secrets come from systemd credentials at start; nothing secret is in the store.
  gatewayScript = pkgs.writeShellScript "hydra-inference-gateway" ''
    set -eu
    ${lib.optionalString (cfg.gateway.masterKeyFile != null) ''
      LITELLM_MASTER_KEY="$(cat "$CREDENTIALS_DIRECTORY/masterKey")"
      export LITELLM_MASTER_KEY
    ''}
    ${lib.concatStrings (
      lib.mapAttrsToList (name: _: ''
        ${envName name}="$(head -n 1 "$CREDENTIALS_DIRECTORY/apiKey-${name}")"
        export ${envName name}
      '') keyedInstances
    )}
    exec ${lib.getExe' cfg.gateway.package "litellm"} --host ${cfg.gateway.host} --port ${toString cfg.gateway.port} --config ${yamlFormat.generate "litellm.yaml" gatewayConfig}
  '';

  gatewayLaunch = jsonFormat.generate "hydra-inference-gateway.json" {
    name = "gateway";
    engine = "command";
    inherit (cfg.gateway) host port;
    command = [ "${gatewayScript}" ];
    probePath = "/health/readiness";
  };

  instanceOptions =
    { name, config, ... }:
    {
      options = {
        engine = lib.mkOption {
          type = lib.types.enum [
            "tabbyapi"
            "ollama"
            "llama-cpp"
            "vllm"
            "command"
          ];
          description = "The inference engine this instance runs.";
        };
        package = lib.mkOption {
          type = lib.types.nullOr lib.types.package;
          default =
            {
              ollama = pkgs.ollama;
              llama-cpp = pkgs.llama-cpp;
            }
            .${config.engine} or null;
          defaultText = lib.literalExpression "pkgs.ollama or pkgs.llama-cpp by engine; null for tabbyapi, vllm, command";
          description = ''
            The engine's package. nixpkgs has no TabbyAPI and its vLLM may not match your CUDA,
            so those must be set; choose the CUDA/ROCm variant (e.g. `pkgs.ollama-cuda`).
          '';
        };
        gpus = lib.mkOption {
          type = lib.types.listOf lib.types.ints.unsigned;
          default = [ ];
          example = [
            0
            1
          ];
          description = "Indices into `hydra.gpus` of the GPUs this instance is pinned to.";
        };
        host = lib.mkOption {
          type = lib.types.str;
          default = "127.0.0.1";
          description = "Address the engine listens on.";
        };
        port = lib.mkOption {
          type = lib.types.port;
          default =
            defaultPorts.${config.engine}
              or (throw "services.hydra-inference.instances.${name}.port: engine command has no default port; set one.");
          defaultText = lib.literalExpression "5000 tabbyapi, 11434 ollama, 8080 llama-cpp, 8000 vllm";
          description = "Port the engine listens on (the launcher refuses a busy one).";
        };
        model = lib.mkOption {
          type = lib.types.str;
          default = "";
          example = "/var/lib/models/Llama-3-70B-exl2-3.5bpw";
          description = "Model path (GGUF file, EXL2/EXL3/HF directory) or Ollama model name.";
        };
        contextLength = lib.mkOption {
          type = lib.types.nullOr lib.types.ints.positive;
          default = null;
          example = 8192;
          description = "Context length, passed explicitly to the engine and checked by the VRAM fit.";
        };
        cacheType = lib.mkOption {
          type = lib.types.enum [
            "f16"
            "bf16"
            "fp8"
            "q8"
            "q6"
            "q4"
          ];
          default = "f16";
          description = "KV cache element type (engine support differs; the launcher refuses what the engine lacks).";
        };
        modelInfo = lib.mkOption {
          type = lib.types.nullOr jsonFormat.type;
          default = null;
          example = {
            parameters = 70.6e9;
            bitsPerWeight = 3.5;
            layers = 80;
            kvHeads = 8;
            headDim = 128;
          };
          description = "Model facts for the VRAM fit when the files cannot be read before start (Ollama names).";
        };
        settings = lib.mkOption {
          type = lib.types.submodule { freeformType = jsonFormat.type; };
          default = { };
          example = {
            model.tensor_parallel = true;
          };
          description = ''
            Engine-specific settings: TabbyAPI config.yml sections, llama-server/vLLM extra flags
            (`{ metrics = true; }` → `--metrics`), Ollama `OLLAMA_*` variables.
          '';
        };
        environment = lib.mkOption {
          type = lib.types.attrsOf lib.types.str;
          default = { };
          description = "Extra environment for the engine (GPU pinning variables are set from `gpus`).";
        };
        hsaOverrideGfxVersion = lib.mkOption {
          type = lib.types.nullOr lib.types.str;
          default = null;
          example = "11.0.0";
          description = "`HSA_OVERRIDE_GFX_VERSION` for this instance's process only.";
        };
        apiKeyFile = lib.mkOption {
          type = lib.types.nullOr lib.types.str;
          default = null;
          example = "/run/secrets/llm-api-key";
          description = "File holding the engine's API key (passed with LoadCredential; never in the store).";
        };
        openFirewall = lib.mkOption {
          type = lib.types.bool;
          default = false;
          description = "Open `port` in the firewall.";
        };
        startAfter = lib.mkOption {
          type = lib.types.listOf lib.types.str;
          default = [ ];
          example = [ "llm" ];
          description = "Instances that must be ready (model loaded) before this one starts.";
        };
        user = lib.mkOption {
          type = lib.types.nullOr lib.types.str;
          default = null;
          description = "Run as this user (default: a dynamic system user).";
        };
        userService = lib.mkOption {
          type = lib.types.bool;
          default = false;
          description = "Run as `user`'s systemd user service; the user then lingers so it survives logout.";
        };
        command = lib.mkOption {
          type = lib.types.listOf lib.types.str;
          default = [ ];
          example = [
            "comfyui"
            "--listen"
            "127.0.0.1"
          ];
          description = "The argv for engine `command`.";
        };
        probePath = lib.mkOption {
          type = lib.types.nullOr lib.types.str;
          default = null;
          example = "/system_stats";
          description = "For engine `command`: HTTP path that answers 200 once ready (null: TCP connect).";
        };
        readiness = lib.mkOption {
          type = lib.types.submodule { freeformType = jsonFormat.type; };
          default = { };
          example = {
            timeout = 3600;
            gpuWait = 120;
          };
          description = "hydra-launch readiness settings (timeout, interval, probeTimeout, failures, gpuWait, stopTimeout, releaseTimeout).";
        };
        probeUrl = lib.mkOption {
          type = lib.types.nullOr lib.types.str;
          readOnly = true;
          default =
            let
              path = probePath config;
            in
            if path == null then null else "http://${hostPort config}${path}";
          defaultText = lib.literalMD "the engine's readiness URL";
          description = "HTTP URL that answers when the model is ready (null: only a TCP check makes sense).";
        };
      };
    };
in
{
  imports = [ ./gpus.nix ];

  options.services.hydra-inference = {
    enable = lib.mkEnableOption "hydra inference engines and their LiteLLM gateway";
    package = lib.mkPackageOption pkgs "hydra-fleet" { };

    instances = lib.mkOption {
      type = lib.types.attrsOf (lib.types.submodule instanceOptions);
      default = { };
      description = "Inference engine instances, each `hydra-inference-<name>.service`.";
    };

    gateway = {
      enable = lib.mkEnableOption "the LiteLLM gateway routing a model name to each instance";
      package = lib.mkPackageOption pkgs "litellm" { };
      host = lib.mkOption {
        type = lib.types.str;
        default = "127.0.0.1";
        description = "Address LiteLLM listens on.";
      };
      port = lib.mkOption {
        type = lib.types.port;
        default = 4000;
        description = "Port LiteLLM listens on.";
      };
      masterKeyFile = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "/run/secrets/litellm-master-key";
        description = "File holding the LiteLLM master key (passed with LoadCredential; never in the store).";
      };
      openFirewall = lib.mkOption {
        type = lib.types.bool;
        default = false;
        description = "Open the gateway port in the firewall.";
      };
      settings = lib.mkOption {
        type = lib.types.submodule { freeformType = yamlFormat.type; };
        default = { };
        example = {
          router_settings.num_retries = 2;
        };
        description = "Merged into the generated LiteLLM config.";
      };
      probeUrl = lib.mkOption {
        type = lib.types.str;
        readOnly = true;
        default = "http://${localHost cfg.gateway.host}:${toString cfg.gateway.port}/health/readiness";
        defaultText = lib.literalExpression ''"http://''${host}:''${port}/health/readiness"'';
        description = "LiteLLM's readiness URL (makes no model calls).";
      };
    };
  };

  config = lib.mkIf cfg.enable {
    assertions =
      let
        indices = map (g: g.index) config.hydra.gpus;
        ports =
          lib.mapAttrsToList (_: inst: inst.port) cfg.instances
          ++ lib.optional cfg.gateway.enable cfg.gateway.port;
        inStore = path: path != null && lib.hasPrefix builtins.storeDir path;
      in
      lib.concatLists (
        lib.mapAttrsToList (name: inst: [
          {
            assertion = lib.all (i: lib.elem i indices) inst.gpus;
            message = "services.hydra-inference.instances.${name}.gpus: ${toString inst.gpus} names a GPU that is not in hydra.gpus (indices ${toString indices}); add it to hydra.gpus or fix the index.";
          }
          {
            assertion = lib.all (n: cfg.instances ? ${n} && n != name) inst.startAfter;
            message = "services.hydra-inference.instances.${name}.startAfter: ${toString inst.startAfter} must name other instances (known: ${toString (lib.attrNames cfg.instances)}).";
          }
          {
            assertion = lib.all (n: !(cfg.instances ? ${n}) || cfg.instances.${n}.userService == inst.userService) inst.startAfter;
            message = "services.hydra-inference.instances.${name}.startAfter: a system service cannot be ordered after a user service (or the reverse); make both userService or neither.";
          }
          {
            assertion = inst.engine == "command" || inst.package != null;
            message = "services.hydra-inference.instances.${name}.package: nixpkgs has no default for engine ${inst.engine}; set package.";
          }
          {
            assertion = (inst.engine == "command") == (inst.command != [ ]);
            message = "services.hydra-inference.instances.${name}.command: set it for engine \"command\" and only for it.";
          }
          {
            assertion = inst.engine == "command" || (inst.model != "" && inst.contextLength != null);
            message = "services.hydra-inference.instances.${name}: set model and contextLength (engines otherwise default to the model's maximum context).";
          }
          {
            assertion = !inst.userService || inst.user != null;
            message = "services.hydra-inference.instances.${name}.userService needs user set to the login user.";
          }
          {
            assertion = !(inStore inst.apiKeyFile);
            message = "services.hydra-inference.instances.${name}.apiKeyFile is in the Nix store, which is world-readable; point it at a runtime secret (e.g. /run/secrets/...).";
          }
          {
            assertion = !(inst.openFirewall && isLoopback inst.host);
            message = "services.hydra-inference.instances.${name}.openFirewall opens port ${toString inst.port}, but host is ${inst.host} (loopback only); set host = \"0.0.0.0\" or leave the port closed.";
          }
        ]) cfg.instances
      )
      ++ [
        {
          assertion = lib.length ports == lib.length (lib.unique ports);
          message = "services.hydra-inference: two instances (or an instance and the gateway) use the same port: ${toString ports}.";
        }
        {
          assertion = !(cfg.gateway.enable && cfg.gateway.openFirewall && isLoopback cfg.gateway.host);
          message = "services.hydra-inference.gateway.openFirewall opens port ${toString cfg.gateway.port}, but gateway.host is ${cfg.gateway.host} (loopback only); set gateway.host = \"0.0.0.0\" or leave the port closed.";
        }
        {
          assertion = !(inStore cfg.gateway.masterKeyFile);
          message = "services.hydra-inference.gateway.masterKeyFile is in the Nix store, which is world-readable; point it at a runtime secret.";
        }
      ];

    systemd.services =
      lib.mapAttrs' (name: inst: lib.nameValuePair (unitName name) (instanceUnit name inst)) systemInstances
      // lib.optionalAttrs cfg.gateway.enable {
        hydra-inference-gateway = {
          description = "hydra inference gateway (LiteLLM)";
          wantedBy = [ "multi-user.target" ];
          after = [ "network-online.target" ] ++ map (n: "${unitName n}.service") (lib.attrNames systemInstances);
          wants = [ "network-online.target" ] ++ map (n: "${unitName n}.service") (lib.attrNames systemInstances);
          startLimitBurst = 5;
          startLimitIntervalSec = 1800;
          # As nixpkgs' services.litellm sets it: the package is in the read-only store and the
          # host may have no route to the internet.
          environment = {
            HOME = "/var/lib/hydra-inference/gateway";
            # LiteLLM rewrites its packaged UI at start; the store copy is read-only.
            LITELLM_NON_ROOT = "true";
            LITELLM_UI_PATH = "/var/lib/hydra-inference/gateway/ui";
            CUSTOM_TIKTOKEN_CACHE_DIR = "/var/lib/hydra-inference/gateway/tiktoken-cache";
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
          serviceConfig =
            hardening
            // restart
            // {
              Type = "notify";
              NotifyAccess = "main";
              ExecStart = "${lib.getExe' cfg.package "hydra-launch"} run --config ${gatewayLaunch}";
              TimeoutStartSec = "5min";
              KillMode = "mixed";
              DynamicUser = true;
              StateDirectory = [
                "hydra-inference/gateway"
                "hydra-inference/gateway/ui"
                "hydra-inference/gateway/tiktoken-cache"
              ];
              WorkingDirectory = "/var/lib/hydra-inference/gateway";
              ProtectHome = true;
              DevicePolicy = "closed";
              LoadCredential =
                lib.optional (
                  cfg.gateway.masterKeyFile != null
                ) "masterKey:${cfg.gateway.masterKeyFile}"
                ++ lib.mapAttrsToList (name: inst: "apiKey-${name}:${inst.apiKeyFile}") keyedInstances;
            };
        };
      };

    systemd.user.services = lib.mapAttrs' (
      name: inst: lib.nameValuePair (unitName name) (instanceUnit name inst)
    ) userInstances;

    # A user's services die at logout unless the user lingers.
    users.users = lib.mapAttrs' (
      _: inst: lib.nameValuePair inst.user { linger = true; }
    ) userInstances;

    networking.firewall.allowedTCPPorts =
      lib.mapAttrsToList (_: inst: inst.port) (
        lib.filterAttrs (_: inst: inst.openFirewall) cfg.instances
      )
      ++ lib.optional (cfg.gateway.enable && cfg.gateway.openFirewall) cfg.gateway.port;
  };
}
