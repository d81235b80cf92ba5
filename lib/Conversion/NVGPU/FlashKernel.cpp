//===- FlashKernel.cpp - the mma.sync flash-attention forward schedule ----===//
//
// One thread block computes one tile of tile_m query rows of one (batch,
// head); each warp owns 16 x atoms of its rows. The forward kernel is a
// schedule over the components of lib/Conversion/NVGPU (docs/kernel.md,
// "Components"), per K/V tile j:
//
//   wait for tile j (cp.async group), barrier, issue the copy of tile
//   j + stages - 1 into the ring (TileRing), classify the tile and skip it
//   when the mask is empty there (RegionApplication), load the lane's key
//   terms (CopyEngine), S = Q K^T with ldmatrix + mma.sync (MmaSyncAtom),
//   the score region at each element of S (RegionApplication, masking only
//   on partial tiles), the running max and sum (OnlineSoftmax), O += P V
//   with P taken straight from the S accumulators (the C fragment of
//   m16n8k16 is the A fragment of the next mma once packed to 16 bits).
//
// and at the end O / l and the LSE (Epilogue). Which lane holds which query
// row and key column comes from FragmentLayout and FragmentLane.
//
// With a wgmma plan (sm_90a) the block is warp-specialised
// (FlashAttention-3's structure): one to three consumer warpgroups of 64
// query rows run the per-tile steps above, S = Q K^T as one wgmma per 16
// head dims with Q and K named by shared-memory descriptors, O += P V as
// one wgmma per 16 keys with P from the S registers (WarpgroupMmaAtom),
// taking turns at the tensor cores in rotation on named barriers
// (pingpong); a producer warpgroup
// after them streams K, V and the key terms through the ring with cp.async,
// or one of its threads with TMA (TensorMapCopy) and bulk copies, and hands
// each stage over on mbarriers (StagePipeline), with no block barrier per
// tile; with key_terms = "producer" its other warps compute each K tile's
// key terms from shared memory. setmaxnreg moves registers from the
// producer to the consumers. Q, K and V lie in the 128-byte swizzle's
// column blocks.
//
//===----------------------------------------------------------------------===//
#include "rbfc/Conversion/NVGPU/FlashKernel.h"

#include "rbfc/Conversion/NVGPU/DiagonalStaging.h"
#include "rbfc/Conversion/NVGPU/Epilogue.h"
#include "rbfc/Conversion/NVGPU/KeyTermOperand.h"
#include "rbfc/Conversion/NVGPU/KeyTermsKernel.h"
#include "rbfc/Conversion/NVGPU/OnlineSoftmax.h"
#include "rbfc/Conversion/NVGPU/RegionApplication.h"
#include "rbfc/Conversion/NVGPU/StagePipeline.h"
#include "rbfc/Conversion/NVGPU/TensorMapCopy.h"
#include "rbfc/Dialect/Attn/KeyBiasProduct.h"

#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Interfaces/FunctionInterfaces.h"
#include "llvm/ADT/StringSwitch.h"
#include "llvm/Support/Debug.h"

#include <cmath>
#include <optional>

#define DEBUG_TYPE "attn-flash-kernel"

using namespace mlir;
using namespace rbfc;

/// Registers a warp may spend on keeping its Q fragments resident.
static constexpr int64_t kResidentQueryRegisters = 32;
/// `bar.sync` (`sync`) or `bar.arrive` on the named barrier `id` of
/// `threads` threads. Inline PTX keeps the id a literal: LLVM merges two
/// warpgroups' branches into one op with the id in a register, and ptxas
/// then reserves all 16 barriers.
static void namedBarrier(ImplicitLocOpBuilder &b, bool sync, int64_t id,
                         int64_t threads) {
  std::string ptx = (Twine(sync ? "bar.sync " : "bar.arrive ") + Twine(id) +
                     ", " + Twine(threads) + ";")
                        .str();
  NVVM::InlinePtxOp::create(b, TypeRange{}, ValueRange{}, ValueRange{}, ptx,
                            Value{});
}

/// wgmma: the most consumer warpgroups a warp-specialised block has
/// (FlashAttention-3's 192-row query tiles at head_dim 64).
static constexpr int64_t kMaxConsumerWarpgroups = 3;
/// wgmma: the named barriers of the consumers (gpu.barrier is 0): their
/// turns at the tensor cores, one per consumer warpgroup, and after all of
/// them Q's arrival.
static constexpr int64_t kFirstTurnBarrier = 1;
static constexpr int64_t kQueryBarrier =
    kFirstTurnBarrier + kMaxConsumerWarpgroups;
/// wgmma: a warpgroup's O staged in its Q rows, published to its threads
/// (one barrier a consumer warpgroup).
static constexpr int64_t kFirstStagingBarrier = kQueryBarrier + 1;
/// A turn passes from one warpgroup to the next: its barrier counts the
/// warpgroup that waits and the one that arrives, however many consumers.
static constexpr int64_t kTurnBarrierThreads = 2 * kWarpgroupThreads;
/// A multiprocessor's 32-bit registers, and the most a thread may have.
static constexpr int64_t kRegisterFile = 65536;
static constexpr int64_t kMaxThreadRegisters = 255;
/// wgmma: the registers of a producer thread (setmaxnreg) with one block a
/// multiprocessor: its copies fit in 24 (FlashAttention-3's).
static constexpr int64_t kProducerRegisters = 24;
/// ... and where its warps compute key terms (key_terms = "producer"): the
/// ldmatrix and two mma.sync accumulators of the key norms spilled 4-64
/// bytes at head_dim 64 with 32 or 40, none with 48 (two consumer
/// warpgroups then take 224, one at two blocks a multiprocessor 208).
static constexpr int64_t kKeyTermProducerRegisters = 48;
/// key_terms = "producer": the producer warpgroup's warps that compute key
/// terms, all but warp 0, whose first thread issues the copies.
static constexpr int64_t kKeyTermWarps = kWarpsPerWarpgroup - 1;
/// wgmma: the most a consumer thread takes, FlashAttention-3's 240 beside
/// two consumer warpgroups (232 spilled at head_dim 128).
static constexpr int64_t kMaxConsumerRegisters = 240;

/// The registers each thread of a block of `blockThreads` threads holds at
/// launch with `blocks` blocks a multiprocessor: ptxas's cap, a multiple
/// of 8.
static int64_t launchRegisters(int64_t blockThreads, int64_t blocks = 1) {
  return std::min(kMaxThreadRegisters,
                  kRegisterFile / (blockThreads * blocks)) /
         8 * 8;
}

/// wgmma: the registers of a consumer thread (setmaxnreg), a multiple of 8
/// (setmaxnreg's unit), at most kMaxConsumerRegisters. setmaxnreg.inc waits
/// until the block's pool holds the registers it asks for, and the pool is
/// what the block was launched with (ptxas's cap for one block a
/// multiprocessor, 65536 / its threads to a multiple of 8) and what the
/// producer's setmaxnreg.dec gave back; not the rest of the register file.
/// Beside a producer of 24: 240 for one or two consumer warpgroups (launched
/// at 168: 384 x 168 = 128 x 24 + 256 x 240), 160 for three (launched at
/// 128, as FlashAttention-3's 192-row tiles at head_dim 64). A first
/// version that gave out the whole file hung at launch with a producer of
/// 32 (its consumers asked for 240: 1024 registers more than the pool).
/// With `blocks` blocks a multiprocessor each block's pool is that share of
/// the file: one consumer warpgroup beside a producer of 32 then takes 224
/// at two blocks (launched at 128).
static int64_t consumerRegisters(int64_t consumerWarpgroups,
                                 int64_t producerRegisters, int64_t blocks) {
  int64_t blockThreads = (consumerWarpgroups + 1) * kWarpgroupThreads;
  int64_t pool = launchRegisters(blockThreads, blocks) * blockThreads -
                 producerRegisters * kWarpgroupThreads;
  return std::min(kMaxConsumerRegisters,
                  pool / (consumerWarpgroups * kWarpgroupThreads) / 8 * 8);
}

/// The blocks a plan's `blocks_per_sm` puts on a multiprocessor (0, the
/// default, is one), which share its register file and shared memory.
static int64_t residentBlocks(int64_t blocksPerSM) {
  return std::max<int64_t>(1, blocksPerSM);
}

/// wgmma: a producer thread's registers (setmaxnreg), whether its warps
/// compute key terms or only issue the copies.
static int64_t producerThreadRegisters(bool computesKeyTerms) {
  return computesKeyTerms ? kKeyTermProducerRegisters : kProducerRegisters;
}

/// The registers a wgmma thread needs beside one instruction's f32
/// accumulators (descriptors, addresses, the loop's state): ptxas asked
/// for 26 more than 128 accumulators (tile_n 256).
static constexpr int64_t kWgmmaRegisterMargin = 32;
/// The key-terms prologue's entry is the kernel's with this suffix.
static constexpr llvm::StringLiteral kKeyTermsSuffix = "_key_terms";

namespace {

/// The schedule of the flash kernel, emitted into a block that `block` has
/// entered, whose lane holds `fragment`'s rows and columns.
class FlashSchedule : public KernelEmitter {
public:
  FlashSchedule(ImplicitLocOpBuilder &b, attn::AttentionOp op,
                const ForwardConfig &config, const KeyTermWorkspace &workspace,
                ForwardBlock &block, FragmentLane &fragment)
      : KernelEmitter(b), op(op), config(config), workspace(workspace),
        block(block), args(block.args), fragment(fragment),
        scoreLayout(config.atoms(), config.tileN / 8),
        outputLayout(config.atoms(), config.headDim / 8),
        atoms(b, config.elementType), warpgroupAtoms(b, config.elementType),
        tile(b, config.headDim, config.wgmma ? config.tileN : 0),
        queryTile(b, config.headDim, config.wgmma ? config.tileM : 0),
        copies(b, tile, config.elementType, config.copyThreads(),
               config.warpSpecialized
                   ? sub(block.threadId, index(config.threads()))
                   : block.threadId),
        queryCopies(b, queryTile, config.elementType, config.threads(),
                    block.threadId),
        tensorCopies(config.tensorMapCopies ? std::optional<TensorMapCopy>(
                                                  std::in_place, b, tile,
                                                  config.tileN, config.headDim)
                                            : std::nullopt),
        regions(b, op, args.sizes, args.params, args.captures, block.batch,
                block.head, block.lane, config.headDim) {
    if (config.keyTerms == KeyTermSource::Product)
      termOperand.emplace(b, config.tileN, config.stages);
    stagedLoads = DiagonalStaging::stagedLoads(op);
  }

  /// Emits the kernel's body; the bytes of dynamic shared memory it uses.
  FailureOr<int64_t> build();

private:
  /// Which query tile the block computes, the rows its lane holds and the
  /// lane's ldmatrix offsets.
  void placeQueryTile();
  /// Q, the K/V ring and the key terms' ring and barriers.
  void carveSharedMemory(SharedMemoryArena &shared);
  /// The K/V tiles that may hold a kept key for this query tile:
  /// [firstTile, endTile).
  LogicalResult findLiveTiles();
  /// Q, then the first stages - 1 K/V tiles, one commit group each.
  void loadFirstTiles(TileRing &ring);
  /// The product's zeros and ones in shared memory, written before any
  /// copy into their rows so that no zero lands on an entry (a fence and a
  /// barrier before the first wgmma publish them), then Q's tile by
  /// cp.async as one commit group.
  void copyQueryTile();
  /// The per-query values the loop reads: Q's fragments when they stay
  /// resident, ||q||^2, q_scale and the shifted accumulators' start.
  LogicalResult prepareQueries();
  /// The loop over the live K/V tiles; its results are O, then m and l per
  /// lane row.
  FailureOr<scf::ForOp> emitLoop(TileRing &ring);
  /// O, m, l after the K/V tile in ring buffer `buffer`, whose first key
  /// is `kvLo`, from `state` (live tiles only); `partial`: the tile needs
  /// the mask or the kv_len bound per element.
  FailureOr<SmallVector<Value>> computeTile(TileRing &ring, Value buffer,
                                            Value kvLo, Value partial,
                                            ValueRange state,
                                            ArrayRef<Value> termOffsets);
  /// Per lane row as a tile starts: the exponent's shift, and with shifted
  /// mma.sync accumulators the row's S start (-shift / c).
  void tileShifts(OnlineSoftmax &softmax, SmallVector<Value> &oldShift,
                  SmallVector<Value> &rowStart);
  /// The lane's key terms of the tile in ring buffer `buffer`.
  struct KeyTerms {
    SmallVector<ColumnTermPair> biases, norms;
  };
  KeyTerms loadKeyTerms(TileRing &ring, Value buffer,
                        ArrayRef<Value> termOffsets);
  /// The scores of the tile whose first key is `kvLo` from its S = Q K^T
  /// `dots`: the score region, shifted (wgmma) by the lane rows' `oldShift`
  /// where the scores are shifted, and on `partial` tiles the mask and the
  /// kv_len bound, per element.
  FailureOr<SmallVector<Accumulator>>
  applyScoreRegion(ArrayRef<Accumulator> dots, const KeyTerms &terms,
                   Value kvLo, Value partial, ArrayRef<Value> oldShift);

