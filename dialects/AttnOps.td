//===- AttnOps.td - attn dialect operations ---------------*- tablegen -*-===//
#ifndef RBFC_ATTN_OPS
#define RBFC_ATTN_OPS

include "AttnDialect.td"
include "AttnAttrs.td"
include "mlir/IR/OpBase.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "mlir/IR/OpAsmInterface.td"

def Attn_InputElementType : AnyTypeOf<[BF16, F16, F32]>;
def Attn_InputTensor : 4DTensorOf<[BF16, F16, F32]>;
def Attn_ParamType : AnyTypeOf<[F32, I32]>;
def Attn_CaptureTensor : RankedTensorOf<[F32, I32, I64]>;

//===----------------------------------------------------------------------===//
// attn.attention
//===----------------------------------------------------------------------===//

def Attn_AttentionOp : Attn_Op<"attention", [
    AttrSizedOperandSegments, IsolatedFromAbove,
    DeclareOpInterfaceMethods<OpAsmOpInterface, ["getAsmBlockArgumentNames"]>,
    SingleBlockImplicitTerminator<"YieldOp">, RecursiveMemoryEffects]> {
  let summary = "fused attention with a per-element score and a mask";
  let description = [{
    Computes, for every batch `b`, query head `h` and query row `i`,

        O[b,h,i,:] = sum_j w_ij V[b,h',j,:]      (h' = h / (heads / kv_heads))

    where `s_ij` is the value the `score` region yields for the element
    (b, h, i, j), masked elements (the `mask` region yields false) are left
    out, and `w_ij = exp(s_ij) / sum_j exp(s_ij)` under `softmax` or
    `w_ij = exp(s_ij)` under `none`. The optional second result is the
    natural log-sum-exp of the scores of each row (`-inf` for a row whose
    elements are all masked, whose output is zero).

    Every region has one block. All but `tile_class` take the arguments
    `(b, h, q_idx, kv_idx : index, params..., captures...)`; `tile_class`
    takes `(b, h, q_lo, q_hi, kv_lo, kv_hi : index, params..., captures...)`
    and describes the inclusive tile `[q_lo, q_hi] x [kv_lo, kv_hi]`.

    - `score` yields the f32 score of one element.
    - `mask` (optional) yields i1, true where the element takes part.
    - `q_scale` (optional, canonical form) yields the f32 factor the query is
      multiplied by before the dot product; `attn.scaled_dot` reads the
      scaled product. It may use `b`, `h`, parameters and captures only.
    - `key_bias` (optional, canonical form) yields the per-key term `c`,
      read in the score through `attn.key_bias`; it may not use the query.
    - `row_bias` (optional, canonical form, softmax only) yields the per-row
      term factored out of the score; it changes only the log-sum-exp.
    - `tile_class` (optional, canonical form) yields `(all_kept, all_masked)`
      for a tile of the mask; a backend skips all-masked tiles and omits the
      element test on all-kept ones.

    `plan` (set by `attn-select-plan` or `--plan`) is the GPU kernel's
    structure and tiles. `small_plans`, set beside a default plan only, are
    further forward kernels', each for problems that it runs in one wave
    (docs/abi.md, "Small problems"); each after the first has fewer rows a
    block than the one before it, which the runtime must find in one wave
    first. The runtime picks one kernel at each launch.

    With `log2_domain`, the score, key_bias and q_scale regions are scaled
    by log2(e) so that `exp2` of the score is the weight; `row_bias` stays
    in the natural domain.

    The gradient regions (`score_grad`, `key_bias_grad`, `q_scale_grad`,
    `row_bias_grad`; `attn-derive-backward` builds them from the canonical
    form) are the reverse-mode derivatives of the region of the same name.
    They take `(b, h, q_idx, kv_idx : index, adjoint : f32, params...,
    captures...)`, where `adjoint` is the derivative of the loss with
    respect to the value the forward region yields there, and yield
    nothing: their `attn.grad_*` ops add to the gradients of what the
    forward region read (the scaled dot product, the norms, the key bias,
    parameters and captured tensor elements). A backward kernel evaluates
    `score_grad` per element with `adjoint = dL/dscore`, `key_bias_grad`
    per key with the sum over the rows of what `score_grad` added to the
    key bias, `q_scale_grad` per (batch, head) with `dL/dq_scale`, and
    `row_bias_grad` per row with the sum of the row's score adjoints (the
    gradient of the log-sum-exp in exact arithmetic).

    Example (RBF attention before canonicalisation):

    ```mlir
    %o = attn.attention softmax %q, %k, %v params(%gamma : f32)
           {param_names = ["gamma"], param_defaults = [1.250000e-01 : f32], capture_names = []}
           : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16>
         score {
         ^bb0(%b: index, %h: index, %i: index, %j: index, %g: f32):
           %d = attn.dist2 : f32
           %n = arith.negf %g : f32
           %s = arith.mulf %n, %d : f32
           attn.yield %s : f32
         }
    ```
  }];
  let arguments = (ins Attn_InputTensor:$query, Attn_InputTensor:$key,
                       Attn_InputTensor:$value,
                       Variadic<Attn_ParamType>:$params,
                       Variadic<Attn_CaptureTensor>:$captures,
                       Attn_Normalization:$normalization,
                       StrArrayAttr:$param_names,
                       ArrayAttr:$param_defaults,
                       StrArrayAttr:$capture_names,
                       OptionalAttr<Attn_PlanAttr>:$plan,
                       OptionalAttr<TypedArrayAttrBase<Attn_PlanAttr,
                           "plans of the small-problem kernels">>:$small_plans,
                       UnitAttr:$log2_domain);
  let results = (outs Attn_InputTensor:$output,
                      Optional<3DTensorOf<[F32]>>:$lse);
  let regions = (region SizedRegion<1>:$score, MaxSizedRegion<1>:$mask,
                        MaxSizedRegion<1>:$q_scale,
                        MaxSizedRegion<1>:$key_bias,
                        MaxSizedRegion<1>:$row_bias,
                        MaxSizedRegion<1>:$tile_class,
                        MaxSizedRegion<1>:$score_grad,
                        MaxSizedRegion<1>:$key_bias_grad,
                        MaxSizedRegion<1>:$q_scale_grad,
                        MaxSizedRegion<1>:$row_bias_grad);
  let assemblyFormat = [{
    $normalization $query `,` $key `,` $value
    (`params` `(` $params^ `:` type($params) `)`)?
    (`captures` `(` $captures^ `:` type($captures) `)`)?
    attr-dict `:` type($query) `,` type($key) `,` type($value)
    `->` type($output) (`,` type($lse)^)?
    `score` $score
    (`mask` $mask^)?
    (`q_scale` $q_scale^)?
    (`key_bias` $key_bias^)?
    (`row_bias` $row_bias^)?
    (`tile_class` $tile_class^)?
    (`score_grad` $score_grad^)?
    (`key_bias_grad` $key_bias_grad^)?
    (`q_scale_grad` $q_scale_grad^)?
    (`row_bias_grad` $row_bias_grad^)?
  }];
  let hasVerifier = 1;
  let hasRegionVerifier = 1;
  let extraClassDeclaration = [{
    /// Number of leading index arguments of the element regions.
    static constexpr unsigned kNumIndexArgs = 4;
    /// Number of leading index arguments of the tile_class region.
    static constexpr unsigned kNumTileArgs = 6;
    /// Number of leading arguments of a gradient region: the element
    /// region's indices and the adjoint.
    static constexpr unsigned kNumGradArgs = 5;

    /// The argument types every gradient region takes.
    ::llvm::SmallVector<::mlir::Type> getGradRegionArgTypes();
    /// Whether `region` is one of the four gradient regions.
    bool isGradRegion(::mlir::Region &region);
    /// The leading (index and adjoint) arguments `region` takes before the
    /// parameters and captures.
    unsigned getNumLeadingArgs(::mlir::Region &region);
    /// Whether attn-derive-backward has built the gradient regions.
    bool hasBackward() { return !getScoreGrad().empty(); }

    /// The argument types every element region (score, mask, q_scale,
    /// key_bias, row_bias) takes.
    ::llvm::SmallVector<::mlir::Type> getElementRegionArgTypes();
    /// The argument types the tile_class region takes.
    ::llvm::SmallVector<::mlir::Type> getTileRegionArgTypes();

    /// Creates the single block of `region` with the arguments its kind
    /// takes, located at the op.
    ::mlir::Block &createRegionBlock(::mlir::Region &region);

    /// The value `region` yields (its terminator's operands).
    static ::mlir::ValueRange getYielded(::mlir::Region &region);

    bool isSoftmax() {
      return getNormalization() == ::rbfc::attn::Normalization::softmax;
    }
  }];
}

