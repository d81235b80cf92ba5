// The pass's options: tile-n and key-lanes must be positive; tile-m and
// the per-step counts positive or 0 (the pass chooses them). A bad one is
// an error naming them all.
// RUN: not rbf-opt %s --attn-lower-to-host="key-vectors-per-step=-1" 2>&1 | FileCheck %s
// RUN: not rbf-opt %s --attn-lower-to-host="head-dim-vectors-per-step=-2" 2>&1 | FileCheck %s
// RUN: not rbf-opt %s --attn-lower-to-host="rows-per-step=-1" 2>&1 | FileCheck %s
// RUN: not rbf-opt %s --attn-lower-to-host="tile-n=0" 2>&1 | FileCheck %s
// RUN: not rbf-opt %s --attn-lower-to-host="tile-m=-64" 2>&1 | FileCheck %s
// CHECK: error: attn-lower-to-host: tile-n and key-lanes must be positive; tile-m, rows-per-step, key-vectors-per-step and head-dim-vectors-per-step positive or 0 (chosen by the pass)
module {
}