  /// sm_90: the flash kernel may start before the key-terms prologue ends
  /// and waits for it before it first reads the workspace.
  bool waitsForKeyTerms() const {
    return workspace.inWorkspace() && config.programmaticLaunch;
  }
  /// The A registers of Q rows of `atom`, head dims [16 slice, 16 slice + 16).
  OperandRegisters loadQueryFragment(int64_t atom, int64_t slice);
  /// Q fragments stay in registers when small; otherwise they are reloaded
  /// from shared memory for every K tile (as FlashAttention-2 does). wgmma
  /// reads Q from shared memory.
  bool queryResident() const {
    return !config.wgmma &&
           config.atoms() * config.dimSlices() * 4 <= kResidentQueryRegisters;
  }
  /// mma.sync and wgmma_cooperative: every thread copies and computes, a
  /// block barrier per tile.
  LogicalResult emitCooperative(TileRing &ring);
  /// wgmma: the block is one to three consumer warpgroups, which compute,
  /// and a producer warpgroup after them, which streams K and V (and the key
  /// terms) through the ring with cp.async and hands each stage over on a
  /// StagePipeline: no block barrier per tile, so a consumer starts a tile
  /// as soon as it has landed (FlashAttention-3's warp specialisation).
  /// The consumers load Q. setmaxnreg gives the registers to the consumers.
  LogicalResult emitWarpSpecialized(TileRing &ring);
  /// The hand-off of the ring's stages, K and V apart (FlashAttention-3's
  /// two pipelines): with the intra-warpgroup overlap a consumer still
  /// reads a tile's V for a whole tile after it is done with its K, which
  /// the producer refills meanwhile.
  struct KeyValuePipelines {
    StagePipeline keys, values;
    /// key_terms = "producer": a stage's terms are in shared memory (full),
    /// and every consumer thread has loaded them (empty).
    std::optional<StagePipeline> terms;
    /// The K stages hold term planes that the producer copies: every
    /// consumer thread releases them, not one lane a warp.
    bool keysReleasedByEveryThread = false;
  };
  void emitProducerLoop(TileRing &ring, KeyValuePipelines &pipelines);
  /// The producer's loop with TMA: one thread waits for each stage to be
  /// released, announces the bytes of its K and V tiles (and its key
  /// terms' bulk copies) on the full barrier and issues the copies, which
  /// complete the barrier's phase themselves.
  void emitTensorMapProducerLoop(TileRing &ring, KeyValuePipelines &pipelines);
  /// key_terms = "producer": whether the producer warpgroup computes key
  /// terms (the spec has some).
  bool producerComputesKeyTerms() const {
    return config.keyTerms == KeyTermSource::Producer && workspace.planes();
  }
  int64_t producerRegisters() const {
    return producerThreadRegisters(producerComputesKeyTerms());
  }
  /// ... the loop of its warps 1-3: per tile, once its K landed, each key's
  /// squared norm from the K tile and the key_bias region, stored in the
  /// stage's term planes, and an arrival on the stage's terms barrier.
  LogicalResult emitKeyTermLoop(TileRing &ring, KeyValuePipelines &pipelines);
  /// ... where a term reads ||k||^2: the norms of the K tile at element
  /// `base` by mma.sync, 16 keys a warp at a time (`worker` the thread
  /// among the term warps), and the terms from them into the planes at
  /// `termBase`, the tile's first key being kv_idx `kvLo`.
  LogicalResult storeKeyNormTerms(RegionApplication &termRegions, Value worker,
                                  Value base, Value termBase, Value kvLo);
  /// ... where none does: a key a thread.
  LogicalResult storeKeyTermsByKey(RegionApplication &termRegions, Value worker,
                                   Value termBase, Value kvLo);
  /// The terms of the key whose kv_idx is `kvIdx` and squared norm
  /// `keyNorm` (null when no term reads it) into the term planes at
  /// `offset`: zeros past kv_len. `termRegions` evaluates the regions
  /// with the workspace's writerParams.
  LogicalResult storeKeyTerms(RegionApplication &termRegions, Value offset,
                              Value kvIdx, Value keyNorm);
  /// Consumer: waits until iteration `iteration`'s K tile, and its key
  /// terms where the producer computes them, are in shared memory.
  void awaitKeys(KeyValuePipelines &pipelines, Value iteration);
  /// Consumer: the warp releases iteration `iteration`'s K tile (and its
  /// key terms) where `releases` (one lane a warp), or every thread where
  /// it loaded terms from the stage.
  void releaseKeys(KeyValuePipelines &pipelines, Value iteration,
                   Value releases);
  /// The warp-specialised consumers' loop carries each plane's workspace
  /// offset (every thread loads its terms from global memory).
  bool consumersCarryTermOffsets() const {
    return config.keyTerms == KeyTermSource::Global;
  }
  /// Where shifted scores take the row's shift (shiftToDot): wgmma
  /// accumulates in place, so its score region subtracts it; mma.sync
  /// starts S at -shift / c.
  bool shiftsInScoreRegion() const { return shiftToDot && config.wgmma; }
  /// The key terms travel with the tiles by bulk copies: the planes', or
  /// with TMA the product's entries.
  bool bulkKeyTerms() const {
    return workspace.planes() && (config.keyTerms == KeyTermSource::Bulk ||
                                  (config.keyTerms == KeyTermSource::Product &&
                                   config.tensorMapCopies));
  }
  /// The arrivals that fill a stage's K (`keys`) or V: per producer thread
  /// with cp.async; with TMA, the copying thread's one, and for K one more
  /// for the key terms' bulk copies, which announce their own bytes.
  int64_t fullBarrierArrivals(bool keys) const;
  /// The consumers' loop, one tile after the other: a tile's K and V go
  /// back to the producer once its O += P V completed. Its results are
  /// O, m, l.
  FailureOr<scf::ForOp> emitConsumerLoop(TileRing &ring,
                                         KeyValuePipelines &pipelines);
  /// ... with FlashAttention-3's intra-warpgroup overlap (plan `overlap`):
  /// a live tile issues its S = Q K^T together with the O += P V of the
  /// live tile before it (the deferred product), and computes its softmax
  /// while that product runs; O is rescaled after it. K goes back once S
  /// completed, V once its product did. The loop's results are O, m, l
  /// and the product still deferred after the last tile.
  FailureOr<scf::ForOp>
  emitOverlappedConsumerLoop(TileRing &ring, KeyValuePipelines &pipelines);
  /// The O += P V that a consumer issues with the next live tile's S:
  /// whether there is one, the pipeline iteration of its V tile and P's
  /// A registers (one per 16 keys).
  struct DeferredProduct {
    Value pending, iteration;
    SmallVector<OperandRegisters> weights;
  };
  SmallVector<Value> flatten(const DeferredProduct &deferred);
  /// The deferred product at the end of `state`, which then drops it.
  DeferredProduct takeDeferredProduct(ValueRange &state);
  /// O, m, l and the product it defers after the live tile `iteration`
  /// (ring buffer `buffer`, first key `kvLo`) from `state` and `deferred`.
  FailureOr<SmallVector<Value>> computeOverlappedTile(
      TileRing &ring, KeyValuePipelines &pipelines, Value buffer, Value kvLo,
      Value partial, Value iteration, ValueRange state,
      const DeferredProduct &deferred, ArrayRef<Value> termOffsets);
  /// Issues the deferred product, if any, after S = Q K^T (`dots`) in the
  /// warpgroup's turn, passes the turn and waits for S alone.
  void issueDeferredProductAndAwaitScores(const DeferredProduct &deferred,
                                          ArrayRef<Value> valueDescriptors,
                                          SmallVector<Accumulator> &output,
                                          SmallVector<Accumulator> &dots);
  /// `state` (O, m, l, ...) with O after the deferred product, if any,
  /// completed; its stage released.
  SmallVector<Value> completeDeferredProduct(TileRing &ring,
                                             KeyValuePipelines &pipelines,
                                             const DeferredProduct &deferred,
                                             ValueRange state);
  /// A tile of the loop: its ring buffer, its first key, whether it may
  /// hold a kept key and whether it needs the mask or the kv_len bound per
  /// element.
  struct LoopTile {
    Value buffer, kvLo, live, partial;
  };
  FailureOr<LoopTile> classifyLoopTile(TileRing &ring, Value tile);
  /// O, m, l after the K/V tile `tile` of the ring from `state`: the tile
  /// classified, computed when live, passed through when not.
  FailureOr<SmallVector<Value>> computeLoopTile(TileRing &ring, Value tile,
                                                ValueRange state,
                                                ArrayRef<Value> termOffsets);
  /// The initial loop state: O = 0, m = -inf, l = 0, then with
  /// `carryTermOffsets` each plane's workspace offset of the first tile's
  /// terms.
  SmallVector<Value> initialLoopState(bool carryTermOffsets);
  /// The workspace offsets of the tile's key terms at the end of a loop's
  /// `state` when the loop carries them, which `state` then drops.
  SmallVector<Value> takeTermOffsets(ValueRange &state, bool carried);
  /// A loop over the tiles [firstTile, endTile): its tile, its state and,
  /// when carried, the tile's term offsets, which the state then lacks.
  struct TileLoop {
    scf::ForOp loop;
    Value tile;
    ValueRange state;
    SmallVector<Value> termOffsets;
  };
  /// Starts the tile loop carrying `init` and leaves the insertion point at
  /// the start of its body (the caller guards the insertion point).
  TileLoop beginTileLoop(ArrayRef<Value> init, bool carriedKeyTerms);
  /// One lane a warp arrives on a pipeline's empty barrier.
  Value firstLaneOfWarp() {
    return cmp(arith::CmpIPredicate::eq, block.lane, index(0));
  }
  /// Yields O, m, l and the next tile's term offsets.
  void yieldLoopState(ArrayRef<Value> next, ArrayRef<Value> termOffsets);
  /// O / l and the LSE from O, m, l.
  LogicalResult finishAndStore(ValueRange results);
  /// wgmma: the warpgroups that compute.
  int64_t consumerWarpgroups() const {
    return config.warps / kWarpsPerWarpgroup;
  }
  /// The consumer warpgroups take turns at the tensor cores
  /// (FlashAttention-3's pingpong), in rotation: each issues its
  /// S = Q K^T and its O += P V only after the warpgroup before it issued
  /// its previous product, so one warpgroup's softmax runs while the
  /// others' products do. Named barrier kFirstTurnBarrier + g is
  /// warpgroup g's turn, which it passes to warpgroup (g + 1) mod n; the
  /// last warpgroup gives warpgroup 0 the first one.
  bool pingpong() const {
    return config.warpSpecialized && consumerWarpgroups() > 1;
  }
  void startPingpong();
  /// Emits `body(own, next)` for the warp's warpgroup: the named barrier
  /// of its turn and of the next warpgroup's.
  void forOwnWarpgroup(llvm::function_ref<void(int64_t, int64_t)> body);
  void awaitTensorCoreTurn();
  void passTensorCoreTurn();
  SmallVector<Value> computeQueryNorms();
  /// S = Q K^T for the K tile at `keyBase` of ring buffer `buffer`, its
  /// accumulators starting at initialScores.
  SmallVector<Accumulator> computeScores(Value keyBase,
                                         ArrayRef<Value> rowStart,
                                         const KeyTerms &terms, Value buffer);
  /// The S accumulators before S = Q K^T: `rowStart` per lane row (wgmma:
  /// unset, the first product overwrites them; where the key bias starts
  /// the scores, each column's key_bias / q_scale from `terms`).
  SmallVector<Accumulator> initialScores(ArrayRef<Value> rowStart,
                                         const KeyTerms &terms);
  /// computeScores by one wgmma per 16 head dims over the warpgroup's 64
  /// rows, Q and K named by descriptors, and with key_terms = "product"
  /// one more for the key terms of ring buffer `buffer`.
  void computeScoresByWgmma(Value keyBase, Value buffer,
                            MutableArrayRef<Accumulator> scores);
  /// wgmma: per 16 head dims the descriptors of Q and of the K tile at
  /// `keyBase`, formed before the fence: an operand register written
  /// between the fence and its wgmma makes ptxas add a warpgroup.arrive.
  SmallVector<std::pair<Value, Value>> scoreDescriptors(Value keyBase);
  /// With key_terms = "product", the descriptors of the ones and of ring
  /// buffer `buffer`'s key terms, the A and B of S's one more k; else none.
  SmallVector<Value> termDescriptors(Value buffer);
  /// S = Q K^T and, with `terms`, its one more k.
  void issueScores(ArrayRef<std::pair<Value, Value>> descriptors,
                   ArrayRef<Value> terms, MutableArrayRef<Accumulator> scores);
  /// wgmma: per 16 keys the descriptor of the V tile at `valueBase`.
  SmallVector<Value> valueDescriptors(Value valueBase);
  void issueValueProducts(ArrayRef<OperandRegisters> weights,
                          ArrayRef<Value> descriptors,
                          MutableArrayRef<Accumulator> output);
  /// The softmax state of the block's query rows, m and l of a loop's
  /// `state` (O, m, l, ...). With an LSE output the
  /// row sums add the f32 weights before they are rounded for P V, each
  /// lane over its own columns: the LSE is then exact, not off by the
  /// rounding (up to 2^-8 in bf16); so do the wgmma kernels, whose tensor
  /// cores an mma.sync per 16 keys would take from the wgmma. Otherwise
  /// the tensor cores sum exactly the rounded weights P V uses, complete
  /// over the lane group.
  OnlineSoftmax softmaxState(ValueRange state) {
    int64_t rows = scoreLayout.laneRows();
    ValueRange rowMaxAndSum = state.drop_front(4 * outputLayout.size());
    return OnlineSoftmax(b, scoreLayout, outputLayout,
                         rowMaxAndSum.take_front(rows),
                         rowMaxAndSum.slice(rows, rows), config.softmax,
                         /*unroundedSums=*/config.hasLse || config.wgmma);
  }
  /// O += P V for the V tile at `valueBase`, and the weights' row sums.
  SmallVector<Accumulator> accumulateValues(ArrayRef<Accumulator> weights,
                                            ArrayRef<Accumulator> output,
                                            Value valueBase,
                                            OnlineSoftmax &softmax);
  /// accumulateValues by one wgmma per 16 keys, P from the registers of S
  /// and V named by a descriptor (MN-major: head dims are V's rows).
  SmallVector<Accumulator>
  accumulateValuesByWgmma(ArrayRef<Accumulator> weights,
                          ArrayRef<Accumulator> output, Value valueBase,
                          OnlineSoftmax &softmax);
  /// The P registers of `atom`'s 16 keys from 16 keySlice, the A operand
  /// of O += P V.
  OperandRegisters weightOperand(ArrayRef<Accumulator> weights, int64_t atom,
                                 int64_t keySlice);
  /// Adds the weights of the 16 keys from 16 keySlice to the row sums
  /// (OnlineSoftmax), by mma with their P registers `a` (one per atom) or
  /// in f32.
  void addRowSums(OnlineSoftmax &softmax, ArrayRef<Accumulator> weights,
                  ArrayRef<OperandRegisters> a, int64_t keySlice);
  /// O / l and, with an LSE output, the log-sum-exp, for the rows inside
  /// q_len.
  LogicalResult storeResults(ArrayRef<Accumulator> output,
                             OnlineSoftmax &softmax);
  /// wgmma: O through the warpgroup's rows of the Q tile and out in
  /// 16-byte chunks (Epilogue::stageRow, copyStagedRows).
  void storeOutputThroughQueryRows(Epilogue &epilogue,
                                   ArrayRef<Accumulator> output,
                                   ArrayRef<Value> scales,
                                   const GlobalRows &outputRows);

