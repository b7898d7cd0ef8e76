# services.hydra-inference: inference engines started by hydra-launch, one unit per instance
# (Type=notify: "active" means the model answers). The LiteLLM gateway in front of them is
# ./gateway.nix; what Nix knows of each engine is ./engines.nix.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.hydra-inference;
  service = import ../lib/service.nix { inherit lib; };
  jsonFormat = pkgs.formats.json { };
  engines = import ./engines.nix { inherit lib pkgs; };
  rocmTargets = import ../lib/rocm-targets.nix { inherit lib; };

  # The AMD cards of an instance its ROCm build has no kernels for (a card missing from the
  # build falls back to CPU or fails at load). Unknown targets (the package does not say)
  # pass: the launcher's preflight still checks the card at start.
  missingRocmTargets =
    inst:
    let
      built = rocmTargets.package inst.package;
      blas = rocmTargets.rocblas pkgs.rocmPackages;
      lacks = targets: gpu: targets != null && !(lib.elem gpu.arch targets);
    in
    lib.filter (gpu: gpu.vendor == "amd" && (lacks built gpu || lacks blas gpu)) (gpuFacts inst);

  unitName = name: "hydra-inference-${name}";

  # The inventory entries of an instance's GPUs, in its order (unknown indices: see assertions).
  gpuFacts =
    inst:
    lib.filter (gpu: gpu != null) (
      map (index: lib.findFirst (g: g.index == index) null config.hydra.gpus) inst.gpus
    );

  # An instance's launcher config as the launcher reads it, without siblingsFile: also what the
  # siblings files of the other instances hold.
  launcherConfig =
    name: inst:
    lib.filterAttrs (_: v: v != null) (
      {
        inherit name;
        inherit (inst)
          engine
          listenAddress
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
          if inst.package == null then null else (engines.factsOf inst.engine).binary inst.package;
        # systemd's LoadCredential copy; a user service reads the file itself.
        apiKeyFile =
          if inst.apiKeyFile == null then
            null
          else if inst.userService then
            inst.apiKeyFile
          else
            "$CREDENTIALS_DIRECTORY/apiKey";
      }
      // inst.extraConfig
    );

  # The runtime VRAM ledger: the host's other instances, whose planned memory on a shared GPU
  # the preflight subtracts. Their configs carry no siblingsFile, so no file refers to itself.
  siblingsFile =
    name:
    jsonFormat.generate "hydra-inference-${name}-siblings.json" (
      lib.mapAttrs launcherConfig (builtins.removeAttrs cfg.instances [ name ])
    );

  configFile =
    name: inst:
    if inst.configFile != null then
      inst.configFile
    else
      jsonFormat.generate "hydra-inference-${name}.json" (
        launcherConfig name inst // { siblingsFile = "${siblingsFile name}"; }
      );

  configFiles = lib.mapAttrsToList configFile cfg.instances;

  # Every instance of the host validated and planned together by the launcher: exit 78 with the
  # per-GPU table fails the build when the instances do not fit their GPUs side by side.
  plan = service.checkedFile pkgs {
    name = "hydra-inference-plan";
    inherit (cfg) package;
    command = "hydra-launch check --static ${
      lib.concatMapStringsSep " " (file: "--config ${lib.escapeShellArg "${file}"}") configFiles
    }";
  };

  plannable = cfg.instances != { } && lib.all service.inStore configFiles;

  systemInstances = lib.filterAttrs (_: inst: !inst.userService) cfg.instances;
  userInstances = lib.filterAttrs (_: inst: inst.userService && inst.user != null) cfg.instances;

  execStart =
    name: inst: "${lib.getExe' cfg.package "hydra-launch"} run --config ${configFile name inst}";

  launcherService = name: inst: {
    Type = "notify";
    NotifyAccess = "main";
    ExecStart = execStart name inst;
    # Loads take minutes; hydra-launch extends this while the engine makes progress.
    TimeoutStartSec = "15min";
    TimeoutStopSec = "2min";
    # SIGTERM to hydra-launch only: it stops the engine's process group and waits for the GPU
    # memory to be released; systemd kills what is left after TimeoutStopSec.
    KillMode = "mixed";
  };

  systemUnit =
    name: inst:
    let
      deps = map (n: "${unitName n}.service") inst.startAfter;
    in
    service.mkUnit {
      description = "hydra inference instance ${name} (${inst.engine})";
      wantedBy = [ "multi-user.target" ];
      after = deps ++ [ "network-online.target" ];
      wants = deps ++ [ "network-online.target" ];
      gpus = gpuFacts inst;
      compute = true;
      startLimitIntervalSec = 1800;
      serviceConfig =
        launcherService name inst
        // {
          StateDirectory = "hydra-inference/${name}";
          LoadCredential = lib.optional (inst.apiKeyFile != null) "apiKey:${inst.apiKeyFile}";
          # Deviations from the shared sandbox, for the engines:
          # PyTorch/Triton (TabbyAPI, vLLM) and the GPU runtimes compile kernels at run time.
          MemoryDenyWriteExecute = false;
          # Engines size thread pools and buffers from /proc/cpuinfo and /proc/meminfo.
          ProcSubset = "all";
          # @resources stays allowed: engines pin threads and place memory on NUMA nodes
          # (sched_setaffinity, mbind, set_mempolicy).
          SystemCallFilter = [
            "@system-service"
            "~@privileged"
          ];
        }
        // (
          if inst.user == null then
            { DynamicUser = true; }
          else
            {
              User = inst.user;
              # The user's models may live in their home.
              ProtectHome = "read-only";
            }
        );
    };

  # A login user's service: the user manager applies no system sandbox or device policy; the
  # unit is ordered after the user's other instances only.
  userUnit = name: inst: {
    description = "hydra inference instance ${name} (${inst.engine})";
    wantedBy = [ "default.target" ];
    after = map (n: "${unitName n}.service") inst.startAfter;
    wants = map (n: "${unitName n}.service") inst.startAfter;
    startLimitBurst = 5;
    startLimitIntervalSec = 1800;
    environment = lib.optionalAttrs (lib.any (g: g.vendor == "nvidia") (gpuFacts inst)) {
      LD_LIBRARY_PATH = "/run/opengl-driver/lib";
    };
    unitConfig.ConditionUser = inst.user;
    serviceConfig = launcherService name inst // service.restartPolicy;
  };

  health = config.services.hydra-health;
  exporterChecksGpus = config.services.hydra-gpu-exporter.enable;

  instanceCheck =
    name: inst:
    let
      path =
        if inst.engine == "command" then inst.probePath else (engines.factsOf inst.engine).probePath;
    in
    {
      unit = "${unitName name}.service";
      interval = 30;
      timeout = 10;
      connectTimeout = 3;
      startupGrace = 300;
      # While the GPUs are gone the engine's failure is not its own: blocked, not restarted.
      dependsOn = lib.optional (exporterChecksGpus && inst.gpus != [ ]) "gpus";
      # A user service is not the system manager's to restart: watch it, alert only.
      remediate = if inst.userService then null else { };
    }
    // (
      if path != null then
        {
          type = "http";
          url = "http://${service.localEndpoint inst}${path}";
        }
      else
        {
          type = "tcp";
          host = service.localHost inst.listenAddress;
          inherit (inst) port;
        }
    );

  instanceOptions =
    { name, config, ... }:
    {
      options =
        service.listenerOptions {
          what = "the engine";
          port =
            if (engines.factsOf config.engine).port != null then
              (engines.factsOf config.engine).port
            else
              throw "services.hydra-inference.instances.${name}.port: engine ${config.engine} has no default port; set one.";
          portDefaultText = lib.literalMD "the engine's usual port (TabbyAPI 5000, Ollama 11434, llama.cpp 8080, vLLM 8000)";
        }
        // {
          engine = lib.mkOption {
            # Which engines exist is the launcher's to say: the build-time check refuses an
            # unknown one, naming those it has.
            type = lib.types.str;
            example = "llama-cpp";
            description = ''
              The inference engine this instance runs, one of hydra-launch's: `tabbyapi`,
              `ollama`, `llama-cpp`, `vllm` or `command` today. An engine this module has no
              defaults for needs {option}`port` and {option}`package` set.
            '';
          };
          package = lib.mkOption {
            type = lib.types.nullOr lib.types.package;
            default = (engines.factsOf config.engine).package;
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
            description = ''
              Indices into {option}`hydra.gpus` of the GPUs this instance is pinned to; its unit
              may open these GPUs' device nodes only.
            '';
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
            description = ''
              Model facts for the VRAM fit, so the build-time plan needs no model file (and
              Ollama model names, which have none before they are pulled, can be planned).
            '';
          };
          settings = lib.mkOption {
            type = lib.types.submodule { freeformType = jsonFormat.type; };
            default = { };
            example = {
              model.tensor_parallel = true;
            };
            description = ''
              The engine's own settings, RFC 42 style, written to the instance's launcher config
              file under `settings`: TabbyAPI config.yml sections, llama-server/vLLM flags
              (`{ metrics = true; }` is `--metrics`), Ollama `OLLAMA_*` variables.
            '';
          };
          extraConfig = lib.mkOption {
            type = lib.types.submodule { freeformType = jsonFormat.type; };
            default = { };
            example = {
              headroom = 0.1;
            };
            description = ''
              Further keys of the instance's launcher config file (as `hydra-launch plan`
              documents them), merged over the generated ones.
            '';
          };
          configFile = service.configFileOption "services.hydra-inference.instances.${name}.settings";
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
        };
    };