//===----------------------------------------------------------------------===//
// Scalar ops of the element regions
//===----------------------------------------------------------------------===//

class Attn_ElementOp<string mnemonic, list<Trait> traits = []>
    : Attn_Op<mnemonic, !listconcat(traits, [Pure,
                                             HasParent<"AttentionOp">])>;

def Attn_DotOp : Attn_ElementOp<"dot"> {
  let summary = "the dot product q_i . k_j of the element's query and key";
  let description = [{
    The raw dot product of the query row `i` and the key row `j`, accumulated
    in f32. Example: `%s = attn.dot : f32`.
  }];
  let results = (outs F32:$result);
  let assemblyFormat = "attr-dict `:` type($result)";
}

def Attn_ScaledDotOp : Attn_ElementOp<"scaled_dot"> {
  let summary = "the dot product of the pre-scaled query and the key";
  let description = [{
    `(q_scale * q_i) . k_j`, where `q_scale` is the value the enclosing
    op's `q_scale` region yields. It is what a backend computes with its
    matrix units after folding constant factors into the query tile.
    Example: `%s = attn.scaled_dot : f32`.
  }];
  let results = (outs F32:$result);
  let assemblyFormat = "attr-dict `:` type($result)";
}

def Attn_Norm2Op : Attn_ElementOp<"norm2"> {
  let summary = "the squared Euclidean norm of the query or the key row";
  let description = [{
    `||q_i||^2` or `||k_j||^2`. Example: `%n = attn.norm2 k : f32`.
  }];
  let arguments = (ins Attn_Vector:$vector);
  let results = (outs F32:$result);
  let assemblyFormat = "$vector attr-dict `:` type($result)";
}

