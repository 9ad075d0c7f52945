// Wire helpers shared by client and server: protobuf wire-format helpers
// for the two page streams, whose messages the
// server (GetPages) and the client (PutPages) assemble by hand from slices
// that reference page buffers, and parse in place. Field numbers and types
// are those of proto/qaqkv/v1/kvcache.proto. Also the transport settings
// both ends use for those streams.
#ifndef QAQKV_PROTO_WIRE_H_
#define QAQKV_PROTO_WIRE_H_

#include <grpc/grpc.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>


namespace qaqkv::wire {

// Tags: field number << 3 | wire type (0 varint, 2 length-delimited).
inline constexpr uint8_t kFormatTag = (1 << 3) | 2;  // Put/GetPages*.format
inline constexpr uint8_t kPagesTag = (2 << 3) | 2;   // Put/GetPages*.pages
inline constexpr uint8_t kKeyTag = (1 << 3) | 2;     // Page.block_key
inline constexpr uint8_t kLayerTag = (2 << 3) | 0;   // Page.layer
inline constexpr uint8_t kDataTag = (3 << 3) | 2;    // Page.data

inline void AppendVarint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

inline size_t VarintSize(uint64_t v) {
  size_t n = 1;
  for (; v >= 0x80; v >>= 7) ++n;
  return n;
}

// Appends the header of one Page field (everything but its data bytes,
// which follow as their own slice): tag, length, key, layer, data tag and
// data length.
inline void AppendPageHeader(std::string& out, const uint8_t* key, size_t key_size,
                             uint32_t layer, size_t data_size) {
  const size_t page_len = 2 + key_size + 1 + VarintSize(layer) + 1 + VarintSize(data_size) +
                          data_size;
  out.push_back(static_cast<char>(kPagesTag));
  AppendVarint(out, page_len);
  out.push_back(static_cast<char>(kKeyTag));
  AppendVarint(out, key_size);
  out.append(reinterpret_cast<const char*>(key), key_size);
  out.push_back(static_cast<char>(kLayerTag));
  AppendVarint(out, layer);
  out.push_back(static_cast<char>(kDataTag));
  AppendVarint(out, data_size);
}

// Appends the format field: tag, length, the serialized BlockFormat.
inline void AppendFormat(std::string& out, const std::string& format_bytes) {
  out.push_back(static_cast<char>(kFormatTag));
  AppendVarint(out, format_bytes.size());
  out += format_bytes;
}

// gRPC transport settings for channels that carry page streams, the same on
// the client's channels and the server. Pages are hundreds of KiB: a large
// HTTP/2 window and frames let a stream run at memory speed instead of
// waiting on window updates, a whole message of pages may queue for the
// socket at once, and sockets are read in large chunks (fewer reads per
// page). A 256 KiB page still spans several of gRPC's 64 KiB receive
// slices, so the client hands a page on as the pieces it lies in
// (PageBytes, client/internal/wire.cc) and copies it only where a caller
// needs it in one piece. docs/performance.md (Service, stops 11-13) has the runs
// behind each value, and the ones that did not pay (tcp_read_chunks off).
struct ChannelArg {
  const char* name;
  int value;
};
inline constexpr ChannelArg kPageStreamChannelArgs[] = {
    {GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 4 << 20},
    {GRPC_ARG_HTTP2_MAX_FRAME_SIZE, 4 << 20},
    {GRPC_ARG_HTTP2_WRITE_BUFFER_SIZE, 8 << 20},
    {GRPC_ARG_TCP_READ_CHUNK_SIZE, 4 << 20},
    {GRPC_ARG_TCP_MIN_READ_CHUNK_SIZE, 256 << 10},
    {GRPC_ARG_TCP_MAX_READ_CHUNK_SIZE, 4 << 20},
};

// gRPC experiments for processes that move page streams. gRPC 1.51 reads
// them once, from the GRPC_EXPERIMENTS environment variable, at its first
// use. tcp_frame_size_tuning lets the transport tell TCP how many bytes the
// message in flight still needs, and tcp_rcv_lowat turns that into
// SO_RCVLOWAT, so a reader sleeps until a whole frame has arrived.
//  - The server takes both: a 1 MiB PutPages message then wakes it once or
//    twice instead of once per few segments, which saves thread hand-offs
//    and reads.
//  - The client leaves tcp_rcv_lowat out: a client that sleeps until each
//    GetPages frame is whole copies it out only after the server has sent
//    it all, while one that wakes as segments arrive copies while the
//    server sends.
// docs/performance.md has the measurements behind both choices.
inline constexpr char kServerExperiments[] = "tcp_frame_size_tuning,tcp_rcv_lowat";
inline constexpr char kClientExperiments[] = "tcp_frame_size_tuning";

// Sets environment variable `name` to `value` unless the environment
// already sets it (an operator's value, even empty, wins). True when it set
// it.
inline bool SetEnvUnlessSet(const char* name, const char* value) {
  return std::getenv(name) == nullptr && setenv(name, value, /*overwrite=*/0) == 0;
}

// Sets GRPC_EXPERIMENTS to kServerExperiments unless the environment
// already sets it. Call before anything uses gRPC. (Clients:
// qaqkv::client::UseRecommendedGrpcEnvironment.)
inline void UseServerExperiments() { SetEnvUnlessSet("GRPC_EXPERIMENTS", kServerExperiments); }

}  // namespace qaqkv::wire

#endif  // QAQKV_PROTO_WIRE_H_