in
{
  imports = [
    ../config-checks.nix
    ../gpus.nix
    ./gateway.nix
    # For services.hydra-health.checks (filled when the agent is enabled) and the exporter's
    # `gpus` check the instance checks depend on.
    ../health-agent
    ../gpu-exporter
  ];

  options.services.hydra-inference = {
    enable = lib.mkEnableOption "hydra inference engines and their LiteLLM gateway";
    package = lib.mkPackageOption pkgs "hydra-fleet" { };

    instances = lib.mkOption {
      type = lib.types.attrsOf (lib.types.submodule instanceOptions);
      default = { };
      description = "Inference engine instances, each `hydra-inference-<name>.service`.";
    };
  };

  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      (service.listenersConfig (
        lib.mapAttrs' (
          name: inst: lib.nameValuePair "services.hydra-inference.instances.${name}" inst
        ) cfg.instances
      ))
      {
          # What only Nix knows; the launcher's build-time check validates the rest.
          assertions =
            let
              indices = map (g: g.index) config.hydra.gpus;
              ports =
                lib.mapAttrsToList (_: inst: inst.port) cfg.instances
                ++ lib.optional cfg.gateway.enable cfg.gateway.port;
              inStoreStr = path: path != null && lib.hasPrefix builtins.storeDir path;
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
                  assertion = lib.all (
                    n: !(cfg.instances ? ${n}) || cfg.instances.${n}.userService == inst.userService
                  ) inst.startAfter;
                  message = "services.hydra-inference.instances.${name}.startAfter: a system service cannot be ordered after a user service (or the reverse); make both userService or neither.";
                }
                {
                  assertion = inst.engine == "command" || inst.package != null;
                  message = "services.hydra-inference.instances.${name}.package: nixpkgs has no package for engine ${inst.engine}; set package.";
                }
                {
                  assertion = missingRocmTargets inst == [ ];
                  message =
                    let
                      archs = lib.unique (map (gpu: gpu.arch) (missingRocmTargets inst));
                      quoted = lib.concatMapStringsSep " " (a: ''"${a}"'') archs;
                    in
                    "services.hydra-inference.instances.${name}: its ROCm build has no kernels for ${lib.concatStringsSep ", " archs} (${lib.concatMapStringsSep ", " (gpu: gpu.model) (missingRocmTargets inst)}); build it for the card: package = <its ROCm package, e.g. pkgs.ollama-rocm>.override { rocmGpuTargets = [ ${quoted} ]; } (if rocBLAS lacks it too, build rocmPackages with clr.localGpuTargets = [ ${quoted} ] in an overlay).";
                }
                {
                  assertion = !inst.userService || inst.user != null;
                  message = "services.hydra-inference.instances.${name}.userService needs user set to the login user.";
                }
                {
                  assertion = !(inStoreStr inst.apiKeyFile);
                  message = "services.hydra-inference.instances.${name}.apiKeyFile is in the Nix store, which is world-readable; point it at a runtime secret (e.g. /run/secrets/...).";
                }
              ]) cfg.instances
            )
            ++ [
              {
                assertion = lib.length ports == lib.length (lib.unique ports);
                message = "services.hydra-inference: two instances (or an instance and the gateway) use the same port: ${toString ports}.";
              }
            ];

          # The plan of every instance together, for the operator (and the build's check).
          hydra.configChecks.hydra-inference = lib.mkIf plannable plan;
          environment.etc."hydra-inference/plan.txt" = lib.mkIf plannable { source = plan; };

          systemd.services = lib.mapAttrs' (
            name: inst: lib.nameValuePair (unitName name) (systemUnit name inst)
          ) systemInstances;

          systemd.user.services = lib.mapAttrs' (
            name: inst: lib.nameValuePair (unitName name) (userUnit name inst)
          ) userInstances;

          # A user's services die at logout unless the user lingers.
          users.users = lib.mapAttrs' (
            _: inst: lib.nameValuePair inst.user { linger = true; }
          ) userInstances;

          services.hydra-health.checks = lib.mkIf (health.enable && health.autoChecks) (
            lib.mapAttrs' (
              name: inst:
              lib.nameValuePair "inference-${name}" (lib.mkDefault (instanceCheck name inst))
            ) cfg.instances
          );
          # The agent's status page lists the host's instances (engine, model, context, GPUs)
          # from the same launcher configs.
          services.hydra-health.settings.instancesFile = lib.mkIf health.enable "${jsonFormat.generate "hydra-inference-instances.json" (lib.mapAttrs launcherConfig cfg.instances)}";
      }
    ]
  );

  meta.maintainers = [ ];
}