def Attn_Dist2Op : Attn_ElementOp<"dist2"> {
  let summary = "the squared Euclidean distance ||q_i - k_j||^2";
  let description = [{
    The squared distance of the query and key rows. `attn-expand-distance`
    rewrites it as `||q||^2 + ||k||^2 - 2 q.k`. Example: `%d = attn.dist2 : f32`.
  }];
  let results = (outs F32:$result);
  let assemblyFormat = "attr-dict `:` type($result)";
}

def Attn_SizeOp : Attn_ElementOp<"size"> {
  let summary = "a problem size (batch, heads, kv_heads, q_len, kv_len, head_dim)";
  let description = [{
    Example: `%n = attn.size kv_len : index`.
  }];
  let arguments = (ins Attn_Size:$size);
  let results = (outs Index:$result);
  let assemblyFormat = "$size attr-dict `:` type($result)";
  // The head dimension is part of the tensor types; the others are known
  // only at run time.
  let hasFolder = 1;
}

def Attn_KeyBiasOp : Attn_ElementOp<"key_bias"> {
  let summary = "the per-key term the key_bias region computes for kv_idx";
  let description = [{
    Reads, for the element's key row, the value the enclosing op's
    `key_bias` region yields. A backend computes it once per key tile.
    Example: `%c = attn.key_bias : f32`.
  }];
  let results = (outs F32:$result);
  let assemblyFormat = "attr-dict `:` type($result)";
}

def Attn_LoadOp : Attn_ElementOp<"load", [
    TypesMatchWith<"result type is the capture's element type", "capture",
                   "result",
                   "::llvm::cast<::mlir::RankedTensorType>($_self).getElementType()">]> {
  let summary = "an element of a captured tensor";
  let description = [{
    Reads `capture[indices...]`. Each index is clamped to `[0, dim - 1]`, so
    the read is in bounds whatever the indices are; `docs/language.md`
    states this rule. Example: `%x = attn.load %bias[%h, %r] : tensor<?x?xf32>`.
  }];
  let arguments = (ins Attn_CaptureTensor:$capture, Variadic<Index>:$indices);
  let results = (outs AnyTypeOf<[F32, I32, I64]>:$result);
  let assemblyFormat = [{
    $capture `[` $indices `]` attr-dict `:` type($capture)
  }];
  let hasVerifier = 1;
}

