/*===- rbfc.h - compile attention specs at run time and run them -*- C -*-===//
 *
 * The compiler half of librbfc's C API; runtime.h, which it includes, is the
 * other half (its types, status codes and rbfc_last_error are shared, and
 * librbfc exports its functions too). A program passes the text of an
 * `.attn` spec (docs/language.md) to rbfc_compile and gets an rbfc_kernel
 * for one target:
 *
 *   RBFC_TARGET_HOST  the CPU this process runs on (ORC JIT); tensors are
 *                     host memory; calls run synchronously on a pool of
 *                     threads.
 *   RBFC_TARGET_CUDA  an NVIDIA GPU: PTX loaded through the CUDA driver,
 *                     which librbfc opens at run time (dlopen); tensors are
 *                     device memory; calls are asynchronous on a stream.
 *
 * and runs it with rbfc_forward, and with rbfc_backward when it was
 * compiled with `backward`. Compiling is thread-safe and cached: in memory
 * (the same spec and options give the same kernel, compiled once even when
 * several threads ask at once) and, for CUDA kernels, on disk, so that a new
 * process skips the compiler (docs/abi.md, "Kernel cache").
 *
 * Every function that returns rbfc_status returns RBFC_OK or an error code;
 * rbfc_last_error() then holds a message for the calling thread. A spec
 * that does not compile gives RBFC_ERROR_SPEC and a message with one
 * diagnostic per problem: `name:line:col: error: ...`, the source line and
 * a caret under the culprit. Tensors, parameters and captures are checked
 * before anything is launched or written; a mismatch gives
 * RBFC_ERROR_INVALID_ARGUMENT and a message that names the argument.
 *
 * Structs that may grow start with `struct_size`: the caller sets it to
 * sizeof the struct it was compiled with (the *_init functions do), and the
 * library reads or writes no field past it. docs/abi.md is the reference.
 *
 *===----------------------------------------------------------------------===*/
#ifndef RBFC_RBFC_H
#define RBFC_RBFC_H

#include "rbfc/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this header's API; rbfc_api_version() gives the
 * library's. A library with the same version reads every struct and takes
 * every call of this header. */
#define RBFC_API_VERSION 2

RBFC_RUNTIME_API int32_t rbfc_api_version(void);

typedef enum rbfc_target {
  RBFC_TARGET_HOST = 0,
  RBFC_TARGET_CUDA = 1
} rbfc_target;

/* A spec parsed and checked without a kernel: what a call must pass. */
typedef struct rbfc_spec rbfc_spec;

typedef struct rbfc_spec_info {
  size_t struct_size;
  const char *name;          /* the attention's name */
  const char *normalization; /* "softmax" or "none" */
  int32_t num_params;
  int32_t num_captures;
} rbfc_spec_info;

/* Parses `spec` and runs the checks of rbfc_compile that do not depend on
 * the target (as for head_dim 64): a bad spec gives RBFC_ERROR_SPEC with
 * its diagnostics, as rbfc_compile would. Release with rbfc_spec_release. */
RBFC_RUNTIME_API rbfc_status rbfc_spec_parse(const char *spec,
                                             const char *spec_name,
                                             rbfc_spec **parsed);
RBFC_RUNTIME_API void rbfc_spec_release(rbfc_spec *spec);
RBFC_RUNTIME_API rbfc_status rbfc_spec_get_info(const rbfc_spec *spec,
                                                rbfc_spec_info *info);
/* Params and captures in declaration order. A param default may depend on
 * the head dim, so only has_default is filled in (default_value is 0); a
 * compiled kernel's rbfc_kernel_param has the value. Strings live as long
 * as the spec. */
RBFC_RUNTIME_API rbfc_status rbfc_spec_param(const rbfc_spec *spec,
                                             int32_t index,
                                             rbfc_param_info *info);
RBFC_RUNTIME_API rbfc_status rbfc_spec_capture(const rbfc_spec *spec,
                                               int32_t index,
                                               rbfc_capture_info *info);

