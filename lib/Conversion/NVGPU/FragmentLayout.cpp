//===- FragmentLayout.cpp - which lane holds which accumulator element ----===//
#include "rbfc/Conversion/NVGPU/FragmentLayout.h"

using namespace mlir;
using namespace rbfc;

SmallVector<Value *>
FragmentLayout::rowElements(MutableArrayRef<Accumulator> accumulators,
                            int64_t laneRow) const {
  SmallVector<Value *> elements;
  for (Accumulator &acc :
       accumulators.slice((laneRow / 2) * columnSlices, columnSlices))
    for (int64_t column = 0; column < 2; ++column)
      elements.push_back(&acc[element(laneRow, column)]);
  return elements;
}

SmallVector<Value> FragmentLayout::flatten(ArrayRef<Accumulator> accumulators) {
  SmallVector<Value> values;
  for (const Accumulator &acc : accumulators)
    values.append(acc.begin(), acc.end());
  return values;
}

SmallVector<Accumulator> FragmentLayout::unflatten(ValueRange values) {
  SmallVector<Accumulator> accumulators(values.size() / 4);
  for (auto [i, value] : llvm::enumerate(values))
    accumulators[i / 4][i % 4] = value;
  return accumulators;
}

raw_ostream &rbfc::operator<<(raw_ostream &os, const FragmentLayout &layout) {
  return os << layout.getRowAtoms() << " x " << layout.getColumnSlices()
            << " m16n8 accumulators (lane l, accumulator (atom, slice), "
               "element e: row 16 atom + l/4 + 8 (e/2), column 8 slice + "
               "2 (l%4) + e%2)";
}

FragmentLane::FragmentLane(ImplicitLocOpBuilder &b, Value lane, Value warp,
                           int64_t rowsPerWarp)
    : KernelEmitter(b), warp(warp), rowsPerWarp(rowsPerWarp) {
  group = div(lane, 4);
  inGroup = rem(lane, 4);
}

Value FragmentLane::atomRow(int64_t atom) {
  return add(mul(warp, rowsPerWarp), atom * kAtomRows);
}

Value FragmentLane::row(Value origin, int64_t laneRow) {
  return add(add(origin, atomRow(laneRow / 2)), add(group, 8 * (laneRow % 2)));
}

Value FragmentLane::rowInTile(int64_t laneRow) {
  return add(add(atomRow(laneRow / 2), group), 8 * (laneRow % 2));
}

Value FragmentLane::column(int64_t slice) {
  return add(mul(inGroup, 2), 8 * slice);
}

LogicalResult FragmentLane::forEachElementByColumn(
    const FragmentLayout &layout,
    function_ref<void(int64_t, int64_t, Value)> onColumn,
    function_ref<LogicalResult(int64_t, int64_t, int64_t)> onElement) {
  for (int64_t slice = 0; slice < layout.getColumnSlices(); ++slice) {
    Value first = column(slice);
    for (int64_t column = 0; column < 2; ++column) {
      onColumn(slice, column, add(first, column));
      for (int64_t r = 0; r < layout.laneRows(); ++r)
        if (failed(onElement(layout.accumulator(r / 2, slice),
                             FragmentLayout::element(r, column), r)))
          return failure();
    }
  }
  return success();
}
