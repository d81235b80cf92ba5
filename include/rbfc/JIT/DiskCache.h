//===- DiskCache.h - compiled kernels kept across processes -----*- C++ -*-===//
//
// A folder of compiled kernels that threads and processes share without a
// lock, created readable by its owner only. An entry is one file named after its key (the hash of everything
// the kernel depends on); it is written to a unique temporary file and
// renamed over its final name, so a reader sees a whole entry or none.
// Each entry carries its key and a hash of its contents, checked on every
// load: a truncated, corrupt or misnamed entry is rejected, and the caller
// compiles the kernel again and stores it over the bad one.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_JIT_DISKCACHE_H
#define RBFC_JIT_DISKCACHE_H

#include "llvm/ADT/StringRef.h"

#include <string>

namespace rbfc::jit {

/// What the cache keeps of a compiled kernel: its descriptor (docs/abi.md)
/// and its image (PTX).
struct KernelArtifact {
  std::string descriptor;
  std::string image;
};

/// The lowercase hex BLAKE3 hash of `text`: cache keys and entry checks.
std::string contentHash(llvm::StringRef text);

class DiskCache {
public:
  explicit DiskCache(std::string directory) : directory(std::move(directory)) {}

  enum class Lookup { Hit, Miss, Rejected };

  /// Reads the entry of `key` into `artifact` (Hit); Miss when there is
  /// none; Rejected when there is one that fails its checks.
  Lookup load(llvm::StringRef key, KernelArtifact &artifact) const;

  /// Writes the entry of `key`, replacing any; false when it could not be
  /// written (the folder is not writable, the disk is full, ...).
  bool store(llvm::StringRef key, const KernelArtifact &artifact) const;

  /// The file that holds the entry of `key`.
  std::string entryPath(llvm::StringRef key) const;

private:
  std::string directory;
};

} // namespace rbfc::jit

#endif // RBFC_JIT_DISKCACHE_H
