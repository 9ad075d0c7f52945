// The qaqkv client library: the one public C++ API of the KV-cache offload
// service (docs/design.md).
//
// A worker offloads the KV cache of a prompt as pages (one layer of one
// block), compressed by a codec (default QAQ), and loads them back layer by
// layer when the prefix is reused or a chat session resumes:
//
//   auto client = qaqkv::client::Client::Create({.target = "127.0.0.1:7070"});
//   std::vector<BlockKey> keys = Client::ComputeBlockKeys(model, "qaq", tokens, 256);
//   size_t cached = (*client)->Lookup(keys).value();
//   (*client)->Offload({.geometry = g, .blocks = keys, .kv = host_kv});
//   (*client)->Load({.geometry = g, .blocks = keys, .kv = out, .on_layer = ...});
//
// Errors are absl::Status codes that mirror gRPC's one-to-one (a server error
// arrives with the server's code and message). Codes the library itself
// produces: kInvalidArgument (a request field is wrong; the message names
// the field; nothing was sent), kFailedPrecondition (what the server stored
// disagrees with the request's geometry or codec), kNotFound (unknown or not
// committed block or session), kDataLoss (a page failed its checksum or does
// not decode), kUnavailable (the server could not be reached after
// RetryPolicy::max_attempts attempts), kDeadlineExceeded, kInternal (the
// server broke the protocol, e.g. pages out of order).
#ifndef QAQKV_CLIENT_INCLUDE_QAQKV_CLIENT_H_
#define QAQKV_CLIENT_INCLUDE_QAQKV_CLIENT_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "qaqkv/limits.h"

