//===- CopyEngine.cpp - moving tiles and terms into place -----------------===//
#include "rbfc/Conversion/NVGPU/CopyEngine.h"

#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "attn-copy-engine"

using namespace mlir;
using namespace rbfc;

int64_t CopyEngine::copyChunks(int64_t chunksPerRow, int64_t threads) {
  // A multiple of the swizzle's group, so that the chunks a thread copies
  // lie a constant apart in the tile too.
  return std::min(threads, chunksPerRow & -chunksPerRow);
}

int64_t CopyEngine::rowsPerPass(int64_t chunksPerRow, int64_t threads,
                                int64_t rows) {
  return std::min(rows, threads / copyChunks(chunksPerRow, threads));
}

void CopyEngine::copyTile(Value shared, Value sharedBase,
                          const GlobalRows &source, Value firstRow,
                          Value length, int64_t rows, bool bounded) {
  // Thread t copies chunks t % W + W k of rows t / W + p R, W =
  // copyChunks, R = threads / W, one pass p after the other: the source
  // advances by R rows per pass and the target by a constant whenever R
  // keeps the swizzle; chunk W k is W k chunks on in both. A row of a
  // power of two of chunks is one run (k = 0); head_dim 96 gives runs of 4
  // chunks, 80 of 2. Threads past the tile's rows (a run of 2 chunks over
  // 64 rows leaves half of 256 threads) copy nothing.
  int64_t runChunks = copyChunks(tile.chunksPerRow(), threads);
  int64_t runs = tile.chunksPerRow() / runChunks;
  int64_t passRows = rowsPerPass(tile.chunksPerRow(), threads, rows);
  LLVM_DEBUG(llvm::dbgs() << "cp.async of " << rows << " rows, " << passRows
                          << " per pass, " << runs << " runs of " << runChunks
                          << " chunks" << (bounded ? ", bounded" : "")
                          << "\n");
  OpBuilder::InsertionGuard guard(b);
  if (passRows * runChunks < threads) {
    auto copying = scf::IfOp::create(
        b, TypeRange{},
        cmp(arith::CmpIPredicate::ult, threadId, index(passRows * runChunks)),
        /*withElseRegion=*/false);
    b.setInsertionPointToStart(copying.thenBlock());
  }
  Value row = div(threadId, runChunks);
  Value chunk = rem(threadId, runChunks);
  Value rowStart = add(source.base, mul(chunk, kChunk));
  Value firstSource = add(rowStart, mul(firstRow, source.rowStride));
  Value address = add(firstSource, mul(row, source.rowStride));
  Value passStride = mul(source.rowStride, passRows);
  Value target = add(sharedBase, tile.offset(row, chunk));
  // Rows left from this thread's first row; rows past the end are
  // zero-filled (0 source bytes) from the tile's first row, which exists,
  // so no address outside the tensor is formed.
  Value left = sub(length, add(firstRow, row));
  auto tokenType = nvgpu::DeviceAsyncTokenType::get(b.getContext());
  for (int64_t pass = 0; pass < rows / passRows; ++pass) {
    int64_t delta = pass * passRows;
    Value passTarget =
        delta % tile.swizzlePeriod() == 0
            ? add(target, tile.rowShift(delta))
            : add(sharedBase, tile.offset(add(row, delta), chunk));
    Value passSource = address;
    Value bytes = index(kChunk);
    if (bounded) {
      Value inside = cmp(arith::CmpIPredicate::sgt, left, index(delta));
      passSource = select(inside, address, firstSource);
      bytes = select(inside, bytes, index(0));
    }
    for (int64_t run = 0; run < runs; ++run) {
      int64_t runOffset = run * runChunks * kChunk;
      nvgpu::DeviceAsyncCopyOp::create(
          b, tokenType, shared,
          ValueRange{add(passTarget, tile.chunkShift(run * runChunks))},
          source.tensor, ValueRange{add(passSource, runOffset)},
          b.getIndexAttr(kChunk), bytes, b.getUnitAttr());
    }
    address = add(address, passStride);
  }
}

Value CopyEngine::createEvictFirstPolicy() {
  return NVVM::InlinePtxOp::create(
             b, TypeRange{b.getI64Type()}, ValueRange{}, ValueRange{},
             "createpolicy.fractional.L2::evict_first.b64 $0, 1.0;", Value{})
      .getResult(0);
}

Value CopyEngine::loadChunkWithPolicy(Value memref, Value offset,
                                      Value policy) {
  // LLVM's NVPTX backend drops !nontemporal and has no cache-hinted load:
  // inline PTX, one 32-bit register per pair of elements.
  Type i32Type = b.getI32Type();
  auto load = NVVM::InlinePtxOp::create(
      b, TypeRange(SmallVector<Type>(4, i32Type)),
      ValueRange{elementPointer(memref, offset), policy}, ValueRange{},
      "ld.global.L1::no_allocate.L2::cache_hint.v4.b32 {$0, $1, $2, $3}, "
      "[$4], $5;",
      Value{});
  Value words = vector::FromElementsOp::create(b, VectorType::get({4}, i32Type),
                                               load.getResults());
  return vector::BitCastOp::create(b, VectorType::get({kChunk}, b.getF16Type()),
                                   words);
}

