# RBFC_STATIC_TOOLS: build RBFCCompiler as a static library and link rbfc
# against MLIR's and LLVM's static component libraries instead of
# libMLIR.so/libLLVM.so, so the binary runs on a machine without LLVM (the GPU
# machine). Only the objects a tool references are pulled from the archives;
# sections nobody references are dropped at link time.
#
# Sets RBFC_COMPILER_LIBRARY_TYPE and RBFC_MLIR_LIBS for lib/ and tools/.

set(RBFC_COMPILER_LIBRARY_TYPE STATIC)
# add_llvm_executable/add_mlir_library add the LLVM dylib when this is on.
set(LLVM_LINK_LLVM_DYLIB OFF)

# LLVM's static libraries name optional dependencies that only its dylib
# resolved here: libzstd (Support's compression; no -dev package needed, the
# runtime library is enough), libcurl (Debuginfod) and libedit (LineEditor).
# rbfc uses neither of the last two, so they stand as empty targets; if an
# object that needs them were ever pulled in, the link would fail loudly.
if(NOT TARGET zstd::libzstd_shared)
  find_library(RBFC_ZSTD_LIBRARY NAMES zstd libzstd.so.1 REQUIRED)
  add_library(zstd::libzstd_shared SHARED IMPORTED)
  set_target_properties(zstd::libzstd_shared PROPERTIES IMPORTED_LOCATION ${RBFC_ZSTD_LIBRARY})
endif()
foreach(unused CURL::libcurl LibEdit::LibEdit)
  if(NOT TARGET ${unused})
    add_library(${unused} INTERFACE IMPORTED)
  endif()
endforeach()

# LLVM's static component libraries (LTO, Remarks and Polly are shared or
# not wanted; "LLVM" itself is the dylib; llvm-exegesis's libraries need
# libpfm, which no library rbfc uses needs).
set(rbfc_llvm_static_libs)
foreach(lib ${LLVM_AVAILABLE_LIBS})
  if(TARGET ${lib} AND lib MATCHES "^LLVM." AND NOT lib MATCHES "^LLVMExegesis")
    get_target_property(type ${lib} TYPE)
    if(type STREQUAL "STATIC_LIBRARY")
      list(APPEND rbfc_llvm_static_libs ${lib})
    endif()
  endif()
endforeach()

# LLVMExtensions names Polly, which Debian does not ship as a static library;
# nothing rbfc links uses Polly.
get_target_property(deps LLVMExtensions INTERFACE_LINK_LIBRARIES)
list(REMOVE_ITEM deps Polly)
set_target_properties(LLVMExtensions PROPERTIES INTERFACE_LINK_LIBRARIES "${deps}")

# The exported MLIR component libraries name the dylibs "LLVM" (and a few
# "MLIR") among their dependencies: swap in the static libraries. A few LLVM
# components name the LLVM dylib too; for them dropping it is enough, since
# the static list is on the link line anyway and lld resolves archives in any
# order.
get_directory_property(rbfc_imported IMPORTED_TARGETS)
foreach(t ${rbfc_imported})
  get_target_property(type ${t} TYPE)
  if(NOT type STREQUAL "STATIC_LIBRARY")
    continue()
  endif()
  get_target_property(deps ${t} INTERFACE_LINK_LIBRARIES)
  if(NOT deps)
    continue()
  endif()
  set(kept)
  set(needs_llvm OFF)
  foreach(dep ${deps})
    if(dep STREQUAL "LLVM" OR dep STREQUAL "$<LINK_ONLY:LLVM>")
      set(needs_llvm ON)
    elseif(NOT (dep STREQUAL "MLIR" OR dep STREQUAL "$<LINK_ONLY:MLIR>"))
      list(APPEND kept "${dep}")
    endif()
  endforeach()
  if(needs_llvm AND t MATCHES "^MLIR")
    list(APPEND kept ${rbfc_llvm_static_libs})
  endif()
  set_target_properties(${t} PROPERTIES INTERFACE_LINK_LIBRARIES "${kept}")
endforeach()

get_property(rbfc_dialect_libs GLOBAL PROPERTY MLIR_DIALECT_LIBS)
get_property(rbfc_conversion_libs GLOBAL PROPERTY MLIR_CONVERSION_LIBS)
get_property(rbfc_extension_libs GLOBAL PROPERTY MLIR_EXTENSION_LIBS)
get_property(rbfc_translation_libs GLOBAL PROPERTY MLIR_TRANSLATION_LIBS)
set(RBFC_MLIR_LIBS
  ${rbfc_dialect_libs}
  ${rbfc_conversion_libs}
  ${rbfc_extension_libs}
  ${rbfc_translation_libs}
  MLIRGPUPipelines
  MLIRNVVMTarget
  MLIRTargetLLVM
  MLIRToLLVMIRTranslationRegistration
  MLIRExecutionEngine
  MLIRExecutionEngineUtils
  MLIRBytecodeWriter
  MLIRParser
  MLIRPass
  MLIRTransforms
  MLIRIR
  MLIRSupport
  ${rbfc_llvm_static_libs}
)

add_compile_options(-ffunction-sections -fdata-sections)
add_link_options(-Wl,--gc-sections -Wl,--as-needed -static-libstdc++ -static-libgcc -s)
