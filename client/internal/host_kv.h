// Request validation and host-buffer slicing shared by Offload, Load and
// the session calls. No gRPC here, so it is cheap to test and to read.
#ifndef QAQKV_CLIENT_INTERNAL_HOST_KV_H_
#define QAQKV_CLIENT_INTERNAL_HOST_KV_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/codec.h"
#include "qaqkv/client.h"

namespace qaqkv::client::internal {

// The public enums mirror the kernels' values one to one.
inline ::qaqkv::DType ToKernel(DType d) { return static_cast<::qaqkv::DType>(d); }
inline ::qaqkv::Layout ToKernel(Layout l) { return static_cast<::qaqkv::Layout>(l); }

size_t ElementBytes(DType d);

absl::Status ValidateGeometry(const Geometry& g, std::string_view field);
bool SameGeometry(const Geometry& a, const Geometry& b);
// "layers=32 kv_heads=8 q_heads=32 head_dim=128 dtype=fp16 block_tokens=256"
std::string DescribeGeometry(const Geometry& g);

// Parses a codec spelling; errors name `field`.
absl::StatusOr<::qaqkv::CodecConfig> ParseCodec(std::string_view codec, std::string_view field);

absl::Status ValidateSessionId(std::string_view id);

// HostKv and MutableHostKv seen alike for validation.
struct KvBuffers {
  DType dtype = DType::kF16;
  Layout layout = Layout::kNHD;
  std::vector<const void*> k, v;
  int64_t tokens = 0;
  int64_t first_token = 0;
};
KvBuffers View(const HostKv& kv);
KvBuffers View(const MutableHostKv& kv);

// Checks `kv` against `g` for moving `rows` tokens from kv.first_token, on
// layers [layer_begin, layer_end) (pointers outside may be null), and
// returns the buffers' token extent. Errors name `field` ("kv", "tail").
absl::StatusOr<int64_t> ValidateKv(const KvBuffers& kv, const Geometry& g, int64_t rows,
                                   int layer_begin, int layer_end, std::string_view field);

// Checks QAQ side inputs for rows ending at `end_row` (values included,
// only when `check_values`, i.e. the codec is QAQ).
absl::Status ValidateSide(const QaqInputs& side, const Geometry& g, int64_t end_row,
                          bool check_values);

// The QAQ side inputs of page (rows [row0, row0 + rows), `layer`): that
// slice of the layer's attention estimates, the layer's Q2, and the context
// length (side.context_tokens, or `default_context` when 0). Views into
// `side`.
::qaqkv::QaqSideInputs PageSide(const QaqInputs& side, int layer, int64_t row0, int64_t rows,
                                int heads, int64_t default_context);

// An encode (decoding false) or decode error of page (block, layer), its
// message prefixed with the page. A page the server delivered that does not
// decode is corrupt data, so decoding turns kInvalidArgument into kDataLoss.
absl::Status PageError(const absl::Status& s, size_t block, int layer, bool decoding);

// kInvalidArgument when an encoded page of `size` bytes would not fit in one
// message (`max_page`: options.max_message_bytes less framing).
absl::Status CheckPageSize(size_t size, size_t max_page, size_t block, int layer);

// Copies rows [row0, row0 + rows) of a layer buffer (token extent
// `buffer_tokens`, `layout`) into `dst` as NHD [rows, heads, head_dim].
void CopyRowsToNhd(const void* src, Layout layout, int64_t buffer_tokens, int64_t row0,
                   int64_t rows, int heads, int head_dim, size_t elem, void* dst);
// The inverse: NHD rows from `src` into rows [row0, row0 + rows) of `dst`.
void CopyRowsFromNhd(const void* src, void* dst, Layout layout, int64_t buffer_tokens,
                     int64_t row0, int64_t rows, int heads, int head_dim, size_t elem);

// Address of row `row0` of an NHD buffer.
inline const void* NhdRow(const void* base, int64_t row0, int heads, int head_dim,
                          size_t elem) {
  return static_cast<const char*>(base) + row0 * heads * head_dim * static_cast<int64_t>(elem);
}
inline void* NhdRow(void* base, int64_t row0, int heads, int head_dim, size_t elem) {
  return static_cast<char*>(base) + row0 * heads * head_dim * static_cast<int64_t>(elem);
}

}  // namespace qaqkv::client::internal

#endif  // QAQKV_CLIENT_INTERNAL_HOST_KV_H_
