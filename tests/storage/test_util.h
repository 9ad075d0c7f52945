// Helpers shared by the storage tests.
#ifndef QAQKV_TESTS_STORAGE_TEST_UTIL_H_
#define QAQKV_TESTS_STORAGE_TEST_UTIL_H_

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>

#include "xxhash.h"

namespace qaqkv::storage::testing {

// A fresh temporary directory, removed (made writable first) at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "qaqkv-test-XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::permissions(path_, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::add, ec);
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

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
