// RUN: rbf-opt %s --attn-derive-backward --split-input-file --verify-diagnostics

// The derivation reads the canonical form: a raw dot product is an error.
func.func @raw_dot(%q: tensor<?x?x?x64xbf16>, %k: tensor<?x?x?x64xbf16>, %v: tensor<?x?x?x64xbf16>) -> tensor<?x?x?x64xbf16> {
  %0 = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []} : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16> score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    // expected-error @+1 {{cannot be differentiated outside the canonical form}}
    %s = attn.dot : f32
    attn.yield %s : f32
  }
  return %0 : tensor<?x?x?x64xbf16>
}

// -----

// An op without a derivative rule is an error located at the op.
func.func @no_rule(%q: tensor<?x?x?x64xbf16>, %k: tensor<?x?x?x64xbf16>, %v: tensor<?x?x?x64xbf16>) -> tensor<?x?x?x64xbf16> {
  %0 = attn.attention softmax %q, %k, %v {capture_names = [], log2_domain, param_defaults = [], param_names = []} : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16> score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %s = attn.scaled_dot : f32
    // expected-error @+1 {{cannot be differentiated: the backward pass has no derivative for it}}
    %t = math.sin %s : f32
    attn.yield %t : f32
  } q_scale {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %c = arith.constant 1.0 : f32
    attn.yield %c : f32
  }
  return %0 : tensor<?x?x?x64xbf16>
}
