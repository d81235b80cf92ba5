//===- Launch.cpp - check a launch and pack its kernel arguments ---------===//
#include "rbfc/Runtime/Launch.h"

#include <cmath>
#include <cstdint>
#include <tuple>
#include <utility>

namespace rbfc::runtime {

namespace {

std::string shapeText(const rbfc_tensor &t) {
  std::string text = "[";
  for (int i = 0; i < t.rank && i < RBFC_MAX_RANK; ++i)
    text += (i ? ", " : "") + std::to_string(t.sizes[i]);
  return text + "]";
}

std::string stridesText(const rbfc_tensor &t) {
  std::string text = "(";
  for (int i = 0; i < t.rank && i < RBFC_MAX_RANK; ++i)
    text += (i ? ", " : "") + std::to_string(t.strides[i]);
  return text + ")";
}

/// The checks every tensor gets: present, rank, element type, a non-null
/// base aligned to `alignment`, sizes >= 1, strides >= 0.
bool checkTensor(const char *what, const rbfc_tensor *t, int rank,
                 rbfc_dtype dtype, const char *layout, uint64_t alignment,
                 std::string &error) {
  std::string name = what;
  if (!t) {
    error = name + ": missing (expected a " + dtypeName(dtype) + " tensor " +
            layout + ")";
    return false;
  }
  if (t->rank != rank) {
    error = name + ": expected rank " + std::to_string(rank) + " " + layout +
            ", got rank " + std::to_string(t->rank);
    return false;
  }
  if (t->dtype != dtype) {
    error = name + ": expected element type " + dtypeName(dtype) + ", got " +
            dtypeName(t->dtype);
    return false;
  }
  if (!t->data) {
    error = name + ": data pointer is null";
    return false;
  }
  if (reinterpret_cast<uintptr_t>(t->data) % alignment != 0) {
    error = name + ": data pointer is not " + std::to_string(alignment) +
            "-byte aligned";
    return false;
  }
  for (int i = 0; i < rank; ++i) {
    if (t->sizes[i] < 1) {
      error = name + ": every size must be >= 1, got shape " + shapeText(*t);
      return false;
    }
    if (t->strides[i] < 0) {
      error = name + ": strides must be >= 0, got " + stridesText(*t);
      return false;
    }
  }
  return true;
}

bool checkUnitInnerStride(const char *what, const rbfc_tensor &t,
                          const char *dim, std::string &error) {
  if (t.strides[t.rank - 1] != 1) {
    error = std::string(what) + ": the " + dim +
            " stride must be 1 (contiguous rows), got strides " +
            stridesText(t);
    return false;
  }
  return true;
}

/// q/k/v tiles move in 16-byte chunks: every outer stride a multiple of 16
/// bytes.
bool checkChunkStrides(const char *what, const rbfc_tensor &t,
                       std::string &error) {
  int64_t multiple = 16 / dtypeSize(t.dtype);
  for (int i = 0; i < t.rank - 1; ++i) {
    if (t.strides[i] % multiple != 0) {
      error = std::string(what) + ": strides " + stridesText(t) +
              " must be multiples of " + std::to_string(multiple) +
              " elements (16 bytes) except the last";
      return false;
    }
  }
  return true;
}

bool sameSizes(const rbfc_tensor &a, const rbfc_tensor &b) {
  for (int i = 0; i < a.rank; ++i)
    if (a.sizes[i] != b.sizes[i])
      return false;
  return true;
}

/// Grid limits: x up to 2^31-1, y and z up to 65535.
bool fitGrid(const char *what, int64_t x, int64_t y, int64_t z,
             uint32_t (&grid)[3], std::string &error) {
  if (x > INT32_MAX || y > 65535 || z > 65535) {
    error = std::string("problem too large for one launch: ") + what + " (" +
            std::to_string(x) + ", " + std::to_string(y) + ", " +
            std::to_string(z) + ") exceeds (2^31-1, 65535, 65535)";
    return false;
  }
  grid[0] = uint32_t(x);
  grid[1] = uint32_t(y);
  grid[2] = uint32_t(z);
  return true;
}

int64_t ceilDiv(int64_t a, int64_t b) { return a / b + (a % b != 0); }

/// Heads of the workspace rows: one row per (batch, head) of these.
int64_t keyTermHeads(const KeyTermsDesc &kt, const rbfc_tensor &q,
                     const rbfc_tensor &k) {
  return kt.perKvHead ? k.sizes[1] : q.sizes[1];
}

/// The workspace bytes of `kernel`'s own key-terms prologue for q and k
/// (checked by workspaceBytes); 0 without one.
bool keyTermBytes(const Descriptor &kernel, const rbfc_tensor &q,
                  const rbfc_tensor &k, size_t &bytes, std::string &error) {
  bytes = 0;
  if (!kernel.keyTerms)
    return true;
  const KeyTermsDesc &kt = *kernel.keyTerms;
  int64_t batch = q.sizes[0], kvLen = k.sizes[2];
  int64_t heads = keyTermHeads(kt, q, k);
  size_t paddedLen = size_t(ceilDiv(kvLen, kt.rowMultiple));
  size_t total = size_t(kt.terms) * sizeof(float);
  bool overflow =
      __builtin_mul_overflow(paddedLen, size_t(kt.rowMultiple), &paddedLen);
  for (size_t factor : {size_t(batch), size_t(heads), paddedLen})
    overflow |= __builtin_mul_overflow(total, factor, &total);
  if (overflow) {
    error = "workspace: " + std::to_string(kt.terms) + " plane(s) x batch " +
            std::to_string(batch) + " x heads " + std::to_string(heads) +
            " x kv_len " + std::to_string(kvLen) +
            " (padded) f32 values do not fit in size_t";
    return false;
  }
  bytes = total;
  return true;
}

} // namespace

bool workspaceBytes(const Descriptor &d, const rbfc_tensor *q,
                    const rbfc_tensor *k, size_t &bytes, std::string &error) {
  for (auto [what, t] : {std::pair{"q", q}, std::pair{"k", k}}) {
    if (!t) {
      error = std::string(what) + ": missing";
      return false;
    }
    if (t->rank != 4) {
      error = std::string(what) + ": expected rank 4, got rank " +
              std::to_string(t->rank);
      return false;
    }
  }
  if (q->sizes[0] < 1 || q->sizes[1] < 1 || k->sizes[1] < 1 ||
      k->sizes[2] < 1) {
    error = "workspace: needs batch, heads, kv_heads and kv_len >= 1, got q " +
            shapeText(*q) + " and k " + shapeText(*k);
    return false;
  }
  // Any forward kernel may run: enough for the largest.
  bytes = 0;
  for (const Descriptor *kernel = &d; kernel; kernel = kernel->small.get()) {
    size_t kernelBytes = 0;
    if (!keyTermBytes(*kernel, *q, *k, kernelBytes, error))
      return false;
    bytes = std::max(bytes, kernelBytes);
  }
  return true;
}

const Descriptor &forwardKernelFor(const Descriptor &d, const rbfc_tensor *q,
                                   int multiprocessors) {
  if (multiprocessors <= 0 || !q || q->rank != 4 || q->sizes[0] < 1 ||
      q->sizes[1] < 1 || q->sizes[2] < 1)
    return d;
  const Descriptor *chosen = &d;
  while (chosen->small) {
    uint64_t blocks = uint64_t(ceilDiv(q->sizes[2], chosen->small->tileM));
    bool overflow =
        __builtin_mul_overflow(blocks, uint64_t(q->sizes[1]), &blocks) ||
        __builtin_mul_overflow(blocks, uint64_t(q->sizes[0]), &blocks);
    if (overflow ||
        blocks > uint64_t(chosen->smallBlocksPerSM) * uint64_t(multiprocessors))
      break;
    chosen = chosen->small.get();
  }
  return *chosen;
}

namespace {

/// Stores `workspace` (`bytes` long) at argument `arg` of `buffer` after
/// checking it holds the `needed` bytes `who` needs.
bool bindWorkspaceAt(size_t needed, size_t arg, const char *who,
                     void *workspace, size_t bytes, ParamBuffer &buffer,
                     std::string &error) {
  if (needed == 0)
    return true;
  std::string need = std::string("workspace: ") + who + " needs " +
                     std::to_string(needed) + " bytes";
  if (!workspace) {
    error = need + "; the workspace pointer is null";
    return false;
  }
  if (bytes < needed) {
    error = need + ", got " + std::to_string(bytes);
    return false;
  }
  // Read with 16-byte vector loads.
  if (reinterpret_cast<uintptr_t>(workspace) % 16 != 0) {
    error = "workspace: pointer is not 16-byte aligned";
    return false;
  }
  buffer.set<uint64_t>(arg, reinterpret_cast<uintptr_t>(workspace));
  return true;
}

/// Pushes the params' `values` (their types as `d` declares them) and then
/// each capture's pointer, sizes and strides: the tail that the forward's
/// and the backward's argument lists share (docs/abi.md).
void pushParamsAndCaptures(const Descriptor &d,
                           const std::vector<double> &values,
                           const rbfc_tensor *captures, ParamBuffer &buffer) {
  for (size_t i = 0; i < d.params.size(); ++i) {
    if (d.params[i].type == RBFC_DTYPE_I32)
      buffer.push<int32_t>(int32_t(values[i]));
    else
      buffer.push<float>(float(values[i]));
  }
  for (size_t i = 0; i < d.captures.size(); ++i) {
    const rbfc_tensor &t = captures[i];
    buffer.push<uint64_t>(reinterpret_cast<uintptr_t>(t.data));
    for (int r = 0; r < t.rank; ++r)
      buffer.push<int64_t>(t.sizes[r]);
    for (int r = 0; r < t.rank; ++r)
      buffer.push<int64_t>(t.strides[r]);
  }
}

} // namespace

bool bindWorkspace(const LaunchConfig &config, void *workspace, size_t bytes,
                   ParamBuffer &buffer, std::string &error) {
  return bindWorkspaceAt(config.workspaceBytes, config.workspaceArg,
                         "the kernel's key-terms prologue", workspace, bytes,
                         buffer, error);
}

bool bindBackwardWorkspace(const BackwardLaunchConfig &config,
                           void *workspace, size_t bytes, ParamBuffer &buffer,
                           std::string &error) {
  return bindWorkspaceAt(config.workspaceBytes, config.workspaceArg,
                         "the backward", workspace, bytes, buffer, error);
}

bool resolveParams(const Descriptor &d, const double *params,
                   size_t numParams, std::vector<double> &values,
                   std::string &error) {
  values.clear();
  if (params) {
    if (numParams != d.params.size()) {
      error = "params: the kernel takes " + std::to_string(d.params.size()) +
              " parameter(s), got " + std::to_string(numParams);
      return false;
    }
    values.assign(params, params + numParams);
  } else {
    if (numParams != 0) {
      error = "params: null with a count of " + std::to_string(numParams);
      return false;
    }
    for (const ParamDesc &p : d.params) {
      if (!p.hasDefault) {
        error = "param '" + p.name + "' has no default; pass every parameter";
        return false;
      }
      values.push_back(p.defaultValue);
    }
  }
  for (size_t i = 0; i < d.params.size(); ++i) {
    if (d.params[i].type == RBFC_DTYPE_I32 &&
        (values[i] != std::floor(values[i]) || values[i] < INT32_MIN ||
         values[i] > INT32_MAX)) {
      error = "param '" + d.params[i].name + "' is an int parameter; got " +
              std::to_string(values[i]);
      return false;
    }
  }
  return true;
}

bool sameTensorMap(const TensorMapRequest &a, const TensorMapRequest &b) {
  return a.dtype == b.dtype && a.data == b.data &&
         std::equal(a.sizes, a.sizes + 4, b.sizes) &&
         std::equal(a.strideBytes, a.strideBytes + 3, b.strideBytes) &&
         std::equal(a.box, a.box + 4, b.box);
}

const TensorMapBytes *
TensorMapCache::find(const TensorMapRequest &request) const {
  for (const Entry &entry : entries)
    if (entry.used && sameTensorMap(entry.request, request))
      return &entry.map;
  return nullptr;
}

void TensorMapCache::store(const TensorMapRequest &request,
                           const TensorMapBytes &map) {
  entries[next] = {request, map, true};
  next = (next + 1) % entries.size();
}

bool prepareLaunch(const Descriptor &d, const LaunchArgs &args,
                   ParamBuffer &buffer, LaunchConfig &config,
                   std::string &error) {
  buffer = ParamBuffer();
  config = LaunchConfig();
  const char *qLayout = "[batch, heads, q_len, head_dim]";
  const char *kvLayout = "[batch, kv_heads, kv_len, head_dim]";
  if (!checkTensor("q", args.q, 4, d.dtype, qLayout, 16, error) ||
      !checkTensor("k", args.k, 4, d.dtype, kvLayout, 16, error) ||
      !checkTensor("v", args.v, 4, d.dtype, kvLayout, 16, error) ||
      !checkTensor("o", args.o, 4, d.dtype, qLayout, 16, error))
    return false;
  const rbfc_tensor &q = *args.q, &k = *args.k, &v = *args.v, &o = *args.o;
  if (!checkUnitInnerStride("q", q, "head_dim", error) ||
      !checkUnitInnerStride("k", k, "head_dim", error) ||
      !checkUnitInnerStride("v", v, "head_dim", error) ||
      !checkUnitInnerStride("o", o, "head_dim", error) ||
      !checkChunkStrides("q", q, error) || !checkChunkStrides("k", k, error) ||
      !checkChunkStrides("v", v, error) || !checkChunkStrides("o", o, error))
    return false;

  int64_t batch = q.sizes[0], heads = q.sizes[1], qLen = q.sizes[2];
  int64_t kvHeads = k.sizes[1], kvLen = k.sizes[2];
  if (q.sizes[3] != d.headDim) {
    error = "q: head_dim is " + std::to_string(q.sizes[3]) +
            " but the kernel was compiled for --head-dim=" +
            std::to_string(d.headDim);
    return false;
  }
  if (k.sizes[0] != batch || k.sizes[3] != d.headDim) {
    error = "k: shape " + shapeText(k) + " does not fit q " + shapeText(q) +
            " (expected [" + std::to_string(batch) + ", kv_heads, kv_len, " +
            std::to_string(d.headDim) + "])";
    return false;
  }
  if (!sameSizes(v, k)) {
    error = "v: shape " + shapeText(v) + " differs from k " + shapeText(k);
    return false;
  }
  if (!sameSizes(o, q)) {
    error = "o: shape " + shapeText(o) + " differs from q " + shapeText(q);
    return false;
  }
  if (heads % kvHeads != 0) {
    error = "heads (" + std::to_string(heads) +
            ") must be a multiple of kv_heads (" + std::to_string(kvHeads) +
            ")";
    return false;
  }

  if (d.hasLse) {
    if (!args.lse) {
      error = "lse: the kernel was compiled with --lse and writes the "
              "log-sum-exp; pass an f32 tensor [batch, heads, q_len]";
      return false;
    }
    if (!checkTensor("lse", args.lse, 3, RBFC_DTYPE_F32,
                     "[batch, heads, q_len]", 16, error) ||
        !checkUnitInnerStride("lse", *args.lse, "q_len", error))
      return false;
    const rbfc_tensor &lse = *args.lse;
    if (lse.sizes[0] != batch || lse.sizes[1] != heads ||
        lse.sizes[2] != qLen) {
      error = "lse: shape " + shapeText(lse) + " differs from [" +
              std::to_string(batch) + ", " + std::to_string(heads) + ", " +
              std::to_string(qLen) + "]";
      return false;
    }
  } else if (args.lse) {
    error = "lse: the kernel was compiled without --lse; pass no lse tensor "
            "(or recompile with --lse)";
    return false;
  }

  if (!fitGrid("grid", ceilDiv(qLen, d.tileM), heads, batch, config.grid,
               error))
    return false;
  if (d.keyTerms) {
    const KeyTermsDesc &kt = *d.keyTerms;
    if (!fitGrid("key-terms prologue grid", ceilDiv(kvLen, kt.keysPerBlock),
                 keyTermHeads(kt, q, k), batch, config.prologueGrid, error) ||
        !keyTermBytes(d, q, k, config.workspaceBytes, error))
      return false;
    config.prologueBlock[0] = uint32_t(kt.block);
    config.prologueBlock[1] = config.prologueBlock[2] = 1;
  }
  SequenceBlock block = args.block;
  if (!resolveSequenceBlock(block, qLen, kvLen, error))
    return false;

  std::vector<double> values;
  if (!resolveParams(d, args.params, args.numParams, values, error))
    return false;

  if (args.numCaptures != d.captures.size() ||
      (args.numCaptures && !args.captures)) {
    error = "captures: the kernel takes " + std::to_string(d.captures.size()) +
            " captured tensor(s), got " +
            std::to_string(args.captures ? args.numCaptures : 0);
    return false;
  }
  for (size_t i = 0; i < d.captures.size(); ++i) {
    const CaptureDesc &c = d.captures[i];
    std::string what = "capture '" + c.name + "'";
    if (!checkTensor(what.c_str(), &args.captures[i], c.rank, c.type,
                     ("of rank " + std::to_string(c.rank)).c_str(),
                     dtypeSize(c.type), error))
      return false;
  }

  // The arguments, in the order of docs/abi.md.
  auto pointer = [&](const rbfc_tensor &t) {
    buffer.push<uint64_t>(reinterpret_cast<uintptr_t>(t.data));
  };
  auto strides3 = [&](const rbfc_tensor &t) {
    for (int i = 0; i < 3; ++i)
      buffer.push<int64_t>(t.strides[i]);
  };
  pointer(q);
  pointer(k);
  pointer(v);
  pointer(o);
  if (d.hasLse)
    pointer(*args.lse);
  if (d.keyTerms) {
    config.workspaceArg = buffer.count();
    buffer.push<uint64_t>(0);
  }
  for (int64_t size : {batch, heads, kvHeads, qLen, kvLen, block.qOffset,
                       block.kvOffset, block.qSeqLen, block.kvSeqLen})
    buffer.push<int64_t>(size);
  strides3(q);
  strides3(k);
  strides3(v);
  strides3(o);
  if (d.hasLse) {
    buffer.push<int64_t>(args.lse->strides[0]);
    buffer.push<int64_t>(args.lse->strides[1]);
  }
  pushParamsAndCaptures(d, values, args.captures, buffer);

  // TMA reads k and v: 16-byte aligned bases and strides (checked above)
  // and strides below 2^40 bytes. Sizes must stay below 2^32, which the
  // grid (batch, heads) and the sequence block (kv_len) already ensure.
  if (d.tensorMapRows > 0) {
    for (auto [name, tensor] : {std::pair("k", &k), std::pair("v", &v)}) {
      TensorMapRequest map;
      map.tensor = name;
      map.arg = buffer.count();
      map.dtype = d.dtype;
      map.data = tensor->data;
      for (int i = 0; i < 4; ++i)
        map.sizes[i] = uint64_t(tensor->sizes[3 - i]);
      for (int i = 0; i < 3; ++i) {
        int64_t bytes = tensor->strides[2 - i] * dtypeSize(d.dtype);
        if (bytes >= (int64_t(1) << 40)) {
          error = std::string(name) + ": strides " + stridesText(*tensor) +
                  " exceed what a tensor map takes (2^40 bytes)";
          return false;
        }
        map.strideBytes[i] = uint64_t(bytes);
      }
      map.box[0] = 64;
      map.box[1] = uint32_t(d.tensorMapRows);
      map.box[2] = map.box[3] = 1;
      config.tensorMaps.push_back(map);
      buffer.push(TensorMapBytes{});
    }
  }

  config.block[0] = uint32_t(32 * d.warps);
  config.block[1] = config.block[2] = 1;
  config.sharedMemoryBytes = uint32_t(d.sharedMemoryBytes);
  return true;
}

namespace {

/// Element counts of the backward's workspace parts, in f32 values.
struct BackwardSizes {
  int64_t batch, heads, kvHeads, qLen, kvLen;
  int64_t rowLength, keyLength, keyTiles, queryTiles;
};

BackwardSizes backwardSizes(const BackwardDesc &bw, const rbfc_tensor &q,
                            const rbfc_tensor &k) {
  BackwardSizes s;
  s.batch = q.sizes[0];
  s.heads = q.sizes[1];
  s.kvHeads = k.sizes[1];
  s.qLen = q.sizes[2];
  s.kvLen = k.sizes[2];
  s.rowLength = ceilDiv(s.qLen, bw.rowMultiple) * bw.rowMultiple;
  s.keyLength = ceilDiv(s.kvLen, bw.rowMultiple) * bw.rowMultiple;
  s.keyTiles = ceilDiv(s.kvLen, bw.keyValue.rowsPerBlock);
  s.queryTiles = ceilDiv(s.qLen, bw.query.rowsPerBlock);
  return s;
}

bool gridOf(const char *what, const BackwardKernelDesc &kernel, int64_t x,
            int64_t y, int64_t z, KernelLaunch &launch, std::string &error) {
  if (!fitGrid(what, x, y, z, launch.grid, error))
    return false;
  launch.block[0] = uint32_t(kernel.block);
  launch.sharedMemoryBytes = uint32_t(kernel.sharedMemoryBytes);
  return true;
}

} // namespace

bool backwardWorkspaceBytes(const Descriptor &d, const rbfc_tensor *q,
                            const rbfc_tensor *k, size_t &bytes,
                            std::string &error) {
  if (!d.backward) {
    error = "the kernel was compiled without --backward";
    return false;
  }
  size_t forward;
  if (!workspaceBytes(d, q, k, forward, error))
    return false;
  const BackwardDesc &bw = *d.backward;
  BackwardSizes s = backwardSizes(bw, *q, *k);
  int64_t headRows = s.batch * s.heads;
  int64_t termRows = s.batch * (bw.keyTermsPerKvHead ? s.kvHeads : s.heads);
  int64_t tiles = std::max(s.keyTiles, s.queryTiles);
  // delta and lse2, the key terms, the partial sums, their per-head sums,
  // the diagonal sums of a relative-position table.
  int64_t diagonalLength =
      bw.diagonalQueryTile
          ? ceilDiv(s.qLen, bw.diagonalQueryTile) * bw.diagonalQueryTile +
                bw.keyValue.rowsPerBlock
          : 0;
  __int128 floats = __int128(2) * headRows * s.rowLength +
                    __int128(bw.keyTerms) * termRows * s.keyLength +
                    __int128(2) * headRows * tiles * bw.slots +
                    __int128(2) * headRows * bw.slots +
                    __int128(headRows) * s.keyTiles * diagonalLength;
  if (floats * 4 > __int128(SIZE_MAX)) {
    error = "workspace: the backward's workspace does not fit in size_t";
    return false;
  }
  bytes = size_t(floats * 4);
  return true;
}

bool prepareBackward(const Descriptor &d, const BackwardLaunchArgs &args,
                     ParamBuffer &buffer, BackwardLaunchConfig &config,
                     std::string &error) {
  buffer = ParamBuffer();
  config = BackwardLaunchConfig();
  if (!d.backward) {
    error = "the kernel was compiled without --backward: it has no backward "
            "kernels";
    return false;
  }
  const BackwardDesc &bw = *d.backward;
  // The forward's checks cover q, k, v, o, lse, the params and captures.
  {
    ParamBuffer forward;
    LaunchConfig forwardConfig;
    LaunchArgs forwardArgs{args.q,         args.k,        args.v,
                           args.o,         args.lse,      args.params,
                           args.numParams, args.captures, args.numCaptures,
                           args.block};
    if (!prepareLaunch(d, forwardArgs, forward, forwardConfig, error))
      return false;
  }
  const rbfc_tensor &q = *args.q, &k = *args.k, &v = *args.v, &o = *args.o;
  const char *qLayout = "[batch, heads, q_len, head_dim]";
  const char *kvLayout = "[batch, kv_heads, kv_len, head_dim]";
  // Every 16-bit tensor of the backward is read or written in 16-byte rows'
  // chunks (o's strides the forward's checks cover).
  struct Grad {
    const char *name;
    const rbfc_tensor *tensor;
    const rbfc_tensor &like;
    const char *layout;
  } grads[] = {{"grad_o", args.outputGrad, o, qLayout},
               {"grad_q", args.queryGrad, q, qLayout},
               {"grad_k", args.keyGrad, k, kvLayout},
               {"grad_v", args.valueGrad, v, kvLayout}};
  for (const Grad &grad : grads) {
    if (!checkTensor(grad.name, grad.tensor, 4, d.dtype, grad.layout, 16,
                     error) ||
        !checkUnitInnerStride(grad.name, *grad.tensor, "head_dim", error) ||
        !checkChunkStrides(grad.name, *grad.tensor, error))
      return false;
    if (!sameSizes(*grad.tensor, grad.like)) {
      error = std::string(grad.name) + ": shape " + shapeText(*grad.tensor) +
              " differs from " + shapeText(grad.like);
      return false;
    }
  }
  if (args.lseGrad) {
    if (!checkTensor("grad_lse", args.lseGrad, 3, RBFC_DTYPE_F32,
                     "[batch, heads, q_len]", 4, error) ||
        !checkUnitInnerStride("grad_lse", *args.lseGrad, "q_len", error))
      return false;
    if (!sameSizes(*args.lseGrad, *args.lse)) {
      error = "grad_lse: shape " + shapeText(*args.lseGrad) +
              " differs from lse " + shapeText(*args.lse);
      return false;
    }
  }

  // Which gradients of params and captures are asked for: the mask.
  uint64_t mask = 0;
  if (args.paramGrads)
    for (size_t p = 0; p < d.params.size(); ++p) {
      if (!args.paramGrads[p])
        continue;
      if (!bw.paramGrads[p]) {
        error = "grad of param '" + d.params[p].name +
                "': it is an int parameter and has no gradient";
        return false;
      }
      if (reinterpret_cast<uintptr_t>(args.paramGrads[p]) % 4 != 0) {
        error = "grad of param '" + d.params[p].name +
                "': pointer is not 4-byte aligned";
        return false;
      }
      mask |= uint64_t(1) << p;
    }
  int64_t reduced = 0;
  for (size_t p = 0; p < d.params.size(); ++p)
    reduced += bw.paramGrads[p];
  for (size_t c = 0; c < d.captures.size(); ++c) {
    const CaptureDesc &capture = d.captures[c];
    const rbfc_tensor &data = args.captures[c];
    int64_t count = 1;
    for (int r = 0; r < data.rank; ++r)
      count *= data.sizes[r];
    if (bw.captureGrads[c])
      reduced += count;
    if (!args.captureGrads || !args.captureGrads[c].data)
      continue;
    std::string what = "grad of capture '" + capture.name + "'";
    if (capture.type != RBFC_DTYPE_F32) {
      error = what + ": the capture holds " + dtypeName(capture.type) +
              "; only f32 captures have a gradient";
      return false;
    }
    if (!bw.captureGrads[c]) {
      error = what + ": the GPU backward computes gradients of captures read "
                     "at indices that depend on the batch and head only, or "
                     "on q_idx - kv_idx through a monotone index (a "
                     "relative-position table); this one is read at other "
                     "indices (the host target computes it)";
      return false;
    }
    const rbfc_tensor &grad = args.captureGrads[c];
    if (!checkTensor(what.c_str(), &grad, capture.rank, RBFC_DTYPE_F32,
                     "with the capture's sizes", 4, error))
      return false;
    if (!sameSizes(grad, data)) {
      error = what + ": shape " + shapeText(grad) + " differs from the "
              "capture's " + shapeText(data);
      return false;
    }
    mask |= uint64_t(1) << (d.params.size() + c);
  }
  config.reduces = mask != 0;

  BackwardSizes s = backwardSizes(bw, q, k);
  if (!gridOf("backward rows grid", bw.rows,
              ceilDiv(s.rowLength, bw.rows.rowsPerBlock), s.heads, s.batch,
              config.rows, error) ||
      !gridOf("backward dK/dV grid", bw.keyValue, s.keyTiles, s.kvHeads,
              s.batch, config.keyValue, error) ||
      !gridOf("backward dQ grid", bw.query, s.queryTiles, s.heads, s.batch,
              config.query, error) ||
      !gridOf("backward tile sums grid", bw.tileSums,
              std::max<int64_t>(1, ceilDiv(2 * s.batch * s.heads * bw.slots,
                                           bw.tileSums.block)),
              1, 1, config.tileSums, error) ||
      !gridOf("backward reduce grid", bw.reduce,
              std::max<int64_t>(1, ceilDiv(reduced, bw.reduce.block)), 1, 1,
              config.reduce, error) ||
      !backwardWorkspaceBytes(d, &q, &k, config.workspaceBytes, error))
    return false;

  std::vector<double> values;
  if (!resolveParams(d, args.params, args.numParams, values, error))
    return false;
  // The arguments, in the order of docs/abi.md ("Backward").
  auto pointer = [&](const void *data) {
    buffer.push<uint64_t>(reinterpret_cast<uintptr_t>(data));
  };
  const rbfc_tensor *tensors[] = {&q,          &k,
                                  &v,          &o,
                                  args.outputGrad, args.queryGrad,
                                  args.keyGrad, args.valueGrad};
  for (const rbfc_tensor *t : tensors)
    pointer(t->data);
  pointer(args.lse->data);
  pointer(args.lseGrad ? args.lseGrad->data : nullptr);
  config.workspaceArg = buffer.count();
  pointer(nullptr);
  buffer.push<uint64_t>(mask);
  SequenceBlock block = args.block;
  if (!resolveSequenceBlock(block, s.qLen, s.kvLen, error))
    return false;
  for (int64_t size : {s.batch, s.heads, s.kvHeads, s.qLen, s.kvLen,
                       block.qOffset, block.kvOffset, block.qSeqLen,
                       block.kvSeqLen})
    buffer.push<int64_t>(size);
  for (const rbfc_tensor *t : tensors)
    for (int i = 0; i < 3; ++i)
      buffer.push<int64_t>(t->strides[i]);
  for (const rbfc_tensor *t : {args.lse, args.lseGrad})
    for (int i = 0; i < 2; ++i)
      buffer.push<int64_t>(t ? t->strides[i] : 0);
  pushParamsAndCaptures(d, values, args.captures, buffer);
  for (size_t p = 0; p < d.params.size(); ++p)
    pointer(args.paramGrads ? args.paramGrads[p] : nullptr);
  for (size_t c = 0; c < d.captures.size(); ++c) {
    const rbfc_tensor *grad =
        args.captureGrads && args.captureGrads[c].data ? &args.captureGrads[c]
                                                       : nullptr;
    pointer(grad ? grad->data : nullptr);
    for (int r = 0; r < d.captures[c].rank; ++r)
      buffer.push<int64_t>(grad ? grad->strides[r] : 0);
  }
  return true;
}

} // namespace rbfc::runtime
