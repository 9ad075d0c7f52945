// A heap buffer whose address and size are multiples of an alignment: what
// O_DIRECT asks of the memory a read or write uses (the segment log's
// staging copies, the storage bench's O_DIRECT baseline).
#ifndef QAQKV_BASE_ALIGNED_BUFFER_H_
#define QAQKV_BASE_ALIGNED_BUFFER_H_

#include <cstddef>
#include <cstdlib>
#include <memory>

namespace qaqkv::base {

class AlignedBuffer {
 public:
  AlignedBuffer() = default;

  // At least `bytes` (rounded up to `alignment`, a power of two that is a
  // multiple of sizeof(void*)), uninitialized. Empty when memory ran out.
  static AlignedBuffer Allocate(size_t bytes, size_t alignment) {
    AlignedBuffer b;
    const size_t size = (bytes + alignment - 1) / alignment * alignment;
    b.bytes_.reset(static_cast<char*>(std::aligned_alloc(alignment, size == 0 ? alignment : size)));
    b.size_ = b.bytes_ ? size : 0;
    return b;
  }

  char* data() const { return bytes_.get(); }
  size_t size() const { return size_; }
  bool empty() const { return bytes_ == nullptr; }

 private:
  struct Free {
    void operator()(char* p) const { std::free(p); }
  };
  std::unique_ptr<char, Free> bytes_;
  size_t size_ = 0;
};

}  // namespace qaqkv::base

#endif  // QAQKV_BASE_ALIGNED_BUFFER_H_
