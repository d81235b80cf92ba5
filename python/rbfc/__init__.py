"""rbfc from Python: compile a spec with the rbfc binary, launch the kernel
through librbfc_runtime.so (ctypes) on PyTorch CUDA tensors."""
from .runtime import Kernel, RbfcError, compile_spec, rbfc_binary, runtime_library

__all__ = ["Kernel", "RbfcError", "compile_spec", "rbfc_binary", "runtime_library"]
