// qaqkv-server: the KV-cache service. Flags (or a config file of flags via
// --config=PATH, one `--name=value` per line) are documented in
// docs/operations.md. With no flags it serves single-tenant on
// 127.0.0.1:7070 with its data under ./qaqkv-data.
#include <malloc.h>
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/marshalling.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "proto/wire.h"
#include "service/server.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:7070", "gRPC address (host:port; port 0 picks one)");
ABSL_FLAG(std::string, data_dir, "qaqkv-data", "RocksDB directory (created if missing)");
ABSL_FLAG(std::string, memory_bytes, "1GiB",
          "memory budget: the DRAM tier and, on disk, RocksDB's memtables and block cache "
          "(bytes, or with KiB/MiB/GiB)");
ABSL_FLAG(std::string, disk_bytes, "0",
          "page bytes kept on disk before LRU blocks are evicted (0: no budget)");
ABSL_FLAG(bool, memory_only, false, "keep everything in memory (RocksDB on an in-memory Env)");
ABSL_FLAG(bool, sync, false, "fsync the WAL before acknowledging each write");
ABSL_FLAG(std::string, auth_tokens, "",
          "file of `<token> <tenant>` lines; without it the server is single-tenant");
ABSL_FLAG(std::string, tls_cert, "", "server certificate chain (PEM); turns TLS on");
ABSL_FLAG(std::string, tls_key, "", "server private key (PEM)");
ABSL_FLAG(std::string, tls_client_ca, "", "CA (PEM) that client certificates must chain to (mTLS)");
ABSL_FLAG(std::string, metrics_listen, "", "host:port of the Prometheus /metrics endpoint");
ABSL_FLAG(std::string, max_message_bytes, "64MiB", "largest gRPC message accepted or sent");
ABSL_FLAG(std::string, tenant_quota_bytes, "0", "page bytes each tenant may keep (0: no quota)");
ABSL_FLAG(int, tenant_max_streams, 64, "open PutPages/GetPages streams per tenant (0: no limit)");
ABSL_FLAG(int, store_threads, 4, "threads running PutPages' RocksDB writes off gRPC's threads");
ABSL_FLAG(int64_t, block_ttl_ms, 0, "expire committed blocks no session references, unread this long (0: never)");
ABSL_FLAG(int64_t, abandoned_block_ms, 600000, "reclaim incomplete blocks untouched this long");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(20),
          "on SIGTERM, how long in-flight streams get to finish");
ABSL_FLAG(std::string, port_file, "", "write the bound gRPC port to this file once serving");

namespace {

void Log(std::string_view level, std::string_view msg) {
  std::fprintf(stderr, "ts=%s level=%.*s msg=\"%.*s\"\n",
               absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()).c_str(),
               static_cast<int>(level.size()), level.data(), static_cast<int>(msg.size()),
               msg.data());
}

// "1GiB", "512MiB", "4096", "64k" -> bytes.
bool ParseBytes(const std::string& text, uint64_t* out) {
  std::string t = absl::AsciiStrToLower(text);
  uint64_t mult = 1;
  for (auto [suffix, m] : {std::pair{"kib", 1ull << 10}, {"mib", 1ull << 20}, {"gib", 1ull << 30},
                           {"tib", 1ull << 40}, {"k", 1ull << 10}, {"m", 1ull << 20},
                           {"g", 1ull << 30}, {"t", 1ull << 40}}) {
    const std::string s(suffix);
    if (t.size() > s.size() && t.compare(t.size() - s.size(), s.size(), s) == 0) {
      t.resize(t.size() - s.size());
      mult = m;
      break;
    }
  }
  uint64_t v = 0;
  if (!absl::SimpleAtoi(t, &v) || (v != 0 && mult > UINT64_MAX / v)) return false;
  *out = v * mult;
  return true;
}

int Fail(std::string_view msg) {
  Log("error", msg);
  return 2;
}

// Flags are spelled with dashes (--data-dir), as the docs and Kubernetes
// manifests write them; absl names them with underscores.
std::string Normalize(std::string arg) {
  if (arg.rfind("--", 0) != 0) return arg;
  const size_t end = std::min(arg.find('='), arg.size());
  for (size_t i = 2; i < end; ++i) {
    if (arg[i] == '-') arg[i] = '_';
  }
  return arg;
}

template <typename T>
bool Check(std::string_view name, const std::string& value) {
  T parsed{};
  std::string error;
  if constexpr (std::is_same_v<T, absl::Duration>) {
    if (absl::ParseDuration(value, &parsed)) return true;
    error = "want a duration like 20s or 1m";
  } else if (absl::ParseFlag(value, &parsed, &error)) {
    return true;
  }
  if (error.empty()) {
    // absl gives no reason for a malformed number or bool.
    error = std::is_same_v<T, bool> ? "want true or false" : "want a whole number";
  }
  std::string flag(name);
  std::replace(flag.begin(), flag.end(), '_', '-');
  Fail(absl::StrCat("--", flag, ": \"", value, "\" is not valid: ", error));
  return false;
}

