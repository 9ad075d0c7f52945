// qaqkv-server: the KV-cache service. Flags (or a config file of flags via
// --config=PATH, one `--name=value` per line) are documented in
// docs/operations.md and by --help. With no flags it serves single-tenant on
// 127.0.0.1:7070 with its data under ./qaqkv-data.
#include <malloc.h>
#include <pthread.h>
#include <signal.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "base/cli.h"
#include "base/file.h"
#include "base/log.h"
#include "base/mutex.h"
#include "base/strings.h"
#include "proto/wire.h"
#include "qaqkv/limits.h"
#include "service/server.h"

namespace {

int Fail(std::string_view msg) {
  qaqkv::base::LogError(msg);
  return 2;
}

// The command line as read, before its values are checked against each
// other and turned into ServerOptions.
struct Flags {
  std::string listen = "127.0.0.1:7070";
  std::string data_dir = "qaqkv-data";
  std::string memory_bytes = "1GiB";
  std::string disk_bytes = "0";
  bool memory_only = false;
  bool sync = false;
  bool separate_pages = true;
  bool promote_on_first_read = false;
  int segment_lanes = 4;
  bool segment_direct_io = true;
  bool segment_direct_io_given = false;  // on the command line or in --config
  std::string write_back_bytes = "0";
  std::string min_free_disk_bytes = "256MiB";
  std::string auth_tokens;
  std::string tls_cert, tls_key, tls_client_ca;
  std::string metrics_listen;
  bool metrics_tls = false;
  std::string max_message_bytes = absl::StrCat(qaqkv::limits::kDefaultMaxMessageBytes >> 20, "MiB");
  std::string tenant_quota_bytes = "0";
  int tenant_max_streams = 64;
  int store_threads = 4;
  int64_t block_ttl_ms = 0;
  int64_t session_tombstone_ms = 7 * 24 * 3600 * 1000LL;
  int64_t abandoned_block_ms = 600000;
  std::string drain_timeout = "20s";
  std::string reload_interval = "10s";
  std::string port_file;
};

void DefineFlags(CLI::App& app, Flags& f) {
  using qaqkv::base::ByteSize;
  using qaqkv::base::Duration;
  using qaqkv::base::TrueFalse;
  using qaqkv::base::WholeNumber;
  app.add_option("--listen", f.listen, "gRPC address (host:port; port 0 picks one)")
      ->capture_default_str();
  app.add_option("--data-dir", f.data_dir, "RocksDB directory (created if missing)")
      ->capture_default_str();
  app.add_option("--memory-bytes", f.memory_bytes,
                 "memory budget: the DRAM tier and, on disk, RocksDB's memtables and block "
                 "cache (bytes, or with KiB/MiB/GiB)")
      ->check(ByteSize())
      ->capture_default_str();
  app.add_option("--disk-bytes", f.disk_bytes,
                 "page bytes kept on disk before LRU blocks are evicted (0: no budget)")
      ->check(ByteSize())
      ->capture_default_str();
  app.add_flag("--memory-only", f.memory_only,
               "keep everything in memory (RocksDB on an in-memory Env)")
      ->check(TrueFalse());
  app.add_flag("--sync", f.sync, "fsync the WAL before acknowledging each write")
      ->check(TrueFalse());
  app.add_flag("--separate-pages", f.separate_pages,
               "page bytes in segment files beside RocksDB, which keeps their locations "
               "(false: in RocksDB itself); pages stored either way stay readable")
      ->check(TrueFalse())
      ->capture_default_str();
  app.add_option("--segment-lanes", f.segment_lanes,
                 "segment files page puts append to at once (1..64): writers in separate files "
                 "copy in parallel instead of queueing on one file's lock")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_flag("--segment-direct-io", f.segment_direct_io,
               "append and read page bytes with O_DIRECT, each record padded to 4 KiB: they "
               "skip the page cache, which would hold a second copy of what the DRAM tier "
               "caches (=false: through the page cache). Left at its default, a file system "
               "without O_DIRECT falls back to the page cache, with a warning")
      ->check(TrueFalse())
      ->capture_default_str();
  app.add_flag("--promote-on-first-read", f.promote_on_first_read,
               "copy every page read from disk into the DRAM tier (default: on its second read "
               "in a while, so one resume's sweep does not push out what is read again)")
      ->check(TrueFalse())
      ->capture_default_str();
  app.add_option("--write-back-bytes", f.write_back_bytes,
                 "write-back: acknowledge a page once in memory and write it to disk in the "
                 "background, with at most this many bytes unwritten (what a crash can lose; "
                 "at most a quarter of --memory-bytes, taken out of it); 0: acknowledge once written")
      ->check(ByteSize())
      ->capture_default_str();
  app.add_option("--min-free-disk-bytes", f.min_free_disk_bytes,
                 "below this much free space on the data directory's filesystem, page puts are "
                 "refused and the server reports not ready (0: no floor)")
      ->check(ByteSize())
      ->capture_default_str();
  app.add_option("--auth-tokens", f.auth_tokens,
                 "file of `<token> <tenant>` lines; without it the server is single-tenant");
  app.add_option("--tls-cert", f.tls_cert, "server certificate chain (PEM); turns TLS on");
  app.add_option("--tls-key", f.tls_key, "server private key (PEM)");
  app.add_option("--tls-client-ca", f.tls_client_ca,
                 "CA (PEM) that client certificates must chain to (mTLS)");
  app.add_option("--metrics-listen", f.metrics_listen,
                 "host:port of the Prometheus /metrics endpoint (empty: off)");
  app.add_flag("--metrics-tls", f.metrics_tls,
               "serve /metrics, /healthz and /readyz over HTTPS with --tls-cert and --tls-key "
               "(reloaded as they change)");
  app.add_option("--max-message-bytes", f.max_message_bytes, "largest gRPC message accepted or sent")
      ->check(ByteSize())
      ->capture_default_str();
  app.add_option("--tenant-quota-bytes", f.tenant_quota_bytes,
                 "page bytes each tenant may keep (0: no quota)")
      ->check(ByteSize())
      ->capture_default_str();
  app.add_option("--tenant-max-streams", f.tenant_max_streams,
                 "open PutPages/GetPages streams per tenant (0: no limit)")
      ->check(WholeNumber())
      ->capture_default_str();
  app.add_option("--store-threads", f.store_threads,
                 "threads running PutPages' RocksDB writes off gRPC's threads")
      ->check(WholeNumber())
      ->capture_default_str();
  app.add_option("--block-ttl-ms", f.block_ttl_ms,
                 "expire committed blocks no session references, unread this long (0: never)")
      ->check(WholeNumber())
      ->capture_default_str();
  app.add_option("--session-tombstone-ms", f.session_tombstone_ms,
                 "keep a deleted session's tombstone this long: longer than a server may be "
                 "away and come back with an older copy")
      ->check(WholeNumber())
      ->capture_default_str();
  app.add_option("--abandoned-block-ms", f.abandoned_block_ms,
                 "reclaim incomplete blocks untouched this long")
      ->check(WholeNumber())
      ->capture_default_str();
  app.add_option("--drain-timeout", f.drain_timeout,
                 "on SIGTERM, how long in-flight streams get to finish")
      ->check(Duration())
      ->capture_default_str();
  app.add_option("--reload-interval", f.reload_interval,
                 "how often --auth-tokens and the TLS files are checked for changes, which then "
                 "take effect without a restart")
      ->check(Duration())
      ->capture_default_str();
  app.add_option("--port-file", f.port_file, "write the bound gRPC port to this file once serving");
}

// Values checked against their ranges, naming the flag; the Server checks
// the rest (addresses, TLS files, the store).
absl::StatusOr<qaqkv::service::ServerOptions> ToOptions(const Flags& f,
                                                        absl::Duration* drain) {
  using qaqkv::base::ParseByteSize;
  qaqkv::service::ServerOptions o;
  o.listen = f.listen;
  o.store.data_dir = f.data_dir;
  o.store.memory_only = f.memory_only;
  o.store.sync = f.sync;
  o.store.separate_pages = f.separate_pages;
  // The validators took every size already; what is left is the ranges.
  const uint64_t memory_bytes = *ParseByteSize(f.memory_bytes);
  if (memory_bytes == 0) {
    return absl::InvalidArgumentError("--memory-bytes: want a positive size like 1GiB");
  }
  const uint64_t max_message = *ParseByteSize(f.max_message_bytes);
  if (max_message > (uint64_t{1} << 31) - 1) {
    return absl::InvalidArgumentError("--max-message-bytes: want a size up to 2GiB");
  }
  if (f.tenant_max_streams < 0) {
    return absl::InvalidArgumentError("--tenant-max-streams: negative (0: no limit)");
  }
  if (f.block_ttl_ms < 0) return absl::InvalidArgumentError("--block-ttl-ms: negative (0: never)");
  if (f.session_tombstone_ms < 1) {
    return absl::InvalidArgumentError(
        "--session-tombstone-ms: want a positive number of milliseconds");
  }
  if (f.abandoned_block_ms < 1) {
    return absl::InvalidArgumentError(
        "--abandoned-block-ms: want a positive number of milliseconds");
  }
  (void)absl::ParseDuration(f.drain_timeout, drain);
  (void)absl::ParseDuration(f.reload_interval, &o.reload_interval);
  if (o.reload_interval < absl::Seconds(1)) {
    return absl::InvalidArgumentError("--reload-interval: want at least 1s");
  }
  if (*drain < absl::ZeroDuration()) return absl::InvalidArgumentError("--drain-timeout: negative");
  o.store.memory_bytes = memory_bytes;
  o.store.disk_bytes = *ParseByteSize(f.disk_bytes);
  o.store.write_back_bytes = *ParseByteSize(f.write_back_bytes);
  o.store.promote_on_first_read = f.promote_on_first_read;
  o.store.segment_lanes = f.segment_lanes;
  // On by default wherever there are segment files; asked for explicitly, it
  // must be possible.
  o.store.segment_direct_io = f.segment_direct_io && !f.memory_only && f.separate_pages;
  o.store.min_free_disk_bytes = *ParseByteSize(f.min_free_disk_bytes);
  if (f.segment_direct_io_given && f.segment_direct_io && (f.memory_only || !f.separate_pages)) {
    return absl::InvalidArgumentError(
        "--segment-direct-io: needs segment files (not with --memory-only or "
        "--separate-pages=false)");
  }
  if (o.store.write_back_bytes > 0 && f.memory_only) {
    return absl::InvalidArgumentError(
        "--write-back-bytes: needs a disk to write back to (not with --memory-only)");
  }
  if (o.store.write_back_bytes > memory_bytes / 4) {
    return absl::InvalidArgumentError(
        "--write-back-bytes: at most a quarter of --memory-bytes (it comes out of it)");
  }
  o.store.tenant_quota_bytes = *ParseByteSize(f.tenant_quota_bytes);
  o.store.block_ttl_ms = f.block_ttl_ms;
  o.store.session_tombstone_ms = f.session_tombstone_ms;
  o.store.abandoned_block_ms = f.abandoned_block_ms;
  o.max_message_bytes = static_cast<int>(max_message);
  o.auth_tokens_file = f.auth_tokens;
  o.tls_cert_file = f.tls_cert;
  o.tls_key_file = f.tls_key;
  o.tls_client_ca_file = f.tls_client_ca;
  o.metrics_listen = f.metrics_listen;
  o.metrics_tls = f.metrics_tls;
  o.tenant_max_streams = f.tenant_max_streams;
  o.store_threads = f.store_threads;
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  qaqkv::wire::UseServerExperiments();  // before anything touches gRPC
  qaqkv::base::SkipMutexDeadlockDetectionWithNdebug();
  CLI::App app{
      "qaqkv-server: the qaqkv KV-cache service. Flags may also come from a file, "
      "--config=PATH, one --name=value per line. See docs/operations.md.",
      "qaqkv-server"};
  app.set_version_flag("--version", "qaqkv-server " QAQKV_VERSION);
  // A flag given twice takes the last value: flags after --config override
  // the file's.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  Flags flags;
  DefineFlags(app, flags);
  absl::StatusOr<std::vector<std::string>> args = qaqkv::base::ExpandArgs(argc, argv);
  if (!args.ok()) return Fail(qaqkv::base::AsStd(args.status().message()));
  std::string error;
  if (std::optional<int> rc = qaqkv::base::ParseArgs(app, *args, &error)) {
    if (!error.empty()) Fail(error);
    return *rc;
  }
  flags.segment_direct_io_given = app.count("--segment-direct-io") > 0;
  absl::Duration drain_timeout;
  absl::StatusOr<qaqkv::service::ServerOptions> options = ToOptions(flags, &drain_timeout);
  if (!options.ok()) return Fail(qaqkv::base::AsStd(options.status().message()));
  if (options->store.segment_direct_io && !flags.segment_direct_io_given) {
    const std::string segments = options->store.data_dir + "/segments";
    absl::StatusOr<bool> direct = qaqkv::base::DirectIoSupported(segments, "--data-dir");
    if (!direct.ok()) return Fail(qaqkv::base::AsStd(direct.status().message()));
    if (!*direct) {
      qaqkv::base::LogWarning(
          "the data dir's file system has no O_DIRECT: segments go through the page cache "
          "(--segment-direct-io=false says so explicitly)",
          {{"dir", segments}});
      options->store.segment_direct_io = false;
    }
  }
  const qaqkv::service::ServerOptions& o = *options;

  // Freed page buffers stay in the allocator instead of going back to the
  // kernel and page-faulting in again on the next message. Bounded, so the
  // peak RSS stays near --memory-bytes: at most 16 MiB kept free at the top
  // of the heap, and one arena for all of gRPC's threads (each arena keeps
  // its own free memory and fragments on its own); docs/performance.md has
  // the measurements behind these numbers.
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 16 << 20);
  mallopt(M_ARENA_MAX, 1);

