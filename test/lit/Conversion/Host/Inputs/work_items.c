// Counts the work items of an object built from examples/alibi.attn by the
// tile_m it exports (emit-host.test), as a caller of the object does.
#include <stdint.h>
#include <stdio.h>

extern const int64_t alibi_tile_m;

int main(void) {
  const int64_t batch = 2, heads = 8, qLen = 1000;
  printf("tile_m %lld work items %lld\n", (long long)alibi_tile_m,
         (long long)(batch * heads * ((qLen + alibi_tile_m - 1) / alibi_tile_m)));
  return 0;
}
