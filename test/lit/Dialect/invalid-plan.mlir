// RUN: rbf-opt %s -split-input-file -verify-diagnostics

// Each field of #attn.plan is checked where the attribute is parsed.

// expected-error @+1 {{plan arch must be 'host' or 'sm_NN', got 'gfx90a'}}
func.func @arch() attributes {plan = #attn.plan<arch = "gfx90a", kernel = "mma_sync", tile_m = 128, tile_n = 64, warps = 4, stages = 2>} {
  return
}

// -----

// expected-error @+1 {{plan kernel must be one of mma_sync, wgmma, wgmma_cooperative, loops, got 'wmma'}}
func.func @kernel() attributes {plan = #attn.plan<arch = "sm_80", kernel = "wmma", tile_m = 128, tile_n = 64, warps = 4, stages = 2>} {
  return
}

// -----

// expected-error @+1 {{plan tile sizes must be positive multiples of 16, got tile_m = 100, tile_n = 64}}
func.func @tile_m() attributes {plan = #attn.plan<arch = "sm_80", kernel = "mma_sync", tile_m = 100, tile_n = 64, warps = 4, stages = 2>} {
  return
}

// -----

// expected-error @+1 {{plan tile sizes must be positive multiples of 16, got tile_m = 128, tile_n = 0}}
func.func @tile_n_zero() attributes {plan = #attn.plan<arch = "sm_80", kernel = "mma_sync", tile_m = 128, tile_n = 0, warps = 4, stages = 2>} {
  return
}

// -----

// expected-error @+1 {{plan tile sizes must be positive multiples of 16, got tile_m = -16, tile_n = 64}}
func.func @tile_m_negative() attributes {plan = #attn.plan<arch = "sm_80", kernel = "mma_sync", tile_m = -16, tile_n = 64, warps = 4, stages = 2>} {
  return
}

// -----

// expected-error @+1 {{plan warps must be 1, 2, 4, 8 or 16 (or 12 for the wgmma kernels), got 3}}
func.func @warps() attributes {plan = #attn.plan<arch = "sm_80", kernel = "mma_sync", tile_m = 128, tile_n = 64, warps = 3, stages = 2>} {
  return
}

// -----

// Three warpgroups of 64 query rows: only the wgmma kernels' warpgroups.
// expected-error @+1 {{plan warps 12 (three warpgroups) needs kernel 'wgmma' or 'wgmma_cooperative', got kernel 'mma_sync'}}
func.func @warps_twelve() attributes {plan = #attn.plan<arch = "sm_90a", kernel = "mma_sync", tile_m = 192, tile_n = 64, warps = 12, stages = 2>} {
  return
}

// -----

// expected-error @+1 {{plan stages must be between 1 and 8, got 0}}
func.func @stages_zero() attributes {plan = #attn.plan<arch = "sm_80", kernel = "mma_sync", tile_m = 128, tile_n = 64, warps = 4, stages = 0>} {
  return
}

// -----

// expected-error @+1 {{plan stages must be between 1 and 8, got 9}}
func.func @stages_nine() attributes {plan = #attn.plan<arch = "sm_80", kernel = "mma_sync", tile_m = 128, tile_n = 64, warps = 4, stages = 9>} {
  return
}

// -----

// The plan is checked on attn.attention as well.
func.func @on_attention(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>) {
  // expected-error @+2 {{plan warps must be 1, 2, 4, 8 or 16 (or 12 for the wgmma kernels), got 32}}
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = [],
      plan = #attn.plan<arch = "sm_90", kernel = "wgmma", tile_m = 128, tile_n = 128, warps = 32, stages = 2>}
      : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  return
}

// -----

// expected-error @+1 {{plan key_terms must be 'threads', 'bulk', 'global', 'product' or 'producer', got 'tma'}}
func.func @key_terms_tma() attributes {plan = #attn.plan<arch = "sm_90a", kernel = "mma_sync", tile_m = 128, tile_n = 64, warps = 4, stages = 2, key_terms = "tma">} {
  return
}

// -----

// expected-error @+1 {{plan key_terms 'producer' needs kernel 'wgmma' and copy 'tma' (the producer warpgroup's warps that issue no copy compute the terms), got kernel 'wgmma' and copy 'cp_async'}}
func.func @key_terms_producer_without_tma() attributes {plan = #attn.plan<arch = "sm_90a", kernel = "wgmma", tile_m = 128, tile_n = 128, warps = 8, stages = 2, key_terms = "producer">} {
  return
}

// -----

// expected-error @+1 {{plan blocks_per_sm must be between 0 (no hint) and 32, got 33}}
func.func @blocks_per_sm_33() attributes {plan = #attn.plan<arch = "sm_90a", kernel = "mma_sync", tile_m = 128, tile_n = 64, warps = 4, stages = 2, blocks_per_sm = 33>} {
  return
}
