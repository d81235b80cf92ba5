module {
  func.func @rbf(%arg0: tensor<?x?x?x64xbf16>, %arg1: tensor<?x?x?x64xbf16>, %arg2: tensor<?x?x?x64xbf16>, %arg3: f32) -> tensor<?x?x?x64xbf16> {
    %0 = attn.attention softmax %arg0, %arg1, %arg2 params(%arg3 : f32) {capture_names = [], param_defaults = [1.250000e-01 : f32], param_names = ["gamma"]} : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16> score {
    ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index, %gamma: f32):
      %1 = arith.negf %gamma : f32
      %2 = attn.dist2 : f32
      %3 = arith.mulf %1, %2 : f32
      attn.yield %3 : f32
    }
    return %0 : tensor<?x?x?x64xbf16>
  }
}