  // SIGTERM/SIGINT are taken by sigwait below; block them before any thread
  // starts so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto server = qaqkv::service::Server::Start(o);
  if (!server.ok()) return Fail(server.status().ToString());
  if (!flags.port_file.empty()) {
    // Written before the "serving" line, so a server that cannot write it
    // fails before it claims to serve.
    if (absl::Status s = qaqkv::base::WriteFileAtomically(
            flags.port_file, absl::StrCat((*server)->port(), "\n"), "--port-file");
        !s.ok()) {
      (void)(*server)->Shutdown(absl::ZeroDuration());
      return Fail(qaqkv::base::AsStd(s.message()));
    }
  }
  const std::string host = o.listen.substr(0, o.listen.rfind(':'));
  qaqkv::base::LogInfo(absl::StrCat(
      "qaqkv-server ", QAQKV_VERSION, " serving on ", host, ":", (*server)->port(),
      o.store.memory_only ? ", memory-only (nothing survives a restart)"
                          : absl::StrCat(", data dir ", o.store.data_dir),
      ", memory budget ", o.store.memory_bytes, " bytes",
      (*server)->single_tenant() ? ", single-tenant (no --auth-tokens)" : ", bearer-token auth",
      o.tls_cert_file.empty()          ? ", plaintext"
      : o.tls_client_ca_file.empty()   ? ", TLS"
                                       : ", mTLS",
      (*server)->metrics_port() > 0 ? absl::StrCat(", metrics on port ", (*server)->metrics_port())
                                    : std::string()));
  int sig = 0;
  sigwait(&signals, &sig);
  qaqkv::base::LogInfo(absl::StrCat("signal ", sig, ": draining for up to ",
                                    absl::FormatDuration(drain_timeout)));
  absl::Status s = (*server)->Shutdown(drain_timeout);
  if (!s.ok()) return Fail(absl::StrCat("shutdown: ", s.ToString()));
  qaqkv::base::LogInfo("stopped cleanly");
  return 0;
}