namespace qaqkv::client {

// 16-byte content hash of a block, chained over the prefix (ComputeBlockKeys).
using BlockKey = std::array<uint8_t, 16>;

// Element type of host buffers. The model's dtype (Geometry::dtype) is kF16 or
// kBF16; host buffers may also be kF32 (converted while encoding/decoding).
enum class DType : uint8_t { kF16 = 1, kBF16 = 2, kF32 = 3 };

// Layout of one layer's K (or V) host buffer holding `T` tokens:
// kNHD: [T, kv_heads, head_dim]; kHND: [kv_heads, T, head_dim] (row-major).
enum class Layout : uint8_t { kNHD = 0, kHND = 1 };

// The shape of a model's KV cache. Limits (checked before anything is sent):
// each at least 1 and at most its limit in qaqkv/limits.h (kMaxLayers 4096,
// kMaxKvHeads 1024, kMaxQHeads 65536, kMaxHeadDim 1024, kMaxBlockTokens
// 65536), and num_q_heads a multiple of num_kv_heads.
struct Geometry {
  int num_layers = 0;
  int num_kv_heads = 0;
  int num_q_heads = 0;
  int head_dim = 0;
  DType dtype = DType::kF16;  // the model's dtype: kF16 or kBF16 (never kF32)
  int block_tokens = 256;     // tokens per block (and per page)
};

// Retries with jittered exponential backoff. Only UNAVAILABLE is retried
// (the server was not reached or went away); every other code is returned at
// once. A PutPages/Offload stream is retried as a whole (the server takes a
// page again as an idempotent success). A GetPages/Load stream is retried
// only while no page has been handed to the caller; after that its error is
// returned.
struct RetryPolicy {
  int max_attempts = 4;  // attempts in all, >= 1 (1: no retry)
  // The wait before retry n (n = 1, 2, ...) is
  // min(max_backoff, initial_backoff * multiplier^(n-1)), scaled by a random
  // factor in [0.5, 1] so many clients do not retry in lockstep.
  absl::Duration initial_backoff = absl::Milliseconds(50);
  absl::Duration max_backoff = absl::Seconds(2);
  double multiplier = 2.0;  // >= 1
};

struct ClientOptions {
  // Exactly one of `target`, `servers` and `discovery` names the servers.
  //
  // One server: "127.0.0.1:7070", or any gRPC target such as
  // "dns:///svc.ns:7070" (gRPC then picks one address; nothing is sharded).
  std::string target;
  // Several servers ("host:port" each, at least one): blocks and sessions are
  // placed by rendezvous hashing of their key over the servers' names and
  // replicated on `replicas` of them (see docs/architecture.md, Scale-out).
  // Every client given the same list places every key the same way.
  std::vector<std::string> servers;
  // A DNS name "name:port" (e.g. a Kubernetes headless Service) whose every
  // address is a server, re-resolved every `discovery_interval`. Servers are
  // named by their reverse-DNS name when they have one (a StatefulSet pod's
  // stable name), else by address.
  std::string discovery;
  absl::Duration discovery_interval = absl::Seconds(10);
  // Copies of each block and session, R. 0: 2, or 1 with a single server.
  // Fewer servers than R: every server holds a copy.
  int replicas = 0;
  // Replicas that must acknowledge a write for it to succeed, 1..R; 0: all R.
  // A replica that missed a write is repaired when a read finds the gap.
  int write_quorum = 0;
  // Deadline of each per-replica attempt of the small calls (lookups,
  // sessions) with several servers: a stopped server costs this, not
  // `deadline`, before the next replica is tried.
  absl::Duration replica_deadline = absl::Seconds(2);
  // How often servers are health-checked (grpc.health.v1) with several
  // servers. A server that fails a check or a call is ejected (skipped while
  // another replica can serve) and probed again with a backoff from 100 ms
  // to 30 s; a passing check readmits it.
  absl::Duration health_check_interval = absl::Seconds(2);
  // Sent with every call as "authorization: Bearer <token>". Empty: no token
  // (the server then acts for tenant "default" if it runs without a token file).
  std::string bearer_token;
  // TLS. With tls false, every tls_* field must be empty.
  bool tls = false;
  std::string tls_root_certs_pem;  // trusted roots; empty: the system's roots
  // mTLS: the client's certificate chain and private key, both or neither.
  // Create parses them and refuses (kInvalidArgument) a chain without a
  // certificate, an encrypted key, or a key that does not match the first
  // certificate, which gRPC would report only as UNAVAILABLE on each call.
  std::string tls_client_cert_pem;
  std::string tls_client_key_pem;
  // Name the server's certificate must carry, when it differs from the
  // target's host (e.g. tests with a certificate for "localhost").
  std::string tls_server_name;
  // Deadline of each RPC attempt (a stream's deadline covers the whole
  // stream, encoding or decoding included). A retried call gets a fresh
  // deadline per attempt. Must be > 0.
  absl::Duration deadline = absl::Seconds(30);
  RetryPolicy retry;
  // Largest gRPC message sent or received, >= 2 MiB (pages are batched into
  // messages of about 1 MiB; a single larger page goes alone, so this also
  // bounds the largest page).
  size_t max_message_bytes = limits::kDefaultMaxMessageBytes;
  // Threads that encode (Offload) and decode (Load) pages, shared by all
  // calls of this client. 0: the hardware concurrency.
  int encode_threads = 0;
  // Channels (TCP connections) to the target, used round-robin per call,
  // 1..64. One connection per concurrent stream helps throughput because a
  // single HTTP/2 connection is flow-controlled and served by one thread.
  int channels = 1;
  // HTTP/2 keepalive ping interval while calls are active; zero disables.
  // gRPC servers by default reject pings more often than every 5 minutes
  // without data (GOAWAY "too_many_pings"), so lower it only together with
  // the server's GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS.
  absl::Duration keepalive_time = absl::Minutes(5);
  // Emulated link speed for fetched pages, in bytes per second; 0: as fast as
  // the network delivers. Each GetPages message is handed on only once a
  // link of this speed, shared by all of this client's streams, could have
  // carried it. For benchmarks: it shows what a resume costs on a 10, 25 or
  // 100 Gb/s network when the servers are on loopback.
  double link_bytes_per_second = 0;
};

// The format every page of a block was written under, as the server stores it.
struct BlockFormat {
  Geometry geometry;
  std::string codec;  // canonical codec name, e.g. "qaq:s=0.001,x=0.001,o=0.01,b=0-8"
};

// One encoded page (bytes as kernels' EncodePage produces them).
struct EncodedPage {
  BlockKey block{};
  int layer = 0;
  std::string data;
};

// The bytes of one fetched page where gRPC received them: one or more
// pieces that, in order, make up the page. A page of hundreds of KiB spans
// several of gRPC's receive buffers, so a contiguous page costs a copy;
// reading the pieces in place, or copying them straight to where the page
// is going (pinned or device memory, a decoder's input), saves that copy.
// A view: valid only as long as the bytes it was given.
class PageBytes {
 public:
  PageBytes() = default;
  explicit PageBytes(std::span<const std::string_view> pieces) : pieces_(pieces) {
    for (std::string_view piece : pieces_) size_ += piece.size();
  }