// Checks the values of the typed flags before absl does: absl exits with
// code 1 on a bad value, and our contract for bad input is code 2 and a
// message that names the flag as the user spelled it.
bool CheckTypedFlags(const std::vector<std::string>& args) {
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") break;  // the rest are positional
    if (arg.rfind("--", 0) != 0) continue;
    const size_t eq = arg.find('=');
    const std::string name = arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    // absl's usage flags are handled by the parser, not registered.
    static constexpr std::string_view kUsageFlags[] = {
        "help", "helpfull", "helpshort", "helppackage", "helpmatch", "helpon", "version",
        "only_check_args"};
    if (std::find(std::begin(kUsageFlags), std::end(kUsageFlags), name) != std::end(kUsageFlags)) {
      continue;
    }
    if (absl::FindCommandLineFlag(name) == nullptr &&
        !(absl::StartsWith(name, "no") && absl::FindCommandLineFlag(name.substr(2)) != nullptr)) {
      // absl would exit 1 with its own message; the contract is code 2.
      std::string flag = name;
      std::replace(flag.begin(), flag.end(), '_', '-');
      Fail(absl::StrCat("--", flag, ": unknown flag (qaqkv-server --helpfull lists them)"));
      return false;
    }
    const bool is_bool = name == "memory_only" || name == "sync";
    std::string value;
    if (eq != std::string::npos) {
      value = arg.substr(eq + 1);
    } else if (!is_bool && i + 1 < args.size()) {
      value = args[i + 1];
    } else {
      continue;
    }
    bool ok = true;
    if (is_bool) {
      ok = Check<bool>(name, value);
    } else if (name == "tenant_max_streams" || name == "store_threads") {
      ok = Check<int>(name, value);
    } else if (name == "block_ttl_ms" || name == "abandoned_block_ms") {
      ok = Check<int64_t>(name, value);
    } else if (name == "drain_timeout") {
      ok = Check<absl::Duration>(name, value);
    }
    if (!ok) return false;
  }
  return true;
}

