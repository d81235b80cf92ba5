/* rbf_attention.c - compile examples/rbf.attn with librbfc and run it.
 *
 *   rbf_attention PATH/rbf.attn [host|cuda]
 *
 * Compiles the RBF spec (score = -gamma * ||q - k||^2, gamma defaulting to
 * 1/sqrt(head_dim)) in-process for head_dim 64, runs it on random inputs
 * (batch 2, 4 query heads over 2 key/value heads, 100 queries, 150 keys) and
 * compares the output with a plain C reference; exits 0 when they agree.
 *
 *   host: f32 tensors in host memory, the CPU kernel.
 *   cuda: bf16 tensors in device memory, the GPU kernel. Device memory comes
 *         from the CUDA driver, opened with dlopen as librbfc opens it, so
 *         running this needs a GPU driver but no CUDA toolkit.
 *
 * Build: cc rbf_attention.c -Iinclude -I/usr/local/cuda/include -Lbuild/lib
 *        -lrbfc -ldl -lm   (CMake builds it as rbfc-c-example).
 */
#include "rbfc/rbfc.h"

#include <cuda.h>
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { BATCH = 2, HEADS = 4, KV_HEADS = 2, Q_LEN = 100, KV_LEN = 150, DIM = 64 };

static int fail(const char *what, rbfc_status status) {
  fprintf(stderr, "%s failed (status %d):\n%s\n", what, (int)status,
          rbfc_last_error());
  return 1;
}

static char *read_file(const char *path) {
  FILE *file = fopen(path, "rb");
  if (!file)
    return NULL;
  fseek(file, 0, SEEK_END);
  long size = ftell(file);
  rewind(file);
  char *text = malloc((size_t)size + 1);
  if (text && fread(text, 1, (size_t)size, file) != (size_t)size) {
    free(text);
    text = NULL;
  }
  if (text)
    text[size] = '\0';
  fclose(file);
  return text;
}

/* A contiguous [d0, d1, d2, d3] view (rank 3 when d3 is 0). */
static rbfc_tensor view(void *data, rbfc_dtype dtype, int64_t d0, int64_t d1,
                        int64_t d2, int64_t d3) {
  rbfc_tensor t;
  memset(&t, 0, sizeof t);
  int64_t sizes[4] = {d0, d1, d2, d3};
  t.data = data;
  t.dtype = dtype;
  t.rank = d3 ? 4 : 3;
  int64_t stride = 1;
  for (int i = t.rank - 1; i >= 0; --i) {
    t.sizes[i] = sizes[i];
    t.strides[i] = stride;
    stride *= sizes[i];
  }
  return t;
}

static float bf16_round(float x) {
  uint32_t bits;
  memcpy(&bits, &x, 4);
  bits = (bits + 0x7fff + ((bits >> 16) & 1)) & 0xffff0000u;
  memcpy(&x, &bits, 4);
  return x;
}

static uint16_t to_bf16(float x) {
  uint32_t bits;
  x = bf16_round(x);
  memcpy(&bits, &x, 4);
  return (uint16_t)(bits >> 16);
}

static float from_bf16(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float x;
  memcpy(&x, &bits, 4);
  return x;
}

/* The RBF attention of row i of query head h, in double. */
static void reference(const float *q, const float *k, const float *v, int b,
                      int h, int i, double *out) {
  const double gamma = 1.0 / sqrt((double)DIM);
  const int kvh = h / (HEADS / KV_HEADS);
  const float *qi = q + (((size_t)b * HEADS + h) * Q_LEN + i) * DIM;
  double scores[KV_LEN], max = -INFINITY, sum = 0;
  for (int j = 0; j < KV_LEN; ++j) {
    const float *kj = k + (((size_t)b * KV_HEADS + kvh) * KV_LEN + j) * DIM;
    double d2 = 0;
    for (int d = 0; d < DIM; ++d)
      d2 += ((double)qi[d] - kj[d]) * ((double)qi[d] - kj[d]);
    scores[j] = -gamma * d2;
    max = scores[j] > max ? scores[j] : max;
  }
  for (int d = 0; d < DIM; ++d)
    out[d] = 0;
  for (int j = 0; j < KV_LEN; ++j) {
    double w = exp(scores[j] - max);
    const float *vj = v + (((size_t)b * KV_HEADS + kvh) * KV_LEN + j) * DIM;
    sum += w;
    for (int d = 0; d < DIM; ++d)
      out[d] += w * vj[d];
  }
  for (int d = 0; d < DIM; ++d)
    out[d] /= sum;
}