  attn::AttentionOp op;
  const ForwardConfig &config;
  const KeyTermWorkspace &workspace;
  ForwardBlock &block;
  const ForwardArgs &args;
  FragmentLane &fragment;
  /// S = Q K^T: query rows, key columns; O: query rows, head_dim columns.
  FragmentLayout scoreLayout, outputLayout;
  MmaSyncAtom atoms;
  WarpgroupMmaAtom warpgroupAtoms;
  /// K and V tiles, and Q's, in shared memory (the same row-major layout
  /// for mma.sync; wgmma's column blocks depend on the tile's rows).
  SwizzledTile tile, queryTile;
  CopyEngine copies, queryCopies;
  /// With TMA copies: the producer thread's copies of K and V tiles.
  std::optional<TensorMapCopy> tensorCopies;
  RegionApplication regions;
  /// key_terms = "product": the key terms' operand of S = Q K^T and its
  /// ones (in sharedKeyBias).
  std::optional<KeyTermOperand> termOperand;
  /// The score's reads of a relative-position table, through each warp's
  /// diagonal windows.
  SmallVector<attn::LoadOp> stagedLoads;
  std::optional<DiagonalStaging> diagonals;

  /// The block's first query row.
  Value qLo;
  Value sharedQuery, sharedKey, sharedValue, sharedKeyBias, sharedKeyNorm;
  /// With bulk copies, one mbarrier (i64) per ring stage tracks the stage's
  /// key terms. They live in the dynamic shared memory: a static __shared__
  /// variable would overlap it, as MLIR bases dynamic shared memory on a
  /// one-byte static one.
  Value keyTermBarriers;
  /// wgmma: the mbarriers of the K pipeline, then of the V pipeline.
  Value pipelineBarriers;
  /// laneChunkOffsets of the lane's Q (row 0 of atom 0), K and V reads.
  SmallVector<Value> queryOffsets, keyOffsets, valueOffsets;
  /// Per lane row r (atom r / 2, half r % 2): q_idx and ||q||^2.
  SmallVector<Value> rowIdx, rowQueryNorm;
  /// Q's A registers, when resident: atom-major, then head_dim slice.
  SmallVector<Value> queryFragments;
  /// q_scale, which the verifier keeps uniform over a (batch, head).
  Value qScale;
  /// -1 / c when the score in log2 units is c * dot + t, t free of the dot
  /// (scaled dot product plus biases: RBF, ALiBi, relative biases), else
  /// null. The score region then yields the score minus the row's shift,
  /// and the exponent needs no subtraction per score: mma.sync starts each
  /// row's S accumulators at -shift / c (its C operand is a register
  /// quad, shared by a row's slices); wgmma accumulates in place, where
  /// that start would cost a move per accumulator, so its region subtracts
  /// the shift, fused with c * dot into one FFMA.
  Value shiftToDot;
  /// The K tiles the loop visits: [firstTile, endTile).
  Value firstTile, endTile;
  /// wgmma: the descriptor of the warpgroup's 64 rows of Q, head dims 0-63.
  Value queryDescriptor;
  /// wgmma: the warp's warpgroup (index).
  Value warpgroup;
};

} // namespace

FailureOr<int64_t> FlashSchedule::build() {
  LLVM_DEBUG(llvm::dbgs() << "S: " << scoreLayout << "\nO: " << outputLayout
                          << "\n");
  placeQueryTile();
  // wgmma's swizzled column blocks start 1024-byte aligned.
  SharedMemoryArena shared(b, config.wgmma ? 1024 : 16);
  carveSharedMemory(shared);
  if (failed(regions.fixBounds(RegionApplication::FixedAxis::Queries, qLo,
                               config.tileM)) ||
      failed(findLiveTiles()))
    return failure();
  // With TMA the ring's copies are the term planes': TensorMapCopy brings
  // K and V.
  SmallVector<TileRing::Stream> streams;
  if (!config.tensorMapCopies)
    streams = {{sharedKey, ForwardBlock::rows(args.k, block.kBase)},
               {sharedValue, ForwardBlock::rows(args.v, block.vBase)}};
  TileRing ring(copies, config.stages, config.tileN, args.sizes.kvLen,
                firstTile, endTile, std::move(streams));
  if (termOperand) {
    // With TMA one bulk copy a tile completes on K's full barrier.
    ring.setTerms(args.workspace, {{sharedKeyBias, block.keyTermRows.front()}},
                  TileRing::TermCopy::Product,
                  config.tensorMapCopies ? pipelineBarriers : Value(),
                  &*termOperand);
  } else if (workspace.inWorkspace() &&
             config.keyTerms != KeyTermSource::Global) {
    SmallVector<TileRing::TermPlane> planes;
    for (auto [terms, plane] :
         {std::pair(sharedKeyBias, workspace.keyBiasPlane),
          std::pair(sharedKeyNorm, workspace.keyNormPlane)})
      if (plane >= 0)
        planes.push_back({terms, block.keyTermRows[plane]});
    // With TMA the terms' bulk copies complete on the stage's full barrier
    // (the first `stages` of the pipeline's), beside K and V.
    ring.setTerms(args.workspace, std::move(planes),
                  config.keyTerms == KeyTermSource::Bulk
                      ? TileRing::TermCopy::Bulk
                      : TileRing::TermCopy::Threads,
                  config.tensorMapCopies ? pipelineBarriers : keyTermBarriers);
  }
  if (failed(config.warpSpecialized ? emitWarpSpecialized(ring)
                                     : emitCooperative(ring)))
    return failure();
  gpu::ReturnOp::create(b);
  return shared.size();
}

LogicalResult FlashSchedule::emitCooperative(TileRing &ring) {
  loadFirstTiles(ring);
  if (failed(prepareQueries()))
    return failure();
  FailureOr<scf::ForOp> loop = emitLoop(ring);
  if (failed(loop))
    return failure();
  // Drain the cp.async groups still in flight (empty ones) before exit.
  NVVM::CpAsyncWaitGroupOp::create(b, 0);
  return finishAndStore(loop->getResults());
}

LogicalResult FlashSchedule::finishAndStore(ValueRange results) {
  int64_t outputValues = 4 * outputLayout.size();
  OnlineSoftmax softmax = softmaxState(results);
  softmax.finish();
  return storeResults(
      FragmentLayout::unflatten(results.take_front(outputValues)), softmax);
}

LogicalResult FlashSchedule::emitWarpSpecialized(TileRing &ring) {
  // The key terms' bulk copies complete on the full barriers of K, the
  // pipeline's first (TileRing::setTerms).
  bool termPlanes = ring.carriesTermPlanes();
  KeyValuePipelines pipelines{
      StagePipeline(b, pipelineBarriers, 0, config.stages,
                    fullBarrierArrivals(/*keys=*/true),
                    termPlanes ? config.threads() : config.warps),
      StagePipeline(b, pipelineBarriers,
                    StagePipeline::barrierCount(config.stages), config.stages,
                    fullBarrierArrivals(/*keys=*/false), config.warps),
      std::nullopt, termPlanes};
  for (StagePipeline *pipeline : {&pipelines.keys, &pipelines.values})
    pipeline->initialize(block.threadId,
                         /*asyncCopies=*/config.tensorMapCopies);
  if (producerComputesKeyTerms()) {
    pipelines.terms.emplace(
        b, pipelineBarriers, 2 * StagePipeline::barrierCount(config.stages),
        config.stages, kKeyTermWarps * kThreadsPerWarp, config.threads());
    pipelines.terms->initialize(block.threadId, /*asyncCopies=*/false);
  }
  Value consumer =
      cmp(arith::CmpIPredicate::ult, block.threadId, index(config.threads()));
  {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(
        scf::IfOp::create(b, TypeRange{}, consumer, false).thenBlock());
    // The producer's bulk copies write elsewhere than the zeros and ones.
    copyQueryTile();
  }
  // Launched early, the kernel waits for the key-terms prologue before the
  // producer copies or the consumers load its terms.
  if (waitsForKeyTerms())
    NVVM::GriddepcontrolOp::create(b, NVVM::GridDepActionKind::wait);
  // The pipeline's barriers are initialised for every thread.
  gpu::BarrierOp::create(b);
  auto roles = scf::IfOp::create(b, TypeRange{}, consumer, true);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(roles.elseBlock());
  NVVM::SetMaxRegisterOp::create(b, producerRegisters(),
                                 NVVM::SetMaxRegisterAction::decrease);
  if (config.tensorMapCopies)
    emitTensorMapProducerLoop(ring, pipelines);
  else
    emitProducerLoop(ring, pipelines);
  if (producerComputesKeyTerms() && failed(emitKeyTermLoop(ring, pipelines)))
    return failure();
  b.setInsertionPointToStart(roles.thenBlock());
  NVVM::SetMaxRegisterOp::create(
      b,
      consumerRegisters(consumerWarpgroups(), producerRegisters(),
                        residentBlocks(config.blocksPerSM)),
      NVVM::SetMaxRegisterAction::increase);
  NVVM::CpAsyncWaitGroupOp::create(b, 0);
  warpgroupAtoms.fenceCopies();
  namedBarrier(b, /*sync=*/true, kQueryBarrier, config.threads());
  if (failed(prepareQueries()))
    return failure();
  if (!config.overlap) {
    FailureOr<scf::ForOp> loop = emitConsumerLoop(ring, pipelines);
    if (failed(loop))
      return failure();
    return finishAndStore((*loop)->getResults());
  }
  FailureOr<scf::ForOp> loop = emitOverlappedConsumerLoop(ring, pipelines);
  if (failed(loop))
    return failure();
  // The loop's results end with the term offsets it carried, before them
  // the deferred product.
  ValueRange results = (*loop)->getResults();
  takeTermOffsets(results, consumersCarryTermOffsets());
  DeferredProduct deferred = takeDeferredProduct(results);
  return finishAndStore(
      completeDeferredProduct(ring, pipelines, deferred, results));
}

void FlashSchedule::emitProducerLoop(TileRing &ring,
                                     KeyValuePipelines &pipelines) {
  // With more than two stages, stages - 2 tiles stay in flight behind the
  // one being issued: tile j - ahead is published once tile j is issued,
  // and the wait for the stage of tile j (the consumers' release of tile
  // j - stages) still comes one tile before the consumers need tile
  // j - ahead. With two stages a tile is published as soon as it lands.
  // K and V of a tile travel in one commit group, so a stage is refilled
  // once both were released.
  int64_t ahead = config.stages - 2;
  auto publish = [&](Value iteration, int64_t pending) {
    NVVM::CpAsyncWaitGroupOp::create(b, pending);
    warpgroupAtoms.fenceCopies();
    pipelines.keys.arriveFull(iteration);
    pipelines.values.arriveFull(iteration);
  };
  {
    auto loop = scf::ForOp::create(b, firstTile, endTile, index(1));
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(loop.getBody());
    Value iteration = sub(loop.getInductionVar(), firstTile);
    pipelines.keys.waitEmpty(iteration);
    pipelines.values.waitEmpty(iteration);
    ring.issue(loop.getInductionVar());
    NVVM::CpAsyncCommitGroupOp::create(b);
    if (ahead == 0) {
      publish(iteration, 0);
    } else {
      auto behind = scf::IfOp::create(
          b, TypeRange{},
          cmp(arith::CmpIPredicate::uge, iteration, index(ahead)),
          /*withElseRegion=*/false);
      b.setInsertionPointToStart(behind.thenBlock());
      publish(sub(iteration, index(ahead)), ahead);
    }
  }
  if (ahead == 0)
    return;
  // The last `ahead` tiles (fewer when the loop was shorter).
  Value count = sub(endTile, firstTile);
  Value drained = arith::MaxSIOp::create(b, sub(count, index(ahead)), index(0));
  NVVM::CpAsyncWaitGroupOp::create(b, 0);
  warpgroupAtoms.fenceCopies();
  auto drain = scf::ForOp::create(b, drained, count, index(1));
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(drain.getBody());
  pipelines.keys.arriveFull(drain.getInductionVar());
  pipelines.values.arriveFull(drain.getInductionVar());
}

int64_t FlashSchedule::fullBarrierArrivals(bool keys) const {
  if (!config.tensorMapCopies)
    return config.copyThreads();
  return 1 + (keys && bulkKeyTerms());
}

void FlashSchedule::emitTensorMapProducerLoop(TileRing &ring,
                                              KeyValuePipelines &pipelines) {
  // The other producer threads have nothing to do: their warps leave
  // once they gave their registers up.
  auto issuer = scf::IfOp::create(
      b, TypeRange{},
      cmp(arith::CmpIPredicate::eq, copies.getThreadId(), index(0)),
      /*withElseRegion=*/false);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(issuer.thenBlock());
  auto loop = scf::ForOp::create(b, firstTile, endTile, index(1));
  b.setInsertionPointToStart(loop.getBody());
  Value tile = loop.getInductionVar();
  Value iteration = sub(tile, firstTile);
  Value base = ring.tileBase(ring.buffer(tile));
  Value firstRow = mul(tile, config.tileN);
  // K first: the consumers release it a tile before V, and need it first.
  for (auto [pipeline, map, shared] :
       {std::tuple(&pipelines.keys, args.keyMap, sharedKey),
        std::tuple(&pipelines.values, args.valueMap, sharedValue)}) {
    pipeline->waitEmpty(iteration);
    pipeline->arriveFullExpecting(iteration, tensorCopies->tileBytes());
    tensorCopies->copyTile(map, shared, base, firstRow, block.kvHead,
                           block.batch, pipeline->fullBarrier(iteration));
    if (pipeline == &pipelines.keys && bulkKeyTerms())
      ring.issue(tile);
  }
}