  size_t size() const { return size_; }
  std::span<const std::string_view> pieces() const { return pieces_; }
  // Copies the page's size() bytes to `out`.
  void CopyTo(char* out) const;
  // The page as one view: in place when it is a single piece, else gathered
  // into `*scratch` (whose memory a caller can reuse page after page).
  std::string_view Flat(std::string* scratch) const;

 private:
  std::span<const std::string_view> pieces_;
  size_t size_ = 0;
};

struct PutResult {
  // Blocks committed after the stream that had a page in it, in the order
  // their last page arrived (already committed blocks included).
  std::vector<BlockKey> committed_blocks;
  uint64_t pages = 0;  // pages the server stored (idempotent rewrites included)
  uint64_t bytes = 0;  // their encoded bytes
};

// Host buffers of K and V, one pointer per layer (k[l], v[l]), each holding
// `tokens` rows (tokens) of num_kv_heads x head_dim values in `layout`. The
// caller owns the memory; it is read (or written) only during the call.
struct HostKv {
  DType dtype = DType::kF16;
  Layout layout = Layout::kNHD;
  std::vector<const void*> k, v;
  // Token extent of each buffer. 0: exactly the tokens being moved
  // (first_token + blocks * block_tokens). With kHND it sets the stride
  // between heads, so it must be the buffer's real extent.
  int64_t tokens = 0;
  // Buffer row of the first token of blocks[0] (e.g. the committed prefix
  // length * block_tokens when offloading only the uncached blocks).
  int64_t first_token = 0;
};
struct MutableHostKv {
  DType dtype = DType::kF16;
  Layout layout = Layout::kNHD;
  std::vector<void*> k, v;
  int64_t tokens = 0;       // as HostKv::tokens
  int64_t first_token = 0;  // as HostKv::first_token
};

// QAQ's side inputs (docs/qaq.md; kernels ComputeWindowStats computes them).
// Ignored by the other codecs. Missing inputs take the conservative
// defaults (every token counts as highly attended, Q2 = 1).
struct QaqInputs {
  // Per layer (empty, or one span per layer): predicted attention per
  // (buffer row r, kv head h) at [r * num_kv_heads + h], in the same row
  // coordinates as HostKv, so at least (first_token + blocks * block_tokens)
  // * num_kv_heads values. A span may be empty (defaults for that layer).
  // Values <= 1; negative means "seen by fewer than window queries".
  std::vector<std::span<const float>> attention;
  // Per layer (empty, or one span per layer): num_kv_heads values, finite
  // and > 0, or an empty span.
  std::vector<std::span<const float>> q2;
  // Context length T of the QAQ bounds. 0: first_token + blocks * block_tokens.
  int64_t context_tokens = 0;
};

struct OffloadRequest {
  Geometry geometry;
  // Codec config by name ("qaq", "int8", "qaq-cc:s=3e-4,x=2e-2,o=0", ...);
  // any spelling kernels' ParseCodecConfig accepts.
  std::string codec = "qaq";
  // Block b holds buffer rows [first_token + b * block_tokens, + block_tokens).
  std::span<const BlockKey> blocks;
  HostKv kv;
  QaqInputs side;
};

struct OffloadResult {
  size_t blocks_committed = 0;  // blocks the server reports committed
  uint64_t pages = 0;           // pages the server stored
  uint64_t raw_bytes = 0;       // K+V bytes of those pages at 2 bytes per value
  uint64_t stored_bytes = 0;    // encoded bytes the server stored
  // Time spent in EncodePage summed over all encode threads (CPU time, so it
  // can exceed total_time), and wall time of the whole call.
  absl::Duration encode_time;
  absl::Duration total_time;
};

struct LoadRequest {
  Geometry geometry;
  // Expected codec (any spelling); a block stored under another codec is
  // kFailedPrecondition. Empty: accept whatever was stored.
  std::string codec;
  std::span<const BlockKey> blocks;  // at most 65,536, all committed
  // Block b is written to buffer rows [first_token + b * block_tokens, ...).
  // k[l]/v[l] may be null for layers outside [layer_begin, layer_end).
  MutableHostKv kv;
  // Layers [layer_begin, layer_end); layer_end 0 means num_layers.
  int layer_begin = 0;
  int layer_end = 0;
  // Called once per layer, in increasing layer order, once every block of
  // that layer is in the buffers. Calls never overlap; they come from the
  // calling thread or an internal decode thread, so it should return quickly
  // and must not call this Client (it would hold a decode thread). None
  // after Load returns. May be empty.
  std::function<void(int layer)> on_layer;
};

struct LoadResult {
  uint64_t pages = 0;         // pages decoded
  uint64_t stored_bytes = 0;  // their encoded bytes
  absl::Duration time_to_first_layer;  // until layer_begin was complete
  absl::Duration total_time;
};

// A chat session to save: a chain of committed blocks plus a partial tail.
struct SessionSpec {
  std::string session_id;  // 1..limits::kMaxSessionIdBytes printable ASCII bytes, no spaces
  Geometry geometry;
  std::string codec = "qaq";
  std::vector<BlockKey> blocks;  // full blocks, in order
  // Tokens in blocks plus tail: tail = token_count - blocks.size() *
  // block_tokens, which must be in [0, block_tokens).
  uint64_t token_count = 0;
  // For SaveSession: the tail tokens, one buffer per layer holding the tail
  // rows from first_token (tokens: as HostKv). Ignored when the tail is
  // empty. The tail is stored as one page (all layers stacked) encoded with
  // `codec`, default attention and Q2 (it is small and recent) and context
  // length token_count.
  HostKv tail;
  // Zero: never expires. Sent in whole milliseconds; a TTL under 1 ms counts
  // as 1 ms (rounding down would make it never expire).
  absl::Duration ttl = absl::ZeroDuration();
};

struct SessionInfo {
  std::string session_id;
  Geometry geometry;
  std::string codec;  // canonical name
  std::vector<BlockKey> blocks;
  uint64_t token_count = 0;
  // Leading blocks still committed; fewer than blocks.size() when blocks
  // were evicted (the caller then recomputes the rest).
  size_t committed_prefix = 0;
  uint64_t tail_bytes = 0;  // encoded size of the tail page (0: no tail)
  absl::Time created;
  absl::Time accessed;
  absl::Duration ttl;  // zero: never expires
};

struct TierStats {
  std::string name;    // "dram", "disk", ... (in ServerStats::tiers)
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t evictions = 0;
  uint64_t bytes = 0;  // bytes the tier holds
  uint64_t entries = 0;
  uint64_t budget_bytes = 0;  // 0: none
};

// A GPU-to-GPU transfer as the cache service brokers it: the sender offers
// it, the receiver accepts it by id (kvcache.proto, TransferOffer). The
// NCCL transport (qaqkv/nccl_transport.h, CUDA builds) is built on these
// two calls; they need no GPU themselves.
struct TransferOffer {
  std::string transfer_id;     // 1..limits::kMaxTransferIdBytes printable ASCII bytes, no spaces
  std::string nccl_unique_id;  // exactly 128 bytes (ncclUniqueId)
  BlockFormat format;
  std::vector<BlockKey> blocks;
  int layer_begin = 0;
  int layer_end = 0;  // 0: all layers
  // Encoded size of each page in send order: every block's layer
  // layer_begin, then the next layer, ...
  std::vector<uint64_t> page_bytes;
  absl::Duration ttl = absl::ZeroDuration();  // zero: the server's 30 s
};

// Mirrors GetStatsResponse. With several servers, the sum over all of them
// (replicas counted once per copy) and the first server's version.
struct ServerStats {
  uint64_t tenant_bytes = 0;   // page bytes of the caller's tenant
  uint64_t tenant_blocks = 0;
  // Every page tier in read order, by name ("dram", then "disk" unless the
  // servers run memory-only); with several servers, summed by name.
  std::vector<TierStats> tiers;
  TierStats dram;              // server-wide (also in `tiers`)
  TierStats disk;              // server-wide; hits/misses are page reads that reached RocksDB
  uint64_t blocks_evicted = 0;     // whole blocks evicted under the disk budget
  uint64_t checksum_failures = 0;  // stored pages that failed their checksum
  uint64_t total_bytes = 0;        // page bytes of all tenants
  uint64_t blocks = 0;             // blocks of all tenants, committed or not
  uint64_t background_errors = 0;  // failed background work of the stores (logged there)
  std::string version;             // server version
};

// A connection to one qaqkv server (or a gRPC target that balances over
// several). Thread-safe: every method may be called concurrently; calls
// share the channels and the encode/decode threads. Every method blocks
// until its call is done. Destroying the Client while a call is running is
// not allowed.
class Client {
 public:
  // Validates `options` (kInvalidArgument naming the field) and creates the
  // channels. Connects lazily: an unreachable target is not an error here.
  static absl::StatusOr<std::unique_ptr<Client>> Create(ClientOptions options);

  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // The block keys of the full blocks of `token_ids` (a trailing partial
  // block gets none). key_i = XXH3_128bits (the 128-bit value written as
  // low64 then high64, each little-endian) over the concatenation
  //   key_{i-1} (16 zero bytes for i = 0)
  //   || u32 LE len || model_fingerprint
  //   || u32 LE len || codec   (as given; pass a canonical name for stability)
  //   || the block's token ids as int32 LE.
  // So equal prefixes give equal keys, and a changed token changes its
  // block's key and every later one. block_tokens < 1 yields no keys.
  static std::vector<BlockKey> ComputeBlockKeys(std::string_view model_fingerprint,
                                                std::string_view codec,
                                                std::span<const int32_t> token_ids,
                                                int block_tokens);