def Attn_LoadBoundOp : Attn_ElementOp<"load_bound", [
    TypesMatchWith<"result type is the capture's element type", "capture",
                   "result",
                   "::llvm::cast<::mlir::RankedTensorType>($_self).getElementType()">,
    AttrSizedOperandSegments]> {
  let summary = "the least or greatest element of a box of a captured tensor";
  let description = [{
    `min` or `max` of `capture[i0, i1, ...]` over `lows[d] <= i_d <= highs[d]`
    with the same clamping as `attn.load`. Mask classification uses it to
    bound a captured term over a tile (document masks); a backend may answer
    it from a per-tile table. Example:
    `%lo = attn.load_bound min %doc[%q_lo] to [%q_hi] : tensor<?xi32>`.
  }];
  let arguments = (ins Attn_Bound:$bound, Attn_CaptureTensor:$capture,
                       Variadic<Index>:$lows, Variadic<Index>:$highs);
  let results = (outs AnyTypeOf<[F32, I32, I64]>:$result);
  let assemblyFormat = [{
    $bound $capture `[` $lows `]` `to` ` ` `[` $highs `]` attr-dict `:` type($capture)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Gradient accumulation ops of the gradient regions
//===----------------------------------------------------------------------===//

// They add to a gradient the backend keeps; the effect keeps them alive
// through canonicalisation, which removes the forward values no gradient
// needs.
class Attn_GradOp<string mnemonic, list<Trait> traits = []>
    : Attn_Op<mnemonic, !listconcat(traits, [MemoryEffects<[MemWrite]>,
                                             HasParent<"AttentionOp">])>;

def Attn_GradScaledDotOp : Attn_GradOp<"grad_scaled_dot"> {
  let summary = "adds to the gradient of the scaled dot product";
  let description = [{
    Adds `adjoint` to dL/d(scaled_dot) of the element, `scaled_dot` being
    `(q_scale * q_i) . k_j`. A backend turns the sum over elements into
    `dQ_i += q_scale * sum_j adjoint_ij k_j`, `dK_j += sum_i adjoint_ij
    (q_scale * q_i)` and `dL/dq_scale += sum_ij adjoint_ij (q_i . k_j)`.
    Only in `score_grad`. Example: `attn.grad_scaled_dot %x`.
  }];
  let arguments = (ins F32:$adjoint);
  let assemblyFormat = "$adjoint attr-dict";
}

def Attn_GradNorm2Op : Attn_GradOp<"grad_norm2"> {
  let summary = "adds to the gradient of a squared norm";
  let description = [{
    Adds `adjoint` to dL/d||q_i||^2 or dL/d||k_j||^2, which a backend
    turns into `2 * adjoint * q_i` added to dQ_i (or `k_j` to dK_j).
    Example: `attn.grad_norm2 k %x`.
  }];
  let arguments = (ins Attn_Vector:$vector, F32:$adjoint);
  let assemblyFormat = "$vector $adjoint attr-dict";
}

def Attn_GradKeyBiasOp : Attn_GradOp<"grad_key_bias"> {
  let summary = "adds to the gradient of the element's key bias";
  let description = [{
    Adds `adjoint` to dL/d(key_bias) of the element's key. A backend sums it
    over the rows and evaluates `key_bias_grad` with that sum as its
    adjoint. Only in `score_grad`. Example: `attn.grad_key_bias %x`.
  }];
  let arguments = (ins F32:$adjoint);
  let assemblyFormat = "$adjoint attr-dict";
}

def Attn_GradParamOp : Attn_GradOp<"grad_param"> {
  let summary = "adds to the gradient of an f32 parameter";
  let description = [{
    Adds `adjoint` to dL/d`param`, where `param` is the region's block
    argument of an f32 parameter. Example: `attn.grad_param %gamma, %x`.
  }];
  let arguments = (ins F32:$param, F32:$adjoint);
  let assemblyFormat = "$param `,` $adjoint attr-dict";
  let hasVerifier = 1;
}

def Attn_GradCaptureOp : Attn_GradOp<"grad_capture"> {
  let summary = "adds to the gradient of an element of an f32 capture";
  let description = [{
    Adds `adjoint` to the gradient of `capture[indices...]`, each index
    clamped into its dimension as `attn.load` clamps it: the gradient of
    the element the load read. Example:
    `attn.grad_capture %bias[%h, %col], %x : tensor<?x?xf32>`.
  }];
  let arguments = (ins Attn_CaptureTensor:$capture, Variadic<Index>:$indices,
                       F32:$adjoint);
  let assemblyFormat = [{
    $capture `[` $indices `]` `,` $adjoint attr-dict `:` type($capture)
  }];
  let hasVerifier = 1;
}

def Attn_YieldOp : Attn_Op<"yield", [Pure, Terminator,
                                     HasParent<"AttentionOp">]> {
  let summary = "yields the values of an attn.attention region";
  let arguments = (ins Variadic<AnyType>:$values);
  let builders = [OpBuilder<(ins), [{ /* empty yield */ }]>];
  let assemblyFormat = "attr-dict ($values^ `:` type($values))?";
}

#endif // RBFC_ATTN_OPS