LogicalResult FlashSchedule::emitKeyTermLoop(TileRing &ring,
                                             KeyValuePipelines &pipelines) {
  Value producerThread = copies.getThreadId();
  auto workers = scf::IfOp::create(
      b, TypeRange{},
      cmp(arith::CmpIPredicate::uge, producerThread, index(kThreadsPerWarp)),
      /*withElseRegion=*/false);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(workers.thenBlock());
  Value worker = sub(producerThread, index(kThreadsPerWarp));
  SmallVector<Value> termParams = workspace.writerParams(b, args.params);
  RegionApplication termRegions(b, op, args.sizes, termParams, args.captures,
                                block.batch, block.head, block.lane,
                                config.headDim);
  auto loop = scf::ForOp::create(b, firstTile, endTile, index(1));
  b.setInsertionPointToStart(loop.getBody());
  Value tile = loop.getInductionVar();
  Value iteration = sub(tile, firstTile);
  Value buffer = ring.buffer(tile);
  Value base = ring.tileBase(buffer);
  Value termBase = ring.termBase(buffer);
  Value kvLo = mul(tile, config.tileN);
  pipelines.keys.waitFull(iteration);
  pipelines.terms->waitEmpty(iteration);
  LogicalResult stored =
      workspace.needsKeyNorm
          ? storeKeyNormTerms(termRegions, worker, base, termBase, kvLo)
          : storeKeyTermsByKey(termRegions, worker, termBase, kvLo);
  if (failed(stored))
    return failure();
  pipelines.terms->arriveFull(iteration);
  return success();
}

LogicalResult FlashSchedule::storeKeyNormTerms(RegionApplication &termRegions,
                                               Value worker, Value base,
                                               Value termBase, Value kvLo) {
  // A warp a 16-key block at a time (warp-uniform bounds): per 16 head
  // dims one ldmatrix.x4 of the block's K rows is both mma.sync's A and,
  // by halves, its B for keys 0-7 and 8-15, so K_blk K_blk^T's diagonal
  // (the squared norms, f32 sums of exact products) lands in the lanes
  // where the C fragment's column is its row.
  OpBuilder::InsertionGuard guard(b);
  Value warp = div(worker, kThreadsPerWarp);
  Value lane = rem(worker, kThreadsPerWarp);
  int64_t keyBlocks = config.tileN / kAtomRows;
  auto blocks =
      scf::ForOp::create(b, warp, index(keyBlocks), index(kKeyTermWarps));
  b.setInsertionPointToStart(blocks.getBody());
  Value firstKey = mul(blocks.getInductionVar(), kAtomRows);
  // Offsets that depend on the block are not held in registers across
  // the loops, where the producer has few.
  LdmatrixAddress address = atoms.addressA(lane, firstKey);
  SmallVector<Value> laneOffsets =
      copies.getTile().laneChunkOffsets(address.row, address.half);
  Accumulator zeros = {f32(0.0), f32(0.0), f32(0.0), f32(0.0)};
  Accumulator low = zeros, high = zeros;
  for (int64_t slice = 0; slice < config.dimSlices(); ++slice) {
    Value offset = copies.getTile().laneChunkOffset(laneOffsets, 0, slice);
    OperandRegisters rows = atoms.ldmatrix(sharedKey, add(base, offset),
                                           /*transpose=*/false);
    low = atoms.mma(rows, {rows[0], rows[2]}, low);
    high = atoms.mma(rows, {rows[1], rows[3]}, high);
  }
  // Lane 4 g + t holds rows g and g + 8 at columns 2 t and 2 t + 1: key g's
  // norm where t = g / 2.
  Value group = div(lane, 4);
  Value odd = cmp(arith::CmpIPredicate::eq, rem(group, 2), index(1));
  Value diagonal = cmp(arith::CmpIPredicate::eq, rem(lane, 4), div(group, 2));
  b.setInsertionPointToStart(
      scf::IfOp::create(b, TypeRange{}, diagonal, /*withElseRegion=*/false)
          .thenBlock());
  for (auto [half, norm] :
       {std::pair<int64_t, Value>(
            0, arith::SelectOp::create(b, odd, low[1], low[0])),
        std::pair<int64_t, Value>(
            8, arith::SelectOp::create(b, odd, high[3], high[2]))}) {
    Value key = add(add(firstKey, group), index(half));
    if (failed(storeKeyTerms(termRegions, add(termBase, key), add(kvLo, key),
                             norm)))
      return failure();
  }
  return success();
}

LogicalResult FlashSchedule::storeKeyTermsByKey(RegionApplication &termRegions,
                                                Value worker, Value termBase,
                                                Value kvLo) {
  // A loop, not unrolled: one pass's region lives at a time.
  OpBuilder::InsertionGuard guard(b);
  int64_t threads = kKeyTermWarps * kThreadsPerWarp;
  auto passes =
      scf::ForOp::create(b, index(0), index(config.tileN), index(threads));
  b.setInsertionPointToStart(passes.getBody());
  Value key = add(worker, passes.getInductionVar());
  if (config.tileN % threads != 0)
    b.setInsertionPointToStart(scf::IfOp::create(b, TypeRange{},
                                                 cmp(arith::CmpIPredicate::ult,
                                                     key, index(config.tileN)),
                                                 /*withElseRegion=*/false)
                                   .thenBlock());
  return storeKeyTerms(termRegions, add(termBase, key), add(kvLo, key),
                       /*keyNorm=*/Value());
}

LogicalResult FlashSchedule::storeKeyTerms(RegionApplication &termRegions,
                                           Value offset, Value kvIdx,
                                           Value keyNorm) {
  auto store = [&](Value value, int64_t plane) {
    memref::StoreOp::create(b, value,
                            plane == workspace.keyNormPlane ? sharedKeyNorm
                                                            : sharedKeyBias,
                            ValueRange{offset});
  };
  // Keys past kv_len are zeros by TMA, and get zero terms.
  return workspace.emitKeyTerms(
      b, termRegions, kvIdx, args.sizes.kvLen, keyNorm, store,
      [&](Value bias) { store(bias, workspace.keyBiasPlane); });
}

void FlashSchedule::awaitKeys(KeyValuePipelines &pipelines, Value iteration) {
  pipelines.keys.waitFull(iteration);
  if (pipelines.terms)
    pipelines.terms->waitFull(iteration);
}

void FlashSchedule::releaseKeys(KeyValuePipelines &pipelines, Value iteration,
                                Value releases) {
  // Every consumer thread that loaded terms from a stage releases them
  // itself: released by one lane a warp, racecheck saw the producer's
  // writes of a tile's terms (its stores, cp.async or cp.async.bulk) race
  // the loads of the terms `stages` tiles before (with a warp barrier
  // before the lane's arrival too; bench/NOTES.md steps 29 and 31). The
  // tiles themselves are read by wgmma, whose completion the lane waited
  // for.
  Value everyThread = arith::ConstantOp::create(b, b.getBoolAttr(true));
  if (pipelines.terms)
    pipelines.terms->arriveEmpty(iteration, everyThread);
  pipelines.keys.arriveEmpty(
      iteration, pipelines.keysReleasedByEveryThread ? everyThread : releases);
}

FailureOr<scf::ForOp>
FlashSchedule::emitConsumerLoop(TileRing &ring, KeyValuePipelines &pipelines) {
  bool carriedKeyTerms = consumersCarryTermOffsets();
  SmallVector<Value> init = initialLoopState(carriedKeyTerms);
  OpBuilder::InsertionGuard inner(b);
  auto [loop, tile, state, termOffsets] = beginTileLoop(init, carriedKeyTerms);
  Value iteration = sub(tile, firstTile);
  awaitKeys(pipelines, iteration);
  pipelines.values.waitFull(iteration);
  FailureOr<SmallVector<Value>> next =
      computeLoopTile(ring, tile, state, termOffsets);
  if (failed(next))
    return failure();
  // The tile's wgmma have completed: one lane a warp releases its stage.
  Value releases = firstLaneOfWarp();
  releaseKeys(pipelines, iteration, releases);
  pipelines.values.arriveEmpty(iteration, releases);
  yieldLoopState(*next, termOffsets);
  return loop;
}

FailureOr<scf::ForOp>
FlashSchedule::emitOverlappedConsumerLoop(TileRing &ring,
                                          KeyValuePipelines &pipelines) {
  bool carriedKeyTerms = consumersCarryTermOffsets();
  SmallVector<Value> init = initialLoopState(carriedKeyTerms);
  // Nothing is deferred before the first tile; its P registers start as
  // zeros of their type.
  DeferredProduct nothing{
      arith::ConstantOp::create(b, b.getBoolAttr(false)), index(0), {}};
  Value zeroPair = arith::ConstantOp::create(
      b, DenseElementsAttr::get(VectorType::get({2}, b.getF16Type()),
                                b.getF16FloatAttr(0.0)));
  nothing.weights.assign(config.tileN / 16,
                         {zeroPair, zeroPair, zeroPair, zeroPair});
  int64_t ownState = 4 * outputLayout.size() + 2 * scoreLayout.laneRows();
  SmallVector<Value> nothingValues = flatten(nothing);
  init.insert(init.begin() + ownState, nothingValues.begin(),
              nothingValues.end());
  OpBuilder::InsertionGuard inner(b);
  auto [loop, tile, state, termOffsets] = beginTileLoop(init, carriedKeyTerms);
  DeferredProduct deferred = takeDeferredProduct(state);
  Value iteration = sub(tile, firstTile);
  awaitKeys(pipelines, iteration);
  FailureOr<LoopTile> loopTile = classifyLoopTile(ring, tile);
  if (failed(loopTile))
    return failure();
  auto [buffer, kvLo, live, partial] = *loopTile;
  SmallVector<Value> carried(state);
  llvm::append_range(carried, flatten(deferred));
  auto compute = scf::IfOp::create(b, TypeRange(carried), live, true);
  {
    OpBuilder::InsertionGuard branch(b);
    b.setInsertionPointToStart(compute.thenBlock());
    FailureOr<SmallVector<Value>> next =
        computeOverlappedTile(ring, pipelines, buffer, kvLo, partial, iteration,
                              state, deferred, termOffsets);
    if (failed(next))
      return failure();
    scf::YieldOp::create(b, *next);

    // A skipped tile's stage goes back at once, once its V landed too (no
    // copy may be in flight when the block exits), and so does the
    // deferred product's: the tile after this one may need its stage.
    b.setInsertionPointToStart(compute.elseBlock());
    SmallVector<Value> passed =
        completeDeferredProduct(ring, pipelines, deferred, state);
    pipelines.values.waitFull(iteration);
    Value releases = firstLaneOfWarp();
    releaseKeys(pipelines, iteration, releases);
    pipelines.values.arriveEmpty(iteration, releases);
    DeferredProduct completed = deferred;
    completed.pending = arith::ConstantOp::create(b, b.getBoolAttr(false));
    llvm::append_range(passed, flatten(completed));
    scf::YieldOp::create(b, passed);
  }
  yieldLoopState(SmallVector<Value>(compute.getResults()), termOffsets);
  return loop;
}

SmallVector<Value> FlashSchedule::flatten(const DeferredProduct &deferred) {
  SmallVector<Value> values{deferred.pending, deferred.iteration};
  for (const OperandRegisters &registers : deferred.weights)
    values.append(registers.begin(), registers.end());
  return values;
}

FlashSchedule::DeferredProduct
FlashSchedule::takeDeferredProduct(ValueRange &state) {
  int64_t slices = config.tileN / 16;
  ValueRange values = state.take_back(2 + 4 * slices);
  state = state.drop_back(2 + 4 * slices);
  DeferredProduct deferred{values[0], values[1], {}};
  for (int64_t slice = 0; slice < slices; ++slice) {
    ValueRange registers = values.slice(2 + 4 * slice, 4);
    deferred.weights.push_back(
        {registers[0], registers[1], registers[2], registers[3]});
  }
  return deferred;
}

SmallVector<Value> FlashSchedule::completeDeferredProduct(
    TileRing &ring, KeyValuePipelines &pipelines,
    const DeferredProduct &deferred, ValueRange state) {
  int64_t outputValues = 4 * outputLayout.size();
  scf::IfOp product;
  {
    OpBuilder::InsertionGuard guard(b);
    product = updateIf(deferred.pending, state.take_front(outputValues));
    SmallVector<Accumulator> result =
        FragmentLayout::unflatten(state.take_front(outputValues));
    SmallVector<Value> descriptors = valueDescriptors(
        ring.tileBase(ring.buffer(add(firstTile, deferred.iteration))));
    pipelines.values.waitFull(deferred.iteration);
    awaitTensorCoreTurn();
    warpgroupAtoms.fence(result, descriptors);
    issueValueProducts(deferred.weights, descriptors, result);
    warpgroupAtoms.commitGroup();
    passTensorCoreTurn();
    warpgroupAtoms.waitGroup(0, result);
    pipelines.values.arriveEmpty(deferred.iteration, firstLaneOfWarp());
    scf::YieldOp::create(b, FragmentLayout::flatten(result));
  }
  SmallVector<Value> completed(product.getResults());
  llvm::append_range(completed, state.drop_front(outputValues));
  return completed;
}

