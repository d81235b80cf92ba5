# lit configuration for rbfc: every .mlir and .attn file under test/lit is
# a test; RUN lines use rbfc, rbf-opt, FileCheck and not.
import os

import lit.formats

config.name = "rbfc"
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".mlir", ".attn", ".test"]
config.excludes = ["Inputs", "lit.cfg.py", "lit.site.cfg.py", "canonicalize-rbf.attn.mlir"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.rbfc_obj_root, "test", "lit")

tools_dir = os.path.dirname(config.filecheck)
config.environment["PATH"] = os.pathsep.join(
    [config.rbfc_tools_dir, tools_dir, config.environment.get("PATH", "")])
config.substitutions.append(("%examples", os.path.join(config.rbfc_src_root, "examples")))
# The C compiler of the build, as a linker driver.
config.substitutions.append(("%cc", config.cc))
# The Python that runs lit, for property tests under Inputs/.
import sys
config.substitutions.append(("%python", sys.executable))

# `REQUIRES: ptxas` tests assemble PTX with the CUDA toolkit's ptxas, found
# the way rbfc finds it (PATH, $CUDA_HOME/bin, /usr/local/cuda/bin).
import shutil
ptxas_dirs = [os.environ.get("PATH", "")]
if os.environ.get("CUDA_HOME"):
    ptxas_dirs.append(os.path.join(os.environ["CUDA_HOME"], "bin"))
ptxas_dirs.append("/usr/local/cuda/bin")
if shutil.which("ptxas", path=os.pathsep.join(ptxas_dirs)):
    config.available_features.add("ptxas")
for name in ("CUDA_HOME", "CUDA_ROOT", "CUDA_PATH"):
    if name in os.environ:
        config.environment[name] = os.environ[name]
