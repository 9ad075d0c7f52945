// The server's metrics without a server: the method registry, the latency
// histogram and the Prometheus text. (The interceptor that feeds them is
// tested against the real server, contract_test.cc.)
#include "service/metrics.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qaqkv::service {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(MetricsTest, EveryKvCacheMethodIsListedFromTheProto) {
  Metrics m;
  const std::string text = m.Render(nullptr);
  for (const char* rpc : {"Lookup", "PutPages", "GetPages", "PutSession", "GetSession",
                          "ListSessions", "DeleteSession", "TouchSession", "GetStats",
                          "OfferTransfer", "AcceptTransfer"}) {
    EXPECT_THAT(text, HasSubstr(std::string("qaqkv_requests_total{rpc=\"") + rpc +
                                "\",code=\"OK\"} 0\n"));
  }
}

TEST(MetricsTest, PathsAndLabelsNameOneEntry) {
  Metrics m;
  // A KvCache method by its gRPC path or its label; others by full name.
  EXPECT_EQ(m.Method("/qaqkv.v1.KvCache/Lookup"), m.Method("Lookup"));
  Metrics::PerMethod* health = m.Method("/grpc.health.v1.Health/Check");
  EXPECT_EQ(health, m.Method("grpc.health.v1.Health/Check"));
  EXPECT_NE(health, m.Method("Lookup"));
  Metrics::RecordCall(health, 0, 0.0002);
  Metrics::RecordCall(m.Method("Lookup"), 3, 0.003);
  Metrics::RecordCall(m.Method("Lookup"), 3, 0.003);
  EXPECT_EQ(m.Requests("grpc.health.v1.Health/Check", 0), 1u);
  EXPECT_EQ(m.Requests("Lookup", 3), 2u);
  const std::string text = m.Render(nullptr);
  EXPECT_THAT(text, HasSubstr("qaqkv_requests_total{rpc=\"grpc.health.v1.Health/Check\","
                              "code=\"OK\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("qaqkv_requests_total{rpc=\"Lookup\",code=\"INVALID_ARGUMENT\"} 2\n"));
  // Codes a method never returned (other than OK) are left out.
  EXPECT_THAT(text, Not(HasSubstr("rpc=\"Lookup\",code=\"NOT_FOUND\"")));
  // An out-of-range code counts as UNKNOWN.
  Metrics::RecordCall(m.Method("Lookup"), 99, 0.001);
  EXPECT_EQ(m.Requests("Lookup", 2), 1u);
}

TEST(MetricsTest, LatencyHistogramIsCumulative) {
  Metrics m;
  Metrics::PerMethod* get = m.Method("GetPages");
  Metrics::RecordCall(get, 0, 0.0001);  // on the first bound: counts in it
  Metrics::RecordCall(get, 0, 0.002);
  Metrics::RecordCall(get, 0, 20.0);  // past the last bound: +Inf only
  const std::string text = m.Render(nullptr);
  EXPECT_THAT(text, HasSubstr("qaqkv_request_duration_seconds_bucket{rpc=\"GetPages\",le=\"0.0001\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("qaqkv_request_duration_seconds_bucket{rpc=\"GetPages\",le=\"0.001\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("qaqkv_request_duration_seconds_bucket{rpc=\"GetPages\",le=\"0.0025\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("qaqkv_request_duration_seconds_bucket{rpc=\"GetPages\",le=\"10\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("qaqkv_request_duration_seconds_bucket{rpc=\"GetPages\",le=\"+Inf\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("qaqkv_request_duration_seconds_count{rpc=\"GetPages\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("qaqkv_request_duration_seconds_sum{rpc=\"GetPages\"} 20.0021\n"));
}

TEST(MetricsTest, BytesPagesStreamsAndTheStoresFamilies) {
  Metrics m;
  m.AddBytes("PutPages", 1000, 0);
  m.AddBytes("/qaqkv.v1.KvCache/PutPages", 24, 0);
  m.AddBytes("GetSession", 0, 7);
  m.AddPagesIn(3);
  m.AddPagesOut(5);
  m.StreamStarted();
  m.StreamStarted();
  m.StreamEnded();
  EXPECT_EQ(m.InFlightStreams(), 1);
  const std::string text = m.Render([](std::string& out) {
    AppendFamily(out, "qaqkv_store_test", "gauge", "From the store.");
    AppendSample(out, "qaqkv_store_test", "tier=\"" + EscapeLabel("a\"b\\c\nd") + "\"", 1.5);
  });
  EXPECT_THAT(text, HasSubstr("qaqkv_received_bytes_total{rpc=\"PutPages\"} 1024\n"));
  EXPECT_THAT(text, HasSubstr("qaqkv_sent_bytes_total{rpc=\"GetSession\"} 7\n"));
  EXPECT_THAT(text, HasSubstr("qaqkv_pages_stored_total 3\n"));
  EXPECT_THAT(text, HasSubstr("qaqkv_pages_served_total 5\n"));
  EXPECT_THAT(text, HasSubstr("qaqkv_streams_in_flight 1\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE qaqkv_store_test gauge\n"));
  EXPECT_THAT(text, HasSubstr("qaqkv_store_test{tier=\"a\\\"b\\\\c\\nd\"} 1.5\n"));
}

}  // namespace
}  // namespace qaqkv::service
