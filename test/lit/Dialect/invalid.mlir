// RUN: rbf-opt %s -split-input-file -verify-diagnostics

// Every error the attn.attention, attn.load and attn.load_bound verifiers
// emit, one per section.

func.func @element_types(%q: tensor<?x?x?x64xbf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xbf16>) {
  // expected-error @+1 {{'attn.attention' op expects query, key and value of one element type, got 'bf16', 'f16' and 'bf16'}}
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  return
}

// -----

func.func @output_element_type(%q: tensor<?x?x?x64xbf16>, %k: tensor<?x?x?x64xbf16>, %v: tensor<?x?x?x64xbf16>) {
  // expected-error @+1 {{expects the output element type to be the input's ('bf16'), got 'f32'}}
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xf32>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  return
}

// -----

func.func @head_dims(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x128xf16>, %v: tensor<?x?x?x128xf16>) {
  // expected-error @+1 {{expects query and key of one head dimension, got 64 and 128}}
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xf16>, tensor<?x?x?x128xf16>, tensor<?x?x?x128xf16> -> tensor<?x?x?x128xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  return
}

// -----

func.func @batch_query_key(%q: tensor<2x?x?x64xf16>, %k: tensor<3x?x?x64xf16>, %v: tensor<?x?x?x64xf16>) {
  // expected-error @+1 {{expects query, key and value of one batch size, got 2x?x?x64, 3x?x?x64, ?x?x?x64}}
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<2x?x?x64xf16>, tensor<3x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<2x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  return
}

// -----

func.func @batch_key_value(%q: tensor<?x?x?x64xf16>, %k: tensor<2x?x?x64xf16>, %v: tensor<4x?x?x64xf16>) {
  // expected-error @+1 {{expects query, key and value of one batch size, got ?x?x?x64, 2x?x?x64, 4x?x?x64}}
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xf16>, tensor<2x?x?x64xf16>, tensor<4x?x?x64xf16> -> tensor<?x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  return
}

// -----

func.func @key_value_heads(%q: tensor<?x4x?x64xf16>, %k: tensor<?x2x?x64xf16>, %v: tensor<?x4x?x64xf16>) {
  // expected-error @+1 {{expects key and value of one shape up to the head dimension, got ?x2x?x64 and ?x4x?x64}}
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x4x?x64xf16>, tensor<?x2x?x64xf16>, tensor<?x4x?x64xf16> -> tensor<?x4x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  return
}

// -----

func.func @key_value_length(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x128x64xf16>, %v: tensor<?x?x256x32xf16>) {
  // expected-error @+1 {{expects key and value of one shape up to the head dimension, got ?x?x128x64 and ?x?x256x32}}
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xf16>, tensor<?x?x128x64xf16>, tensor<?x?x256x32xf16> -> tensor<?x?x?x32xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  return
}

// -----

func.func @heads_not_a_multiple(%q: tensor<?x8x?x64xf16>, %k: tensor<?x3x?x64xf16>, %v: tensor<?x3x?x64xf16>) {
  // expected-error @+1 {{expects the query heads (8) to be a multiple of the key/value heads (3)}}
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x8x?x64xf16>, tensor<?x3x?x64xf16>, tensor<?x3x?x64xf16> -> tensor<?x8x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  return
}

// -----

func.func @zero_key_heads(%q: tensor<?x8x?x64xf16>, %k: tensor<?x0x?x64xf16>, %v: tensor<?x0x?x64xf16>) {
  // expected-error @+1 {{expects the query heads (8) to be a multiple of the key/value heads (0)}}
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x8x?x64xf16>, tensor<?x0x?x64xf16>, tensor<?x0x?x64xf16> -> tensor<?x8x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  return
}

// -----

// The output takes its head dimension from the value.
func.func @output_shape(%q: tensor<2x8x16x64xf16>, %k: tensor<2x8x32x64xf16>, %v: tensor<2x8x32x32xf16>) {
  // expected-error @+1 {{expects the output shape [batch, heads, q_len, value head_dim] = 2x8x16x32, got 2x8x16x64}}
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<2x8x16x64xf16>, tensor<2x8x32x64xf16>, tensor<2x8x32x32xf16> -> tensor<2x8x16x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  return
}

