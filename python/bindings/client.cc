// qaqkv.Client's native half: one qaqkv::client::Client, its calls made with
// the GIL released. Host (or, in CUDA builds, device) buffers come in as
// addresses the Python layer checked; results go back as dicts that the
// Python layer turns into dataclasses.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "base/strings.h"
#include "python/bindings/common.h"
#include "qaqkv/client.h"

namespace qaqkv::python {
namespace {

namespace qc = ::qaqkv::client;
using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

qc::DType ClientDType(const std::string& name, std::string_view field) {
  return static_cast<qc::DType>(Unwrap(ParseDType(name, field)));
}

qc::Layout ClientLayout(const std::string& name) {
  return static_cast<qc::Layout>(Unwrap(ParseLayout(name, "layout")));
}

std::vector<qc::BlockKey> Keys(const std::vector<py::bytes>& keys, std::string_view field) {
  std::vector<qc::BlockKey> out(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    const std::string_view k = keys[i];
    if (k.size() != out[i].size()) {
      ThrowStatus(absl::InvalidArgumentError(
          absl::StrCat(base::AsAbsl(field), "[", i, "]: ", k.size(), " bytes, a block key has 16")));
    }
    std::copy(k.begin(), k.end(), out[i].begin());
  }
  return out;
}

py::bytes KeyBytes(const qc::BlockKey& k) {
  return py::bytes(reinterpret_cast<const char*>(k.data()), k.size());
}

py::list KeyList(const std::vector<qc::BlockKey>& keys) {
  py::list out;
  for (const qc::BlockKey& k : keys) out.append(KeyBytes(k));
  return out;
}

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

py::dict GeometryDict(const qc::Geometry& g) {
  py::dict d;
  d["num_layers"] = g.num_layers;
  d["num_kv_heads"] = g.num_kv_heads;
  d["num_q_heads"] = g.num_q_heads;
  d["head_dim"] = g.head_dim;
  d["dtype"] = std::string(DTypeName(static_cast<DType>(g.dtype)));
  d["block_tokens"] = g.block_tokens;
  return d;
}

py::dict SessionDict(const qc::SessionInfo& s) {
  py::dict d;
  d["session_id"] = s.session_id;
  d["geometry"] = GeometryDict(s.geometry);
  d["codec"] = s.codec;
  d["blocks"] = KeyList(s.blocks);
  d["token_count"] = s.token_count;
  d["committed_prefix"] = s.committed_prefix;
  d["tail_bytes"] = s.tail_bytes;
  d["created"] = absl::ToUnixMillis(s.created) / 1000.0;
  d["accessed"] = absl::ToUnixMillis(s.accessed) / 1000.0;
  d["ttl"] = Seconds(s.ttl);
  return d;
}

py::dict TierDict(const qc::TierStats& t) {
  py::dict d;
  d["name"] = t.name;
  d["hits"] = t.hits;
  d["misses"] = t.misses;
  d["evictions"] = t.evictions;
  d["bytes"] = t.bytes;
  d["entries"] = t.entries;
  d["budget_bytes"] = t.budget_bytes;
  return d;
}

py::dict OffloadDict(const qc::OffloadResult& r) {
  py::dict d;
  d["blocks_committed"] = r.blocks_committed;
  d["pages"] = r.pages;
  d["raw_bytes"] = r.raw_bytes;
  d["stored_bytes"] = r.stored_bytes;
  d["encode_seconds"] = Seconds(r.encode_time);
  d["seconds"] = Seconds(r.total_time);
  return d;
}

// Host buffers: one address per layer for K and for V.
struct Buffers {
  std::vector<uintptr_t> k, v;
  std::string dtype = "fp16";
  std::string layout = "NHD";
  int64_t tokens = 0;
  int64_t first_token = 0;

  qc::HostKv Host() const { return View<qc::HostKv>(); }
  qc::MutableHostKv Mutable() const { return View<qc::MutableHostKv>(); }

