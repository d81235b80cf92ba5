//===- Descriptor.h - the kernel descriptor of docs/abi.md -----*- C++ -*-===//
//
// `rbfc --emit=ptx|cubin -o NAME.ptx` writes NAME.json beside the image: the
// entry symbol, the element type, the tile sizes that give the grid, the
// shared memory, the spec's params and captures, which are kernel
// arguments, and the key-terms prologue when the kernel has one. This is the
// runtime's view of that file.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_RUNTIME_DESCRIPTOR_H
#define RBFC_RUNTIME_DESCRIPTOR_H

#include "rbfc/runtime.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rbfc::runtime {

struct ParamDesc {
  std::string name;
  rbfc_dtype type = RBFC_DTYPE_F32; // F32 or I32
  bool hasDefault = false;
  double defaultValue = 0;
};

struct CaptureDesc {
  std::string name;
  rbfc_dtype type = RBFC_DTYPE_F32; // F32, I32 or I64
  int rank = 0;
};

/// The prologue `entry` that writes per-key terms into a workspace the main
/// kernel reads (docs/abi.md, "Workspace").
struct KeyTermsDesc {
  std::string entry;
  int block = 0;          // threads per block, a multiple of 32
  int keysPerBlock = 0;   // keys one block covers: grid x = ceil(kv_len / this)
  int terms = 0;          // f32 words a key in the workspace, 1 to 4
  int rowMultiple = 0;    // each (batch, head) row is kv_len rounded up to this
  bool perKvHead = false; // rows per (batch, kv head), not per query head
  // The main kernel waits for the prologue itself (griddepcontrol.wait):
  // it may be launched before the prologue ends.
  bool programmaticLaunch = false;
};

/// One backward kernel: its entry, threads per block, the rows (queries or
/// keys) one block covers, and its dynamic shared memory.
struct BackwardKernelDesc {
  std::string entry;
  int block = 0;
  int rowsPerBlock = 0;
  int64_t sharedMemoryBytes = 0;
};

/// The backward kernels of a kernel compiled with --backward (docs/abi.md,
/// "Backward").
struct BackwardDesc {
  BackwardKernelDesc rows, keyValue, query, tileSums, reduce;
  int rowMultiple = 0; // delta, lse2 and key-term rows are padded to this
  int keyTerms = 0;    // f32 planes of key terms, 0-2
  bool keyTermsPerKvHead = true;
  int slots = 0; // partial sums per (batch, head, tile)
  /// The dK/dV kernel's query tile when it sums a relative-position
  /// table's gradient per diagonal, else 0 (docs/abi.md, "Backward").
  int diagonalQueryTile = 0;
  /// Which params and captures the GPU backward gives a gradient.
  std::vector<bool> paramGrads, captureGrads;
};

struct Descriptor {
  std::string name;
  std::string entry;
  std::string arch;
  std::string normalization = "softmax";
  std::string plan;
  rbfc_dtype dtype = RBFC_DTYPE_BF16;
  int headDim = 0;
  bool hasLse = false;
  int tileM = 0;
  int tileN = 0;
  int warps = 0;
  int stages = 0;
  int64_t sharedMemoryBytes = 0;
  /// The kernel reads k and v by TMA in boxes of this many rows (0: it
  /// takes no tensor maps).
  int tensorMapRows = 0;
  std::vector<ParamDesc> params;
  std::vector<CaptureDesc> captures;
  std::optional<KeyTermsDesc> keyTerms;
  std::optional<BackwardDesc> backward;
  /// The forward kernel for problems too small to fill the device with
  /// this one's blocks (docs/abi.md, "Small problems"): this descriptor
  /// with the kernel's own entry, plan, tiles, shared memory, tensor maps
  /// and key terms, and the `small` of problems smaller still, if any.
  /// Null when there is none.
  std::shared_ptr<const Descriptor> small;
  /// With `small`: its blocks a multiprocessor. A problem whose grid of
  /// the small kernel fits in one wave of them launches it.
  int smallBlocksPerSM = 0;
};

/// "bf16", "f16", "f32", "i32", "i64".
const char *dtypeName(rbfc_dtype dtype);
/// Bytes per element.
int dtypeSize(rbfc_dtype dtype);

/// Reads a descriptor. Keys the runtime does not use are ignored; a missing
/// required key, a value of the wrong type or out of range is an error that
/// names the key.
bool parseDescriptor(std::string_view json, Descriptor &out,
                     std::string &error);

} // namespace rbfc::runtime

#endif // RBFC_RUNTIME_DESCRIPTOR_H