// -----

func.func @lse_shape(%q: tensor<2x8x16x64xf16>, %k: tensor<2x8x32x64xf16>, %v: tensor<2x8x32x64xf16>) {
  // expected-error @+1 {{expects the lse shape [batch, heads, q_len], got 2x8x32}}
  %o, %lse = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<2x8x16x64xf16>, tensor<2x8x32x64xf16>, tensor<2x8x32x64xf16> -> tensor<2x8x16x64xf16>, tensor<2x8x32xf32>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  return
}

// -----

func.func @param_names(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>, %g: f32) {
  // expected-error @+1 {{has 1 parameters but 0 parameter names}}
  %o = attn.attention softmax %q, %k, %v params(%g : f32) {capture_names = [], param_defaults = [unit], param_names = []}
      : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %x: f32):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  return
}

// -----

func.func @param_defaults(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>, %g: f32) {
  // expected-error @+1 {{has 1 parameters but 2 parameter defaults}}
  %o = attn.attention softmax %q, %k, %v params(%g : f32) {capture_names = [], param_defaults = [unit, unit], param_names = ["g"]}
      : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %x: f32):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  return
}

// -----

func.func @capture_names(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>, %t: tensor<?xf32>) {
  // expected-error @+1 {{has 1 captures but 2 capture names}}
  %o = attn.attention softmax %q, %k, %v captures(%t : tensor<?xf32>) {capture_names = ["t", "u"], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %x: tensor<?xf32>):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  return
}

// -----

// A parameter and a capture share the names' namespace.
func.func @duplicate_names(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>, %g: f32, %t: tensor<?xf32>) {
  // expected-error @+1 {{has two parameters or captures named 'g'}}
  %o = attn.attention softmax %q, %k, %v params(%g : f32) captures(%t : tensor<?xf32>) {capture_names = ["g"], param_defaults = [unit], param_names = ["g"]}
      : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %x: f32, %y: tensor<?xf32>):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  return
}

// -----

func.func @default_type(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>, %g: f32, %w: i32) {
  // expected-error @+1 {{expects the default of parameter 'window' to be a 'i32' constant or unit (no default), got 2.560000e+02 : f32}}
  %o = attn.attention softmax %q, %k, %v params(%g, %w : f32, i32) {capture_names = [], param_defaults = [1.0 : f32, 256.0 : f32], param_names = ["gamma", "window"]}
      : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %x: f32, %y: i32):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  return
}

// -----

func.func @default_not_a_constant(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>, %g: f32) {
  // expected-error @+1 {{expects the default of parameter 'gamma' to be a 'f32' constant or unit (no default), got "half"}}
  %o = attn.attention softmax %q, %k, %v params(%g : f32) {capture_names = [], param_defaults = ["half"], param_names = ["gamma"]}
      : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %x: f32):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  return
}

// -----

// Every element region takes the four indices, then the parameters.
func.func @score_arguments(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>, %g: f32) {
  // expected-error @+1 {{expects the 'score' region to take ('index', 'index', 'index', 'index', 'f32') but it takes ('index', 'index', 'index', 'index')}}
  %o = attn.attention softmax %q, %k, %v params(%g : f32) {capture_names = [], param_defaults = [unit], param_names = ["g"]}
      : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  return
}

// -----

func.func @mask_arguments(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>) {
  // expected-error @+1 {{expects the 'mask' region to take ('index', 'index', 'index', 'index') but it takes ('index', 'index', 'i32', 'i32')}}
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  mask {
  ^bb0(%b: index, %h: index, %i: i32, %j: i32):
    %t = arith.constant true
    attn.yield %t : i1
  }
  return
}

// -----

// The tile classifier takes the six bounds of a tile, not the four indices.
func.func @tile_class_arguments(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>) {
  // expected-error @+1 {{expects the 'tile_class' region to take ('index', 'index', 'index', 'index', 'index', 'index') but it takes ('index', 'index', 'index', 'index')}}
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  tile_class {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %t = arith.constant true
    attn.yield %t, %t : i1, i1
  }
  return
}

// -----