 private:
  template <typename Kv>
  Kv View() const {
    using Pointer = typename decltype(Kv::k)::value_type;  // const void* or void*
    Kv kv;
    kv.dtype = ClientDType(dtype, "dtype");
    kv.layout = ClientLayout(layout);
    for (uintptr_t p : k) kv.k.push_back(reinterpret_cast<Pointer>(p));
    for (uintptr_t p : v) kv.v.push_back(reinterpret_cast<Pointer>(p));
    kv.tokens = tokens;
    kv.first_token = first_token;
    return kv;
  }
};

// QAQ side inputs per layer; the arrays stay referenced by the caller.
struct Side {
  std::vector<std::optional<FloatArray>> attention, q2;
  int64_t context_tokens = 0;

  qc::QaqInputs Inputs() const {
    qc::QaqInputs in;
    for (const auto& a : attention) {
      in.attention.push_back(a ? std::span<const float>(a->data(), a->size())
                               : std::span<const float>());
    }
    for (const auto& q : q2) {
      in.q2.push_back(q ? std::span<const float>(q->data(), q->size())
                        : std::span<const float>());
    }
    in.context_tokens = context_tokens;
    return in;
  }
};

// on_layer from a decode thread: takes the GIL for the Python callable and
// keeps its first exception, which the call raises once the C++ call is
// done (the C++ callback cannot stop a load).
class LayerCallback {
 public:
  explicit LayerCallback(std::optional<py::function> fn) : fn_(std::move(fn)) {}
  ~LayerCallback() {
    py::gil_scoped_acquire gil;
    fn_.reset();
  }

  std::function<void(int)> Get() {
    if (!fn_) return nullptr;
    return [this](int layer) {
      py::gil_scoped_acquire gil;
      if (error_) return;
      try {
        (*fn_)(layer);
      } catch (py::error_already_set& e) {
        error_ = std::make_unique<py::error_already_set>(std::move(e));
      }
    };
  }
  // Raises what the callback raised, if anything (GIL held).
  void Rethrow() {
    if (error_) {
      error_->restore();
      throw py::error_already_set();
    }
  }

 private:
  std::optional<py::function> fn_;
  std::unique_ptr<py::error_already_set> error_;
};

class PyClient {
 public:
  explicit PyClient(const py::dict& o) {
    qc::ClientOptions options;
    auto str = [&](const char* name, std::string* out) {
      if (o.contains(name) && !o[name].is_none()) *out = o[name].cast<std::string>();
    };
    str("target", &options.target);
    if (o.contains("servers") && !o["servers"].is_none()) {
      options.servers = o["servers"].cast<std::vector<std::string>>();
    }
    str("discovery", &options.discovery);
    str("token", &options.bearer_token);
    str("tls_root_certs", &options.tls_root_certs_pem);
    str("tls_client_cert", &options.tls_client_cert_pem);
    str("tls_client_key", &options.tls_client_key_pem);
    str("tls_server_name", &options.tls_server_name);
    options.tls = o["tls"].cast<bool>();
    options.deadline = absl::Seconds(o["deadline"].cast<double>());
    options.retry.max_attempts = o["attempts"].cast<int>();
    options.replicas = o["replicas"].cast<int>();
    options.write_quorum = o["write_quorum"].cast<int>();
    options.encode_threads = o["encode_threads"].cast<int>();
    options.channels = o["channels"].cast<int>();
    client_ = Unwrap(qc::Client::Create(std::move(options)));
  }

  size_t Lookup(const std::vector<py::bytes>& keys, const std::optional<qc::Geometry>& geometry,
                const std::string& codec) {
    const std::vector<qc::BlockKey> k = Keys(keys, "keys");
    absl::StatusOr<size_t> n;
    {
      py::gil_scoped_release release;
      n = client_->Lookup(k, geometry ? &*geometry : nullptr, codec);
    }
    return Unwrap(std::move(n));
  }

