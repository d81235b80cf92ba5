//===- FragmentLayoutTest.cpp - the m16n8k16 accumulator layout -----------===//
//
// FragmentLayout's indexing against the PTX ISA's table for the m16n8k16
// C fragment: lane l's register e holds row l/4 + 8 (e/2) and column
// 2 (l%4) + e%2 of its 16 x 8 tile.
//
//===----------------------------------------------------------------------===//
#include "rbfc/Conversion/NVGPU/FragmentLayout.h"

#include <gtest/gtest.h>

using namespace rbfc;

namespace {

TEST(FragmentLayout, LaneRowsAndColumnsOfEveryElement) {
  FragmentLayout layout(/*rowAtoms=*/2, /*columnSlices=*/4);
  EXPECT_EQ(layout.size(), 8);
  EXPECT_EQ(layout.laneRows(), 4);
  for (int64_t atom = 0; atom < 2; ++atom)
    for (int64_t slice = 0; slice < 4; ++slice)
      for (int64_t e = 0; e < 4; ++e) {
        // The element's lane row is 2 atom + e/2: row 16 atom + l/4 + 8 (e/2)
        // of the warp's tile; its column is the lane's (e%2)-th of the slice.
        int64_t laneRow = 2 * atom + e / 2;
        int64_t column = e % 2;
        EXPECT_EQ(FragmentLayout::element(laneRow, column), e);
        EXPECT_EQ(layout.accumulator(laneRow / 2, slice), atom * 4 + slice);
      }
}

TEST(FragmentLayout, RowElementsAreTheLaneRowsOfOneAtom) {
  FragmentLayout layout(/*rowAtoms=*/2, /*columnSlices=*/3);
  llvm::SmallVector<Accumulator> accumulators(layout.size());
  for (int64_t laneRow = 0; laneRow < layout.laneRows(); ++laneRow) {
    llvm::SmallVector<mlir::Value *> elements =
        layout.rowElements(accumulators, laneRow);
    ASSERT_EQ(elements.size(), 6u);
    for (int64_t slice = 0; slice < 3; ++slice)
      for (int64_t column = 0; column < 2; ++column)
        EXPECT_EQ(elements[2 * slice + column],
                  &accumulators[layout.accumulator(laneRow / 2, slice)]
                               [FragmentLayout::element(laneRow, column)]);
    EXPECT_EQ(layout.rowAccumulators(accumulators, laneRow).data(),
              &accumulators[layout.accumulator(laneRow / 2, 0)]);
  }
}

} // namespace