func.func @score_yield(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>) {
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    // expected-error @+1 {{'attn.yield' op in the 'score' region must yield ('f32') but yields ('index')}}
    attn.yield %i : index
  }
  return
}

// -----

func.func @mask_yield(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>) {
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  mask {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %c = arith.constant 1.0 : f32
    // expected-error @+1 {{'attn.yield' op in the 'mask' region must yield ('i1') but yields ('f32')}}
    attn.yield %c : f32
  }
  return
}

// -----

func.func @tile_class_yield(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>) {
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  tile_class {
  ^bb0(%b: index, %h: index, %ql: index, %qh: index, %kl: index, %kh: index):
    %t = arith.constant true
    // expected-error @+1 {{'attn.yield' op in the 'tile_class' region must yield ('i1', 'i1') but yields ('i1')}}
    attn.yield %t : i1
  }
  return
}

// -----

// The mask decides which tiles run before any score exists.
func.func @mask_reads_query(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>) {
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  mask {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    // expected-error @+1 {{'attn.dot' op in the 'mask' region may not read the query}}
    %d = attn.dot : f32
    %z = arith.constant 0.0 : f32
    %p = arith.cmpf ogt, %d, %z : f32
    attn.yield %p : i1
  }
  return
}

// -----

func.func @mask_reads_key(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>) {
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  mask {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    // expected-error @+1 {{'attn.norm2' op in the 'mask' region may not read the key}}
    %n = attn.norm2 k : f32
    %z = arith.constant 0.0 : f32
    %p = arith.cmpf ogt, %n, %z : f32
    attn.yield %p : i1
  }
  return
}

// -----

func.func @tile_class_reads_vectors(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>) {
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  tile_class {
  ^bb0(%b: index, %h: index, %ql: index, %qh: index, %kl: index, %kh: index):
    // expected-error @+1 {{'attn.dist2' op in the 'tile_class' region may not read the query}}
    %d = attn.dist2 : f32
    %z = arith.constant 0.0 : f32
    %p = arith.cmpf ogt, %d, %z : f32
    attn.yield %p, %p : i1, i1
  }
  return
}

// -----

// The key bias is computed once per key: no query index, no query row.
func.func @key_bias_uses_query_index(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>) {
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    %c = attn.key_bias : f32
    %s = arith.addf %d, %c : f32
    attn.yield %s : f32
  }
  key_bias {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    // expected-error @+1 {{'arith.index_cast' op in the 'key_bias' region may not use the query index}}
    %w = arith.index_cast %i : index to i64
    %f = arith.sitofp %w : i64 to f32
    attn.yield %f : f32
  }
  return
}

// -----

func.func @key_bias_reads_query(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>) {
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    %c = attn.key_bias : f32
    %s = arith.addf %d, %c : f32
    attn.yield %s : f32
  }
  key_bias {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    // expected-error @+1 {{'attn.norm2' op in the 'key_bias' region may not read the query}}
    %n = attn.norm2 q : f32
    attn.yield %n : f32
  }
  return
}

// -----

// The row bias is the per-query term: no key index, no key row.
func.func @row_bias_uses_key_index(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>) {
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  row_bias {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    // expected-error @+1 {{'arith.index_cast' op in the 'row_bias' region may not use the key index}}
    %w = arith.index_cast %j : index to i64
    %f = arith.sitofp %w : i64 to f32
    attn.yield %f : f32
  }
  return
}

// -----

func.func @row_bias_reads_key(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>) {
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  row_bias {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    // expected-error @+1 {{'attn.norm2' op in the 'row_bias' region may not read the key}}
    %n = attn.norm2 k : f32
    attn.yield %n : f32
  }
  return
}

// -----

// Without softmax there is no row sum for a row term to cancel in.
func.func @row_bias_under_none(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>) {
  // expected-error @+1 {{'attn.attention' op has a 'row_bias' region, which only softmax normalisation allows}}
  %o = attn.attention none %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  row_bias {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %n = attn.norm2 q : f32
    attn.yield %n : f32
  }
  return
}

// -----

