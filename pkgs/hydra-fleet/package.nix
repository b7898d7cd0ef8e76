{
  lib,
  python3Packages,
  pyrsmi ? null,
  withRocm ? false,
}:

python3Packages.buildPythonApplication {
  pname = "hydra-fleet";
  version = "0.1.0";
  pyproject = true;

  # Only what the build and its tests read, so edits elsewhere do not rebuild the package.
  src = lib.cleanSourceWith {
    name = "hydra-fleet-source";
    src = ../../python;
    filter =
      path: type:
      let
        relative = lib.removePrefix "${toString ../../python}/" (toString path);
        top = builtins.head (lib.splitString "/" relative);
      in
      builtins.elem top [
        "pyproject.toml"
        "src"
        "tests"
      ]
      && baseNameOf path != "__pycache__";
  };

  build-system = [ python3Packages.poetry-core ];

  dependencies =
    with python3Packages;
    [
      aiohttp
      prometheus-client
      click
      # nixpkgs patches it to find libnvidia-ml.so.1 under /run/opengl-driver/lib.
      nvidia-ml-py
      gguf
      pyyaml
      redis
    ]
    ++ lib.optional withRocm pyrsmi;

  nativeCheckInputs = with python3Packages; [
    pytestCheckHook
    pytest-aiohttp
    pytest-asyncio
  ];

  # Tests that need a real GPU, or Debian's prometheus/redis-server on PATH, run in `make test`.
  disabledTestMarks = [ "gpu" ];

  pythonImportsCheck = [ "hydra_fleet" ];

  meta = {
    description = "GPU exporter, inference launcher and health agent for a NixOS GPU fleet";
    license = lib.licenses.mit;
    platforms = lib.platforms.linux;
    mainProgram = "hydra-health";
  };
}
