/*===- runtime.h - launch rbfc kernels through the CUDA driver -----*- C -*-===//
 *
 * The run-time half of docs/abi.md: loads a kernel image (PTX or cubin) that
 * `rbfc --emit=ptx|cubin` wrote, together with its descriptor (NAME.json),
 * checks the tensors a caller passes against the descriptor and launches the
 * kernel on a CUDA stream. No MLIR or LLVM inside; the CUDA driver is opened
 * at run time (dlopen("libcuda.so.1")), so programs link this library on
 * machines without a GPU and get a clear error when they use it there.
 *
 * Every function returns RBFC_OK or an error code; rbfc_last_error() then
 * holds a message for the calling thread.
 *
 *===----------------------------------------------------------------------===*/
#ifndef RBFC_RUNTIME_H
#define RBFC_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define RBFC_RUNTIME_API __attribute__((visibility("default")))
#else
#define RBFC_RUNTIME_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef enum rbfc_status {
  RBFC_OK = 0,
  RBFC_ERROR_INVALID_ARGUMENT = 1, /* a tensor, parameter or capture is wrong */
  RBFC_ERROR_DESCRIPTOR = 2,       /* the descriptor JSON is malformed */
  RBFC_ERROR_IO = 3,               /* a file could not be read */
  RBFC_ERROR_NO_DRIVER = 4,        /* libcuda.so.1 is missing or too old */
  RBFC_ERROR_CUDA = 5,             /* a CUDA driver call failed */
  /* Codes of rbfc.h's compiler API: */
  RBFC_ERROR_SPEC = 6,        /* the spec does not compile; the message holds
                                 its diagnostics */
  RBFC_ERROR_UNSUPPORTED = 7, /* the kernel or its target lacks what was
                                 asked (e.g. a backward) */
  RBFC_ERROR_COMPILE = 8      /* the compiler failed on a spec it accepted */
} rbfc_status;

typedef enum rbfc_dtype {
  RBFC_DTYPE_BF16 = 0,
  RBFC_DTYPE_F16 = 1,
  RBFC_DTYPE_F32 = 2,
  RBFC_DTYPE_I32 = 3,
  RBFC_DTYPE_I64 = 4
} rbfc_dtype;

#define RBFC_MAX_RANK 4

/* A strided view of device memory. Sizes and strides are in elements,
 * outermost first; entries past `rank` are ignored. */
typedef struct rbfc_tensor {
  void *data;
  int32_t rank;
  int64_t sizes[RBFC_MAX_RANK];
  int64_t strides[RBFC_MAX_RANK];
  rbfc_dtype dtype;
} rbfc_tensor;

typedef struct rbfc_module rbfc_module;

/* What the descriptor says about the kernel. Strings live as long as the
 * module. */
typedef struct rbfc_kernel_info {
  const char *name;          /* the spec's attention name */
  const char *entry;         /* the kernel's entry symbol */
  const char *arch;          /* e.g. "sm_90a"; "" when absent */
  const char *normalization; /* "softmax" or "none" */
  const char *plan;          /* the printed #attn.plan; "" when absent */
  rbfc_dtype dtype;
  int32_t head_dim;
  int32_t has_lse;
  int32_t tile_m;
  int32_t tile_n;
  int32_t warps;
  int32_t stages;
  int64_t shared_memory_bytes;
  int32_t num_params;
  int32_t num_captures;
  int32_t key_terms; /* f32 words a key in the workspace (planes, or 4 for
                        key_terms = "product"); 0: no prologue, no
                        workspace */
} rbfc_kernel_info;

/* One spec `param`; type is RBFC_DTYPE_F32 or RBFC_DTYPE_I32. */
typedef struct rbfc_param_info {
  const char *name;
  rbfc_dtype type;
  int32_t has_default;
  double default_value;
} rbfc_param_info;

/* One spec `capture`; type is RBFC_DTYPE_F32, _I32 or _I64. */
typedef struct rbfc_capture_info {
  const char *name;
  rbfc_dtype type;
  int32_t rank;
} rbfc_capture_info;

/* Loads the image (PTX text or a cubin) and its descriptor from files, into
 * the current CUDA context (the device's primary context when none is
 * current). */
RBFC_RUNTIME_API rbfc_status rbfc_module_load(const char *image_path,
                                              const char *descriptor_path,
                                              rbfc_module **module);

/* The same from memory; the descriptor is `descriptor_size` bytes of JSON. */
RBFC_RUNTIME_API rbfc_status rbfc_module_load_data(const void *image,
                                                   size_t image_size,
                                                   const char *descriptor,
                                                   size_t descriptor_size,
                                                   rbfc_module **module);

RBFC_RUNTIME_API void rbfc_module_destroy(rbfc_module *module);

RBFC_RUNTIME_API rbfc_status rbfc_module_info(const rbfc_module *module,
                                              rbfc_kernel_info *info);
RBFC_RUNTIME_API rbfc_status rbfc_module_param(const rbfc_module *module,
                                               int32_t index,
                                               rbfc_param_info *info);
RBFC_RUNTIME_API rbfc_status rbfc_module_capture(const rbfc_module *module,
                                                 int32_t index,
                                                 rbfc_capture_info *info);