// Expands --config=FILE (one flag per line; blank lines and '#' comments
// skipped) in place, so a ConfigMap can hold the server's flags. Flags after
// it on the command line win.
bool ExpandArgs(int argc, char** argv, std::vector<std::string>* out) {
  out->push_back(argv[0]);
  for (int i = 1; i < argc; ++i) {
    std::string arg = Normalize(argv[i]);
    std::string path;
    if (arg == "--config") {
      if (i + 1 >= argc) {
        Log("error", "--config: missing the file's path");
        return false;
      }
      path = argv[++i];
    } else if (arg.rfind("--config=", 0) == 0) {
      path = arg.substr(9);
    } else {
      out->push_back(arg);
      continue;
    }
    std::error_code ec;
    if (path.empty() || std::filesystem::is_directory(path, ec)) {
      Log("error", absl::StrCat("--config: \"", path, "\" is not a file"));
      return false;
    }
    std::ifstream in(path);
    if (!in) {
      Log("error", absl::StrCat("--config: cannot read ", path, ": ", std::strerror(errno)));
      return false;
    }
    std::string line;
    for (int line_no = 1; std::getline(in, line); ++line_no) {
      absl::string_view l = absl::StripAsciiWhitespace(line);
      if (l.empty() || l[0] == '#') continue;
      // Every line must be one flag; anything else would be taken as a
      // positional argument and silently ignored.
      std::string flag = Normalize(std::string(l));
      if (flag.rfind("--", 0) != 0 || flag.size() == 2) {
        Log("error", absl::StrCat("--config: ", path, ":", line_no,
                                  ": want one --name=value per line, got \"", l, "\""));
        return false;
      }
      if (flag == "--config" || flag.rfind("--config=", 0) == 0) {
        Log("error", absl::StrCat("--config: ", path, ":", line_no,
                                  ": a config file cannot include another"));
        return false;
      }
      out->push_back(std::move(flag));
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  qaqkv::wire::UseServerExperiments();  // before anything touches gRPC
  qaqkv::wire::SkipMutexDeadlockDetectionWithNdebug();
  absl::SetProgramUsageMessage(
      "the qaqkv KV-cache service. Flags may also come from a file, "
      "--config=PATH, one --name=value per line. See docs/operations.md.");
  // absl's --help lists flags of files named like the program; ours are in
  // service/main.cc, so say so (--helpfull adds gRPC's and absl's own).
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "service/main.cc");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  usage.version_string = [] { return std::string("qaqkv-server " QAQKV_VERSION "\n"); };
  absl::SetFlagsUsageConfig(usage);
  std::vector<std::string> args;
  if (!ExpandArgs(argc, argv, &args) || !CheckTypedFlags(args)) return 2;
  std::vector<char*> arg_ptrs;
  for (std::string& a : args) arg_ptrs.push_back(a.data());
  absl::ParseCommandLine(static_cast<int>(arg_ptrs.size()), arg_ptrs.data());

  // Freed page buffers stay in the allocator instead of going back to the
  // kernel and page-faulting in again on the next message (the service
  // benchmark in docs/performance.md shows why).
  // Bounded, so the peak RSS stays near --memory-bytes: at most 16 MiB kept
  // free at the top of the heap, and one arena for all of gRPC's threads
  // (each arena keeps its own free memory and fragments on its own). In
  // `qaqkv bench service` the memory-only server peaked at 781 MiB of a
  // 768 MiB allowance with 64 MiB and four arenas, 695-764 MiB with 16 MiB
  // and two, and 622 MiB with one arena, its puts no slower.
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

  qaqkv::service::ServerOptions o;
  o.listen = absl::GetFlag(FLAGS_listen);
  o.store.data_dir = absl::GetFlag(FLAGS_data_dir);
  o.store.memory_only = absl::GetFlag(FLAGS_memory_only);
  o.store.sync = absl::GetFlag(FLAGS_sync);
  uint64_t memory_bytes = 0, disk_bytes = 0, max_message = 0, quota = 0;
  if (!ParseBytes(absl::GetFlag(FLAGS_memory_bytes), &memory_bytes) || memory_bytes == 0) {
    return Fail("--memory-bytes: want a positive size like 1GiB");
  }
  if (!ParseBytes(absl::GetFlag(FLAGS_disk_bytes), &disk_bytes)) {
    return Fail("--disk-bytes: want a size like 100GiB, or 0");
  }
  if (!ParseBytes(absl::GetFlag(FLAGS_max_message_bytes), &max_message) ||
      max_message > (1ull << 31) - 1) {
    return Fail("--max-message-bytes: want a size up to 2GiB");
  }
  if (!ParseBytes(absl::GetFlag(FLAGS_tenant_quota_bytes), &quota)) {
    return Fail("--tenant-quota-bytes: want a size like 10GiB, or 0");
  }
  if (absl::GetFlag(FLAGS_tenant_max_streams) < 0) return Fail("--tenant-max-streams: negative");
  if (absl::GetFlag(FLAGS_block_ttl_ms) < 0) return Fail("--block-ttl-ms: negative (0: never)");
  if (absl::GetFlag(FLAGS_abandoned_block_ms) < 1) {
    return Fail("--abandoned-block-ms: want a positive number of milliseconds");
  }
  if (absl::GetFlag(FLAGS_drain_timeout) < absl::ZeroDuration()) {
    return Fail("--drain-timeout: negative");
  }
  o.store.memory_bytes = memory_bytes;
  o.store.disk_bytes = disk_bytes;
  o.store.tenant_quota_bytes = quota;
  o.store.block_ttl_ms = absl::GetFlag(FLAGS_block_ttl_ms);
  o.store.abandoned_block_ms = absl::GetFlag(FLAGS_abandoned_block_ms);
  o.max_message_bytes = static_cast<int>(max_message);
  o.auth_tokens_file = absl::GetFlag(FLAGS_auth_tokens);
  o.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  o.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  o.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  o.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  o.tenant_max_streams = absl::GetFlag(FLAGS_tenant_max_streams);
  o.store_threads = absl::GetFlag(FLAGS_store_threads);

  auto server = qaqkv::service::Server::Start(o);
  if (!server.ok()) return Fail(server.status().ToString());
  if (const std::string pf = absl::GetFlag(FLAGS_port_file); !pf.empty()) {
    // Written under a temporary name and renamed, so a reader never sees a
    // half-written port. Written before the "serving" line, so a server
    // that cannot write it fails before it claims to serve.
    const std::string tmp = pf + ".tmp";
    bool written = false;
    {
      std::ofstream f(tmp);
      written = static_cast<bool>(f << (*server)->port() << "\n");
    }
    if (!written || std::rename(tmp.c_str(), pf.c_str()) != 0) {
      const std::string why = std::strerror(errno);
      std::remove(tmp.c_str());
      (void)(*server)->Shutdown(absl::ZeroDuration());
      return Fail(absl::StrCat("--port-file: cannot write ", pf, ": ", why));
    }
  }
  const std::string host = o.listen.substr(0, o.listen.rfind(':'));
  Log("info",
      absl::StrCat("qaqkv-server ", QAQKV_VERSION, " serving on ", host, ":", (*server)->port(),
                   o.store.memory_only ? ", memory-only (nothing survives a restart)"
                                       : absl::StrCat(", data dir ", o.store.data_dir),
                   ", memory budget ", memory_bytes, " bytes",
                   (*server)->single_tenant() ? ", single-tenant (no --auth-tokens)"
                                              : ", bearer-token auth",
                   o.tls_cert_file.empty() ? ", plaintext"
                   : o.tls_client_ca_file.empty() ? ", TLS"
                                                  : ", mTLS",
                   (*server)->metrics_port() > 0
                       ? absl::StrCat(", metrics on port ", (*server)->metrics_port())
                       : std::string()));
  int sig = 0;
  sigwait(&signals, &sig);
  Log("info", absl::StrCat("signal ", sig, ": draining for up to ",
                           absl::FormatDuration(absl::GetFlag(FLAGS_drain_timeout))));
  absl::Status s = (*server)->Shutdown(absl::GetFlag(FLAGS_drain_timeout));
  if (!s.ok()) return Fail(absl::StrCat("shutdown: ", s.ToString()));
  Log("info", "stopped cleanly");
  return 0;
}
