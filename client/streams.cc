// The two page streams to one server: PutPages with messages assembled
// from page buffers without copying them, and GetPages parsed in place
// (pages handed on as the pieces of gRPC's receive slices, PageBytes).
#include <algorithm>
#include <cstring>
#include <utility>

#include <grpcpp/impl/client_unary_call.h>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "base/strings.h"
#include "client/internal/client_impl.h"
#include "client/internal/wire.h"

namespace qaqkv::client {

using base::AsAbsl;

absl::StatusOr<v1::PutPagesResponse> Client::Impl::StreamPutTo(internal::Endpoint& endpoint,
                                                               const v1::BlockFormat& format,
                                                               PageSource& source, int attempts) {
  v1::PutPagesResponse response;
  const std::string format_bytes = format.SerializeAsString();
  // Declared before the calls, so it waits (at return, after every call and
  // its context are gone) until gRPC has dropped the slices that point into
  // the caller's pages.
  internal::SliceFence fence;
  absl::Status status = CallOn(endpoint, [&](const Conn& conn, grpc::ClientContext& context,
                                             bool&) -> absl::Status {
    source.Begin();
    response.Clear();
    // A raw call: messages are slices over the page bytes (internal/wire.h),
    // which the server's generated code parses as PutPagesRequest.
    const grpc::internal::RpcMethod method("/qaqkv.v1.KvCache/PutPages",
                                           grpc::internal::RpcMethod::CLIENT_STREAMING);
    // The headers go out with the first message: otherwise creating the
    // writer blocks on a round of the completion queue of its own.
    context.set_initial_metadata_corked(true);
    std::unique_ptr<grpc::ClientWriter<grpc::ByteBuffer>> writer(
        grpc::internal::ClientWriterFactory<grpc::ByteBuffer>::Create(conn.channel, method,
                                                                      &context, &response));
    std::vector<internal::OutPage> batch;
    size_t batch_bytes = 0;
    bool first = true;    // the first message must carry the format
    bool broken = false;  // a Write failed: the stream is dead, Finish says why
    auto flush = [&] {
      grpc::ByteBuffer message =
          internal::EncodePutMessage(first ? format_bytes : std::string(), batch, fence);
      first = false;
      broken = !writer->Write(message);
      batch.clear();
      batch_bytes = 0;
    };
    absl::Status local;
    while (!broken) {
      internal::OutPage page;
      absl::StatusOr<bool> more = source.Next(&page);
      if (!more.ok()) {
        local = more.status();
        break;
      }
      if (!*more) break;
      // Key, layer and field tags: small, but thousands of tiny pages add up.
      const size_t size = page.data.size() + 32;
      if (!batch.empty() && batch_bytes + size > kBatchBytes) flush();
      if (broken) break;
      batch.push_back(std::move(page));
      batch_bytes += size;
      if (batch_bytes >= kBatchBytes) flush();
    }
    if (!local.ok()) {
      // Our own failure (e.g. encoding): end the stream without committing
      // anything more, and report ours rather than CANCELLED.
      source.Abort();
      context.TryCancel();
      static_cast<void>(writer->Finish());  // CANCELLED, by us: nothing to add
      return local;
    }
    if (!broken && !batch.empty()) {
      // The last message carries the end of the stream: one write, not two.
      grpc::ByteBuffer message =
          internal::EncodePutMessage(first ? format_bytes : std::string(), batch, fence);
      broken = !writer->Write(message, grpc::WriteOptions().set_last_message());
    } else if (!broken) {
      writer->WritesDone();
    }
    if (broken) source.Abort();
    return FromGrpc(writer->Finish());
  }, options_.deadline, attempts);
  QAQKV_RETURN_IF_ERROR(status);
  return response;
}

absl::Status Client::Impl::StreamGetFrom(
    internal::Endpoint& endpoint, std::span<const BlockKey> blocks, int layer_begin,
    int layer_end, absl::FunctionRef<absl::Status(const v1::BlockFormat&)> on_format,
    OnPage on_page, int attempts) {
  v1::GetPagesRequest request;
  for (const BlockKey& key : blocks) request.add_block_keys(KeyBytes(key));
  request.set_layer_begin(static_cast<uint32_t>(layer_begin));
  request.set_layer_end(static_cast<uint32_t>(layer_end));
  const size_t num_blocks = blocks.size();

  return CallOn(endpoint, [&](const Conn& conn, grpc::ClientContext& context,
                              bool& retryable) -> absl::Status {
    // A raw call: each message is parsed in place (internal/wire.h), so the
    // page bytes are not copied out of what gRPC received.
    const grpc::internal::RpcMethod method("/qaqkv.v1.KvCache/GetPages",
                                           grpc::internal::RpcMethod::SERVER_STREAMING);
    std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>> reader(
        grpc::internal::ClientReaderFactory<grpc::ByteBuffer>::Create(conn.channel, method,
                                                                      &context, request));
    // Ends the stream early with our own error instead of the server's.
    auto abandon = [&](absl::Status why) {
      context.TryCancel();
      static_cast<void>(reader->Finish());  // CANCELLED, by us: nothing to add
      return why;
    };
    grpc::ByteBuffer buffer;
    bool have_format = false;
    size_t received = 0, total = 0;
    while (reader->Read(&buffer)) {
      link_.Wait(buffer.Length());
      absl::StatusOr<internal::InMessage> message = internal::ParseGetMessage(buffer);
      buffer.Clear();
      if (!message.ok()) return abandon(message.status());
      if (!have_format) {
        if (!message->has_format) {
          return abandon(absl::InternalError("server's first GetPages message has no format"));
        }
        const uint32_t layers = message->format.geometry().num_layers();
        const uint32_t end = layer_end == 0 ? layers : static_cast<uint32_t>(layer_end);
        if (end > layers || end <= static_cast<uint32_t>(layer_begin)) {
          return abandon(absl::InternalError(absl::StrCat(
              "server sent layers of a ", layers, "-layer format for layers [", layer_begin,
              ", ", layer_end, ")")));
        }
        if (absl::Status s = on_format(message->format); !s.ok()) return abandon(s);
        have_format = true;
        total = num_blocks * (end - layer_begin);
      }
      for (const internal::InPage& page : message->pages) {
        // The contract fixes the order (layer-major, blocks in request
        // order), so every page's place is known; anything else is a server
        // bug we must not write into the caller's buffers.
        const size_t block = received % num_blocks;
        const int layer = layer_begin + static_cast<int>(received / num_blocks);
        const BlockKey& want = blocks[block];
        if (received >= total || page.layer != static_cast<uint32_t>(layer) ||
            page.key != std::string_view(reinterpret_cast<const char*>(want.data()),
                                         want.size())) {
          return abandon(absl::InternalError(absl::StrCat(
              "server sent page ", received, " out of order: got layer ", page.layer,
              ", expected block ", block, " layer ", layer, " of ", total, " pages")));
        }
        ++received;
        retryable = false;  // the caller has data now; a retry would repeat it
        if (absl::Status s = on_page(block, layer, page.data, message->keep); !s.ok()) {
          return abandon(s);
        }
      }
    }
    QAQKV_RETURN_IF_ERROR(FromGrpc(reader->Finish()));
    if (!have_format || received != total) {
      return absl::InternalError(absl::StrCat("server ended GetPages after ", received, " of ",
                                              total, " pages"));
    }
    return absl::OkStatus();
  }, options_.deadline, attempts);
}

// ---- PageBytes ------------------------------------------------------------------

void PageBytes::CopyTo(char* out) const {
  for (std::string_view piece : pieces_) {
    std::memcpy(out, piece.data(), piece.size());
    out += piece.size();
  }
}

std::string_view PageBytes::Flat(std::string* scratch) const {
  if (pieces_.size() == 1) return pieces_[0];
  // resize, not assign: a scratch buffer reused page after page keeps its
  // memory, so gathering writes into pages the process already has.
  scratch->resize(size_);
  CopyTo(scratch->data());
  return *scratch;
}


}  // namespace qaqkv::client
