//===- rbf-opt.cpp - mlir-opt with the attn dialect and rbfc passes -------===//
#include "rbfc/Conversion/NVGPU/TargetEmission.h"
#include "rbfc/Conversion/Passes.h"
#include "rbfc/Dialect/Attn/AttnOps.h"
#include "rbfc/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"

namespace rbfc::test {
void registerTestPasses();
} // namespace rbfc::test

int main(int argc, char **argv) {
  mlir::registerCanonicalizerPass();
  mlir::registerCSEPass();
  rbfc::registerRbfcPasses();
  rbfc::registerAttnConversionPasses();
  rbfc::test::registerTestPasses();

  mlir::DialectRegistry registry;
  registry.insert<rbfc::attn::AttnDialect, mlir::func::FuncDialect,
                  mlir::arith::ArithDialect, mlir::math::MathDialect>();
  rbfc::registerGPUBackend(registry);
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "rbfc optimizer driver\n", registry));
}