  // The canonical name of a codec spelling ("qaq" ->
  // "qaq:s=0.001,x=0.001,o=0.01,b=0-8"), as the server compares it.
  // kInvalidArgument for an unknown codec.
  static absl::StatusOr<std::string> CanonicalCodec(std::string_view codec);

  // Length of the longest prefix of `blocks` whose blocks are committed. With
  // `geometry` (and then a non-empty `codec`), a block counts only if it was
  // written under exactly that format. At most 1,048,576 keys.
  absl::StatusOr<size_t> Lookup(std::span<const BlockKey> blocks,
                                const Geometry* geometry = nullptr,
                                std::string_view codec = {});

  // ---- Raw pages ------------------------------------------------------------

  // Streams already encoded pages, batched into messages of about 1 MiB.
  // The server validates each page (shape, codec, checksum); the first bad
  // one fails the call with kInvalidArgument or kDataLoss, and pages of
  // earlier messages stay stored.
  absl::StatusOr<PutResult> PutPages(const Geometry& geometry, std::string_view codec,
                                     std::span<const EncodedPage> pages);

  // Fetches layers [layer_begin, layer_end) (layer_end 0: all) of `blocks`
  // (at most 65,536, each committed, else kNotFound), layer-major, calling
  // `on_page` on the calling thread for each page in that order. `data` is
  // valid only during the callback. If on_page fails, the stream is
  // cancelled and its status returned. `format`, if given, receives the
  // stored format before the first on_page.
  absl::Status GetPages(
      std::span<const BlockKey> blocks, int layer_begin, int layer_end,
      absl::FunctionRef<absl::Status(const BlockKey& block, int layer, std::string_view data)>
          on_page,
      BlockFormat* format = nullptr);