// The query scale is uniform over a (batch, head): no index of a row.
func.func @q_scale_uses_key_index(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>) {
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.scaled_dot : f32
    attn.yield %d : f32
  }
  q_scale {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    // expected-error @+1 {{'arith.index_cast' op in the 'q_scale' region may not use the key index}}
    %w = arith.index_cast %j : index to i64
    %f = arith.sitofp %w : i64 to f32
    attn.yield %f : f32
  }
  return
}

// -----

func.func @q_scale_uses_query_index(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>) {
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.scaled_dot : f32
    attn.yield %d : f32
  }
  q_scale {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    // expected-error @+1 {{'arith.index_cast' op in the 'q_scale' region may not use the query index}}
    %w = arith.index_cast %i : index to i64
    %f = arith.sitofp %w : i64 to f32
    attn.yield %f : f32
  }
  return
}

// -----

func.func @q_scale_reads_key(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>) {
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.scaled_dot : f32
    attn.yield %d : f32
  }
  q_scale {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    // expected-error @+1 {{'attn.key_bias' op in the 'q_scale' region may not read the key}}
    %c = attn.key_bias : f32
    attn.yield %c : f32
  }
  return
}

// -----

func.func @scaled_dot_without_q_scale(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>) {
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    // expected-error @+1 {{'attn.scaled_dot' op needs the enclosing op to have a 'q_scale' region}}
    %d = attn.scaled_dot : f32
    attn.yield %d : f32
  }
  return
}

// -----

func.func @key_bias_op_without_region(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>) {
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    // expected-error @+1 {{'attn.key_bias' op may only appear in the 'score' region of an op with a 'key_bias' region}}
    %c = attn.key_bias : f32
    %s = arith.addf %d, %c : f32
    attn.yield %s : f32
  }
  return
}

// -----

// The key bias may not read itself.
func.func @key_bias_op_in_key_bias(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>) {
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  key_bias {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    // expected-error @+1 {{'attn.key_bias' op may only appear in the 'score' region of an op with a 'key_bias' region}}
    %c = attn.key_bias : f32
    attn.yield %c : f32
  }
  return
}

// -----

func.func @load_index_count(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>, %t: tensor<?x?xf32>) {
  %o = attn.attention softmax %q, %k, %v captures(%t : tensor<?x?xf32>) {capture_names = ["t"], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %x: tensor<?x?xf32>):
    // expected-error @+1 {{'attn.load' op indexes a rank-2 capture with 1 indices}}
    %e = attn.load %x[%h] : tensor<?x?xf32>
    attn.yield %e : f32
  }
  return
}

// -----

func.func @load_bound_counts(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>, %t: tensor<?xi32>) {
  %o = attn.attention softmax %q, %k, %v captures(%t : tensor<?xi32>) {capture_names = ["t"], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %x: tensor<?xi32>):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  tile_class {
  ^bb0(%b: index, %h: index, %ql: index, %qh: index, %kl: index, %kh: index, %x: tensor<?xi32>):
    // expected-error @+1 {{'attn.load_bound' op has 1 lower bounds but 2 upper bounds}}
    %lo = attn.load_bound min %x[%ql] to [%qh, %kh] : tensor<?xi32>
    %c = arith.constant true
    attn.yield %c, %c : i1, i1
  }
  return
}

// -----

func.func @load_bound_rank(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>, %t: tensor<?xi32>) {
  %o = attn.attention softmax %q, %k, %v captures(%t : tensor<?xi32>) {capture_names = ["t"], param_defaults = [], param_names = []}
      : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %x: tensor<?xi32>):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  tile_class {
  ^bb0(%b: index, %h: index, %ql: index, %qh: index, %kl: index, %kh: index, %x: tensor<?xi32>):
    // expected-error @+1 {{'attn.load_bound' op indexes a rank-1 capture with 2 bounds}}
    %lo = attn.load_bound max %x[%b, %ql] to [%b, %qh] : tensor<?xi32>
    %c = arith.constant true
    attn.yield %c, %c : i1, i1
  }
  return
}

// -----

// Dynamic sizes print as '?' in the expected shape.
func.func @output_shape_dynamic(%q: tensor<?x8x?x64xf16>, %k: tensor<?x8x?x64xf16>, %v: tensor<?x8x?x32xf16>) {
  // expected-error @+1 {{expects the output shape [batch, heads, q_len, value head_dim] = ?x8x?x32, got ?x8x?x64}}
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x8x?x64xf16>, tensor<?x8x?x64xf16>, tensor<?x8x?x32xf16> -> tensor<?x8x?x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  return
}

