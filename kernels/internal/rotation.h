// The randomized Hadamard rotation of variant `-rh` (docs/page-format.md,
// version 2): each row of head_dim values is multiplied by fixed random
// signs and then by a normalized Walsh-Hadamard matrix, before quantization;
// decode applies the inverse. The rotation is orthogonal, so it keeps dot
// products (q . k) and the L2 error of a row, while it spreads the energy of
// a few large channels over all of them: a row's range shrinks towards that
// of a Gaussian vector of the same norm, and a quantizer that spans the
// range needs fewer bits for the same error.
//
// head_dim need not be a power of two: the row is cut into power-of-two
// blocks, largest first (96 = 64 + 32), each rotated on its own.
//
// Every backend must run these float32 operations in this order (the
// butterflies of each block, stage by stage, then the scaling), so that
// pages are byte-identical.
#ifndef QAQKV_KERNELS_INTERNAL_ROTATION_H_
#define QAQKV_KERNELS_INTERNAL_ROTATION_H_

#include <cmath>
#include <cstdint>

#include "kernels/half.h"

namespace qaqkv::internal {

// The fixed sign of channel d: bit 0 of a splitmix64 step of d. Fixed forever
// for version-2 pages (a change means a new page version).
QAQKV_HD float RotationSign(int d) {
  uint64_t z = static_cast<uint64_t>(d) + 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return (z & 1) ? -1.0f : 1.0f;
}

// In-place unnormalized Walsh-Hadamard transform of n (a power of two) values.
QAQKV_HD void WalshHadamard(float* x, int n) {
  for (int len = 1; len < n; len <<= 1) {
    for (int i = 0; i < n; i += len << 1) {
      for (int j = i; j < i + len; ++j) {
        const float a = x[j], b = x[j + len];
        x[j] = a + b;
        x[j + len] = a - b;
      }
    }
  }
}

// 1 / sqrt(n) for a power of two n, in float32.
QAQKV_HD float HadamardScale(int n) {
  return 1.0f / static_cast<float>(std::sqrt(static_cast<double>(n)));
}

// One block of n (a power of two) values starting at channel `at` of its row.
// Forward: b <- H (s . b). Inverse: b <- s . (H b).
QAQKV_HD void RotateBlock(float* b, int n, int at, bool inverse) {
  if (!inverse) {
    for (int i = 0; i < n; ++i) b[i] *= RotationSign(at + i);
  }
  WalshHadamard(b, n);
  const float scale = HadamardScale(n);
  for (int i = 0; i < n; ++i) b[i] *= scale;
  if (inverse) {
    for (int i = 0; i < n; ++i) b[i] *= RotationSign(at + i);
  }
}

// The row's blocks, largest first.
QAQKV_HD void RotateRow(float* x, int head_dim, bool inverse) {
  int at = 0;
  for (int rest = head_dim; rest > 0;) {
    int n = 1;
    while (n * 2 <= rest) n *= 2;
    RotateBlock(x + at, n, at, inverse);
    at += n;
    rest -= n;
  }
}

}  // namespace qaqkv::internal

#endif  // QAQKV_KERNELS_INTERNAL_ROTATION_H_