Value CopyEngine::squareSum(Value memref, int64_t count,
                            function_ref<Value(int64_t)> offset,
                            Value readOncePolicy) {
  auto rawType = VectorType::get({kChunk}, b.getF16Type());
  Value sum = f32(0.0);
  for (int64_t c = 0; c < count; ++c) {
    // Chunks are 16-byte aligned (docs/abi.md): one vector load each, not
    // eight 16-bit ones.
    Value raw =
        readOncePolicy
            ? loadChunkWithPolicy(memref, offset(c), readOncePolicy)
            : vector::LoadOp::create(b, rawType, memref, ValueRange{offset(c)},
                                     /*nontemporal=*/false, llvm::Align(16));
    Value typed = elementType.isF16()
                      ? raw
                      : vector::BitCastOp::create(
                            b, VectorType::get({kChunk}, elementType), raw);
    Value wide = arith::ExtFOp::create(
        b, VectorType::get({kChunk}, b.getF32Type()), typed);
    sum = fadd(
        sum, vector::ReductionOp::create(b, vector::CombiningKind::ADD,
                                         arith::MulFOp::create(b, wide, wide)));
  }
  return sum;
}

Value CopyEngine::rowSquareSum(Value shared, Value base, Value row,
                               Value part, int64_t parts) {
  int64_t chunks = tile.chunksPerRow();
  int64_t summing = std::min(parts, chunks & -chunks);
  int64_t chunksPerLane = chunks / summing;
  Value first =
      mul(summing == parts ? part : rem(part, summing), chunksPerLane);
  Value sum = squareSum(shared, chunksPerLane, [&](int64_t c) {
    Value offset = tile.offset(row, add(first, c));
    return base ? add(base, offset) : offset;
  });
  return laneSum(sum, summing);
}

SmallVector<ColumnTermPair> CopyEngine::loadColumnTerms(FragmentLane &lane,
                                                        int64_t slices,
                                                        Value source,
                                                        Value firstColumn) {
  SmallVector<ColumnTermPair> pairs;
  for (int64_t slice = 0; slice < slices; ++slice) {
    Value column = add(lane.column(slice), firstColumn);
    Value pair = vector::LoadOp::create(b, VectorType::get({2}, b.getF32Type()),
                                        source, ValueRange{column},
                                        /*nontemporal=*/false, llvm::Align(8));
    pairs.push_back({vector::ExtractOp::create(b, pair, ArrayRef<int64_t>{0}),
                     vector::ExtractOp::create(b, pair, ArrayRef<int64_t>{1})});
  }
  return pairs;
}

TileRing::TileRing(CopyEngine &engine, int64_t stages, int64_t rows,
                   Value length, Value first, Value end,
                   SmallVector<Stream> streams)
    : KernelEmitter(engine.getBuilder()), engine(engine), stages(stages),
      rows(rows), length(length), first(first), end(end),
      streams(std::move(streams)) {}

void TileRing::setTerms(Value workspace, SmallVector<TermPlane> planes,
                        TermCopy copy, Value barriers,
                        KeyTermOperand *operand) {
  assert((copy != TermCopy::Product || (operand && planes.size() == 1)) &&
         "product terms are one plane of KeyTermOperand entries");
  this->workspace = workspace;
  this->planes = std::move(planes);
  termCopy = copy;
  this->barriers = barriers;
  this->operand = operand;
}

void TileRing::issue(Value tile, ArrayRef<Value> termOffsets, Part parts) {
  auto exists = scf::IfOp::create(
      b, TypeRange{}, cmp(arith::CmpIPredicate::slt, tile, end), false);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(exists.thenBlock());
  Value firstRow = mul(tile, rows);
  if (parts & kTiles) {
    Value base = tileBase(buffer(tile));
    // Only the last tile can hold rows past the end: the others copy
    // without per-row bounds.
    Value full = cmp(arith::CmpIPredicate::sle, add(firstRow, rows), length);
    auto bounds = scf::IfOp::create(b, TypeRange{}, full, true);
    for (bool bounded : {false, true}) {
      b.setInsertionPointToStart(bounded ? bounds.elseBlock()
                                         : bounds.thenBlock());
      for (const Stream &stream : streams)
        engine.copyTile(stream.shared, base, stream.source, firstRow, length,
                        rows, bounded);
    }
    b.setInsertionPointAfter(bounds);
  }
  if ((parts & kTerms) && !planes.empty())
    issueTerms(tile, firstRow, termOffsets);
}

