//===- Launch.h - check a launch and pack its kernel arguments -*- C++ -*-===//
//
// Everything rbfc_launch does before it calls the driver, kept apart so that
// it can be tested without a GPU: the checks of docs/abi.md ("Requirements
// the runtime checks"), the argument list in ABI order, the grid, and the
// workspace and launch of the key-terms prologue.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_RUNTIME_LAUNCH_H
#define RBFC_RUNTIME_LAUNCH_H

#include "rbfc/Runtime/Descriptor.h"
#include "rbfc/Runtime/SequenceBlock.h"
#include "rbfc/runtime.h"

#include <algorithm>
#include <array>
#include <cassert>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace rbfc::runtime {

/// A caller's argument struct that starts with struct_size, as this
/// library's `T`: a caller built against an older header passes a shorter
/// struct (at least `oldestSize` bytes), whose missing fields read as zero.
/// False with a message when the size is below that.
template <typename T>
bool readVersionedArgs(const T &given, size_t oldestSize, const char *init,
                       T &copy, std::string &error) {
  if (given.struct_size < oldestSize) {
    error = "args->struct_size is " + std::to_string(given.struct_size) +
            ", expected at least " + std::to_string(oldestSize) + "; call " +
            init;
    return false;
  }
  std::memset(&copy, 0, sizeof copy);
  std::memcpy(&copy, &given, std::min(given.struct_size, sizeof copy));
  copy.struct_size = sizeof copy;
  return true;
}

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
  SequenceBlock block;
};

/// A tensor map the kernel takes (docs/abi.md, "Tensor maps"): a 16-bit
/// tensor [batch][heads][rows][head_dim] seen as 4-D, innermost dimension
/// first, read in boxes of `box` (64 elements x the kernel's tile rows) into
/// the 128-byte swizzle; rows past the end read as zeros. The runtime encodes
/// it with the driver into the 128 bytes of parameter `arg`.
struct TensorMapRequest {
  const char *tensor = nullptr; // "k" or "v", for messages
  size_t arg = 0;
  rbfc_dtype dtype = RBFC_DTYPE_BF16;
  void *data = nullptr;
  uint64_t sizes[4] = {};       // head_dim, rows, heads, batch
  uint64_t strideBytes[3] = {}; // of rows, heads, batch
  uint32_t box[4] = {};
};

/// The bytes and alignment of a CUtensorMap.
inline constexpr size_t kTensorMapBytes = 128;
struct alignas(64) TensorMapBytes {
  unsigned char bytes[kTensorMapBytes];
};

/// Whether two requests encode the same tensor map (the parameter slot and
/// the tensor's name aside).
bool sameTensorMap(const TensorMapRequest &a, const TensorMapRequest &b);

/// The last few tensor maps one thread encoded: encoding costs about a
/// microsecond a map (cuTensorMapEncodeTiled, on the H200's host), two a
/// TMA launch, and a model calls the same attention on the same buffers
/// layer after layer. A map depends only on its request, so a hit is
/// exact.
class TensorMapCache {
public:
  /// The map encoded for a request like `request`, or null.
  const TensorMapBytes *find(const TensorMapRequest &request) const;
  /// Remembers `map` for `request`, in place of the oldest entry.
  void store(const TensorMapRequest &request, const TensorMapBytes &map);

private:
  struct Entry {
    TensorMapRequest request;
    TensorMapBytes map;
    bool used = false;
  };
  /// K's and V's maps of the last two problems.
  std::array<Entry, 4> entries;
  size_t next = 0;
};

struct LaunchConfig {
  uint32_t grid[3] = {1, 1, 1};
  uint32_t block[3] = {1, 1, 1};
  uint32_t sharedMemoryBytes = 0;
  /// Bytes of workspace the key-terms prologue writes; 0 when the kernel has
  /// no prologue, and then the fields below mean nothing.
  size_t workspaceBytes = 0;
  /// The workspace pointer's index in the ParamBuffer.
  size_t workspaceArg = 0;
  /// The prologue runs with no dynamic shared memory.
  uint32_t prologueGrid[3] = {1, 1, 1};
  uint32_t prologueBlock[3] = {1, 1, 1};
  /// The tensor maps to encode into the buffer before the launch.
  std::vector<TensorMapRequest> tensorMaps;
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