FailureOr<SmallVector<Value>> FlashSchedule::computeOverlappedTile(
    TileRing &ring, KeyValuePipelines &pipelines, Value buffer, Value kvLo,
    Value partial, Value iteration, ValueRange state,
    const DeferredProduct &deferred, ArrayRef<Value> termOffsets) {
  int64_t outputValues = 4 * outputLayout.size();
  OnlineSoftmax softmax = softmaxState(state);
  SmallVector<Value> oldShift, rowStart;
  tileShifts(softmax, oldShift, rowStart);
  // The key terms load while the products run, unless they start S:
  // loaded before S, they would hold registers beside S, O and the
  // deferred P.
  KeyTerms terms;
  if (workspace.biasStartsScores)
    terms = loadKeyTerms(ring, buffer, termOffsets);
  // The windows' loads run under the products as well.
  if (diagonals && failed(diagonals->stage(qLo, kvLo)))
    return failure();
  SmallVector<Accumulator> dots = initialScores(rowStart, terms);
  SmallVector<Accumulator> output =
      FragmentLayout::unflatten(state.take_front(outputValues));
  SmallVector<std::pair<Value, Value>> keyDescriptors =
      scoreDescriptors(ring.tileBase(buffer));
  SmallVector<Value> deferredDescriptors = valueDescriptors(
      ring.tileBase(ring.buffer(add(firstTile, deferred.iteration))));
  SmallVector<Value> termOperands = termDescriptors(buffer);
  // The descriptors pass through the fence together.
  SmallVector<Value> fencedDescriptors(deferredDescriptors);
  fencedDescriptors.append(termOperands);

  // The deferred product's V must have landed (with nothing deferred this
  // tile's, which the next tile reads, stands in: its stage is this one).
  pipelines.values.waitFull(arith::SelectOp::create(
      b, deferred.pending, deferred.iteration, iteration));
  // One turn at the tensor cores issues both products, one fence orders
  // both's registers.
  awaitTensorCoreTurn();
  SmallVector<Accumulator> fenced(dots);
  fenced.append(output);
  warpgroupAtoms.fence(fenced, fencedDescriptors);
  llvm::copy(ArrayRef(fenced).take_front(dots.size()), dots.begin());
  llvm::copy(ArrayRef(fenced).drop_front(dots.size()), output.begin());
  llvm::copy(ArrayRef(fencedDescriptors).take_front(deferredDescriptors.size()),
             deferredDescriptors.begin());
  llvm::copy(ArrayRef(fencedDescriptors).drop_front(deferredDescriptors.size()),
             termOperands.begin());
  issueScores(keyDescriptors, termOperands, dots);
  warpgroupAtoms.commitGroup();
  if (!workspace.biasStartsScores)
    terms = loadKeyTerms(ring, buffer, termOffsets);
  issueDeferredProductAndAwaitScores(deferred, deferredDescriptors, output,
                                     dots);
  // S is complete: K (and its terms, read above) goes back to the producer.
  Value releases = firstLaneOfWarp();
  releaseKeys(pipelines, iteration, releases);

  FailureOr<SmallVector<Accumulator>> scored =
      applyScoreRegion(dots, terms, kvLo, partial, oldShift);
  if (failed(scored))
    return failure();
  SmallVector<Accumulator> scores = std::move(*scored);
  std::optional<OnlineSoftmax::OutputRescale> rescale;
  if (config.softmax) {
    SmallVector<Value> tileMax = softmax.tileMax(
        scores, shiftToDot ? ArrayRef<Value>(oldShift) : ArrayRef<Value>());
    rescale = softmax.rescaleDeferringOutput(
        tileMax, shiftToDot ? MutableArrayRef<Accumulator>(scores)
                            : MutableArrayRef<Accumulator>());
  }
  softmax.exponentiate(scores, /*shifted=*/bool(shiftToDot));
  // This tile's rows are summed (and P packed) before the wait for the
  // deferred product: the sums then share the exponentials' basic block
  // and ptxas issues them between the MUFU.EX2s, which behind O's
  // rescaling branch ran alone, a fixed-latency stall each. (LLVM sinks
  // the packs to their use, the next tile's product.)
  DeferredProduct next{
      arith::ConstantOp::create(b, b.getBoolAttr(true)), iteration, {}};
  for (int64_t keySlice = 0; keySlice < config.tileN / 16; ++keySlice) {
    next.weights.push_back(weightOperand(scores, 0, keySlice));
    addRowSums(softmax, scores, next.weights.back(), keySlice);
  }

  // The deferred product has completed: its stage goes back and O takes
  // the new shifts.
  warpgroupAtoms.waitGroup(0, output);
  pipelines.values.arriveEmpty(
      deferred.iteration, arith::AndIOp::create(b, deferred.pending, releases));
  if (rescale)
    softmax.rescaleOutput(*rescale, output);
  SmallVector<Value> values = FragmentLayout::flatten(output);
  llvm::append_range(values, softmax.getRowMax());
  llvm::append_range(values, softmax.getRowSum());
  llvm::append_range(values, flatten(next));
  return values;
}

void FlashSchedule::issueDeferredProductAndAwaitScores(
    const DeferredProduct &deferred, ArrayRef<Value> valueDescriptors,
    SmallVector<Accumulator> &output, SmallVector<Accumulator> &dots) {
  // The product is a commit group only where it is issued, and each path
  // waits for its own count: a group committed after the branch is empty
  // on one path, ptxas marks it with a placeholder wgmma on both, and
  // waiting for all but that one group then waited for the product too.
  // The turn passes and the waits sit in each branch: after a join ptxas
  // serialized every wgmma of the kernel (C7514).
  SmallVector<Value> state = FragmentLayout::flatten(output);
  llvm::append_range(state, FragmentLayout::flatten(dots));
  auto branch = scf::IfOp::create(b, TypeRange(state), deferred.pending,
                                  /*withElseRegion=*/true);
  OpBuilder::InsertionGuard guard(b);
  for (bool issued : {true, false}) {
    b.setInsertionPointToStart(issued ? branch.thenBlock()
                                      : branch.elseBlock());
    SmallVector<Accumulator> result(output), scores(dots);
    if (issued) {
      issueValueProducts(deferred.weights, valueDescriptors, result);
      warpgroupAtoms.commitGroup();
    }
    passTensorCoreTurn();
    warpgroupAtoms.waitGroup(issued ? 1 : 0, scores);
    SmallVector<Value> yielded = FragmentLayout::flatten(result);
    llvm::append_range(yielded, FragmentLayout::flatten(scores));
    scf::YieldOp::create(b, yielded);
  }
  ValueRange results = branch.getResults();
  output = FragmentLayout::unflatten(results.take_front(4 * output.size()));
  dots = FragmentLayout::unflatten(results.drop_front(4 * output.size()));
}

void FlashSchedule::forOwnWarpgroup(
    function_ref<void(int64_t, int64_t)> body) {
  // A branch a warpgroup, the last one the innermost else: the barriers'
  // ids stay literals (namedBarrier).
  OpBuilder::InsertionGuard guard(b);
  int64_t last = consumerWarpgroups() - 1;
  for (int64_t own = 0; own < last; ++own) {
    auto branch = scf::IfOp::create(
        b, TypeRange{}, cmp(arith::CmpIPredicate::eq, warpgroup, index(own)),
        /*withElseRegion=*/true);
    b.setInsertionPointToStart(branch.thenBlock());
    body(kFirstTurnBarrier + own, kFirstTurnBarrier + own + 1);
    b.setInsertionPointToStart(branch.elseBlock());
  }
  body(kFirstTurnBarrier + last, kFirstTurnBarrier);
}

void FlashSchedule::startPingpong() {
  auto last = scf::IfOp::create(
      b, TypeRange{},
      cmp(arith::CmpIPredicate::eq, warpgroup, index(consumerWarpgroups() - 1)),
      /*withElseRegion=*/false);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(last.thenBlock());
  namedBarrier(b, /*sync=*/false, kFirstTurnBarrier, kTurnBarrierThreads);
}

void FlashSchedule::awaitTensorCoreTurn() {
  if (!pingpong())
    return;
  forOwnWarpgroup([&](int64_t own, int64_t) {
    namedBarrier(b, /*sync=*/true, own, kTurnBarrierThreads);
  });
}

void FlashSchedule::passTensorCoreTurn() {
  if (!pingpong())
    return;
  forOwnWarpgroup([&](int64_t, int64_t next) {
    namedBarrier(b, /*sync=*/false, next, kTurnBarrierThreads);
  });
}

void FlashSchedule::placeQueryTile() {
  qLo = mul(block.queryTile, config.tileM);
  // The rows and chunk halves each lane addresses in ldmatrix.x4: Q as the
  // A operand, K as the B operand of S = Q K^T, V (transposed) as the B
  // operand of O += P V.
  LdmatrixAddress query = atoms.addressA(block.lane, fragment.atomRow(0));
  queryOffsets = queryTile.laneChunkOffsets(query.row, query.half);
  LdmatrixAddress key = atoms.addressB(block.lane);
  keyOffsets = tile.laneChunkOffsets(key.row, key.half);
  LdmatrixAddress value = atoms.addressBTransposed(block.lane);
  valueOffsets = tile.laneChunkOffsets(value.row, value.half);
  for (int64_t r = 0; r < scoreLayout.laneRows(); ++r)
    rowIdx.push_back(fragment.row(qLo, r));
}

void FlashSchedule::carveSharedMemory(SharedMemoryArena &shared) {
  Type f16 = b.getF16Type(), f32 = b.getF32Type();
  sharedQuery = shared.carve(queryTile.elements(config.tileM), f16);
  sharedKey = shared.carve(config.stages * tile.elements(config.tileN), f16);
  sharedValue = shared.carve(config.stages * tile.elements(config.tileN), f16);
  // With key_terms = global the lanes load the terms from the workspace
  // in the loop: no shared copy of them.
  if (termOperand)
    sharedKeyBias = shared.carve(termOperand->sharedWords(), f32);
  else if (config.keyTerms != KeyTermSource::Global) {
    if (workspace.keyBiasPlane >= 0)
      sharedKeyBias = shared.carve(config.stages * config.tileN, f32);
    if (workspace.keyNormPlane >= 0)
      sharedKeyNorm = shared.carve(config.stages * config.tileN, f32);
  }
  // With TMA the terms' bulk copies complete on the pipeline's barriers.
  if (bulkKeyTerms() && !config.tensorMapCopies)
    keyTermBarriers = shared.carve(config.stages, b.getI64Type());
  if (config.warpSpecialized)
    pipelineBarriers =
        shared.carve((2 + producerComputesKeyTerms()) *
                         StagePipeline::barrierCount(config.stages),
                     b.getI64Type());
  if (!stagedLoads.empty())
    diagonals.emplace(
        b, regions, stagedLoads,
        DiagonalStaging::carveWindows(shared, stagedLoads, config.warps,
                                      config.rowsPerWarp(), config.tileN),
        fragment, block.lane, block.warp, DiagonalStaging::Rows::Queries,
        config.rowsPerWarp(), config.tileN);
}

LogicalResult FlashSchedule::findLiveTiles() {
  Value kvTiles =
      arith::CeilDivUIOp::create(b, args.sizes.kvLen, index(config.tileN));
  auto live = regions.liveTiles(kvTiles, [&](Value kvTile) {
    return regions.classifyTile(qLo, config.tileM, mul(kvTile, config.tileN),
                                config.tileN);
  });
  if (failed(live))
    return failure();
  std::tie(firstTile, endTile) = *live;
  return success();
}

void FlashSchedule::copyQueryTile() {
  if (termOperand)
    termOperand->initialize(sharedKeyBias, block.threadId, config.threads());
  queryCopies.copyTile(sharedQuery, index(0),
                       ForwardBlock::rows(args.q, block.qBase), qLo,
                       args.sizes.qLen, config.tileM, /*bounded=*/true);
  NVVM::CpAsyncCommitGroupOp::create(b);
}

void FlashSchedule::loadFirstTiles(TileRing &ring) {
  if (keyTermBarriers)
    ring.createTermBarriers();
  copyQueryTile();
  // Launched early (programmatic dependent launch), the kernel waits for
  // the key-terms prologue to end and its workspace writes to show before
  // the first copy or load of the terms: after the first K/V copies, before
  // their terms', when those copy terms, else as the loop starts, so that Q
  // and the first K/V tiles load while the prologue ends. Launched in plain
  // stream order it does not wait.
  bool waitBeforeTerms =
      waitsForKeyTerms() && config.keyTerms != KeyTermSource::Global;
  for (int64_t stage = 0; stage + 1 < config.stages; ++stage) {
    Value tile = add(firstTile, stage);
    if (stage == 0 && waitBeforeTerms) {
      ring.issue(tile, {}, TileRing::kTiles);
      NVVM::GriddepcontrolOp::create(b, NVVM::GridDepActionKind::wait);
      ring.issue(tile, {}, TileRing::kTerms);
    } else {
      ring.issue(tile);
    }
    NVVM::CpAsyncCommitGroupOp::create(b);
  }
  NVVM::CpAsyncWaitGroupOp::create(b, config.stages - 1);
  if (config.wgmma)
    warpgroupAtoms.fenceCopies();
  gpu::BarrierOp::create(b);
}

LogicalResult FlashSchedule::prepareQueries() {
  if (queryResident())
    for (int64_t atom = 0; atom < config.atoms(); ++atom)
      for (int64_t slice = 0; slice < config.dimSlices(); ++slice)
        llvm::append_range(queryFragments, loadQueryFragment(atom, slice));
  rowQueryNorm.assign(scoreLayout.laneRows(), Value());
  // The row bias reaches only the LSE.
  if (RegionApplication::usesNorm(op.getScore(), attn::Vector::q) ||
      (config.hasLse &&
       RegionApplication::usesNorm(op.getRowBias(), attn::Vector::q)))
    rowQueryNorm = computeQueryNorms();
  if (config.wgmma) {
    // The warpgroup's rows start 64 128-byte rows into each column block.
    warpgroup = div(block.warp, kWarpsPerWarpgroup);
    Value rows = mul(warpgroup, kWarpgroupRows);
    queryDescriptor = warpgroupAtoms.kMajorDescriptor(
        sharedQuery, mul(rows, SwizzledTile::kBlockElements), queryTile);
  }
  if (pingpong())
    startPingpong();
  FailureOr<Value> scale = regions.queryScale();
  if (failed(scale))
    return failure();
  qScale = *scale;
  if (config.softmax && RegionApplication::isAffineInDot(op.getScore())) {
    // |q_scale| below 2^-40 is taken as 2^-40 (sign kept, 0 as +): the
    // score moves by at most 2^-40 |q.k|, and -shift / c stays finite for
    // any shift below 2^87.
    Value tiny = f32(std::ldexp(1.0, -40));
    Value magnitude =
        arith::MaximumFOp::create(b, math::AbsFOp::create(b, qScale), tiny);
    Value negative =
        arith::CmpFOp::create(b, arith::CmpFPredicate::OLT, qScale, f32(0.0));
    qScale = select(negative, arith::NegFOp::create(b, magnitude), magnitude);
    Value dotScale = config.log2Domain ? qScale : fmul(qScale, f32(M_LOG2E));
    shiftToDot = arith::DivFOp::create(b, f32(-1.0), dotScale);
  }
  return success();
}