  py::dict Offload(const qc::Geometry& geometry, const std::string& codec,
                   const std::vector<py::bytes>& keys, const Buffers& buffers, const Side& side) {
    const std::vector<qc::BlockKey> k = Keys(keys, "keys");
    qc::OffloadRequest request;
    request.geometry = geometry;
    request.codec = codec;
    request.blocks = k;
    request.kv = buffers.Host();
    request.side = side.Inputs();
    absl::StatusOr<qc::OffloadResult> r;
    {
      py::gil_scoped_release release;
      r = client_->Offload(request);
    }
    return OffloadDict(Unwrap(std::move(r)));
  }

  py::dict Load(const qc::Geometry& geometry, const std::string& codec,
                const std::vector<py::bytes>& keys, const Buffers& buffers, int layer_begin,
                int layer_end, std::optional<py::function> on_layer) {
    const std::vector<qc::BlockKey> k = Keys(keys, "keys");
    LayerCallback callback(std::move(on_layer));
    qc::LoadRequest request;
    request.geometry = geometry;
    request.codec = codec;
    request.blocks = k;
    request.kv = buffers.Mutable();
    request.layer_begin = layer_begin;
    request.layer_end = layer_end;
    request.on_layer = callback.Get();
    absl::StatusOr<qc::LoadResult> r;
    {
      py::gil_scoped_release release;
      r = client_->Load(request);
    }
    Check(r.status());
    callback.Rethrow();
    py::dict d;
    d["pages"] = r->pages;
    d["stored_bytes"] = r->stored_bytes;
    d["first_layer_seconds"] = Seconds(r->time_to_first_layer);
    d["seconds"] = Seconds(r->total_time);
    return d;
  }

  py::dict OffloadSession(const std::string& session_id, const qc::Geometry& geometry,
                          const std::string& codec, const std::vector<py::bytes>& keys,
                          uint64_t token_count, double ttl, const Buffers& buffers,
                          const Side& side) {
    qc::SessionSpec spec;
    spec.session_id = session_id;
    spec.geometry = geometry;
    spec.codec = codec;
    spec.blocks = Keys(keys, "keys");
    spec.token_count = token_count;
    spec.ttl = absl::Seconds(ttl);
    const qc::HostKv kv = buffers.Host();
    const qc::QaqInputs inputs = side.Inputs();
    absl::StatusOr<qc::OffloadResult> r;
    {
      py::gil_scoped_release release;
      r = client_->OffloadSession(spec, kv, inputs);
    }
    return OffloadDict(Unwrap(std::move(r)));
  }

  py::dict ResumeSession(const std::string& session_id, const Buffers& buffers,
                         std::optional<py::function> on_layer) {
    LayerCallback callback(std::move(on_layer));
    const qc::MutableHostKv kv = buffers.Mutable();
    absl::StatusOr<qc::SessionInfo> info;
    {
      py::gil_scoped_release release;
      info = client_->ResumeSession(session_id, kv, callback.Get());
    }
    Check(info.status());
    callback.Rethrow();
    return SessionDict(*info);
  }

  py::dict GetSession(const std::string& session_id) {
    absl::StatusOr<qc::SessionInfo> info;
    {
      py::gil_scoped_release release;
      info = client_->GetSession(session_id);
    }
    return SessionDict(Unwrap(std::move(info)));
  }

  template <typename Fn>
  auto Released(Fn fn) {
    py::gil_scoped_release release;
    return fn();
  }

  std::vector<std::string> ListSessions(size_t limit) {
    return Unwrap(Released([&] { return client_->ListSessions(limit); }));
  }
  void TouchSession(const std::string& id) {
    Check(Released([&] { return client_->TouchSession(id); }));
  }
  void DeleteSession(const std::string& id) {
    Check(Released([&] { return client_->DeleteSession(id); }));
  }

