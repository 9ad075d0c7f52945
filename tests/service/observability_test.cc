// Health, reflection and Prometheus metrics of the real server.
#include "tests/service/service_fixture.h"

namespace qaqkv::service::testing {
namespace {

TEST_F(ServiceTest, HealthServiceReportsServing) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  std::string response;
  ASSERT_GRPC_OK(HealthCheck(server_.Channel(), "", &response));
  // HealthCheckResponse { status: SERVING (1) }
  EXPECT_EQ(response, std::string("\x08\x01", 2));
  EXPECT_EQ(HealthCheck(server_.Channel(), "no.such.Service", &response).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

// One ServerReflectionInfo exchange: a single request, every response.
class ReflectionCall final
    : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  ReflectionCall(const std::shared_ptr<grpc::Channel>& channel,
                 const std::string& request)
      : stub_(channel), request_(FromBytes(request)) {
    SetDeadline(&ctx_);
    stub_.PrepareBidiStreamingCall(
        &ctx_, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        grpc::StubOptions(), this);
    StartWriteLast(&request_, grpc::WriteOptions());
    StartRead(&response_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    responses_.push_back(ToBytes(response_));
    StartRead(&response_);
  }
  void OnDone(const grpc::Status& status) override {
    status_ = status;
    done_.Notify();
  }

  // Waits for the call to end; the responses are complete then.
  grpc::Status Await() {
    done_.WaitForNotification();
    return status_;
  }
  const std::vector<std::string>& responses() const { return responses_; }

 private:
  grpc::GenericStub stub_;
  grpc::ClientContext ctx_;
  grpc::ByteBuffer request_, response_;
  std::vector<std::string> responses_;
  grpc::Status status_;
  absl::Notification done_;
};

// Length-delimited fields number `field` of a serialized message.
std::vector<std::string> Fields(const std::string& message, int field) {
  google::protobuf::UnknownFieldSet set;
  std::vector<std::string> out;
  if (!set.ParseFromString(message)) return out;
  for (int i = 0; i < set.field_count(); ++i) {
    const google::protobuf::UnknownField& f = set.field(i);
    if (f.number() == field &&
        f.type() == google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED) {
      out.push_back(f.length_delimited());
    }
  }
  return out;
}

TEST_F(ServiceTest, ReflectionListsTheKvCacheService) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  // ServerReflectionRequest { list_services (7): "*" }
  ReflectionCall call(server_.Channel(), std::string("\x3a\x01*", 3));
  ASSERT_GRPC_OK(call.Await());
  ASSERT_EQ(call.responses().size(), 1u);
  // ServerReflectionResponse.list_services_response (6) .service (1) .name (1)
  std::vector<std::string> names;
  for (const std::string& list : Fields(call.responses()[0], 6)) {
    for (const std::string& service : Fields(list, 1)) {
      for (const std::string& name : Fields(service, 1)) names.push_back(name);
    }
  }
  EXPECT_THAT(names, ::testing::Contains("qaqkv.v1.KvCache"));
  EXPECT_THAT(names, ::testing::Contains("grpc.health.v1.Health"));
}



// An HTTP client of the metrics endpoint of the server that wrote `log`;
// null when the log names no metrics port.
std::unique_ptr<httplib::Client> MetricsHttp(const std::string& log) {
  const int port = MetricsPort(log);
  if (port <= 0) return nullptr;
  auto http = std::make_unique<httplib::Client>("127.0.0.1", port);
  http->set_connection_timeout(30);
  http->set_read_timeout(30);
  return http;
}

// A disk under the free-space floor takes the server out of rotation
// (readiness, the KvCache health status, page puts refused) without
// failing liveness: a restart would not give the disk room.
TEST_F(ServiceTest, AFullDiskMakesTheServerNotReadyButAlive) {
  ASSERT_NO_FATAL_FAILURE(
      StartServer({"--metrics-listen=127.0.0.1:0", "--min-free-disk-bytes=1048576TiB"}));
  const std::unique_ptr<httplib::Client> http = MetricsHttp(server_.Log());
  ASSERT_NE(http, nullptr) << server_.Log();
  auto ready = http->Get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 503);
  EXPECT_THAT(ready->body, HasSubstr("min_free_disk_bytes"));
  auto alive = http->Get("/healthz");
  ASSERT_TRUE(alive);
  EXPECT_EQ(alive->status, 200);
  std::string response;
  ASSERT_GRPC_OK(HealthCheck(server_.Channel(), "", &response));
  EXPECT_EQ(response, std::string("\x08\x01", 2)) << "liveness stays SERVING";
  ASSERT_GRPC_OK(HealthCheck(server_.Channel(), "qaqkv.v1.KvCache", &response));
  EXPECT_EQ(response, std::string("\x08\x02", 2)) << "readiness is NOT_SERVING";
  const TestBlock block = NewBlock(format_, 131);
  const PutResult put = PutBlocks(*stub_, format_, {block});
  EXPECT_EQ(put.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(put.status.error_message(), HasSubstr("bytes free"));
  EXPECT_EQ(Lookup(*stub_, {block.key}).committed_prefix, 0u);
  auto metrics = http->Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(Sample(metrics->body, "qaqkv_ready"), 0.0);
}

TEST_F(ServiceTest, ReadinessAndDiskUseOnAHealthyDisk) {
  ASSERT_NO_FATAL_FAILURE(StartServer({"--metrics-listen=127.0.0.1:0"}));
  const std::unique_ptr<httplib::Client> http = MetricsHttp(server_.Log());
  ASSERT_NE(http, nullptr) << server_.Log();
  auto ready = http->Get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200);
  std::string response;
  ASSERT_GRPC_OK(HealthCheck(server_.Channel(), "qaqkv.v1.KvCache", &response));
  EXPECT_EQ(response, std::string("\x08\x01", 2));
  auto metrics = http->Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(Sample(metrics->body, "qaqkv_ready"), 1.0);
  // RocksDB's files exist from the open: its WAL, MANIFEST and OPTIONS.
  EXPECT_GT(Sample(metrics->body, "qaqkv_data_dir_bytes").value_or(0), 0.0);
  EXPECT_GT(Sample(metrics->body, "qaqkv_filesystem_free_bytes").value_or(0), 0.0);
  EXPECT_GE(Sample(metrics->body, "qaqkv_filesystem_size_bytes").value_or(0),
            Sample(metrics->body, "qaqkv_filesystem_free_bytes").value_or(1));
  EXPECT_TRUE(Sample(metrics->body, "qaqkv_wal_bytes").has_value());
}

TEST_F(ServiceTest, MetricsCountRequestsAndTenantBytes) {
  ASSERT_NO_FATAL_FAILURE(
      StartServer({"--metrics-listen=127.0.0.1:0", "--tenant-quota-bytes=64MiB"}));
  const std::unique_ptr<httplib::Client> http = MetricsHttp(server_.Log());
  ASSERT_NE(http, nullptr) << server_.Log();
  auto scrape = [&]() -> std::string {
    auto res = http->Get("/metrics");
    if (!res || res->status != 200) return "";
    return res->body;
  };

  const TestBlock block = NewBlock(format_, 121);
  ASSERT_GRPC_OK(PutBlocks(*stub_, format_, {block}).status);
  for (int i = 0; i < 3; ++i) ASSERT_GRPC_OK(Lookup(*stub_, {block.key}).status);
  ASSERT_GRPC_OK(GetPages(*stub_, {block.key}).status);
  EXPECT_EQ(GetPages(*stub_, {MakeBlockKey(122)}).status.error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Lookup(*stub_, {"short"}).status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  // Unary calls are counted before they finish; streams when their reactor
  // is torn down, just after the client saw the status: poll for those.
  const std::vector<std::pair<std::string, double>> want = {
      {R"(qaqkv_requests_total{rpc="Lookup",code="OK"})", 3},
      {R"(qaqkv_requests_total{rpc="Lookup",code="INVALID_ARGUMENT"})", 1},
      {R"(qaqkv_requests_total{rpc="PutPages",code="OK"})", 1},
      {R"(qaqkv_requests_total{rpc="GetPages",code="OK"})", 1},
      {R"(qaqkv_requests_total{rpc="GetPages",code="NOT_FOUND"})", 1},
      {R"(qaqkv_requests_total{rpc="GetStats",code="OK"})", 0},
      {R"(qaqkv_pages_stored_total)", 4},
      {R"(qaqkv_pages_served_total)", 4},
      {R"(qaqkv_tenant_bytes{tenant="default"})", static_cast<double>(block.bytes())},
      {R"(qaqkv_tenant_blocks{tenant="default"})", 1},
      {R"(qaqkv_tenant_quota_bytes)", 64.0 * 1024 * 1024},
  };
  std::string text;
  PollUntil([&] {
    text = scrape();
    for (const auto& [series, value] : want) {
      if (Sample(text, series) != value) return false;
    }
    return true;
  });
  for (const auto& [series, value] : want) {
    EXPECT_EQ(Sample(text, series), value) << series;
  }
  EXPECT_THAT(text, HasSubstr("# TYPE qaqkv_requests_total counter"));
  EXPECT_THAT(text, HasSubstr("qaqkv_request_duration_seconds_bucket"));
  // The gauge agrees with what the tenant sees.
  EXPECT_EQ(Stats(*stub_).tenant_bytes(), block.bytes());
  auto health = http->Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
}

}  // namespace
}  // namespace qaqkv::service::testing
