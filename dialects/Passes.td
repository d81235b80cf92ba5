//===- Passes.td - rbfc passes over the attn dialect ------*- tablegen -*-===//
#ifndef RBFC_PASSES
#define RBFC_PASSES

include "mlir/Pass/PassBase.td"

def AttnExpandDistance : Pass<"attn-expand-distance"> {
  let summary = "rewrite squared distances as norms and a dot product";
  let description = [{
    `attn.dist2` becomes `||q||^2 + ||k||^2 - 2 (q.k)`, so that the later
    passes see a dot product and terms that depend on one side only. RBF
    attention, `-gamma * ||q - k||^2`, becomes
    `-gamma ||q||^2 - gamma ||k||^2 + 2 gamma (q.k)`.

    One-dimensional distances split the same way: the conversion of an index
    sum or difference to float becomes the sum or difference of the
    converted indices, so ALiBi's `slope * (kv_idx - q_idx)` reads as a key
    term and a query term (exact for indices below 2^24).
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect"];
}

def AttnDropRowInvariant : Pass<"attn-drop-row-invariant"> {
  let summary = "factor per-query terms out of a softmax score";
  let description = [{
    Softmax is invariant under adding a per-row constant, so under
    `softmax` every additive score term that depends on neither the key
    (`k`, `kv_idx`) nor anything indexed by it leaves the score. The removed
    terms move to the `row_bias` region: they still enter the log-sum-exp.
    Under `none` the pass changes nothing, because those terms scale the
    output. A term inside a non-linear function (e.g. `tanh`) is not additive
    and stays.
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect"];
}

def AttnHoistKeyTerms : Pass<"attn-hoist-key-terms"> {
  let summary = "move per-key score terms into the key_bias region";
  let description = [{
    Additive score terms that depend on neither the query (`q`, `q_idx`)
    nor anything indexed by it -- `||k||^2`, a captured per-key vector, a
    constant -- move to the `key_bias` region, which a backend computes
    once per key tile; the score reads them through `attn.key_bias`.
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect"];
}

def AttnFoldScales : Pass<"attn-fold-scales"> {
  let summary = "fold the dot product's scale into the query, work in base 2";
  let description = [{
    A factor that multiplies the dot product and is the same for every
    element of a (batch, head) -- constants, parameters, captures indexed by
    `b`/`h` -- moves into the `q_scale` region and the dot product becomes
    `attn.scaled_dot`. The score, key bias and query scale are then
    multiplied by log2(e) and the op is marked `log2_domain`, so a backend
    computes its weights with `exp2` and no per-element multiply.
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect"];
}

def AttnClassifyMask : Pass<"attn-classify-mask"> {
  let summary = "derive the tile classifier of the mask by interval reasoning";
  let description = [{
    Builds the `tile_class` region: the mask evaluated over a whole tile
    `[q_lo, q_hi] x [kv_lo, kv_hi]` with interval arithmetic. It yields
    `(all_kept, all_masked)`, each true only when that holds for every
    element of the tile, so causal, sliding-window and prefix-LM masks turn
    into comparisons of tile bounds and a document mask into comparisons of
    per-tile bounds of the captured ids (`attn.load_bound`). Where the
    reasoning cannot decide, both are false and the tile is partial.
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect"];
}

def AttnDeriveBackward : Pass<"attn-derive-backward"> {
  let summary = "derive the gradient regions of a canonical attention op";
  let description = [{
    Builds `score_grad`, `key_bias_grad`, `q_scale_grad` and `row_bias_grad`
    (for the forward regions the op has) by reverse-mode differentiation of
    the canonical regions: each gradient region recomputes the forward
    values it needs, propagates its `adjoint` argument backwards through the
    region's ops, and ends in `attn.grad_*` ops on what the region read --
    the scaled dot product, `||q||^2`, `||k||^2`, the key bias, f32
    parameters and elements of f32 captures. Together with the softmax's
    own backward (dS = P * (dP - D)), which a backend computes, they give
    the gradients of q, k, v, the parameters and the captures.

    Derivatives follow PyTorch where a function has a kink: `max`/`min`
    split the gradient evenly between equal operands, `abs` has gradient 0
    at 0, `select` passes it to the chosen operand only, and `floor`,
    `ceil` and everything integer-valued (indices, int parameters, integer
    captures, conversions from int) have gradient 0. An op the pass cannot
    differentiate is an error located at the op. The pass expects the
    canonical form (`attn-canonicalize`): `attn.dot` and `attn.dist2` must
    have been rewritten into `attn.scaled_dot` and norms.
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect"];
}

#endif // RBFC_PASSES
