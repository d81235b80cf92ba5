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

TEST(FragmentLayout, PositionOfEveryElementOfEveryLane) {
  FragmentLayout layout(/*rowAtoms=*/2, /*columnSlices=*/4);
  EXPECT_EQ(layout.size(), 8);
  EXPECT_EQ(layout.laneRows(), 4);
  for (int64_t atom = 0; atom < 2; ++atom)
    for (int64_t slice = 0; slice < 4; ++slice)
      for (int64_t e = 0; e < 4; ++e) {
        int64_t accumulator = layout.accumulator(atom, slice);
        FragmentLayout::Position position = layout.position(accumulator, e);
        for (int64_t lane = 0; lane < 32; ++lane) {
          // What FragmentLane makes of the position for this lane, against
          // the PTX ISA's row and column of register e of the atom's tile.
          int64_t row = 16 * (position.laneRow / 2) + lane / 4 +
                        8 * (position.laneRow % 2);
          int64_t column =
              8 * position.slice + 2 * (lane % 4) + position.column;
          EXPECT_EQ(row, 16 * atom + lane / 4 + 8 * (e / 2));
          EXPECT_EQ(column, 8 * slice + 2 * (lane % 4) + e % 2);
        }
        EXPECT_EQ(FragmentLayout::element(position.laneRow, position.column),
                  e);
        EXPECT_EQ(layout.accumulator(position.laneRow / 2, position.slice),
                  accumulator);
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