void TileRing::advance(Value tile, bool readByAsyncProxy,
                       ArrayRef<Value> termOffsets) {
  NVVM::CpAsyncWaitGroupOp::create(b, stages - 2);
  if (readByAsyncProxy)
    fenceSharedForAsyncProxy();
  gpu::BarrierOp::create(b);
  SmallVector<Value> issuedOffsets;
  for (Value offset : termOffsets)
    issuedOffsets.push_back(add(offset, (stages - 1) * rows));
  issue(add(tile, stages - 1), issuedOffsets);
  NVVM::CpAsyncCommitGroupOp::create(b);
}

void TileRing::issueTerms(Value tile, Value firstRow,
                          ArrayRef<Value> termOffsets) {
  auto runStart = [&](int64_t plane) {
    return termOffsets.empty() ? add(planes[plane].workspaceRow, firstRow)
                               : termOffsets[plane];
  };
  // With barriers the product's entries come by one bulk copy, as the
  // planes' runs do: a ring buffer holds them back to back.
  Value productSource =
      termCopy == TermCopy::Product
          ? add(planes.front().workspaceRow,
                mul(firstRow, KeyTermOperand::kWorkspaceWords))
          : Value();
  if (termCopy == TermCopy::Product && !barriers) {
    operand->copyEntries(workspace, productSource, planes.front().shared,
                         buffer(tile), engine.getThreadId(),
                         engine.getThreads());
    return;
  }
  // The tile's terms: `rows` floats per plane, which the padded workspace
  // rows always hold.
  int64_t planeBytes = rows * 4;
  Value target = termBase(buffer(tile));
  Value threadId = engine.getThreadId();
  if (termCopy != TermCopy::Threads) {
    // One thread moves each run with one bulk copy: its addresses are
    // uniform over the block, so the copy holds no per-thread registers
    // through the loop (per-thread cp.async addresses cost the head_dim 128
    // kernel ~8%, docs/kernel.md).
    auto leader = scf::IfOp::create(
        b, TypeRange{}, cmp(arith::CmpIPredicate::eq, threadId, index(0)),
        false);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(leader.thenBlock());
    Value barrier = elementPointer(barriers, buffer(tile));
    // (shared target, workspace source) of each run, all `runBytes` long.
    SmallVector<std::pair<Value, Value>> runs;
    int64_t runBytes = planeBytes;
    if (termCopy == TermCopy::Product) {
      runBytes = operand->bufferEntryBytes();
      runs.emplace_back(
          elementPointer(planes.front().shared,
                         operand->entryOffset(buffer(tile), index(0))),
          elementPointer(workspace, productSource));
    } else {
      for (auto [plane, terms] : llvm::enumerate(planes))
        runs.emplace_back(elementPointer(terms.shared, target),
                          elementPointer(workspace, runStart(plane)));
    }
    NVVM::MBarrierArriveExpectTxOp::create(
        b, Type(), barrier, i32(runs.size() * runBytes),
        NVVM::MemScopeKind::CTA, /*relaxed=*/false, Value());
    for (auto [shared, source] : runs)
      NVVM::CpAsyncBulkGlobalToSharedClusterOp::create(
          b, clusterPointer(shared), source, barrier, i32(runBytes), Value(),
          Value());
    return;
  }
  int64_t chunks = planeBytes / 16;
  auto copier = scf::IfOp::create(
      b, TypeRange{}, cmp(arith::CmpIPredicate::ult, threadId, index(chunks)),
      false);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(copier.thenBlock());
  Value part = mul(threadId, 4);
  Value partTarget = add(part, target);
  auto tokenType = nvgpu::DeviceAsyncTokenType::get(b.getContext());
  for (auto [plane, terms] : llvm::enumerate(planes))
    nvgpu::DeviceAsyncCopyOp::create(
        b, tokenType, terms.shared, ValueRange{partTarget}, workspace,
        ValueRange{add(runStart(plane), part)}, b.getIndexAttr(4), Value(),
        b.getUnitAttr());
}

void TileRing::createTermBarriers() {
  auto leader = scf::IfOp::create(
      b, TypeRange{},
      cmp(arith::CmpIPredicate::eq, engine.getThreadId(), index(0)), false);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(leader.thenBlock());
  for (int64_t stage = 0; stage < stages; ++stage)
    NVVM::MBarrierInitOp::create(b, elementPointer(barriers, index(stage)),
                                 i32(1), Value());
  // The bulk copies complete on the barriers through the async proxy.
  fenceSharedForAsyncProxy();
}

void TileRing::waitForTerms(Value tile) {
  // Stage s serves every stages-th tile from `first` on; the wait for its
  // k-th fill is on phase parity k % 2. A stage is refilled only after the
  // block barrier that follows every thread's wait on its previous fill, so
  // it is never two phases ahead of a waiter.
  Value fill = div(sub(tile, first), stages);
  Value parity = cmp(arith::CmpIPredicate::ne, rem(fill, 2), index(0));
  NVVM::MBarrierTryWaitParityOp::create(
      b, elementPointer(barriers, buffer(tile)),
      arith::ExtUIOp::create(b, b.getI32Type(), parity),
      i32(kBarrierSuspendHint));
}