// -----

// Query and value batches are compared even when the key's is dynamic.
func.func @batch_through_dynamic_key(%q: tensor<2x8x16x64xf16>, %k: tensor<?x8x32x64xf16>, %v: tensor<3x8x32x64xf16>) {
  // expected-error @+1 {{expects query, key and value of one batch size, got 2x8x16x64, ?x8x32x64, 3x8x32x64}}
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []}
      : tensor<2x8x16x64xf16>, tensor<?x8x32x64xf16>, tensor<3x8x32x64xf16> -> tensor<2x8x16x64xf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  return
}

// -----

func.func @small_plans_alone(%q: tensor<?x?x?x64xbf16>, %k: tensor<?x?x?x64xbf16>, %v: tensor<?x?x?x64xbf16>) {
  // expected-error @+1 {{has small_plans but no plan: the small-problem kernels are alternatives to the default one}}
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = [], small_plans = [#attn.plan<arch = "sm_90a", kernel = "wgmma", tile_m = 128, tile_n = 128, warps = 8, stages = 4, key_terms = "bulk", copy = "tma">]}
      : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  return
}

// -----

func.func @small_plans_arch(%q: tensor<?x?x?x64xbf16>, %k: tensor<?x?x?x64xbf16>, %v: tensor<?x?x?x64xbf16>) {
  // expected-error @+1 {{has a small plan for sm_90a and a plan for sm_80}}
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = [], plan = #attn.plan<arch = "sm_80", kernel = "mma_sync", tile_m = 128, tile_n = 64, warps = 4, stages = 2>, small_plans = [#attn.plan<arch = "sm_90a", kernel = "wgmma", tile_m = 128, tile_n = 128, warps = 8, stages = 4, key_terms = "bulk", copy = "tma">]}
      : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  return
}

// -----

func.func @small_plans_order(%q: tensor<?x?x?x64xbf16>, %k: tensor<?x?x?x64xbf16>, %v: tensor<?x?x?x64xbf16>) {
  // expected-error @+1 {{has a small plan with tile_m = 128, blocks_per_sm = 1 after one with tile_m = 64, blocks_per_sm = 1: each small plan takes fewer rows a block than the one before it, or as many on fewer blocks a multiprocessor}}
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = [], plan = #attn.plan<arch = "sm_90a", kernel = "wgmma_cooperative", tile_m = 128, tile_n = 128, warps = 8, stages = 2, blocks_per_sm = 2>, small_plans = [#attn.plan<arch = "sm_90a", kernel = "wgmma", tile_m = 64, tile_n = 128, warps = 4, stages = 4, key_terms = "producer", copy = "tma">, #attn.plan<arch = "sm_90a", kernel = "wgmma", tile_m = 128, tile_n = 128, warps = 8, stages = 4, key_terms = "bulk", copy = "tma">]}
      : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  return
}

// -----

func.func @small_plans_order_blocks(%q: tensor<?x?x?x64xbf16>, %k: tensor<?x?x?x64xbf16>, %v: tensor<?x?x?x64xbf16>) {
  // expected-error @+1 {{has a small plan with tile_m = 128, blocks_per_sm = 2 after one with tile_m = 128, blocks_per_sm = 1: each small plan takes fewer rows a block than the one before it, or as many on fewer blocks a multiprocessor}}
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = [], plan = #attn.plan<arch = "sm_90a", kernel = "wgmma", tile_m = 192, tile_n = 128, warps = 12, stages = 2, key_terms = "bulk", copy = "tma", overlap = true>, small_plans = [#attn.plan<arch = "sm_90a", kernel = "wgmma", tile_m = 128, tile_n = 128, warps = 8, stages = 4, key_terms = "producer", copy = "tma">, #attn.plan<arch = "sm_90a", kernel = "wgmma_cooperative", tile_m = 128, tile_n = 128, warps = 8, stages = 2, blocks_per_sm = 2>]}
      : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  return
}
