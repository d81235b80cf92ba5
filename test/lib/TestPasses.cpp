//===- TestPasses.cpp - passes that exist for lit tests only --------------===//
#include "rbfc/Testing/ReferenceInterpreter.h"

#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassRegistry.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;
using namespace rbfc;

namespace {

/// Prints, for each attn.attention, the class of every tile of a q_len x
/// kv_len problem as the tile_class region decides it: 'F' all kept, '.'
/// all masked, 'P' partial. Captures are filled with `index / capture-block`
/// over their flat index, which makes a document-id vector of documents
/// `capture-block` long.
struct TestTileMapPass
    : PassWrapper<TestTileMapPass, OperationPass<>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(TestTileMapPass)

  TestTileMapPass() = default;
  TestTileMapPass(const TestTileMapPass &other) : PassWrapper(other) {}

  StringRef getArgument() const final { return "attn-test-tile-map"; }
  StringRef getDescription() const final {
    return "print the tile classification of every attn.attention";
  }

  Option<int64_t> qLen{*this, "q-len", llvm::cl::init(256)};
  Option<int64_t> kvLen{*this, "kv-len", llvm::cl::init(256)};
  Option<int64_t> tileM{*this, "tile-m", llvm::cl::init(64)};
  Option<int64_t> tileN{*this, "tile-n", llvm::cl::init(64)};
  Option<int64_t> captureBlock{*this, "capture-block", llvm::cl::init(64)};

  void runOnOperation() override {
    getOperation()->walk([&](attn::AttentionOp op) {
      test::AttentionInputs inputs;
      inputs.qLen = qLen;
      inputs.kvLen = kvLen;
      inputs.params = test::defaultParams(op);
      for (Value capture : op.getCaptures()) {
        auto type = cast<RankedTensorType>(capture.getType());
        test::CaptureData data;
        int64_t count = 1;
        for (int64_t dim : type.getShape()) {
          data.shape.push_back(ShapedType::isDynamic(dim)
                                   ? std::max<int64_t>(qLen, kvLen)
                                   : dim);
          count *= data.shape.back();
        }
        for (int64_t i = 0; i < count; ++i)
          data.values.push_back(static_cast<double>(i / captureBlock));
        inputs.captures.push_back(std::move(data));
      }
      llvm::outs() << "tile map " << tileM << "x" << tileN << " of " << qLen
                   << "x" << kvLen << ":\n";
      for (int64_t q0 = 0; q0 < qLen; q0 += tileM) {
        for (int64_t k0 = 0; k0 < kvLen; k0 += tileN) {
          std::string error;
          auto facts = test::classifyTile(
              op, inputs, 0, 0, q0, std::min<int64_t>(q0 + tileM, qLen) - 1,
              k0, std::min<int64_t>(k0 + tileN, kvLen) - 1, error);
          if (failed(facts)) {
            op.emitError(error);
            return signalPassFailure();
          }
          llvm::outs() << (facts->first ? 'F' : facts->second ? '.' : 'P');
        }
        llvm::outs() << "\n";
      }
    });
  }
};

} // namespace

namespace rbfc::test {
void registerTestPasses() { PassRegistration<TestTileMapPass>(); }
} // namespace rbfc::test