SmallVector<Value> FlashSchedule::initialLoopState(bool carryTermOffsets) {
  // The loop carries O (head_dim / 8 accumulators per atom), then m = -inf
  // and l = 0 of each lane row (OnlineSoftmax).
  int64_t rows = scoreLayout.laneRows();
  int64_t outputValues = 4 * outputLayout.size();
  SmallVector<Value> init(outputValues, f32(0.0));
  init.append(rows, f32(-std::numeric_limits<double>::infinity()));
  init.append(rows, f32(0.0));
  // With per-thread key terms the loop also carries each plane's workspace
  // offset of the tile's first term. Formed from the tile index instead,
  // the address took the head_dim 64 RBF kernel (global) from 0.99x to
  // 1.04x the dot kernel's time once the workspace row depended on the kv
  // head (a division): ptxas placed the loop's registers differently.
  if (carryTermOffsets)
    for (Value row : block.keyTermRows)
      init.push_back(add(row, mul(firstTile, config.tileN)));
  return init;
}

FailureOr<scf::ForOp> FlashSchedule::emitLoop(TileRing &ring) {
  // Global loads and threads' copies carry their term offsets; bulk
  // copies' addresses are uniform, product entries' follow the tile.
  bool carriedKeyTerms = config.keyTerms == KeyTermSource::Threads ||
                         config.keyTerms == KeyTermSource::Global;
  SmallVector<Value> init = initialLoopState(carriedKeyTerms);
  if (waitsForKeyTerms() && config.keyTerms == KeyTermSource::Global)
    NVVM::GriddepcontrolOp::create(b, NVVM::GridDepActionKind::wait);
  OpBuilder::InsertionGuard inner(b);
  auto [loop, tile, state, termOffsets] = beginTileLoop(init, carriedKeyTerms);
  ring.advance(tile, config.wgmma, termOffsets);
  FailureOr<SmallVector<Value>> next =
      computeLoopTile(ring, tile, state, termOffsets);
  if (failed(next))
    return failure();
  yieldLoopState(*next, termOffsets);
  return loop;
}

FlashSchedule::TileLoop FlashSchedule::beginTileLoop(ArrayRef<Value> init,
                                                     bool carriedKeyTerms) {
  auto loop = scf::ForOp::create(b, firstTile, endTile, index(1), init);
  b.setInsertionPointToStart(loop.getBody());
  ValueRange state = loop.getRegionIterArgs();
  SmallVector<Value> termOffsets = takeTermOffsets(state, carriedKeyTerms);
  return {loop, loop.getInductionVar(), state, std::move(termOffsets)};
}

SmallVector<Value> FlashSchedule::takeTermOffsets(ValueRange &state,
                                                  bool carried) {
  if (!carried)
    return {};
  SmallVector<Value> offsets(state.take_back(workspace.planes()));
  state = state.drop_back(workspace.planes());
  return offsets;
}

void FlashSchedule::yieldLoopState(ArrayRef<Value> next,
                                   ArrayRef<Value> termOffsets) {
  SmallVector<Value> carried(next);
  for (Value offset : termOffsets)
    carried.push_back(add(offset, config.tileN));
  scf::YieldOp::create(b, carried);
}

FailureOr<FlashSchedule::LoopTile>
FlashSchedule::classifyLoopTile(TileRing &ring, Value tile) {
  Value buffer = ring.buffer(tile);
  Value kvLo = mul(tile, config.tileN);
  // Every thread waits for every tile's fill, a skipped tile's too, so
  // that no bulk copy is still landing when the block exits. (Waiting
  // after S = Q K^T, or in thread 0 only before the barrier, measured
  // slower.)
  if (keyTermBarriers)
    ring.waitForTerms(tile);

  auto tileClass = regions.classifyTile(qLo, config.tileM, kvLo, config.tileN);
  if (failed(tileClass))
    return failure();
  Value boundary =
      cmp(arith::CmpIPredicate::sgt, add(kvLo, config.tileN), args.sizes.kvLen);
  Value partial = arith::OrIOp::create(b, boundary, notI(tileClass->allKept));
  return LoopTile{buffer, kvLo, notI(tileClass->allMasked), partial};
}

FailureOr<SmallVector<Value>>
FlashSchedule::computeLoopTile(TileRing &ring, Value tile, ValueRange state,
                               ArrayRef<Value> termOffsets) {
  FailureOr<LoopTile> loopTile = classifyLoopTile(ring, tile);
  if (failed(loopTile))
    return failure();
  auto [buffer, kvLo, live, partial] = *loopTile;
  scf::IfOp compute;
  {
    OpBuilder::InsertionGuard body(b);
    compute = updateIf(live, state);
    FailureOr<SmallVector<Value>> next =
        computeTile(ring, buffer, kvLo, partial, state, termOffsets);
    if (failed(next))
      return failure();
    scf::YieldOp::create(b, *next);
  }
  return SmallVector<Value>(compute.getResults());
}

void FlashSchedule::tileShifts(OnlineSoftmax &softmax,
                               SmallVector<Value> &oldShift,
                               SmallVector<Value> &rowStart) {
  for (int64_t r = 0; r < scoreLayout.laneRows(); ++r)
    oldShift.push_back(softmax.shift(r));
  if (shiftToDot && !shiftsInScoreRegion())
    for (Value shift : oldShift)
      rowStart.push_back(fmul(shift, shiftToDot));
}

FlashSchedule::KeyTerms
FlashSchedule::loadKeyTerms(TileRing &ring, Value buffer,
                            ArrayRef<Value> termOffsets) {
  auto terms = [&](int64_t plane, Value shared) -> SmallVector<ColumnTermPair> {
    if (plane < 0)
      return {};
    int64_t slices = scoreLayout.getColumnSlices();
    if (config.keyTerms == KeyTermSource::Global)
      return copies.loadColumnTerms(fragment, slices, args.workspace,
                                    termOffsets[plane]);
    return copies.loadColumnTerms(fragment, slices, shared,
                                  ring.termBase(buffer));
  };
  KeyTerms loaded;
  if (termOperand)
    return loaded;
  loaded.biases = terms(workspace.keyBiasPlane, sharedKeyBias);
  loaded.norms = terms(workspace.keyNormPlane, sharedKeyNorm);
  return loaded;
}

FailureOr<SmallVector<Accumulator>>
FlashSchedule::applyScoreRegion(ArrayRef<Accumulator> dots,
                                const KeyTerms &terms, Value kvLo,
                                Value partial, ArrayRef<Value> oldShift) {
  ArrayRef<Value> rowShifts =
      shiftsInScoreRegion() ? oldShift : ArrayRef<Value>();
  int64_t columnOffset = 0;
  auto readStaged = [&](Operation *attnOp, IRMapping &,
                        const ElementValues &element) {
    return diagonals->read(attnOp, element);
  };
  // Partial tiles evaluate the mask per element; full tiles do not.
  auto scored = branchOnPartialTile(
      partial, 4 * scoreLayout.size(),
      [&](bool masked) -> FailureOr<SmallVector<Value>> {
        // Columns are keys, lane rows queries; a key's terms are read once for
        // all the lane's rows.
        auto scores = regions.applyScoreRegion(
            fragment, scoreLayout, dots, masked,
            [&](ElementValues &element, int64_t slice, int64_t column,
                Value index) {
              element.kvIdx = add(kvLo, index);
              columnOffset = FragmentLayout::laneColumnOffset(slice, column);
              element.qScale = qScale;
              if (!terms.biases.empty())
                element.keyBias = terms.biases[slice][column];
              // S holds q.k + key_bias / q_scale: the sum scaled_dot + key_bias
              // is scaled_dot's alone (-0 adds nothing, and folds away).
              if (termOperand || workspace.biasStartsScores)
                element.keyBias = f32(-0.0);
              if (!terms.norms.empty())
                element.keyNorm = terms.norms[slice][column];
            },
            [&](ElementValues &element, int64_t r) {
              element.qIdx = rowIdx[r];
              element.queryNorm = rowQueryNorm[r];
              if (diagonals)
                element.diagonalSlot = diagonals->slot(r, columnOffset);
            },
            rowShifts, diagonals ? ElementOpHook(readStaged) : ElementOpHook());
        if (failed(scores))
          return failure();
        return FragmentLayout::flatten(*scores);
      });
  if (failed(scored))
    return failure();
  return FragmentLayout::unflatten(*scored);
}

FailureOr<SmallVector<Value>>
FlashSchedule::computeTile(TileRing &ring, Value buffer, Value kvLo,
                           Value partial, ValueRange state,
                           ArrayRef<Value> termOffsets) {
  int64_t outputValues = 4 * outputLayout.size();
  OnlineSoftmax softmax = softmaxState(state);
  SmallVector<Value> oldShift, rowStart;
  tileShifts(softmax, oldShift, rowStart);
  // The key terms are loaded before S = Q K^T, which hides their latency
  // behind the mma.
  KeyTerms terms = loadKeyTerms(ring, buffer, termOffsets);
  if (diagonals && failed(diagonals->stage(qLo, kvLo)))
    return failure();
  Value tileBase = ring.tileBase(buffer);
  SmallVector<Accumulator> dots =
      computeScores(tileBase, rowStart, terms, buffer);
  FailureOr<SmallVector<Accumulator>> scored =
      applyScoreRegion(dots, terms, kvLo, partial, oldShift);
  if (failed(scored))
    return failure();
  SmallVector<Accumulator> scores = std::move(*scored);

  // Online softmax. `none` sums 2^s as is.
  SmallVector<Accumulator> output =
      FragmentLayout::unflatten(state.take_front(outputValues));
  if (config.softmax) {
    // Shifted scores hold s - shift: their maximum gets the shift back.
    SmallVector<Value> tileMax = softmax.tileMax(
        scores, shiftToDot ? ArrayRef<Value>(oldShift) : ArrayRef<Value>());
    softmax.rescale(tileMax, output,
                    shiftToDot ? MutableArrayRef<Accumulator>(scores)
                               : MutableArrayRef<Accumulator>());
  }
  softmax.exponentiate(scores, /*shifted=*/bool(shiftToDot));
  output = accumulateValues(scores, output, tileBase, softmax);
  SmallVector<Value> next = FragmentLayout::flatten(output);
  llvm::append_range(next, softmax.getRowMax());
  llvm::append_range(next, softmax.getRowSum());
  return next;
}

OperandRegisters FlashSchedule::loadQueryFragment(int64_t atom, int64_t slice) {
  return atoms.ldmatrix(
      sharedQuery,
      queryTile.laneChunkOffset(queryOffsets, atom * kAtomRows, slice), false);
}

SmallVector<Value> FlashSchedule::computeQueryNorms() {
  // The four lanes of a group share a row and its sum.
  SmallVector<Value> norms(scoreLayout.laneRows());
  for (int64_t r = 0; r < scoreLayout.laneRows(); ++r) {
    norms[r] = queryCopies.rowSquareSum(sharedQuery, Value{},
                                        fragment.rowInTile(r),
                                        fragment.getInGroup(), 4);
  }
  return norms;
}

SmallVector<Accumulator> FlashSchedule::initialScores(ArrayRef<Value> rowStart,
                                                      const KeyTerms &terms) {
  if (config.wgmma && !workspace.biasStartsScores)
    return warpgroupAtoms.unsetAccumulators(config.atoms() *
                                            scoreLayout.getColumnSlices());
  SmallVector<Accumulator> scores;
  if (config.wgmma) {
    // A lane's two columns of a slice, in both its rows.
    for (int64_t atom = 0; atom < config.atoms(); ++atom)
      for (const ColumnTermPair &bias : terms.biases)
        scores.push_back({bias[0], bias[1], bias[0], bias[1]});
    return scores;
  }
  for (int64_t atom = 0; atom < config.atoms(); ++atom) {
    Value top = rowStart.empty() ? f32(0.0) : rowStart[2 * atom];
    Value bottom = rowStart.empty() ? f32(0.0) : rowStart[2 * atom + 1];
    scores.append(scoreLayout.getColumnSlices(), {top, top, bottom, bottom});
  }
  return scores;
}

SmallVector<Accumulator> FlashSchedule::computeScores(Value keyBase,
                                                      ArrayRef<Value> rowStart,
                                                      const KeyTerms &terms,
                                                      Value buffer) {
  int64_t slices = scoreLayout.getColumnSlices();
  SmallVector<Accumulator> scores = initialScores(rowStart, terms);
  if (config.wgmma) {
    computeScoresByWgmma(keyBase, buffer, scores);
    return scores;
  }
  // Per 16 head dims: Q's A registers of every atom, then per 16 keys one
  // ldmatrix.x4 of K for the two 8-key slices' B registers.
  for (int64_t dimSlice = 0; dimSlice < config.dimSlices(); ++dimSlice) {
    SmallVector<OperandRegisters> a;
    for (int64_t atom = 0; atom < config.atoms(); ++atom) {
      if (queryFragments.empty()) {
        a.push_back(loadQueryFragment(atom, dimSlice));
        continue;
      }
      ArrayRef<Value> resident =
          ArrayRef<Value>(queryFragments)
              .slice(4 * (atom * config.dimSlices() + dimSlice), 4);
      a.push_back({resident[0], resident[1], resident[2], resident[3]});
    }
    for (int64_t pair = 0; pair < slices / 2; ++pair) {
      Value offset = tile.laneChunkOffset(keyOffsets, 16 * pair, dimSlice);
      auto registers = atoms.ldmatrix(sharedKey, add(keyBase, offset), false);
      atoms.mmaSlicePair(a, registers, scoreLayout, scores, 2 * pair);
    }
  }
  return scores;
}