  /// Overwrites argument `index`, which was pushed with the same type.
  template <typename T> void set(size_t index, T value) {
    assert(sizes[index] == sizeof(T) && "argument pushed with another type");
    std::memcpy(reinterpret_cast<unsigned char *>(storage.data()) +
                    offsets[index],
                &value, sizeof(T));
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

/// The value of every param in declaration order: the `numParams` values at
/// `params`, or every default when `params` is null. Fails with a message
/// naming the param when the count is wrong, a default is missing or an int
/// param is given a value that is not a 32-bit integer.
bool resolveParams(const Descriptor &descriptor, const double *params,
                   size_t numParams, std::vector<double> &values,
                   std::string &error);

/// Checks `args` against the descriptor and docs/abi.md, then fills
/// `buffer` with the kernel arguments in ABI order and `config` with the
/// grid, block and dynamic shared memory of the kernel and, when it has key
/// terms, of its prologue. On failure returns false with a message that
/// names the tensor, parameter or capture.
///
/// The workspace slot is left null: the workspace may only be allocated once
/// everything else is known to be good, so bindWorkspace fills it in. The
/// tensor-map slots are left zero with a request each in `config`: encoding
/// needs the driver.
bool prepareLaunch(const Descriptor &descriptor, const LaunchArgs &args,
                   ParamBuffer &buffer, LaunchConfig &config,
                   std::string &error);

/// The workspace bytes the key-terms prologue needs for q [batch, heads,
/// q_len, head_dim] and k [batch, kv_heads, kv_len, head_dim] (docs/abi.md,
/// "Workspace"), the largest of the forward kernels' when there are
/// small-problem ones; 0 when no kernel has key terms. Checks only what it
/// reads: q and k present, of rank 4, those sizes >= 1.
bool workspaceBytes(const Descriptor &descriptor, const rbfc_tensor *q,
                    const rbfc_tensor *k, size_t &bytes, std::string &error);

/// The forward kernel a launch on `q` [batch, heads, q_len, head_dim]
/// runs on a device of `multiprocessors` (docs/abi.md, "Small problems"):
/// the descriptor's small-problem kernel when its grid fits in one wave
/// (at most `smallBlocksPerSM` blocks on each multiprocessor), and then
/// that kernel's own small one by the same rule, and so on; else the
/// default, which is also the answer for a `q` that is missing or not of
/// that shape (prepareLaunch then says what is wrong with it).
const Descriptor &forwardKernelFor(const Descriptor &descriptor,
                                   const rbfc_tensor *q, int multiprocessors);

/// The launch of rbfc_launch_with_workspace (a non-null `workspace`) or
/// rbfc_launch (allocated on the stream) with every field of `args`, the
/// sequence block included: what rbfc.h's rbfc_forward runs.
rbfc_status launchForward(const rbfc_module *module, const LaunchArgs &args,
                          void *workspace, size_t workspaceBytes,
                          void *stream);

/// Checks `workspace` (`bytes` long) against what `config` needs and stores
/// it in `buffer`'s workspace slot. A kernel without key terms ignores it.
bool bindWorkspace(const LaunchConfig &config, void *workspace, size_t bytes,
                   ParamBuffer &buffer, std::string &error);

/// The tensors and gradients of one backward launch (docs/abi.md,
/// "Backward"). lseGrad may be null (a zero gradient); paramGrads, when
/// given, has one entry per param (null: not asked), captureGrads one view
/// per capture (data null: not asked).
struct BackwardLaunchArgs {
  const rbfc_tensor *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr,
                    *lse = nullptr;
  const rbfc_tensor *outputGrad = nullptr, *lseGrad = nullptr;
  const rbfc_tensor *queryGrad = nullptr, *keyGrad = nullptr,
                    *valueGrad = nullptr;
  const double *params = nullptr;
  size_t numParams = 0;
  const rbfc_tensor *captures = nullptr;
  size_t numCaptures = 0;
  float *const *paramGrads = nullptr;
  const rbfc_tensor *captureGrads = nullptr;
  SequenceBlock block;
};

/// The grid, block and dynamic shared memory of one kernel launch.
struct KernelLaunch {
  uint32_t grid[3] = {1, 1, 1};
  uint32_t block[3] = {1, 1, 1};
  uint32_t sharedMemoryBytes = 0;
};

struct BackwardLaunchConfig {
  KernelLaunch rows, keyValue, query, tileSums, reduce;
  /// Whether any parameter's or capture's gradient is asked for: only then
  /// do the two reduction kernels run.
  bool reduces = false;
  size_t workspaceBytes = 0;
  /// The workspace pointer's index in the ParamBuffer.
  size_t workspaceArg = 0;
};

/// The workspace bytes of the backward for q [batch, heads, q_len, .] and
/// k [batch, kv_heads, kv_len, .] (docs/abi.md, "Backward").
bool backwardWorkspaceBytes(const Descriptor &descriptor, const rbfc_tensor *q,
                            const rbfc_tensor *k, size_t &bytes,
                            std::string &error);

/// Checks a backward launch against the descriptor and docs/abi.md and
/// fills `buffer` with the arguments every backward kernel takes and
/// `config` with their launches; the workspace slot is left null (see
/// bindWorkspace). Fails with a message naming the tensor, parameter or
/// capture.
bool prepareBackward(const Descriptor &descriptor,
                     const BackwardLaunchArgs &args, ParamBuffer &buffer,
                     BackwardLaunchConfig &config, std::string &error);

/// bindWorkspace for a backward launch.
bool bindBackwardWorkspace(const BackwardLaunchConfig &config, void *workspace,
                           size_t bytes, ParamBuffer &buffer,
                           std::string &error);

} // namespace rbfc::runtime

#endif // RBFC_RUNTIME_LAUNCH_H