  // GetPages without making each page contiguous: `data` holds the page
  // where it was received (see PageBytes), valid only during the callback.
  // For callers that copy pages onward anyway, this saves a copy of every
  // page (`qaqkv bench service` reads pages this way; docs/performance.md).
  absl::Status GetPagesInPlace(
      std::span<const BlockKey> blocks, int layer_begin, int layer_end,
      absl::FunctionRef<absl::Status(const BlockKey& block, int layer, const PageBytes& data)>
          on_page,
      BlockFormat* format = nullptr);

  // ---- KV offload -----------------------------------------------------------

  // Encodes page (block b, layer l) from rows [first_token + b*block_tokens,
  // + block_tokens) of kv.k[l]/kv.v[l] and streams the pages block-major
  // (every layer of block 0, then block 1, ...): blocks commit in order as
  // the stream goes, so an offload cut short leaves a committed prefix, and
  // the server stores a block's layers of one message in one write.
  // Encoding runs on the encode threads, a bounded number of pages ahead of
  // the stream, so memory stays small for any length. Every request field is
  // validated first (kInvalidArgument naming it). A finite value beyond
  // fp16's range is kInvalidArgument found while encoding; the stream is then
  // cancelled (pages already sent stay stored, the block does not commit).
  // Empty `blocks`: nothing is sent.
  //
  // Device buffers (CUDA builds): when kv.k/kv.v point to GPU memory
  // (cudaPointerGetAttributes says device or managed; all of them, on one
  // GPU, else kInvalidArgument), pages are encoded on that GPU (the same
  // bytes as the CPU encoder) into pinned host buffers that go onto the
  // stream as they are, so only compressed bytes cross PCIe. qaq-cs and
  // qaq-cc cannot be encoded on the GPU: for those each block is copied to
  // pinned host memory and encoded on the CPU. QAQ side inputs stay host
  // spans. encode_time then counts GPU encode plus the copy back. The work
  // runs on the client's own non-blocking streams, so the buffers must be
  // complete (the caller's stream synchronized) when Offload is called. The
  // call does not change the calling thread's current device. The first
  // call on a machine with a GPU initializes the CUDA runtime. Only Offload
  // and Load have the device path: the session calls (SaveSession's tail,
  // OffloadSession, ResumeSession) copy the tail rows on the host, so they
  // need host buffers (kInvalidArgument for device ones in CUDA builds). A
  // client built without CUDA does not detect device pointers: it reads
  // every pointer as host memory, so never pass it device buffers.
  absl::StatusOr<OffloadResult> Offload(const OffloadRequest& request);

