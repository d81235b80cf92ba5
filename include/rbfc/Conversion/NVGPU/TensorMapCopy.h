//===- TensorMapCopy.h - tiles brought by TMA -------------------*- C++ -*-===//
//
// The copy engine of a warp-specialised producer on sm_90: one thread
// issues a cp.async.bulk.tensor per 64-column block of a tile, and the
// tensor memory accelerator reads the rows, writes them in the 128-byte
// swizzle of a column-blocked SwizzledTile (its canonical wgmma layout) and
// completes the bytes on the stage's mbarrier. Rows past the tensor's end
// arrive as zeros, so a partial last tile needs no bounds in the kernel.
// The source is a 4-D tensor map [batch][heads][rows][head_dim] that the
// runtime builds from the tensor's pointer and strides (docs/abi.md,
// "Tensor maps") and passes as a grid-constant kernel parameter.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_CONVERSION_NVGPU_TENSORMAPCOPY_H
#define RBFC_CONVERSION_NVGPU_TENSORMAPCOPY_H

#include "rbfc/Conversion/NVGPU/SharedTile.h"

namespace rbfc {

class TensorMapCopy : public KernelEmitter {
public:
  /// Tiles of `rows` rows laid out as the column-blocked `tile`.
  TensorMapCopy(mlir::ImplicitLocOpBuilder &b, const SwizzledTile &tile,
                int64_t rows, int64_t rowElements)
      : KernelEmitter(b), tile(tile), rows(rows), rowElements(rowElements) {
    assert(tile.isBlocked() && "TMA writes the 128-byte swizzle's blocks");
  }

  /// Bytes one tile's copy completes on its barrier (zero-filled rows
  /// included).
  int64_t tileBytes() const { return rows * rowElements * kElementBytes; }

  /// Issues the copy of rows [firstRow, firstRow + rows) of (batch, head)
  /// from the tensor map at `map` (a generic pointer) into the tile at
  /// element `sharedBase` of the shared memref `shared`, completing on the
  /// mbarrier `barrier` (a shared pointer).
  void copyTile(mlir::Value map, mlir::Value shared, mlir::Value sharedBase,
                mlir::Value firstRow, mlir::Value head, mlir::Value batch,
                mlir::Value barrier);

private:
  const SwizzledTile &tile;
  int64_t rows, rowElements;
};

} // namespace rbfc

#endif // RBFC_CONVERSION_NVGPU_TENSORMAPCOPY_H