/* Launches the kernel on `stream` (a CUstream; NULL is the legacy default
 * stream). q, o: [batch, heads, q_len, head_dim]; k, v: [batch, kv_heads,
 * kv_len, head_dim]; lse: [batch, heads, q_len] f32, exactly when the kernel
 * was compiled with --lse. `params`: NULL for every default, else
 * `num_params` values in declaration order (an int parameter must hold an
 * integer). `captures`: in declaration order. Asynchronous: errors of the
 * kernel itself show up at the next synchronisation.
 *
 * A kernel with key terms (rbfc_kernel_info.key_terms > 0) needs a device
 * workspace; rbfc_launch allocates it on `stream` (cuMemAllocAsync) and
 * frees it there after the kernel (cuMemFreeAsync). To keep allocation out
 * of a hot loop, use rbfc_launch_with_workspace. */
RBFC_RUNTIME_API rbfc_status rbfc_launch(
    const rbfc_module *module, const rbfc_tensor *q, const rbfc_tensor *k,
    const rbfc_tensor *v, const rbfc_tensor *o, const rbfc_tensor *lse,
    const double *params, size_t num_params, const rbfc_tensor *captures,
    size_t num_captures, void *stream);

/* The bytes of device workspace a launch with these q and k needs: 0 for a
 * kernel without key terms. Reads q's batch and heads and k's kv_heads and
 * kv_len (terms that do not depend on the query head take one row per kv
 * head, docs/abi.md). */
RBFC_RUNTIME_API rbfc_status rbfc_workspace_bytes(const rbfc_module *module,
                                                  const rbfc_tensor *q,
                                                  const rbfc_tensor *k,
                                                  size_t *bytes);

/* rbfc_launch with the caller's workspace: `workspace_bytes` of device
 * memory, 16-byte aligned, at least rbfc_workspace_bytes; its contents need
 * no initialisation. It must stay allocated until the kernel has run, and
 * two launches in flight at once (on different streams) need two
 * workspaces. Ignored (may be NULL) for a kernel without key terms. */
RBFC_RUNTIME_API rbfc_status rbfc_launch_with_workspace(
    const rbfc_module *module, const rbfc_tensor *q, const rbfc_tensor *k,
    const rbfc_tensor *v, const rbfc_tensor *o, const rbfc_tensor *lse,
    const double *params, size_t num_params, const rbfc_tensor *captures,
    size_t num_captures, void *workspace, size_t workspace_bytes, void *stream);

/* One backward call: the gradients of a loss with respect to q, k, v and,
 * where asked, f32 params and f32 captures, from those of o and lse. Every
 * gradient is written, not accumulated. */
typedef struct rbfc_backward_args {
  size_t struct_size;
  /* The forward's inputs and outputs; lse is required. */
  rbfc_tensor q, k, v, o, lse;
  rbfc_tensor grad_o;   /* shape and element type of o */
  rbfc_tensor grad_lse; /* f32 like lse; data NULL: zero */
  rbfc_tensor grad_q, grad_k, grad_v; /* written; shapes and types of q, k, v */
  const double *params;               /* as in rbfc_forward_args */
  size_t num_params;
  const rbfc_tensor *captures;
  size_t num_captures;
  /* NULL: no param gradient. Else num_params entries: where to write the
   * gradient of that param (one f32, host or device memory as the
   * target's tensors), or NULL for none. Only f32 params have one. */
  float *const *grad_params;
  /* NULL: no capture gradient. Else num_captures views: data NULL for
   * none, or an f32 tensor with the capture's sizes (f32 captures only).
   * The sums over the elements that read an entry are deterministic. */
  const rbfc_tensor *grad_captures;
  int32_t num_threads; /* host, as in rbfc_forward_args */
  /* CUDA: a device workspace of at least the backward's workspace bytes
   * (rbfc_backward_workspace_bytes), 16-byte aligned, unused by any launch
   * in flight; NULL: allocated on the stream for the call. */
  void *workspace;
  size_t workspace_bytes;
  /* Since version 2: as in rbfc_forward_args (rbfc.h). When the keys are
   * split into blocks, o and lse are those of the rows over every block,
   * and the gradients are this block's share. */
  int64_t q_offset, kv_offset, q_seq_len, kv_seq_len;
} rbfc_backward_args;

/* sizeof(rbfc_backward_args) in version 1, before the offsets. */
#define RBFC_BACKWARD_ARGS_V1_SIZE offsetof(rbfc_backward_args, q_offset)

/* The bytes of device workspace the backward of a module compiled with
 * --backward needs for these q and k (docs/abi.md, "Backward"). */
RBFC_RUNTIME_API rbfc_status rbfc_backward_workspace_bytes(
    const rbfc_module *module, const rbfc_tensor *q, const rbfc_tensor *k,
    size_t *bytes);

/* Launches the backward of a module compiled with --backward on `stream`:
 * the row pre-pass, the dK/dV and dQ kernels and, when a param's or
 * capture's gradient is asked for, the two reductions. Every tensor and
 * gradient is checked first (nothing is launched on an error). The
 * workspace comes from `args` or is allocated on the stream
 * (cuMemAllocAsync) and freed there after the last kernel. A capture whose
 * gradient the GPU backward does not compute (read at q_idx or kv_idx) is
 * RBFC_ERROR_INVALID_ARGUMENT when its gradient is asked for. */
RBFC_RUNTIME_API rbfc_status rbfc_launch_backward(
    const rbfc_module *module, const rbfc_backward_args *args, void *stream);

/* The message of the last failed call on this thread ("" if none). */
RBFC_RUNTIME_API const char *rbfc_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* RBFC_RUNTIME_H */