  // Fetches the requested layers of `blocks` in one stream and decodes each
  // page into kv as it arrives (decoding overlaps receiving), calling
  // on_layer as layers complete. kFailedPrecondition when the stored
  // geometry or codec differs from the request; kNotFound when a block is
  // not committed. On error, the buffers may hold part of the data.
  //
  // Device buffers (CUDA builds; detected as for Offload): each page is
  // checked on the host as it arrives, copied to the GPU on one stream while
  // the previous page decodes on another (two page buffers), and decoded
  // straight into the caller's buffers (HND buffers with more tokens than a
  // block go through a contiguous scratch and a 2D copy). on_layer(l) comes
  // from an internal thread once the decode stream has passed layer l's last
  // page, so layer l is in the buffers (no further synchronization needed)
  // when it is called. The work runs on the client's own streams; the
  // caller's streams are not involved. Without CUDA, see Offload.
  absl::StatusOr<LoadResult> Load(const LoadRequest& request);

  // ---- Sessions ---------------------------------------------------------------

  // Stores (or replaces) a session record. It does NOT upload the blocks:
  // they must be offloaded already (see OffloadSession).
  absl::Status SaveSession(const SessionSpec& spec);

  // Offloads the blocks of `spec` that are not yet committed (Lookup first)
  // from `kv`, which holds all token_count tokens of every layer (rows
  // [first_token, first_token + token_count)), then saves the session with
  // the tail taken from kv's rows after the blocks. spec.tail must be empty.
  // Returns what was stored: blocks_committed is the session's blocks (all
  // committed now); pages, raw_bytes and stored_bytes count the blocks this
  // call offloaded plus the tail (one page), so a session whose blocks were
  // already stored reports only its tail.
  absl::StatusOr<OffloadResult> OffloadSession(const SessionSpec& spec, const HostKv& kv,
                                               const QaqInputs& side = {});

