// A hand-written kernel with the parameter list of docs/abi.md, to test the
// runtime (argument packing, grid, strides, params, captures) on the GPU
// independently of the kernels rbfc generates. Naive on purpose: one thread
// per query row, online softmax in f32.
//
//   score = scale * q.k + key_bias[kv_idx],   mask: kv_idx <= q_idx + shift
//
// Descriptor: abi_fixture.json. Built by run_gpu_tests.py with
// `nvcc -arch=sm_90a -ptx`.
#include <cuda_bf16.h>
#include <stdint.h>

#define HEAD_DIM 64
#define TILE_M 64

extern "C" __global__ void abi_fixture_fwd(
    const __nv_bfloat16 *q, const __nv_bfloat16 *k, const __nv_bfloat16 *v,
    __nv_bfloat16 *o, float *lse, int64_t batch, int64_t heads,
    int64_t kv_heads, int64_t q_len, int64_t kv_len, int64_t q_offset,
    int64_t kv_offset, int64_t q_seq_len, int64_t kv_seq_len, int64_t q_stride_b,
    int64_t q_stride_h, int64_t q_stride_n, int64_t k_stride_b,
    int64_t k_stride_h, int64_t k_stride_n, int64_t v_stride_b,
    int64_t v_stride_h, int64_t v_stride_n, int64_t o_stride_b,
    int64_t o_stride_h, int64_t o_stride_n, int64_t lse_stride_b,
    int64_t lse_stride_h, float scale, int32_t shift, const float *key_bias,
    int64_t key_bias_size_0, int64_t key_bias_stride_0) {
  int64_t row = int64_t(blockIdx.x) * TILE_M + threadIdx.x;
  int64_t h = blockIdx.y, b = blockIdx.z;
  if (row >= q_len || b >= batch)
    return;
  int64_t kvh = h / (heads / kv_heads);
  const __nv_bfloat16 *qr = q + b * q_stride_b + h * q_stride_h + row * q_stride_n;
  float qf[HEAD_DIM], acc[HEAD_DIM];
  for (int d = 0; d < HEAD_DIM; ++d) {
    qf[d] = __bfloat162float(qr[d]);
    acc[d] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  for (int64_t j = 0; j < kv_len; ++j) {
    if (j > row + shift)
      break;
    const __nv_bfloat16 *kr = k + b * k_stride_b + kvh * k_stride_h + j * k_stride_n;
    const __nv_bfloat16 *vr = v + b * v_stride_b + kvh * v_stride_h + j * v_stride_n;
    float s = 0.f;
    for (int d = 0; d < HEAD_DIM; ++d)
      s += qf[d] * __bfloat162float(kr[d]);
    int64_t jb = j < key_bias_size_0 ? j : key_bias_size_0 - 1;
    s = scale * s + key_bias[jb * key_bias_stride_0];
    float mNew = fmaxf(m, s);
    float correction = expf(m - mNew), p = expf(s - mNew);
    l = l * correction + p;
    for (int d = 0; d < HEAD_DIM; ++d)
      acc[d] = acc[d] * correction + p * __bfloat162float(vr[d]);
    m = mNew;
  }
  __nv_bfloat16 *orow = o + b * o_stride_b + h * o_stride_h + row * o_stride_n;
  for (int d = 0; d < HEAD_DIM; ++d)
    orow[d] = __float2bfloat16(l > 0.f ? acc[d] / l : 0.f);
  lse[b * lse_stride_b + h * lse_stride_h + row] = l > 0.f ? m + logf(l) : -INFINITY;
}
