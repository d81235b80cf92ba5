//===- BlockOrder.h - which tile of which head a block computes -*- C++ -*-===//
//
// The flash kernels' grids are (tiles, heads, batch): query tiles in the
// forward and the dQ kernel, key tiles in the dK/dV kernel. The GPU starts
// a grid's blocks in the order of their linear index. Under a mask the
// tiles' work differs (under causal-like masks the last query tiles and the
// first key tiles see the most keys or queries), and counting the tiles
// within each head in turn starts the last heads' longest blocks last: a
// tail. BlockOrder reads the linear index longest first instead
// (FlashAttention's LPT order): over groups of heads whose streamed
// operands fit in L2 together, a power of two of them, and within a group
// every head's longest tile, then every head's next, ...
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_CONVERSION_NVGPU_BLOCKORDER_H
#define RBFC_CONVERSION_NVGPU_BLOCKORDER_H

#include "rbfc/Conversion/NVGPU/KernelEmitter.h"

namespace rbfc {

class BlockOrder : public KernelEmitter {
public:
  using KernelEmitter::KernelEmitter;

  /// The tile, head and batch of this block of a grid (tiles, `heads`,
  /// `batch`).
  struct Place {
    mlir::Value tile, head, batch;
  };
  /// Longest first, where a head's blocks stream `rows` rows of
  /// `rowBytes` bytes (K and V, or Q and dO) through L2 and the longest
  /// tile of a head is its last (`longestLast`) or its first.
  Place longestFirst(mlir::Value heads, mlir::Value batch, mlir::Value rows,
                     int64_t rowBytes, bool longestLast);
};

} // namespace rbfc

#endif // RBFC_CONVERSION_NVGPU_BLOCKORDER_H
