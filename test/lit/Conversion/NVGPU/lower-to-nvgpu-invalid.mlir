// What the mma.sync kernel cannot build is an error naming the reason.
// RUN: rbf-opt %s --attn-lower-to-nvgpu --split-input-file --verify-diagnostics

func.func @no_plan(%q: tensor<?x?x?x64xbf16>, %k: tensor<?x?x?x64xbf16>, %v: tensor<?x?x?x64xbf16>) -> tensor<?x?x?x64xbf16> {
  // expected-error @below {{has no plan; run attn-select-plan first}}
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []} : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16> score {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index):
    %s = attn.dot : f32
    attn.yield %s : f32
  }
  return %o : tensor<?x?x?x64xbf16>
}

// -----

// Distances must be expanded by attn-canonicalize before lowering.
func.func @not_canonical(%q: tensor<?x?x?x64xbf16>, %k: tensor<?x?x?x64xbf16>, %v: tensor<?x?x?x64xbf16>) -> tensor<?x?x?x64xbf16> {
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = [], plan = #attn.plan<arch = "sm_90a", kernel = "mma_sync", tile_m = 64, tile_n = 32, warps = 4, stages = 2>} : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16> score {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index):
    // expected-error @below {{cannot be evaluated by the mma_sync kernel (not in the canonical form; run attn-canonicalize)}}
    %d = attn.dist2 : f32
    attn.yield %d : f32
  }
  return %o : tensor<?x?x?x64xbf16>
}
