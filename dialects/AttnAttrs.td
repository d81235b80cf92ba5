//===- AttnAttrs.td - attn enums and attributes -----------*- tablegen -*-===//
#ifndef RBFC_ATTN_ATTRS
#define RBFC_ATTN_ATTRS

include "AttnDialect.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"

def Attn_NormalizationSoftmax : I32EnumAttrCase<"softmax", 0>;
def Attn_NormalizationNone : I32EnumAttrCase<"none", 1>;
def Attn_Normalization : I32EnumAttr<"Normalization",
    "how the exponentiated scores of a query row are combined",
    [Attn_NormalizationSoftmax, Attn_NormalizationNone]> {
  let cppNamespace = "::rbfc::attn";
}

def Attn_VectorQ : I32EnumAttrCase<"q", 0>;
def Attn_VectorK : I32EnumAttrCase<"k", 1>;
def Attn_Vector : I32EnumAttr<"Vector", "the query or the key row vector",
    [Attn_VectorQ, Attn_VectorK]> {
  let cppNamespace = "::rbfc::attn";
}

def Attn_SizeBatch : I32EnumAttrCase<"batch", 0>;
def Attn_SizeHeads : I32EnumAttrCase<"heads", 1>;
def Attn_SizeKVHeads : I32EnumAttrCase<"kv_heads", 2>;
def Attn_SizeQLen : I32EnumAttrCase<"q_len", 3>;
def Attn_SizeKVLen : I32EnumAttrCase<"kv_len", 4>;
def Attn_SizeHeadDim : I32EnumAttrCase<"head_dim", 5>;
def Attn_Size : I32EnumAttr<"Size", "a problem size",
    [Attn_SizeBatch, Attn_SizeHeads, Attn_SizeKVHeads, Attn_SizeQLen,
     Attn_SizeKVLen, Attn_SizeHeadDim]> {
  let cppNamespace = "::rbfc::attn";
}

def Attn_BoundMin : I32EnumAttrCase<"min", 0>;
def Attn_BoundMax : I32EnumAttrCase<"max", 1>;
def Attn_Bound : I32EnumAttr<"Bound", "which end of a range",
    [Attn_BoundMin, Attn_BoundMax]> {
  let cppNamespace = "::rbfc::attn";
}

def Attn_PlanAttr : AttrDef<Attn_Dialect, "Plan"> {
  let mnemonic = "plan";
  let summary = "how a backend tiles and schedules one attention op";
  let description = [{
    The schedule a backend follows: the target architecture, the query and
    key tile sizes, the warps of one thread block, the depth of the K/V
    pipeline and the kernel structure (`mma_sync` for the FlashAttention-2
    style on sm_80+, `wgmma` for the Hopper structure). `warps` counts the
    warps that compute: 1, 2, 4, 8 or 16, or 12 (three warpgroups of 64
    query rows) for `wgmma` and `wgmma_cooperative`; `wgmma` adds a producer
    warpgroup to the block. `key_terms` says how
    per-key terms (RBF's key norms, key biases) reach the scores of each K
    tile: staged in shared memory by `threads` (default: cp.async, 16 bytes
    per thread) or by `bulk` (sm_90: one cp.async.bulk per tile that
    completes on an mbarrier, with no per-thread addresses), or loaded by
    each lane from the workspace (`global`), or carried by S = Q K^T as
    one more k (`product`, for a key bias that rides in the dot product);
    with `producer` (the `wgmma` kernel with `copy = "tma"`) the producer
    warpgroup's otherwise idle warps compute them from each K tile in
    shared memory, and no prologue or workspace is needed. `blocks_per_sm` (0: no hint)
    asks the backend to compile the kernel for that many resident thread
    blocks per multiprocessor, which caps its registers. `copy` says how K
    and V tiles reach shared memory: `cp_async` (16 bytes a thread) or
    `tma` (the `wgmma` kernel's producer: one thread issues a tensor-memory
    copy per 64 columns of a tile from a tensor map the runtime builds, and
    it completes on the stage's mbarrier). `overlap` (the `wgmma`
    kernel's consumers, FlashAttention-3's intra-warpgroup overlap): a
    consumer issues a tile's S = Q K^T together with the previous tile's
    O += P V and computes the softmax while that product runs, at the price
    of P's registers held a tile longer. Backends choose a
    default per target and head dimension; `rbfc --plan=...` overrides it.

    Example: `#attn.plan<arch = "sm_80", kernel = "mma_sync", tile_m = 128, tile_n = 64, warps = 4, stages = 2>`
  }];
  let parameters = (ins StringRefParameter<"target architecture">:$arch,
                        StringRefParameter<"kernel structure">:$kernel,
                        "int64_t":$tile_m, "int64_t":$tile_n,
                        "int64_t":$warps, "int64_t":$stages,
                        StringRefParameter<"how per-key terms reach the scores",
                                           "\"threads\"">:$key_terms,
                        DefaultValuedParameter<"int64_t", "0",
                          "resident blocks per multiprocessor to compile for">:$blocks_per_sm,
                        StringRefParameter<"how K and V tiles reach shared memory",
                                           "\"cp_async\"">:$copy,
                        DefaultValuedParameter<"bool", "false",
                          "softmax under the previous tile's P V">:$overlap);
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

#endif // RBFC_ATTN_ATTRS