SmallVector<std::pair<Value, Value>>
FlashSchedule::scoreDescriptors(Value keyBase) {
  Value keyDescriptor =
      warpgroupAtoms.kMajorDescriptor(sharedKey, keyBase, tile);
  SmallVector<std::pair<Value, Value>> descriptors;
  for (int64_t dimSlice = 0; dimSlice < config.dimSlices(); ++dimSlice)
    descriptors.emplace_back(
        warpgroupAtoms.kMajorSlice(queryDescriptor, queryTile, dimSlice),
        warpgroupAtoms.kMajorSlice(keyDescriptor, tile, dimSlice));
  return descriptors;
}

SmallVector<Value> FlashSchedule::termDescriptors(Value buffer) {
  if (!termOperand)
    return {};
  return {termOperand->onesDescriptor(sharedKeyBias),
          termOperand->descriptor(sharedKeyBias, buffer)};
}

void FlashSchedule::issueScores(ArrayRef<std::pair<Value, Value>> descriptors,
                                ArrayRef<Value> terms,
                                MutableArrayRef<Accumulator> scores) {
  for (auto [slice, operands] : llvm::enumerate(descriptors))
    warpgroupAtoms.mma(operands.first, operands.second, scores,
                       /*transposeB=*/false,
                       /*accumulate=*/slice > 0 || workspace.biasStartsScores);
  if (!terms.empty())
    termOperand->accumulate(terms[0], terms[1], scores);
}

void FlashSchedule::computeScoresByWgmma(Value keyBase, Value buffer,
                                         MutableArrayRef<Accumulator> scores) {
  SmallVector<std::pair<Value, Value>> descriptors = scoreDescriptors(keyBase);
  SmallVector<Value> terms = termDescriptors(buffer);
  awaitTensorCoreTurn();
  warpgroupAtoms.fence(scores, terms);
  issueScores(descriptors, terms, scores);
  warpgroupAtoms.commitGroup();
  passTensorCoreTurn();
  warpgroupAtoms.waitGroup(0, scores);
}

SmallVector<Value> FlashSchedule::valueDescriptors(Value valueBase) {
  // V is MN-major: head dims run along its rows, the leading dimension
  // steps from one column block to the next, and 16 keys are 16 rows.
  Value valueDescriptor =
      warpgroupAtoms.mnMajorDescriptor(sharedValue, valueBase, tile);
  SmallVector<Value> descriptors;
  for (int64_t keySlice = 0; keySlice < config.tileN / 16; ++keySlice)
    descriptors.push_back(
        warpgroupAtoms.mnMajorSlice(valueDescriptor, tile, keySlice));
  return descriptors;
}

void FlashSchedule::issueValueProducts(ArrayRef<OperandRegisters> weights,
                                       ArrayRef<Value> descriptors,
                                       MutableArrayRef<Accumulator> output) {
  for (auto [weightRegisters, descriptor] : llvm::zip(weights, descriptors))
    warpgroupAtoms.mma(weightRegisters, descriptor, output,
                       /*transposeB=*/true);
}

OperandRegisters FlashSchedule::weightOperand(ArrayRef<Accumulator> weights,
                                              int64_t atom, int64_t keySlice) {
  return atoms.operandA(
      weights[scoreLayout.accumulator(atom, 2 * keySlice)],
      weights[scoreLayout.accumulator(atom, 2 * keySlice + 1)]);
}

SmallVector<Accumulator>
FlashSchedule::accumulateValuesByWgmma(ArrayRef<Accumulator> weights,
                                       ArrayRef<Accumulator> output,
                                       Value valueBase,
                                       OnlineSoftmax &softmax) {
  SmallVector<Accumulator> result(output.begin(), output.end());
  SmallVector<Value> descriptors = valueDescriptors(valueBase);
  SmallVector<OperandRegisters> a;
  for (int64_t keySlice = 0; keySlice < config.tileN / 16; ++keySlice)
    a.push_back(weightOperand(weights, 0, keySlice));
  awaitTensorCoreTurn();
  warpgroupAtoms.fence(result);
  issueValueProducts(a, descriptors, result);
  warpgroupAtoms.commitGroup();
  passTensorCoreTurn();
  // The row sums while the tensor cores work.
  for (int64_t keySlice = 0; keySlice < config.tileN / 16; ++keySlice)
    addRowSums(softmax, weights, a[keySlice], keySlice);
  warpgroupAtoms.waitGroup(0, result);
  return result;
}

SmallVector<Accumulator>
FlashSchedule::accumulateValues(ArrayRef<Accumulator> weights,
                                ArrayRef<Accumulator> output, Value valueBase,
                                OnlineSoftmax &softmax) {
  if (config.wgmma)
    return accumulateValuesByWgmma(weights, output, valueBase, softmax);
  SmallVector<Accumulator> result(output.begin(), output.end());
  // Per 16 keys: P's A registers of every atom, then per 16 head dims one
  // ldmatrix.x4.trans of V for the two 8-dim slices' B registers.
  for (int64_t keySlice = 0; keySlice < config.tileN / 16; ++keySlice) {
    SmallVector<OperandRegisters> a;
    for (int64_t atom = 0; atom < config.atoms(); ++atom)
      a.push_back(weightOperand(weights, atom, keySlice));
    for (int64_t pair = 0; pair < config.dimSlices(); ++pair) {
      Value offset = tile.laneChunkOffset(valueOffsets, 16 * keySlice, pair);
      auto registers =
          atoms.ldmatrix(sharedValue, add(valueBase, offset), true);
      atoms.mmaSlicePair(a, registers, outputLayout, result, 2 * pair);
    }
    addRowSums(softmax, weights, a, keySlice);
  }
  return result;
}

void FlashSchedule::addRowSums(OnlineSoftmax &softmax,
                               ArrayRef<Accumulator> weights,
                               ArrayRef<OperandRegisters> a, int64_t keySlice) {
  if (!softmax.sumsUnroundedWeights()) {
    softmax.addWeightsByMma(atoms, a);
    return;
  }
  for (int64_t atom = 0; atom < config.atoms(); ++atom)
    softmax.addWeights(
        atom, weights[scoreLayout.accumulator(atom, 2 * keySlice)],
        weights[scoreLayout.accumulator(atom, 2 * keySlice + 1)]);
}

LogicalResult FlashSchedule::storeResults(ArrayRef<Accumulator> output,
                                          OnlineSoftmax &softmax) {
  Epilogue epilogue(b, fragment, outputLayout, atoms);
  GlobalRows outputRows = ForwardBlock::rows(args.o, block.oBase);
  SmallVector<Value> scales;
  for (int64_t r = 0; r < outputLayout.laneRows(); ++r) {
    Value sum = softmax.total(r);
    Value empty = softmax.isEmpty(sum);
    scales.push_back(softmax.outputScale(sum, empty));
    Value row = rowIdx[r];
    auto lse = [&]() -> FailureOr<Value> {
      Value lse = softmax.logSumExp(r, sum);
      if (!op.getRowBias().empty()) {
        ElementValues element;
        element.qIdx = row;
        element.queryNorm = rowQueryNorm[r];
        auto bias = regions.evaluateElementRegion(op.getRowBias(), element);
        if (failed(bias))
          return failure();
        lse = fadd(lse, *bias);
      }
      return select(empty, f32(-std::numeric_limits<double>::infinity()), lse);
    };
    auto storeLse = [&]() -> LogicalResult {
      if (!config.hasLse)
        return success();
      return epilogue.storeRowValue(args.lse, lse, [&] {
        return add(add(mul(block.batch, args.lseStrides[0]),
                       mul(block.head, args.lseStrides[1])),
                   row);
      });
    };
    if (!config.wgmma) {
      if (failed(epilogue.storeRow(output, r, scales[r], outputRows, row,
                                   args.sizes.qLen, storeLse)))
        return failure();
      continue;
    }
    // The wgmma kernels store O after every row's scale is known
    // (storeOutputThroughQueryRows); the LSE goes now.
    if (failed(epilogue.belowLength(row, args.sizes.qLen, storeLse)))
      return failure();
  }
  if (config.wgmma)
    storeOutputThroughQueryRows(epilogue, output, scales, outputRows);
  return success();
}

void FlashSchedule::storeOutputThroughQueryRows(Epilogue &epilogue,
                                                ArrayRef<Accumulator> output,
                                                ArrayRef<Value> scales,
                                                const GlobalRows &outputRows) {
  // The warpgroup's Q rows are free once its last S = Q K^T completed: O
  // goes there, then out in 16-byte chunks (four-byte stores from the
  // fragment write half of every 32-byte sector, and their drain held the
  // small kernel's end). The runtime checks that o's rows are 16-byte
  // aligned (docs/abi.md).
  //
  // Where the lanes also read those rows for the row norms
  // (computeQueryNorms), a lane's read and another lane's write of the
  // same bytes are ordered by the named barriers of the loop: the turns of
  // two or more consumer warpgroups, the block's barriers of the
  // cooperative kernel. A lone consumer warpgroup has none, so its warps
  // meet at a warp barrier first (racecheck reported the pair).
  bool readsQueryRows = llvm::any_of(rowQueryNorm, [](Value v) { return v; });
  if (readsQueryRows && config.warpSpecialized && consumerWarpgroups() == 1)
    NVVM::SyncWarpOp::create(b, /*mask=*/i32(-1));
  for (int64_t r = 0; r < outputLayout.laneRows(); ++r)
    epilogue.stageRow(output, r, scales[r], sharedQuery, queryTile);
  forOwnWarpgroup([&](int64_t own, int64_t) {
    namedBarrier(b, /*sync=*/true,
                 kFirstStagingBarrier + own - kFirstTurnBarrier,
                 kWarpgroupThreads);
  });
  epilogue.copyStagedRows(
      sharedQuery, queryTile, mul(warpgroup, kWarpgroupRows), kWarpgroupRows,
      config.headDim, rem(block.threadId, kWarpgroupThreads), kWarpgroupThreads,
      outputRows, qLo, args.sizes.qLen);
}

/// The launch descriptor of docs/abi.md as a dictionary attribute.
static DictionaryAttr describe(Builder &b, attn::AttentionOp op,
                               attn::PlanAttr plan, const ForwardConfig &config,
                               const KeyTermWorkspace &workspace,
                               StringRef entry, int64_t sharedBytes) {
  auto typeName = [](Type type) -> StringRef {
    if (type.isBF16())
      return "bf16";
    if (type.isF16())
      return "f16";
    if (type.isF32())
      return "f32";
    if (type.isInteger(32))
      return "i32";
    return "i64";
  };
  auto func = op->getParentOfType<FunctionOpInterface>();
  SmallVector<Attribute> params;
  for (auto [name, value, fallback] :
       llvm::zip(op.getParamNames(), op.getParams(), op.getParamDefaults())) {
    Attribute defaultValue = isa<UnitAttr>(fallback) ? Attribute() : fallback;
    SmallVector<NamedAttribute> fields{
        b.getNamedAttr("name", name),
        b.getNamedAttr("type", b.getStringAttr(typeName(value.getType())))};
    if (defaultValue)
      fields.push_back(b.getNamedAttr("default", defaultValue));
    params.push_back(b.getDictionaryAttr(fields));
  }
  SmallVector<Attribute> captures;
  for (auto [name, value] : llvm::zip(op.getCaptureNames(), op.getCaptures())) {
    auto tensor = cast<RankedTensorType>(value.getType());
    captures.push_back(b.getDictionaryAttr(
        {b.getNamedAttr("name", name),
         b.getNamedAttr("type",
                        b.getStringAttr(typeName(tensor.getElementType()))),
         b.getNamedAttr("rank", b.getI64IntegerAttr(tensor.getRank()))}));
  }
  std::string planText;
  llvm::raw_string_ostream(planText) << plan;
  SmallVector<NamedAttribute> fields{
      b.getNamedAttr("format", b.getStringAttr("rbfc-kernel/5")),
      b.getNamedAttr("name", b.getStringAttr(func ? func.getName() : entry)),
      b.getNamedAttr("entry", b.getStringAttr(entry)),
      b.getNamedAttr("arch", b.getStringAttr(plan.getArch())),
      b.getNamedAttr("dtype", b.getStringAttr(typeName(config.elementType))),
      b.getNamedAttr("head_dim", b.getI64IntegerAttr(config.headDim)),
      b.getNamedAttr("normalization",
                     b.getStringAttr(config.softmax ? "softmax" : "none")),
      b.getNamedAttr("has_lse", b.getBoolAttr(config.hasLse)),
      b.getNamedAttr("tile_m", b.getI64IntegerAttr(config.tileM)),
      b.getNamedAttr("tile_n", b.getI64IntegerAttr(config.tileN)),
      b.getNamedAttr("warps", b.getI64IntegerAttr(config.blockThreads() /
                                                  kThreadsPerWarp)),
      b.getNamedAttr("stages", b.getI64IntegerAttr(config.stages)),
      b.getNamedAttr("plan", b.getStringAttr(planText)),
      b.getNamedAttr("shared_memory_bytes", b.getI64IntegerAttr(sharedBytes)),
      b.getNamedAttr("params", b.getArrayAttr(params)),
      b.getNamedAttr("captures", b.getArrayAttr(captures)),
  };
  if (config.tensorMapCopies)
    fields.push_back(
        b.getNamedAttr("tensor_map_rows", b.getI64IntegerAttr(config.tileN)));
  if (workspace.inWorkspace())
    fields.push_back(b.getNamedAttr(
        "key_terms",
        b.getDictionaryAttr({
            b.getNamedAttr("entry",
                           b.getStringAttr((entry + kKeyTermsSuffix).str())),
            b.getNamedAttr("block", b.getI64IntegerAttr(config.threads())),
            b.getNamedAttr("keys_per_block",
                           b.getI64IntegerAttr(keyTermKeysPerBlock(config))),
            b.getNamedAttr("terms", b.getI64IntegerAttr(workspace.planes())),
            b.getNamedAttr("row_multiple", b.getI64IntegerAttr(config.tileN)),
            b.getNamedAttr("heads",
                           b.getStringAttr(workspace.perKvHead ? "kv" : "q")),
            b.getNamedAttr("programmatic_launch",
                           b.getBoolAttr(config.programmaticLaunch)),
        })));
  return b.getDictionaryAttr(fields);
}

int rbfc::archVersion(StringRef arch) {
  int version = 0;
  if (arch.consume_front("sm_"))
    arch.take_while(llvm::isDigit).getAsInteger(10, version);
  return version;
}

