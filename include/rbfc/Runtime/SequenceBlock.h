//===- SequenceBlock.h - a call's place in the whole sequence --*- C++ -*-===//
//
// Where a call's queries and keys sit in the whole sequence, and the check of
// it that every launcher (the runtime library, the host kernels) applies.
// Header-only: the host kernels are linked without the runtime library.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_RUNTIME_SEQUENCEBLOCK_H
#define RBFC_RUNTIME_SEQUENCEBLOCK_H

#include <cstdint>
#include <string>
#include <tuple>

namespace rbfc::runtime {

/// Where a call's queries and keys sit in the whole sequence (docs/abi.md,
/// "Sequence blocks"): the spec sees q_idx + qOffset, kv_idx + kvOffset and
/// the whole lengths qSeqLen and kvSeqLen as q_len and kv_len (0: the
/// call's own lengths).
struct SequenceBlock {
  int64_t qOffset = 0, kvOffset = 0, qSeqLen = 0, kvSeqLen = 0;
};

/// Checks a call's block against its lengths: offsets >= 0, whole lengths 0
/// or at least offset + length, every index within an i32 (the spec
/// language's int); the message names the field. Replaces zero whole
/// lengths by offset + length, which the kernels take.
inline bool resolveSequenceBlock(SequenceBlock &block, int64_t qLen,
                                 int64_t kvLen, std::string &error) {
  constexpr int64_t kLargest = INT32_MAX;
  for (auto [side, offset, seqLen, length] :
       {std::tuple{"q", &block.qOffset, &block.qSeqLen, qLen},
        std::tuple{"kv", &block.kvOffset, &block.kvSeqLen, kvLen}}) {
    std::string offsetName = std::string(side) + "_offset";
    std::string seqLenName = std::string(side) + "_seq_len";
    if (*offset < 0 || *offset > kLargest - length) {
      error = offsetName + " is " + std::to_string(*offset) +
              "; it must be >= 0 and keep offset + " + std::to_string(length) +
              " (the call's " + side + "_len) within 2^31 - 1";
      return false;
    }
    if (*seqLen == 0)
      *seqLen = *offset + length;
    if (*seqLen < *offset + length || *seqLen > kLargest) {
      error = seqLenName + " is " + std::to_string(*seqLen) +
              "; the whole sequence holds the call's rows, so it must be 0 "
              "or from " + offsetName + " + " + side + "_len (" +
              std::to_string(*offset + length) + ") to 2^31 - 1";
      return false;
    }
  }
  return true;
}

} // namespace rbfc::runtime

#endif // RBFC_RUNTIME_SEQUENCEBLOCK_H