typedef struct rbfc_compile_options {
  size_t struct_size;
  rbfc_target target; /* default RBFC_TARGET_HOST */
  int32_t head_dim;   /* default 64; 1..1024 (CUDA kernels: see docs/kernel.md) */
  rbfc_dtype dtype;   /* q, k, v and o: BF16 (default) or F16; F32 on the host */
  int32_t lse;        /* the forward also writes the log-sum-exp of each row */
  int32_t backward;   /* also build the backward kernels (needs lse) */
  /* CUDA: "sm_80", "sm_86", "sm_89", "sm_90" or "sm_90a"; NULL: that of
   * the current context's device (of device 0 when none is current). */
  const char *arch;
  /* CUDA: a plan (`#attn.plan<...>`, docs/kernel.md) instead of the one
   * chosen for the arch and head dim; NULL: the chosen one. */
  const char *plan;
  /* The disk cache's folder. NULL: $RBFC_CACHE_DIR, else
   * $XDG_CACHE_HOME/rbfc, else $HOME/.cache/rbfc; "": no disk cache. */
  const char *cache_dir;
} rbfc_compile_options;

/* Sets struct_size and the defaults above. */
RBFC_RUNTIME_API void rbfc_compile_options_init(rbfc_compile_options *options);

typedef struct rbfc_kernel rbfc_kernel;

/* Compiles `spec` (the NUL-terminated text of an .attn file; `spec_name`
 * names it in diagnostics, NULL gives "<spec>") for the options' target.
 * Returns a new reference in *kernel; release it with rbfc_kernel_release.
 * Thread-safe. */
RBFC_RUNTIME_API rbfc_status rbfc_compile(const char *spec,
                                          const char *spec_name,
                                          const rbfc_compile_options *options,
                                          rbfc_kernel **kernel);

/* Drops the reference; NULL is ignored. A kernel stays usable until its
 * last reference is released. */
RBFC_RUNTIME_API void rbfc_kernel_release(rbfc_kernel *kernel);

typedef struct rbfc_kernel_properties {
  size_t struct_size;
  rbfc_target target;
  int32_t has_backward; /* rbfc_backward runs on this kernel */
  /* Names, element type, head dim, lse, tiles, the number of params and
   * captures, as rbfc_module_info gives them; arch, plan, warps, stages,
   * shared memory and key terms are "" or 0 on the host. Strings live as
   * long as the kernel. */
  rbfc_kernel_info info;
} rbfc_kernel_properties;

RBFC_RUNTIME_API rbfc_status
rbfc_kernel_get_properties(const rbfc_kernel *kernel,
                           rbfc_kernel_properties *properties);
/* The spec's params and captures in declaration order (index from 0). */
RBFC_RUNTIME_API rbfc_status rbfc_kernel_param(const rbfc_kernel *kernel,
                                               int32_t index,
                                               rbfc_param_info *info);
RBFC_RUNTIME_API rbfc_status rbfc_kernel_capture(const rbfc_kernel *kernel,
                                                 int32_t index,
                                                 rbfc_capture_info *info);

/* The device workspace bytes a CUDA forward with these q and k needs (see
 * rbfc_forward_args.workspace); 0 on the host and for kernels without key
 * terms. */
RBFC_RUNTIME_API rbfc_status rbfc_kernel_workspace_bytes(
    const rbfc_kernel *kernel, const rbfc_tensor *q, const rbfc_tensor *k,
    size_t *bytes);

/* The device workspace bytes a CUDA backward with these q and k needs (see
 * rbfc_backward_args.workspace); 0 on the host. RBFC_ERROR_UNSUPPORTED for
 * a kernel compiled without `backward`. */
RBFC_RUNTIME_API rbfc_status rbfc_kernel_backward_workspace_bytes(
    const rbfc_kernel *kernel, const rbfc_tensor *q, const rbfc_tensor *k,
    size_t *bytes);