int64_t rbfc::sharedMemoryLimit(StringRef arch) {
  // No block gets more, opted in or not.
  return arch == "sm_80"                      ? 163 * 1024
         : arch == "sm_86" || arch == "sm_89" ? 99 * 1024
                                              : 227 * 1024;
}

/// The shared memory the driver sets aside for every resident block.
static constexpr int64_t kSharedMemoryReservedPerBlock = 1024;

/// The bytes of shared memory a multiprocessor of `arch` holds for its
/// resident blocks: a block may have all of it but the driver's share.
static int64_t multiprocessorSharedMemory(StringRef arch) {
  return sharedMemoryLimit(arch) + kSharedMemoryReservedPerBlock;
}

LogicalResult rbfc::checkSharedMemory(Operation *op, StringRef arch,
                                      StringRef entry, int64_t bytes,
                                      StringRef remedy) {
  int64_t limit = sharedMemoryLimit(arch);
  if (bytes <= limit)
    return success();
  return op->emitOpError() << "kernel " << entry << " needs " << bytes
                           << " bytes of shared memory a block, and " << arch
                           << " allows " << limit << ": " << remedy;
}

LogicalResult rbfc::verifyFlashPlan(attn::AttentionOp op,
                                    attn::PlanAttr plan) {
  auto queryType = cast<RankedTensorType>(op.getQuery().getType());
  int64_t headDim = queryType.getDimSize(3);
  Type element = queryType.getElementType();
  int64_t threads = plan.getWarps() * kThreadsPerWarp;
  auto fail = [&](const Twine &why) {
    return op.emitOpError() << "plan " << plan << " cannot be built: " << why;
  };
  bool warpSpecialized = plan.getKernel() == "wgmma";
  // TMA brings the K/V tiles: no thread copies them.
  bool tensorMapCopies = plan.getCopy() == "tma";
  bool wgmma = warpSpecialized || plan.getKernel() == "wgmma_cooperative";
  if (!wgmma && plan.getKernel() != "mma_sync")
    return fail("the kernel structures are mma_sync, wgmma and "
                "wgmma_cooperative");
  if (!element.isBF16() && !element.isF16())
    return fail(plan.getKernel() + " kernels take bf16 or f16 inputs, not " +
                llvm::Twine(element.isF32() ? "f32" : "this type"));
  if (wgmma) {
    // wgmma is sm_90a's; the kernel gives each warpgroup's warps 16 rows
    // (one m64 wgmma a warpgroup) and lays Q, K, V out in 64-column
    // blocks of the 128-byte swizzle.
    if (plan.getArch() != "sm_90a")
      return fail("wgmma needs the sm_90a target");
    if (headDim % SwizzledTile::kBlockElements != 0 || headDim > 256)
      return fail("the wgmma kernel takes head dimensions 64, 128, 192 and "
                  "256, not " +
                  Twine(headDim));
    if (plan.getWarps() % kWarpsPerWarpgroup != 0 ||
        plan.getTileM() != kAtomRows * plan.getWarps())
      return fail("the wgmma kernels need warps a multiple of 4 and tile_m "
                  "= 16 x warps (64 query rows a warpgroup)");
    if (plan.getTileN() > 256)
      return fail("the wgmma kernels' tile_n is at most 256");
    if (warpSpecialized &&
        plan.getWarps() > kMaxConsumerWarpgroups * kWarpsPerWarpgroup)
      return fail("the wgmma kernel has one, two or three consumer "
                  "warpgroups (warps 4, 8 or 12)");
    // A wgmma keeps all its accumulators in registers at once (S: tile_n /
    // 2 a thread, O: head_dim / 2), which ptxas cannot spill, and ptxas
    // checks each one against the registers a thread has at launch
    // (setmaxnreg adds more only later): blocks_per_sm, or the wgmma
    // kernel's block with its producer, must leave a thread room for them,
    // or ptxas stops at load time.
    int64_t blockThreads =
        warpSpecialized ? threads + kWarpgroupThreads : threads;
    if (warpSpecialized || plan.getBlocksPerSm() > 1) {
      int64_t blocks = residentBlocks(plan.getBlocksPerSm());
      int64_t available = launchRegisters(blockThreads, blocks);
      int64_t accumulators = std::max(plan.getTileN(), headDim) / 2;
      if (accumulators + kWgmmaRegisterMargin > available) {
        std::string budget =
            warpSpecialized
                ? ("with its producer the block has " + Twine(blockThreads) +
                   " threads, each with " + Twine(available) +
                   " registers at launch" +
                   (blocks > 1 ? " (" + Twine(blocks) + " a multiprocessor)"
                               : Twine()))
                      .str()
                : ("with blocks_per_sm = " + Twine(plan.getBlocksPerSm()) +
                   " a thread has " + Twine(available) + " registers")
                      .str();
        return fail(budget + ", and one wgmma here keeps " +
                    Twine(accumulators) +
                    " f32 accumulators a thread (max(tile_n, head_dim) / 2) "
                    "beside about " +
                    Twine(kWgmmaRegisterMargin) + " more: lower " +
                    (blocks > 1 ? "blocks_per_sm, " : "") + "tile_n or warps");
      }
    }
  }
  if (warpSpecialized) {
    // Three consumer warpgroups leave a consumer thread 160 registers
    // (setmaxnreg): at head_dim 192 its O (96) and a tile's P and S spill
    // over 1 KB, and ptxas fails at 192-key tiles.
    if (plan.getWarps() == kMaxConsumerWarpgroups * kWarpsPerWarpgroup &&
        headDim > 128)
      return fail("three consumer warpgroups (160 registers a thread) take "
                  "head_dim 64 or 128");
    // setmaxnreg splits each block's share of the register file: a
    // consumer thread then holds S and O of a tile at once.
    int64_t blocks = residentBlocks(plan.getBlocksPerSm());
    int64_t consumers = plan.getWarps() / kWarpsPerWarpgroup;
    int64_t producer =
        producerThreadRegisters(plan.getKeyTerms() == "producer");
    int64_t consumerShare = consumerRegisters(consumers, producer, blocks);
    int64_t needed = (plan.getTileN() + headDim) / 2 + kWgmmaRegisterMargin;
    if (blocks > 1 && consumerShare < needed)
      return fail("at blocks_per_sm = " + Twine(blocks) + " setmaxnreg " +
                  "leaves a consumer thread " + Twine(consumerShare) +
                  " registers, and S and O of a tile keep " +
                  Twine(needed - kWgmmaRegisterMargin) +
                  " f32 accumulators beside about " +
                  Twine(kWgmmaRegisterMargin) +
                  " more: one consumer warpgroup, a smaller tile_n or one "
                  "block");
    if (tensorMapCopies) {
      if (KeyTermWorkspace::forOp(op).planes() &&
          plan.getKeyTerms() == "threads")
        return fail("with copy \"tma\" one producer thread brings the key "
                    "terms: key_terms \"bulk\" or \"global\"");
    } else {
      if (plan.getKeyTerms() == "bulk")
        return fail("the wgmma kernel's producer threads copy the key terms: "
                    "key_terms \"threads\" or \"global\" (or copy "
                    "\"tma\")");
      int64_t producers = kWarpgroupThreads;
      if (plan.getTileN() % CopyEngine::rowsPerPass(headDim / kChunk, producers,
                                                    plan.getTileN()) !=
          0)
        return fail(
            "the K/V tiles must split into 16-byte copies evenly over the "
            "producer warpgroup");
    }
  }
  // The mma k-step and the ldmatrix chunk pairs are 16 head dims; past
  // 256 the O accumulators of one atom would fill the register file.
  if (headDim % 16 != 0 || headDim < 32 || headDim > 256)
    return fail("the head dimension must be a multiple of 16 from 32 to 256, "
                "not " +
                Twine(headDim));
  int64_t atoms = plan.getTileM() / (kAtomRows * plan.getWarps());
  if (plan.getTileM() % (kAtomRows * plan.getWarps()) != 0 ||
      !llvm::is_contained({1, 2, 4}, atoms))
    return fail("tile_m must be 16, 32 or 64 x warps (each warp owns 1, 2 "
                "or 4 blocks of 16 query rows)");
  // The block's threads copy K/V tiles, and a term per key, unless TMA
  // brings them: then any multiple of 16 (wgmma's N, TMA's box rows) will
  // do. Q's tile they copy either way.
  if (plan.getTileN() % 16 != 0 ||
      (!tensorMapCopies &&
       (plan.getTileN() > threads || threads % plan.getTileN() != 0 ||
        threads / plan.getTileN() > 4)))
    return fail("tile_n must be a multiple of 16 that divides 32 x warps, "
                "and at least 8 x warps");
  SmallVector<int64_t, 2> copiedRows{plan.getTileM()};
  // The wgmma kernel's producer warpgroup copies K and V (checked above).
  if (!tensorMapCopies && !warpSpecialized)
    copiedRows.push_back(plan.getTileN());
  for (int64_t rows : copiedRows)
    if (rows % CopyEngine::rowsPerPass(headDim / kChunk, threads, rows) != 0)
      return fail(
          "the tiles must split into 16-byte copies evenly over the threads");
  if (plan.getStages() < 2)
    return fail("stages must be at least 2");
  if (plan.getKeyTerms() == "bulk" && archVersion(plan.getArch()) < 90)
    return fail("key_terms = \"bulk\" needs sm_90 (cp.async.bulk)");
  // Like the other sources, "product" says nothing to a spec without key
  // terms.
  if (plan.getKeyTerms() == "product" && !op.getKeyBias().empty()) {
    if (plan.getKernel() == "mma_sync" ||
        tensorMapCopies != (plan.getKernel() == "wgmma"))
      return fail("key_terms = \"product\" is built for the "
                  "wgmma_cooperative kernel with copy \"cp_async\" and the "
                  "wgmma kernel with copy \"tma\"");
    std::string whyNot;
    if (!attn::KeyBiasProduct::analyze(op, &whyNot))
      return fail("key_terms = \"product\" needs the key bias to ride in "
                  "S = Q K^T, but " +
                  whyNot);
  }
  return success();
}

static KeyTermSource keyTermSource(attn::AttentionOp op, attn::PlanAttr plan) {
  if (plan.getKeyTerms() == "product" && op.getKeyBias().empty())
    return KeyTermSource::Threads;
  return llvm::StringSwitch<KeyTermSource>(plan.getKeyTerms())
      .Case("bulk", KeyTermSource::Bulk)
      .Case("global", KeyTermSource::Global)
      .Case("product", KeyTermSource::Product)
      .Case("producer", KeyTermSource::Producer)
      .Default(KeyTermSource::Threads);
}

FailureOr<gpu::GPUFuncOp> rbfc::buildFlashKernel(attn::AttentionOp op,
                                                 attn::PlanAttr plan,
                                                 gpu::GPUModuleOp module,
                                                 StringRef name) {
  if (failed(verifyFlashPlan(op, plan)))
    return failure();
  auto queryType = cast<RankedTensorType>(op.getQuery().getType());
  ForwardConfig config{queryType.getDimSize(3),
                       plan.getTileM(),
                       plan.getTileN(),
                       plan.getWarps(),
                       plan.getStages(),
                       queryType.getElementType(),
                       op.isSoftmax(),
                       op.getLog2Domain(),
                       op.getLse() != nullptr,
                       keyTermSource(op, plan),
                       plan.getBlocksPerSm(),
                       archVersion(plan.getArch()) >= 90,
                       plan.getKernel() != "mma_sync",
                       plan.getKernel() == "wgmma",
                       plan.getCopy() == "tma",
                       plan.getOverlap()};
  ImplicitLocOpBuilder b(op.getLoc(), op.getContext());
  LLVM_DEBUG(llvm::dbgs() << "building " << name << " with " << plan << "\n");
  KeyTermWorkspace workspace =
      KeyTermWorkspace::forOp(op, config.keyTerms, config.wgmma);
  if (workspace.inWorkspace() &&
      failed(buildKeyTermsKernel(b, op, config, workspace, module,
                                 (name + kKeyTermsSuffix).str())))
    return failure();

  ForwardBlock block(b, op, config, workspace);
  gpu::GPUFuncOp func = block.declare(module, name, config.blockThreads());
  FragmentLane fragment(b, block.lane, block.warp, config.rowsPerWarp());
  block.locateQueryTile();
  // PTX's .minnctapersm: ptxas caps the registers so that many blocks fit.
  // The warp-specialised kernel's setmaxnreg needs that cap, one block
  // unless the plan says more.
  int64_t blocksPerSM = config.warpSpecialized
                            ? residentBlocks(config.blocksPerSM)
                            : config.blocksPerSM;
  if (blocksPerSM > 0)
    func->setAttr(NVVM::NVVMDialect::getMinctasmAttrName(),
                  b.getI32IntegerAttr(blocksPerSM));
  FailureOr<int64_t> sharedBytes =
      FlashSchedule(b, op, config, workspace, block, fragment).build();
  if (failed(sharedBytes) ||
      failed(checkSharedMemory(op, plan.getArch(), name, *sharedBytes,
                               "a plan with fewer stages or smaller tiles "
                               "needs less")))
    return failure();
  // The runtime sizes a wave by the descriptor's blocks_per_sm: blocks that
  // cannot be resident together would make it launch two waves for one.
  int64_t residentBytes =
      blocksPerSM * (*sharedBytes + kSharedMemoryReservedPerBlock);
  if (blocksPerSM > 1 &&
      residentBytes > multiprocessorSharedMemory(plan.getArch()))
    return op.emitOpError()
           << "kernel " << name << " needs " << *sharedBytes
           << " bytes of shared memory a block (and "
           << kSharedMemoryReservedPerBlock << " the driver reserves), so "
           << blocksPerSM << " blocks a multiprocessor need " << residentBytes
           << " and " << plan.getArch() << " has "
           << multiprocessorSharedMemory(plan.getArch())
           << ": fewer stages, smaller tiles or a lower blocks_per_sm";
  allowContraction(func);
  func->setAttr(kDescriptorAttrName,
                describe(b, op, plan, config, workspace, name, *sharedBytes));
  return func;
}
