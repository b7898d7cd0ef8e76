{
  lib,
  buildPythonPackage,
  fetchPypi,
  setuptools,
  rocmPackages,
}:

buildPythonPackage rec {
  pname = "pyrsmi";
  version = "1.1.0";
  pyproject = true;

  src = fetchPypi {
    inherit pname version;
    hash = "sha256-CD/HMzEPazEOtoDTHlHftVYADSehvBq2hk4aKBPqe4s=";
  };

  # versioneer only stamps the version from git metadata, which an sdist does not have.
  postPatch = ''
    substituteInPlace pyproject.toml --replace-fail '"versioneer[toml]==0.29"' ""
    cat > setup.py <<'PY'
    from setuptools import setup
    setup(version="${version}")
    PY
    # Find libamd_smi.so in the Nix store when ROCM_PATH is not set.
    substituteInPlace pyrsmi/rocml.py \
      --replace-fail "os.environ.get('ROCM_PATH', '/opt/rocm')" \
                     "os.environ.get('ROCM_PATH', '${rocmPackages.amdsmi}')"
  '';

  build-system = [ setuptools ];

  # Importing loads the AMD SMI library, which needs a GPU and a driver.
  doCheck = false;

  meta = {
    description = "Python bindings to the AMD SMI library, for ROCm GPU metrics";
    homepage = "https://github.com/ROCm/pyrsmi";
    license = lib.licenses.mit;
    platforms = [ "x86_64-linux" ];
  };
}
