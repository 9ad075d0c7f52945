// Helpers shared by the storage tests.
#ifndef QAQKV_TESTS_STORAGE_TEST_UTIL_H_
#define QAQKV_TESTS_STORAGE_TEST_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>

#include "base/file.h"
#include "xxhash.h"

namespace qaqkv::storage::testing {

// A fresh temporary directory for one test, removed with everything in it
// (read-only directories included) at scope exit. Should the machine's
// temporary directory be unusable, the test fails with the reason (absl's
// BadStatusOrAccess, which gtest reports).
inline base::TempDir MakeTempDir() { return base::TempDir::Create("qaqkv-test").value(); }

// Bytes shaped like a page: a random body of `body` bytes and the XXH3-64
// trailer every page carries.
inline std::string FakePage(size_t body, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string p(body + 8, '\0');
  for (size_t i = 0; i < body; ++i) p[i] = static_cast<char>(rng());
  const uint64_t h = XXH3_64bits(p.data(), body);
  std::memcpy(p.data() + body, &h, 8);
  return p;
}

}  // namespace qaqkv::storage::testing

#endif  // QAQKV_TESTS_STORAGE_TEST_UTIL_H_