  // The session's record; kNotFound if unknown or expired.
  absl::StatusOr<SessionInfo> GetSession(std::string_view session_id);

  // GetSession, then decodes the tail and loads every block into `kv`, whose
  // buffers must hold token_count rows from kv.first_token (kv.tokens 0
  // means first_token + token_count), all layers, in the session's geometry.
  // on_layer(l) is called when layer l (blocks and tail) is complete.
  // kNotFound (saying how many blocks are missing) when blocks were evicted:
  // recompute and save again.
  absl::StatusOr<SessionInfo> ResumeSession(std::string_view session_id, MutableHostKv kv,
                                            std::function<void(int layer)> on_layer = nullptr);

  absl::Status DeleteSession(std::string_view session_id);  // kNotFound if unknown
  absl::Status TouchSession(std::string_view session_id);   // renews the TTL
  // Session ids of the caller's tenant; limit 0: the server's default (1000).
  absl::StatusOr<std::vector<std::string>> ListSessions(size_t limit = 0);

  absl::StatusOr<ServerStats> GetStats();

  // ---- GPU-to-GPU transfer rendezvous ------------------------------------------

  // kAlreadyExists while an offer of the same id is pending.
  absl::Status OfferTransfer(const TransferOffer& offer);
  // Waits (polling) up to `wait` for an offer of `transfer_id`, and takes
  // it: each offer is accepted once. kDeadlineExceeded when none came.
  absl::StatusOr<TransferOffer> AcceptTransfer(std::string_view transfer_id,
                                               absl::Duration wait);

  // ---- Rebalance -----------------------------------------------------------------