  py::dict Stats() {
    const qc::ServerStats s = Unwrap(Released([&] { return client_->GetStats(); }));
    py::dict d;
    d["tenant_bytes"] = s.tenant_bytes;
    d["tenant_blocks"] = s.tenant_blocks;
    py::list tiers;
    for (const qc::TierStats& t : s.tiers) tiers.append(TierDict(t));
    d["tiers"] = tiers;
    d["blocks_evicted"] = s.blocks_evicted;
    d["checksum_failures"] = s.checksum_failures;
    d["total_bytes"] = s.total_bytes;
    d["blocks"] = s.blocks;
    d["background_errors"] = s.background_errors;
    d["version"] = s.version;
    return d;
  }

  py::dict PutPages(const qc::Geometry& geometry, const std::string& codec,
                    const std::vector<py::tuple>& pages) {
    std::vector<qc::EncodedPage> encoded(pages.size());
    for (size_t i = 0; i < pages.size(); ++i) {
      if (pages[i].size() != 3) {
        ThrowStatus(absl::InvalidArgumentError(
            absl::StrCat("pages[", i, "]: expected (block_key, layer, page_bytes)")));
      }
      encoded[i].block =
          Keys({pages[i][0].cast<py::bytes>()}, absl::StrCat("pages[", i, "].block_key"))[0];
      encoded[i].layer = pages[i][1].cast<int>();
      ByteView bytes(pages[i][2]);
      encoded[i].data = std::string(bytes.view());
    }
    const qc::PutResult r =
        Unwrap(Released([&] { return client_->PutPages(geometry, codec, encoded); }));
    py::dict d;
    d["committed_blocks"] = KeyList(r.committed_blocks);
    d["pages"] = r.pages;
    d["bytes"] = r.bytes;
    return d;
  }

  py::tuple GetPages(const std::vector<py::bytes>& keys, int layer_begin, int layer_end) {
    const std::vector<qc::BlockKey> k = Keys(keys, "keys");
    struct Got {
      qc::BlockKey block;
      int layer;
      std::string data;
    };
    std::vector<Got> got;
    qc::BlockFormat format;
    Check(Released([&] {
      return client_->GetPages(
          k, layer_begin, layer_end,
          [&](const qc::BlockKey& block, int layer, std::string_view data) {
            got.push_back({block, layer, std::string(data)});
            return absl::OkStatus();
          },
          &format);
    }));
    py::list pages;
    for (const Got& g : got) {
      pages.append(py::make_tuple(KeyBytes(g.block), g.layer, py::bytes(g.data)));
    }
    py::dict f;
    f["geometry"] = GeometryDict(format.geometry);
    f["codec"] = format.codec;
    return py::make_tuple(f, pages);
  }

  py::list Servers() const {
    py::list out;
    for (const auto& s : client_->Servers()) {
      py::dict d;
      d["name"] = s.name;
      d["address"] = s.address;
      d["healthy"] = s.healthy;
      d["consecutive_failures"] = s.consecutive_failures;
      out.append(d);
    }
    return out;
  }

