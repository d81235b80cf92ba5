//===- KeyTermOperand.h - key terms as one more k of S = Q K^T --*- C++ -*-===//
//
// With key_terms = "product" (attn::KeyBiasProduct) the key-terms prologue
// writes each key's t = key_bias / q_scale as three bf16 parts, t = hi +
// mid + lo to 2^-26 |t| (f32 holds a bias to 2^-24), and S = Q K^T takes
// one more wgmma, 16 wide in k: A ones in k 0-2, B the key's parts in k
// 0-2 and zeros after them, both from shared memory. The accumulators then
// hold q.k + t, and the score is q_scale times them, a plain scaled dot
// product: no term per score, no key-term registers beside S. The wgmma is
// bf16 whatever the kernel's element type: f16 parts would overflow at |t|
// above 65504.
//
// The workspace holds per key four f32 words, one core-matrix row of k 0-7:
// (hi, mid), (lo, 0), (0, 0), (0, 0). Shared memory holds a stage's keys'
// rows back to back, as in the workspace, so that one bulk copy of
// keys x 16 bytes brings them (or a 16-byte cp.async a key); core matrices
// of 8 keys are 128 bytes apart. k 8-15 are zeros, keys x 16 bytes after
// the stage's rows (the descriptor's leading offset), written once. The
// ones are 64 rows of the same layout after the ring, written once: A
// from registers would hold four more registers per thread through the
// loop (rbf_causal spilled 56 bytes with them, 36 without).
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_CONVERSION_NVGPU_KEYTERMOPERAND_H
#define RBFC_CONVERSION_NVGPU_KEYTERMOPERAND_H

#include "rbfc/Conversion/NVGPU/MatrixAtoms.h"

namespace rbfc {

class KeyTermOperand : public KernelEmitter {
public:
  /// A ring of `stages` tiles of `keys` keys.
  KeyTermOperand(mlir::ImplicitLocOpBuilder &b, int64_t keys, int64_t stages)
      : KernelEmitter(b), keys(keys), stages(stages), atom(b, b.getBF16Type()) {
  }

  /// f32 words of a key's workspace entry: its row of k 0-7.
  static constexpr int64_t kWorkspaceWords = 4;
  /// f32 words of a key in shared memory: its rows of k 0-7 and k 8-15.
  static constexpr int64_t kSharedWords = 2 * kWorkspaceWords;

  /// The f32 words the ring takes in shared memory.
  int64_t ringWords() const { return stages * keys * kSharedWords; }
  /// ... the ring and, after it, the A operand: 64 rows of ones in k 0-2,
  /// one warpgroup's, which every warpgroup reads.
  int64_t sharedWords() const {
    return ringWords() + kWarpgroupRows * kSharedWords;
  }
  /// The word offset of key `key`'s entry in ring buffer `buffer`.
  mlir::Value entryOffset(mlir::Value buffer, mlir::Value key);
  /// The bytes of a ring buffer's entries, which one bulk copy brings.
  int64_t bufferEntryBytes() const { return keys * kWorkspaceWords * 4; }
  /// The f32 words of the ones' rows of k 0-7 (their k 8-15 follow).
  static int64_t onesEntryWords() { return kWarpgroupRows * kWorkspaceWords; }
  /// Zeroes what the copies leave alone in every row of the ring `shared`
  /// and writes the ones, `threads` threads sharing the rows; a fence to
  /// the async proxy and a barrier must follow before a wgmma reads them.
  void initialize(mlir::Value shared, mlir::Value threadId, int64_t threads);

  /// Copies the entries of the ring buffer `buffer`'s `keys` keys from the
  /// f32 `workspace`, the first at word `firstEntry`, 16 bytes a key by
  /// cp.async (in the caller's commit group), `threads` threads sharing
  /// the keys.
  void copyEntries(mlir::Value workspace, mlir::Value firstEntry,
                   mlir::Value shared, mlir::Value buffer, mlir::Value threadId,
                   int64_t threads);

  /// The B descriptor of the tile in ring buffer `buffer` of `shared`.
  mlir::Value descriptor(mlir::Value shared, mlir::Value buffer);
  /// The A descriptor of the ones.
  mlir::Value onesDescriptor(mlir::Value shared);
  /// scores += ones x terms, issued between the fence and the commit of
  /// the S = Q K^T group.
  void accumulate(mlir::Value onesDescriptor, mlir::Value descriptor,
                  llvm::MutableArrayRef<Accumulator> scores);

  /// The prologue's two words for the term `term` (f32): (hi, mid) and
  /// (lo, 0) as bf16 pairs, as f32 bit patterns. A term that is not finite
  /// is hi alone.
  std::pair<mlir::Value, mlir::Value> entryWords(mlir::Value term);

private:
  /// Runs `body` for items threadId, threadId + threads, ... below `count`.
  void forEachShare(mlir::Value threadId, int64_t count, int64_t threads,
                    llvm::function_ref<void(mlir::Value)> body);

  int64_t keys, stages;
  WarpgroupMmaAtom atom;
};

} // namespace rbfc

#endif // RBFC_CONVERSION_NVGPU_KEYTERMOPERAND_H
