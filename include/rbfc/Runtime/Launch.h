//===- Launch.h - check a launch and pack its kernel arguments -*- C++ -*-===//
//
// Everything rbfc_launch does before it calls the driver, kept apart so that
// it can be tested without a GPU: the checks of docs/abi.md ("Requirements
// the runtime checks"), the argument list in ABI order and the grid.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_RUNTIME_LAUNCH_H
#define RBFC_RUNTIME_LAUNCH_H

#include "rbfc/Runtime/Descriptor.h"
#include "rbfc/runtime.h"

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace rbfc::runtime {

struct LaunchArgs {
  const rbfc_tensor *q = nullptr;
  const rbfc_tensor *k = nullptr;
  const rbfc_tensor *v = nullptr;
  const rbfc_tensor *o = nullptr;
  const rbfc_tensor *lse = nullptr;
  const double *params = nullptr;
  size_t numParams = 0;
  const rbfc_tensor *captures = nullptr;
  size_t numCaptures = 0;
};

struct LaunchConfig {
  uint32_t grid[3] = {1, 1, 1};
  uint32_t block[3] = {1, 1, 1};
  uint32_t sharedMemoryBytes = 0;
};

/// The kernel's arguments, each stored at an offset aligned to its size (the
/// layout CUDA gives a parameter list), with a pointer to each for
/// cuLaunchKernel's `kernelParams`.
class ParamBuffer {
public:
  template <typename T> void push(T value) {
    size_t offset = (used + sizeof(T) - 1) / sizeof(T) * sizeof(T);
    used = offset + sizeof(T);
    storage.resize((used + 7) / 8);
    std::memcpy(reinterpret_cast<unsigned char *>(storage.data()) + offset,
                &value, sizeof(T));
    offsets.push_back(offset);
    sizes.push_back(sizeof(T));
  }

  size_t count() const { return offsets.size(); }
  size_t offset(size_t index) const { return offsets[index]; }
  size_t size(size_t index) const { return sizes[index]; }
  /// Total bytes, padded to 8.
  size_t bytes() const { return storage.size() * 8; }

  template <typename T> T get(size_t index) const {
    T value;
    std::memcpy(&value,
                reinterpret_cast<const unsigned char *>(storage.data()) +
                    offsets[index],
                sizeof(T));
    return value;
  }

  /// One pointer per argument, into this buffer (valid while it lives and
  /// is not pushed to).
  std::vector<void *> pointers() {
    std::vector<void *> result;
    for (size_t offset : offsets)
      result.push_back(reinterpret_cast<unsigned char *>(storage.data()) +
                       offset);
    return result;
  }

private:
  std::vector<uint64_t> storage;
  size_t used = 0;
  std::vector<size_t> offsets;
  std::vector<size_t> sizes;
};

/// Checks `args` against the descriptor and docs/abi.md, then fills
/// `buffer` with the kernel arguments in ABI order and `config` with the
/// grid, block and dynamic shared memory. On failure returns false with a
/// message that names the tensor, parameter or capture.
bool prepareLaunch(const Descriptor &descriptor, const LaunchArgs &args,
                   ParamBuffer &buffer, LaunchConfig &config,
                   std::string &error);

} // namespace rbfc::runtime

#endif // RBFC_RUNTIME_LAUNCH_H