 private:
  std::unique_ptr<qc::Client> client_;
};

}  // namespace

void RegisterClient(py::module_& m) {
  using py::arg;
  py::class_<qc::Geometry>(m, "Geometry", R"doc(
The shape of a model's KV cache, as the service stores it.

num_layers, num_kv_heads, num_q_heads and head_dim are the model's; dtype is
the model's KV dtype ("fp16" or "bf16"); block_tokens is the tokens per block
(and per page). num_q_heads must be a multiple of num_kv_heads.
)doc")
      .def(py::init([](int num_layers, int num_kv_heads, int num_q_heads, int head_dim,
                       const std::string& dtype, int block_tokens) {
             qc::Geometry g;
             g.num_layers = num_layers;
             g.num_kv_heads = num_kv_heads;
             g.num_q_heads = num_q_heads == 0 ? num_kv_heads : num_q_heads;
             g.head_dim = head_dim;
             g.dtype = ClientDType(dtype, "dtype");
             g.block_tokens = block_tokens;
             return g;
           }),
           arg("num_layers"), arg("num_kv_heads"), arg("num_q_heads") = 0, arg("head_dim") = 0,
           arg("dtype") = "fp16", arg("block_tokens") = 256)
      .def_readwrite("num_layers", &qc::Geometry::num_layers)
      .def_readwrite("num_kv_heads", &qc::Geometry::num_kv_heads)
      .def_readwrite("num_q_heads", &qc::Geometry::num_q_heads)
      .def_readwrite("head_dim", &qc::Geometry::head_dim)
      .def_readwrite("block_tokens", &qc::Geometry::block_tokens)
      .def_property(
          "dtype", [](const qc::Geometry& g) { return DTypeName(static_cast<DType>(g.dtype)); },
          [](qc::Geometry& g, const std::string& d) { g.dtype = ClientDType(d, "dtype"); })
      .def("__repr__",
           [](const qc::Geometry& g) {
             return absl::StrCat("Geometry(num_layers=", g.num_layers,
                                 ", num_kv_heads=", g.num_kv_heads,
                                 ", num_q_heads=", g.num_q_heads, ", head_dim=", g.head_dim,
                                 ", dtype='", base::AsAbsl(DTypeName(static_cast<DType>(g.dtype))),
                                 "', block_tokens=", g.block_tokens, ")");
           })
      .def("__eq__", [](const qc::Geometry& a, const qc::Geometry& b) {
        return a.num_layers == b.num_layers && a.num_kv_heads == b.num_kv_heads &&
               a.num_q_heads == b.num_q_heads && a.head_dim == b.head_dim &&
               a.dtype == b.dtype && a.block_tokens == b.block_tokens;
      });

  py::class_<Buffers>(m, "_Buffers")
      .def(py::init<>())
      .def_readwrite("k", &Buffers::k)
      .def_readwrite("v", &Buffers::v)
      .def_readwrite("dtype", &Buffers::dtype)
      .def_readwrite("layout", &Buffers::layout)
      .def_readwrite("tokens", &Buffers::tokens)
      .def_readwrite("first_token", &Buffers::first_token);
  py::class_<Side>(m, "_Side")
      .def(py::init<>())
      .def_readwrite("attention", &Side::attention)
      .def_readwrite("q2", &Side::q2)
      .def_readwrite("context_tokens", &Side::context_tokens);

  py::class_<PyClient>(m, "_Client")
      .def(py::init<const py::dict&>(), arg("options"))
      .def("lookup", &PyClient::Lookup, arg("keys"), arg("geometry"), arg("codec"))
      .def("offload", &PyClient::Offload, arg("geometry"), arg("codec"), arg("keys"),
           arg("buffers"), arg("side"))
      .def("load", &PyClient::Load, arg("geometry"), arg("codec"), arg("keys"), arg("buffers"),
           arg("layer_begin"), arg("layer_end"), arg("on_layer"))
      .def("offload_session", &PyClient::OffloadSession, arg("session_id"), arg("geometry"),
           arg("codec"), arg("keys"), arg("token_count"), arg("ttl"), arg("buffers"),
           arg("side"))
      .def("resume_session", &PyClient::ResumeSession, arg("session_id"), arg("buffers"),
           arg("on_layer"))
      .def("get_session", &PyClient::GetSession, arg("session_id"))
      .def("list_sessions", &PyClient::ListSessions, arg("limit"))
      .def("touch_session", &PyClient::TouchSession, arg("session_id"))
      .def("delete_session", &PyClient::DeleteSession, arg("session_id"))
      .def("stats", &PyClient::Stats)
      .def("put_pages", &PyClient::PutPages, arg("geometry"), arg("codec"), arg("pages"))
      .def("get_pages", &PyClient::GetPages, arg("keys"), arg("layer_begin"), arg("layer_end"))
      .def("servers", &PyClient::Servers);
}

}  // namespace qaqkv::python
