// RUN: rbf-opt %s -split-input-file -verify-diagnostics

// The verifier errors of the gradient regions and the attn.grad_* ops.

func.func @grad_outside(%q: tensor<?x?x?x64xbf16>, %k: tensor<?x?x?x64xbf16>, %v: tensor<?x?x?x64xbf16>) {
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    // expected-error @+1 {{'attn.grad_scaled_dot' op may only appear in a gradient region}}
    attn.grad_scaled_dot %d
    attn.yield %d : f32
  }
  return
}

// -----

func.func @key_bias_grad_reads_dot(%q: tensor<?x?x?x64xbf16>, %k: tensor<?x?x?x64xbf16>, %v: tensor<?x?x?x64xbf16>) {
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %c = attn.key_bias : f32
    attn.yield %c : f32
  } key_bias {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %n = attn.norm2 k : f32
    attn.yield %n : f32
  } score_grad {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %x: f32):
    attn.grad_key_bias %x
    attn.yield
  } key_bias_grad {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %x: f32):
    // expected-error @+1 {{'attn.grad_scaled_dot' op in the 'key_bias_grad' region has no such forward value (only 'score_grad' may use it)}}
    attn.grad_scaled_dot %x
    attn.yield
  }
  return
}

// -----

func.func @key_bias_grad_to_query(%q: tensor<?x?x?x64xbf16>, %k: tensor<?x?x?x64xbf16>, %v: tensor<?x?x?x64xbf16>) {
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %c = attn.key_bias : f32
    attn.yield %c : f32
  } key_bias {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %n = attn.norm2 k : f32
    attn.yield %n : f32
  } score_grad {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %x: f32):
    attn.grad_key_bias %x
    attn.yield
  } key_bias_grad {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %x: f32):
    // expected-error @+1 {{'attn.grad_norm2' op in the 'key_bias_grad' region may not add to the query's gradient}}
    attn.grad_norm2 q %x
    attn.yield
  }
  return
}

// -----

func.func @grad_without_forward(%q: tensor<?x?x?x64xbf16>, %k: tensor<?x?x?x64xbf16>, %v: tensor<?x?x?x64xbf16>) {
  // expected-error @+1 {{has a 'key_bias_grad' region but no 'key_bias' region}}
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  } score_grad {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %x: f32):
    attn.yield
  } key_bias_grad {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %x: f32):
    attn.yield
  }
  return
}

// -----

func.func @grad_signature(%q: tensor<?x?x?x64xbf16>, %k: tensor<?x?x?x64xbf16>, %v: tensor<?x?x?x64xbf16>) {
  // expected-error @+1 {{expects the 'score_grad' region to take ('index', 'index', 'index', 'index', 'f32') but it takes ('index', 'index', 'index', 'index')}}
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  } score_grad {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    attn.yield
  }
  return
}

// -----

func.func @grad_param_not_a_param(%q: tensor<?x?x?x64xbf16>, %k: tensor<?x?x?x64xbf16>, %v: tensor<?x?x?x64xbf16>, %g: f32) {
  %o = attn.attention softmax %q, %k, %v params(%g : f32) {capture_names = [], param_defaults = [unit], param_names = ["g"]}
      : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %gg: f32):
    %d = attn.dot : f32
    attn.yield %d : f32
  } score_grad {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %x: f32, %gg: f32):
    // expected-error @+1 {{'attn.grad_param' op expects a parameter argument of the enclosing region}}
    attn.grad_param %x, %x
    attn.yield
  }
  return
}

// -----

func.func @grad_integer_capture(%q: tensor<?x?x?x64xbf16>, %k: tensor<?x?x?x64xbf16>, %v: tensor<?x?x?x64xbf16>, %doc: tensor<?xi32>) {
  %o = attn.attention softmax %q, %k, %v captures(%doc : tensor<?xi32>) {capture_names = ["doc"], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %d: tensor<?xi32>):
    %s = attn.dot : f32
    attn.yield %s : f32
  } score_grad {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %x: f32, %d: tensor<?xi32>):
    // expected-error @+1 {{'attn.grad_capture' op expects an f32 capture: integer captures have no gradient}}
    attn.grad_capture %d[%i], %x : tensor<?xi32>
    attn.yield
  }
  return
}
