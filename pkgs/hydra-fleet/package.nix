{
  lib,
  python3Packages,
  prometheus,
  redis,
  pyrsmi ? null,
  withRocm ? false,
}:

python3Packages.buildPythonApplication (finalAttrs: {
  pname = "hydra-fleet";
  version = "0.1.0";
  pyproject = true;

  # Only what the build and its tests read, so edits elsewhere do not rebuild the package.
  # monitoring/ comes along so the alert-rule and dashboard tests run in the build too.
  src = lib.fileset.toSource {
    root = ../..;
    fileset = lib.fileset.unions [
      ../../python/pyproject.toml
      ../../python/src
      ../../python/tests
      ../../monitoring
    ];
  };

  # The Python project is python/ inside that source; later phases run from there.
  preBuild = ''
    cd python
  '';

  build-system = [ python3Packages.poetry-core ];

  dependencies = [
    python3Packages.aiohttp
    python3Packages.prometheus-client
    python3Packages.click
    # nixpkgs patches it to find libnvidia-ml.so.1 under /run/opengl-driver/lib.
    python3Packages.nvidia-ml-py
    python3Packages.gguf
    python3Packages.pyyaml
    # the client library; the argument `redis` above is the server the tests start
    python3Packages.redis
  ]
  ++ lib.optional withRocm pyrsmi;

  # prometheus (promtool) and redis (redis-server): the tests start the real programs.
  nativeCheckInputs = [
    python3Packages.pytestCheckHook
    python3Packages.pytest-aiohttp
    python3Packages.pytest-asyncio
    prometheus
    redis
  ];

  # Tests that need a real GPU run on a GPU machine with `pytest -m gpu`.
  disabledTestMarks = [ "gpu" ];

  pythonImportsCheck = [ "hydra_fleet" ];

  meta = {
    description = "GPU exporter, inference launcher and health agent for a NixOS GPU fleet";
    license = lib.licenses.mit;
    platforms = lib.platforms.linux;
    mainProgram = "hydra-health";
  };
})