/* Device memory through the CUDA driver. */
typedef struct Cuda {
  CUresult (*init)(unsigned);
  CUresult (*deviceGet)(CUdevice *, int);
  CUresult (*primaryCtxRetain)(CUcontext *, CUdevice);
  CUresult (*ctxSetCurrent)(CUcontext);
  CUresult (*memAlloc)(CUdeviceptr *, size_t);
  CUresult (*memFree)(CUdeviceptr);
  CUresult (*copyToDevice)(CUdeviceptr, const void *, size_t);
  CUresult (*copyToHost)(void *, CUdeviceptr, size_t);
  CUresult (*synchronize)(void);
} Cuda;

static int open_cuda(Cuda *cuda) {
  void *driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!driver) {
    fprintf(stderr, "cannot load libcuda.so.1: %s\n", dlerror());
    return 1;
  }
  struct {
    void **slot;
    const char *name;
  } symbols[] = {
      {(void **)&cuda->init, "cuInit"},
      {(void **)&cuda->deviceGet, "cuDeviceGet"},
      {(void **)&cuda->primaryCtxRetain, "cuDevicePrimaryCtxRetain"},
      {(void **)&cuda->ctxSetCurrent, "cuCtxSetCurrent"},
      {(void **)&cuda->memAlloc, "cuMemAlloc_v2"},
      {(void **)&cuda->memFree, "cuMemFree_v2"},
      {(void **)&cuda->copyToDevice, "cuMemcpyHtoD_v2"},
      {(void **)&cuda->copyToHost, "cuMemcpyDtoH_v2"},
      {(void **)&cuda->synchronize, "cuCtxSynchronize"},
  };
  for (size_t i = 0; i < sizeof symbols / sizeof symbols[0]; ++i)
    if (!(*symbols[i].slot = dlsym(driver, symbols[i].name))) {
      fprintf(stderr, "libcuda.so.1 lacks %s\n", symbols[i].name);
      return 1;
    }
  CUdevice device;
  CUcontext context;
  if (cuda->init(0) || cuda->deviceGet(&device, 0) ||
      cuda->primaryCtxRetain(&context, device) || cuda->ctxSetCurrent(context)) {
    fprintf(stderr, "no CUDA device\n");
    return 1;
  }
  return 0;
}

/* `count` bf16 copies of `values` in device memory. */
static void *to_device(const Cuda *cuda, const float *values, size_t count) {
  uint16_t *staged = malloc(count * sizeof *staged);
  for (size_t i = 0; i < count; ++i)
    staged[i] = to_bf16(values[i]);
  CUdeviceptr device = 0;
  if (cuda->memAlloc(&device, count * 2) ||
      cuda->copyToDevice(device, staged, count * 2))
    device = 0;
  free(staged);
  return (void *)(uintptr_t)device;
}