  // Restores placement after servers were lost, added or removed: every
  // committed block and live session of the caller's tenant ends up with R
  // copies on its rendezvous owners among this client's servers, and
  // copies elsewhere are removed. Needs a client of several servers
  // (`servers` or `discovery`) that every one of them answers, plus every
  // server in `options.draining`: a listing that fails anywhere stops the
  // run before anything is copied or removed (kUnavailable naming the
  // server), since a copy there may be the only one.
  //
  // Safe to interrupt and to run again: a copy is removed only after every
  // owner holds the block (or the session's version), a session copy is
  // written only if no newer version or deletion is stored there, and a
  // rerun finds nothing left to do. A session deleted while a server was
  // away is deleted on it too, not copied back. Blocks being written (not
  // yet committed) are left alone.
  struct RebalanceOptions {
    // Servers leaving (a planned scale-down): their blocks and sessions go
    // to their owners among this client's servers, and they keep nothing.
    // "host:port" each, as in ClientOptions::servers, none of them listed
    // there.
    std::vector<std::string> draining;
    // Copy rate, bytes per second of block pages; 0: as fast as it goes.
    double max_bytes_per_second = 0;
    // Blocks per copy stream (one GetPages and one PutPages).
    int batch_blocks = 256;
    // False: only copy, remove nothing (e.g. to add copies first and
    // remove later).
    bool remove_misplaced = true;
  };
  struct RebalanceReport {
    uint64_t blocks = 0;            // committed blocks found
    uint64_t blocks_copied = 0;     // copies made (a block to one server)
    uint64_t bytes_copied = 0;      // their page bytes
    uint64_t blocks_removed = 0;    // copies removed from non-owners
    uint64_t blocks_vanished = 0;   // evicted or deleted during the run
    uint64_t sessions = 0;          // session ids found, deletions included
    uint64_t sessions_copied = 0;   // session copies made
    uint64_t sessions_deleted = 0;  // stale copies of deleted sessions deleted
    uint64_t sessions_removed = 0;  // copies removed from non-owners
    uint64_t errors = 0;            // copies or removals that failed
    std::string first_error;        // the first of them (empty: none)
  };
  // `progress`, if set, is called after each batch with the totals so far.
  absl::StatusOr<RebalanceReport> Rebalance(
      const RebalanceOptions& options,
      std::function<void(const RebalanceReport&)> progress = nullptr);

  // The servers this client places data on, and what it thinks of them.
  struct ServerState {
    std::string name;     // identity used for placement
    std::string address;  // where the channels connect
    bool healthy = true;  // false while ejected
    int consecutive_failures = 0;
  };
  std::vector<ServerState> Servers() const;

  // Replaces the server list of a client created with `servers` (e.g. from
  // the caller's own service discovery); calls in flight finish on the old
  // list. kFailedPrecondition for a client created with `target` or
  // `discovery`; kInvalidArgument for an empty or malformed list.
  absl::Status SetServers(std::vector<std::string> servers);

 private:
  class Impl;
  // Only Create can name it, so only Create constructs a Client.
  struct PassKey {
    explicit PassKey() = default;
  };

 public:
  Client(PassKey, std::unique_ptr<Impl> impl);

 private:
  std::unique_ptr<Impl> impl_;
};

// Process-wide gRPC settings for a worker that moves pages with this
// library: the ones `qaqkv bench service` and the other `qaqkv` commands run
// with (docs/performance.md, docs/operations.md).
//  - GRPC_POLL_STRATEGY=poll: each thread waiting on a call polls its own
//    connection. Under gRPC's default (epoll1) one thread polls every
//    connection of the process and hands each message to the thread that
//    waits for it; with four client threads that hand-off cost gets about a
//    tenth of their throughput.
//  - GRPC_EXPERIMENTS=tcp_frame_size_tuning (proto/wire.h,
//    kClientExperiments): the transport tells TCP how many bytes the
//    frame in flight still needs. The server's second experiment,
//    tcp_rcv_lowat, stays off on the client: a reader that sleeps until a
//    frame is whole copies it out only after the server has sent it all,
//    and gets at one client were slower with it.
// gRPC reads both once, at its first use, and they apply to every gRPC
// channel and server of the process: call this at the start of main(),
// before anything uses gRPC, or set the variables yourself. A variable the
// environment already sets (even empty) is left as it is. Returns the names
// of the variables it set.
std::vector<std::string> UseRecommendedGrpcEnvironment();

}  // namespace qaqkv::client

#endif  // QAQKV_CLIENT_INCLUDE_QAQKV_CLIENT_H_
