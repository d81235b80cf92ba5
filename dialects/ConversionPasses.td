//===- ConversionPasses.td - lowerings of attn to targets -*- tablegen -*-===//
#ifndef RBFC_CONVERSION_PASSES
#define RBFC_CONVERSION_PASSES

include "mlir/Pass/PassBase.td"

def AttnSelectPlan : Pass<"attn-select-plan"> {
  let summary = "attach the default #attn.plan for a target to every attention op";
  let description = [{
    Chooses the kernel structure, tile sizes, warps and pipeline depth for
    `arch` and the op's head dimension and element type, and sets it as the
    op's `plan` attribute. An op that already carries a plan (from
    `rbfc --plan=...` or an autotuner) keeps it; the pass only checks that
    the backend can build it.
  }];
  let options = [
    Option<"arch", "arch", "std::string", /*default=*/"\"sm_90a\"",
           "target architecture: sm_80, sm_86, sm_89, sm_90, sm_90a or host">,
  ];
}

def AttnLowerToNVGPU : Pass<"attn-lower-to-nvgpu", "::mlir::ModuleOp"> {
  let summary = "build a FlashAttention-2 style gpu.func for every attention op";
  let description = [{
    Turns every function holding a canonical attn.attention with an
    `mma_sync` plan into a `gpu.module` with one `gpu.func` kernel whose
    parameters follow docs/abi.md: the Q tile stays in registers, K/V tiles
    stream through shared memory with `cp.async` (`nvgpu.device_async_copy`),
    `nvgpu.ldmatrix` feeds `nvvm.mma.sync` m16n8k16 for S = Q K^T and
    O += P V, the softmax runs online in registers with exp2, the score
    region is applied to every accumulator element with q_idx/kv_idx from
    the mma fragment layout, the key_bias region is computed once per K tile
    into shared memory, and tiles the tile_class region proves masked are
    skipped. The kernel carries its launch descriptor as the
    `rbfc.descriptor` attribute. The host function is removed.
  }];
  let dependentDialects = [
    "::mlir::arith::ArithDialect", "::mlir::gpu::GPUDialect",
    "::mlir::math::MathDialect", "::mlir::memref::MemRefDialect",
    "::mlir::nvgpu::NVGPUDialect", "::mlir::NVVM::NVVMDialect",
    "::mlir::LLVM::LLVMDialect", "::mlir::scf::SCFDialect",
    "::mlir::vector::VectorDialect"
  ];
}

def AttnTensorMapParams : Pass<"attn-tensor-map-params",
                                "::mlir::gpu::GPUModuleOp"> {
  let summary = "make the tensor-map parameters of lowered kernels grid constants";
  let description = [{
    A kernel that copies by TMA takes each CUtensorMap by value and names it
    by its address; `gpu.func` cannot declare such a parameter, so
    attn-lower-to-nvgpu declares an `!llvm.ptr` and lists its index in the
    kernel's `rbfc.tensor_map_args`. Once the kernel is an `llvm.func`
    (after convert-gpu-to-nvvm, whose bare-pointer convention keeps one
    LLVM parameter per kernel parameter) this pass makes each listed
    parameter a 128-byte `byval`, 64-byte aligned, `nvvm.grid_constant`
    parameter: the PTX declares `.param .align 64 .b8 [128]`, and the
    kernel's uses read its generic address (`cvta.param`) instead of a
    per-thread copy in local memory, which TMA could not read. The list
    is removed.
  }];
  let dependentDialects = [
    "::mlir::LLVM::LLVMDialect", "::mlir::NVVM::NVVMDialect"
  ];
}