int main(int argc, char **argv) {
  if (argc < 2 || (argc == 3 && strcmp(argv[2], "host") &&
                   strcmp(argv[2], "cuda"))) {
    fprintf(stderr, "usage: %s PATH/rbf.attn [host|cuda]\n", argv[0]);
    return 2;
  }
  int on_gpu = argc == 3 && strcmp(argv[2], "cuda") == 0;
  char *spec = read_file(argv[1]);
  if (!spec) {
    fprintf(stderr, "cannot read %s\n", argv[1]);
    return 1;
  }
  Cuda cuda;
  if (on_gpu && open_cuda(&cuda))
    return 1;

  rbfc_compile_options options;
  rbfc_compile_options_init(&options);
  options.target = on_gpu ? RBFC_TARGET_CUDA : RBFC_TARGET_HOST;
  options.head_dim = DIM;
  options.dtype = on_gpu ? RBFC_DTYPE_BF16 : RBFC_DTYPE_F32;
  rbfc_kernel *kernel = NULL;
  rbfc_status status = rbfc_compile(spec, argv[1], &options, &kernel);
  free(spec);
  if (status != RBFC_OK)
    return fail("rbfc_compile", status);

  const size_t q_count = (size_t)BATCH * HEADS * Q_LEN * DIM;
  const size_t kv_count = (size_t)BATCH * KV_HEADS * KV_LEN * DIM;
  float *q = malloc(q_count * sizeof *q), *o = malloc(q_count * sizeof *o);
  float *k = malloc(kv_count * sizeof *k), *v = malloc(kv_count * sizeof *v);
  srand(1);
  for (size_t i = 0; i < q_count; ++i)
    q[i] = (float)((double)rand() / RAND_MAX - 0.5);
  for (size_t i = 0; i < kv_count; ++i) {
    k[i] = (float)((double)rand() / RAND_MAX - 0.5);
    v[i] = (float)((double)rand() / RAND_MAX - 0.5);
  }
  if (on_gpu) /* the reference sees what the kernel reads */
    for (size_t i = 0; i < q_count; ++i)
      q[i] = bf16_round(q[i]);
  if (on_gpu)
    for (size_t i = 0; i < kv_count; ++i) {
      k[i] = bf16_round(k[i]);
      v[i] = bf16_round(v[i]);
    }

  rbfc_forward_args args;
  rbfc_forward_args_init(&args);
  rbfc_dtype dtype = options.dtype;
  void *dq = q, *dk = k, *dv = v, *dout = o;
  if (on_gpu) {
    dq = to_device(&cuda, q, q_count);
    dk = to_device(&cuda, k, kv_count);
    dv = to_device(&cuda, v, kv_count);
    CUdeviceptr out = 0;
    if (!dq || !dk || !dv || cuda.memAlloc(&out, q_count * 2)) {
      fprintf(stderr, "cannot allocate device memory\n");
      return 1;
    }
    dout = (void *)(uintptr_t)out;
  }
  args.q = view(dq, dtype, BATCH, HEADS, Q_LEN, DIM);
  args.k = view(dk, dtype, BATCH, KV_HEADS, KV_LEN, DIM);
  args.v = view(dv, dtype, BATCH, KV_HEADS, KV_LEN, DIM);
  args.o = view(dout, dtype, BATCH, HEADS, Q_LEN, DIM);
  /* params NULL: gamma takes its default; rbf.attn captures nothing. */
  if ((status = rbfc_forward(kernel, &args, NULL)) != RBFC_OK)
    return fail("rbfc_forward", status);
  if (on_gpu) {
    uint16_t *staged = malloc(q_count * 2);
    if (cuda.synchronize() ||
        cuda.copyToHost(staged, (CUdeviceptr)(uintptr_t)dout, q_count * 2)) {
      fprintf(stderr, "the kernel or the copy back failed\n");
      return 1;
    }
    for (size_t i = 0; i < q_count; ++i)
      o[i] = from_bf16(staged[i]);
    free(staged);
    void *buffers[] = {dq, dk, dv, dout};
    for (int i = 0; i < 4; ++i)
      cuda.memFree((CUdeviceptr)(uintptr_t)buffers[i]);
  }

  double worst = 0, largest = 0, row[DIM];
  for (int b = 0; b < BATCH; ++b)
    for (int h = 0; h < HEADS; ++h)
      for (int i = 0; i < Q_LEN; ++i) {
        reference(q, k, v, b, h, i, row);
        const float *got = o + (((size_t)b * HEADS + h) * Q_LEN + i) * DIM;
        for (int d = 0; d < DIM; ++d) {
          worst = fmax(worst, fabs(got[d] - row[d]));
          largest = fmax(largest, fabs(row[d]));
        }
      }
  double error = worst / largest, tolerance = on_gpu ? 1e-2 : 1e-5;
  printf("rbf on %s: max |o - reference| / max |reference| = %.3g (%s %.0e)\n",
         on_gpu ? "cuda (bf16)" : "host (f32)", error,
         error <= tolerance ? "within" : "OVER", tolerance);
  rbfc_kernel_release(kernel);
  free(q);
  free(k);
  free(v);
  free(o);
  return error <= tolerance ? 0 : 1;
}