/* One forward call. q and o are [batch, heads, q_len, head_dim], k and v
 * [batch, kv_heads, kv_len, head_dim] (heads a multiple of kv_heads: query
 * head h reads key/value head h / (heads / kv_heads)), any strides with a
 * head_dim stride of 1 (a [batch, seq, heads, head_dim] buffer is passed as
 * its transposed view). CUDA adds docs/abi.md's alignment rules. */
typedef struct rbfc_forward_args {
  size_t struct_size;
  rbfc_tensor q, k, v;
  rbfc_tensor o; /* written */
  /* [batch, heads, q_len] f32, written when the kernel has lse; leave
   * data NULL otherwise. */
  rbfc_tensor lse;
  /* NULL: every default; else num_params values in declaration order (an
   * int param must hold an integer). */
  const double *params;
  size_t num_params;
  const rbfc_tensor *captures; /* num_captures, in declaration order */
  size_t num_captures;
  /* CUDA, kernels with key terms: device memory of at least
   * rbfc_kernel_workspace_bytes, 16-byte aligned, in use until the kernel
   * has run; NULL: allocated and freed on the stream. */
  void *workspace;
  size_t workspace_bytes;
  int32_t num_threads; /* host: worker threads; 0: one per hardware thread */
  /* Since version 2: where q's and k's rows sit in the whole sequence, so
   * that a sequence split over calls or ranks gives each block its exact
   * part (docs/abi.md, "Sequence blocks"). The spec sees q_idx + q_offset,
   * kv_idx + kv_offset, and q_seq_len, kv_seq_len as its q_len and kv_len
   * (0: offset + the call's length). All 0 by default: the call is the
   * whole sequence. */
  int64_t q_offset, kv_offset, q_seq_len, kv_seq_len;
} rbfc_forward_args;

/* sizeof(rbfc_forward_args) in version 1, before the offsets. */
#define RBFC_FORWARD_ARGS_V1_SIZE offsetof(rbfc_forward_args, q_offset)

RBFC_RUNTIME_API void rbfc_forward_args_init(rbfc_forward_args *args);

/* Runs the forward. `stream` is a CUstream for CUDA (NULL: the legacy
 * default stream) and ignored on the host, where the call returns when the
 * outputs are written. */
RBFC_RUNTIME_API rbfc_status rbfc_forward(const rbfc_kernel *kernel,
                                          const rbfc_forward_args *args,
                                          void *stream);

/* rbfc_backward_args (runtime.h): one backward call. */

RBFC_RUNTIME_API void rbfc_backward_args_init(rbfc_backward_args *args);

/* Runs the backward of a kernel compiled with `backward`; a kernel without
 * one gives RBFC_ERROR_UNSUPPORTED. */
RBFC_RUNTIME_API rbfc_status rbfc_backward(const rbfc_kernel *kernel,
                                           const rbfc_backward_args *args,
                                           void *stream);

/* Counts since the process started, over every thread. */
typedef struct rbfc_cache_stats {
  size_t struct_size;
  uint64_t compiles;            /* kernels built by the compiler */
  uint64_t memory_hits;         /* rbfc_compile answered from memory */
  uint64_t disk_hits;           /* ... from the disk cache */
  uint64_t disk_rejected;       /* disk entries that failed their check
                                   (truncated, corrupt, another key) and were
                                   compiled again and replaced */
  uint64_t disk_write_failures; /* entries that could not be written (the
                                   kernel still works) */
} rbfc_cache_stats;

RBFC_RUNTIME_API rbfc_status rbfc_cache_get_stats(rbfc_cache_stats *stats);

/* Forgets the kernels cached in memory (kernels still referenced stay
 * valid); the next rbfc_compile of each goes to the disk cache. */
RBFC_RUNTIME_API void rbfc_cache_clear_memory(void);

#ifdef __cplusplus
}
#endif

#endif /* RBFC_RBFC_H */
