//===- AttnDialect.td - the attn dialect ------------------*- tablegen -*-===//
#ifndef RBFC_ATTN_DIALECT
#define RBFC_ATTN_DIALECT

include "mlir/IR/OpBase.td"

def Attn_Dialect : Dialect {
  let name = "attn";
  let cppNamespace = "::rbfc::attn";
  let summary = "Attention variants as a dot product plus per-element score terms";
  let description = [{
    The `attn` dialect holds one attention computation as a single op,
    `attn.attention`, whose regions describe the score of one (query, key)
    pair and the mask. Scalar ops inside those regions (`attn.dot`,
    `attn.norm2`, `attn.dist2`, `attn.load`, ...) stand for per-element
    quantities; upstream `arith` and `math` provide the rest.

    The target-independent passes rewrite the score into the normal form

        score(b,h,i,j) = alpha * (q_i . k_j) + c(b,h,j) + p(b,h,i,j)

    with `alpha` folded into a query pre-scale (`q_scale` region), `c` in a
    per-key bias (`key_bias` region) and row-only terms factored out
    (`row_bias` region, used for the log-sum-exp only).
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect"];
  let useDefaultAttributePrinterParser = 1;
  let hasConstantMaterializer = 1;
}

class Attn_Op<string mnemonic, list<Trait> traits = []>
    : Op<Attn_Dialect, mnemonic, traits>;

#endif // RBFC_ATTN_DIALECT