def AttnApproximateTanh : Pass<"attn-approximate-tanh",
                                "::mlir::gpu::GPUModuleOp"> {
  let summary = "evaluate the kernels' f32 tanh with the hardware approximation";
  let description = [{
    Rewrites every f32 `math.tanh` of a kernel module into `llvm.intr.tanh`
    with the `afn` flag, which the NVPTX backend selects as one
    `tanh.approx.f32` (sm_75 and later; every target rbfc builds for)
    instead of libdevice's `__nv_tanhf`, an ex2 and a reciprocal on the
    special-function unit beside arithmetic. A score that caps its logits
    (softcap's `cap * tanh(s / cap)`) then takes one special-function
    operation a score for the tanh beside the softmax's exp2, not two:
    at head_dim 64 the softmax's exponentials and the tanh share that unit
    at twice the ratio to tensor work they have at 128. The approximation's
    relative error is at most 2^-11 (PTX ISA), below the bf16 inputs'
    rounding of the dot product it caps (2^-8 relative per operand);
    FlashAttention's softcapping evaluates tanh the same way. Other element
    types keep libdevice, and so does a function marked
    `rbfc.exact_functions` (the backward's dK/dV and dQ kernels, where a
    param's gradient can difference values near the tanh: softcap's
    d/dcap is tanh(u) - u (1 - tanh(u)^2), about (2/3) u^3); the pass
    removes the mark.
  }];
  let dependentDialects = ["::mlir::LLVM::LLVMDialect"];
}

def AttnLowerToHost : Pass<"attn-lower-to-host", "::mlir::ModuleOp"> {
  let summary = "lower every attention op to a tiled streaming-softmax CPU function";
  let description = [{
    Replaces every function holding one canonical attn.attention by a
    function on strided memrefs that the host backend JIT-compiles
    (docs/host-backend.md):

        func.func @NAME(%q, %k, %v, %o, [%lse,] params..., captures...,
                        %work_begin: index, %work_end: index)
            attributes {llvm.emit_c_interface}

    A work item is one (batch, head, query tile of `tile-m` rows); the
    function runs the items in [work_begin, work_end), so a thread pool can
    split the range. Per item it walks the key tiles of `tile-n` keys with a
    running maximum, running sum and output rescale (online softmax in the
    log2 domain: weights are exp2 of the score). The tile_class region
    classifies each key tile: all-masked tiles are skipped, all-kept tiles
    with tile-n keys run without the per-element mask or padding lanes. The
    key_bias region is evaluated once per key tile into a scratch buffer
    and the tile's K is transposed into another, so that the scores of
    `rows-per-step` query rows are FMAs across vectors of `key-lanes` keys,
    `key-vectors-per-step` of them per pass over head_dim (a GEMM
    micro-kernel's register block); the score and mask regions are applied
    to those vectors, the weights come from an exp2 built from arithmetic
    (no libm call per weight), and the P*V update loads each chunk of
    `head-dim-vectors-per-step` vectors of a value row once for the rows of
    the step. bf16/f16 inputs are extended
    to f32 in registers and every accumulation is f32. Any q_len/kv_len
    works (lanes past the last key score -inf, rows past q_len are computed
    but never stored). Fully masked
    rows give zeros and an LSE of -inf. The function's `rbfc.tile_m`
    attribute tells the caller how to count work items.
  }];
  let options = [
    Option<"tileM", "tile-m", "int64_t", /*default=*/"0",
           "query rows per work item; 0 chooses 16 row blocks of the "
           "forward's rows-per-step (64 rows for the backward)">,
    Option<"tileN", "tile-n", "int64_t", /*default=*/"64",
           "keys per key tile (the unit of mask classification)">,
    Option<"rowsPerStep", "rows-per-step", "int64_t", /*default=*/"0",
           "query rows (or accumulator rows) one step computes together; 0 "
           "chooses, for the forward, the fewest from 4 whose FMA passes "
           "keep 12 accumulators (6 with AVX2, 4 with AVX-512), 4 for the "
           "backward">,
    Option<"keyLanes", "key-lanes", "int64_t", /*default=*/"16",
           "keys per score vector: the CPU's f32 lanes (16 with AVX-512, 8 "
           "with AVX2)">,
    Option<"keyVectorsPerStep", "key-vectors-per-step", "int64_t",
           /*default=*/"0",
           "key vectors whose scores a step accumulates in registers per "
           "pass over head_dim (rows-per-step of each); 0 chooses as many as "
           "fit the CPU's vector registers">,
    Option<"headDimVectorsPerStep", "head-dim-vectors-per-step", "int64_t",
           /*default=*/"0",
           "vectors of head_dim per accumulator row that a P*V-style step "
           "keeps in registers per pass over the keys; 0 chooses as many as "
           "fit the CPU's vector registers">,
  ];
  let dependentDialects = [
    "::mlir::arith::ArithDialect", "::mlir::func::FuncDialect",
    "::mlir::math::MathDialect", "::mlir::memref::MemRefDialect",
    "::mlir::scf::SCFDialect", "::mlir::vector::VectorDialect"
  ];
}

#endif // RBFC_CONVERSION_PASSES
