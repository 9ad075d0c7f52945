// The page streams' hand-made wire format (client/internal/wire.h) without a
// server: PageBytes, and GetPages messages parsed in place from buffers cut
// into slices at every kind of boundary, against what protobuf serializes.
#include "client/internal/wire.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qaqkv::client::internal {
namespace {

using ::testing::HasSubstr;

std::string Bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

// `bytes` as a ByteBuffer of slices ending at `cuts` (ascending offsets).
grpc::ByteBuffer Cut(const std::string& bytes, const std::vector<size_t>& cuts) {
  std::vector<grpc::Slice> slices;
  size_t at = 0;
  for (size_t end : cuts) {
    slices.emplace_back(bytes.data() + at, end - at);  // copies: a received slice
    at = end;
  }
  slices.emplace_back(bytes.data() + at, bytes.size() - at);
  return grpc::ByteBuffer(slices.data(), slices.size());
}

struct Expected {
  std::string key;
  uint32_t layer;
  std::string data;
};

v1::GetPagesResponse Message(const std::vector<Expected>& pages, bool with_format) {
  v1::GetPagesResponse m;
  if (with_format) {
    m.mutable_format()->set_codec("int4");
    m.mutable_format()->mutable_geometry()->set_num_layers(32);
  }
  for (const Expected& e : pages) {
    v1::Page* p = m.add_pages();
    p->set_block_key(e.key);
    p->set_layer(e.layer);
    p->set_data(e.data);
  }
  return m;
}

void ExpectPages(const InMessage& got, const std::vector<Expected>& want) {
  ASSERT_EQ(got.pages.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(got.pages[i].key, want[i].key);
    EXPECT_EQ(got.pages[i].layer, want[i].layer);
    ASSERT_EQ(got.pages[i].data.size(), want[i].data.size());
    std::string gathered(want[i].data.size(), '\0');
    got.pages[i].data.CopyTo(gathered.data());
    EXPECT_EQ(gathered, want[i].data);
  }
}

TEST(PageBytesTest, OnePieceIsReadInPlace) {
  const std::string page = Bytes(1000, 1);
  const std::string_view pieces[] = {page};
  const PageBytes bytes(pieces);
  std::string scratch;
  const std::string_view flat = bytes.Flat(&scratch);
  EXPECT_EQ(flat.data(), page.data());  // no copy
  EXPECT_EQ(flat.size(), 1000u);
  EXPECT_TRUE(scratch.empty());
}

TEST(PageBytesTest, PiecesGatherInOrderIntoReusedScratch) {
  const std::string page = Bytes(777, 2);
  const std::string_view whole(page);
  const std::string_view pieces[] = {whole.substr(0, 100), whole.substr(100, 1),
                                     whole.substr(101, 0), whole.substr(101)};
  const PageBytes bytes(pieces);
  std::string scratch;
  EXPECT_EQ(bytes.Flat(&scratch), page);
  const char* buffer = scratch.data();
  // A second page of the same size gathers into the same memory.
  EXPECT_EQ(bytes.Flat(&scratch), page);
  EXPECT_EQ(scratch.data(), buffer);
  std::string out(page.size(), '\0');
  bytes.CopyTo(out.data());
  EXPECT_EQ(out, page);
}

TEST(PageBytesTest, EmptyPage) {
  const PageBytes bytes;
  std::string scratch = "left over";
  EXPECT_EQ(bytes.size(), 0u);
  EXPECT_TRUE(bytes.Flat(&scratch).empty());
}

TEST(ParseGetMessageTest, OneSliceGivesEveryPageAsOnePieceInPlace) {
  const std::vector<Expected> want = {{std::string(16, 'a'), 0, Bytes(5000, 3)},
                                      {std::string(16, 'b'), 0, Bytes(7000, 4)}};
  const grpc::ByteBuffer buffer = Cut(Message(want, true).SerializeAsString(), {});
  absl::StatusOr<InMessage> got = ParseGetMessage(buffer);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(got->has_format);
  EXPECT_EQ(got->format.codec(), "int4");
  EXPECT_EQ(got->format.geometry().num_layers(), 32u);
  ExpectPages(*got, want);
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(buffer.Dump(&slices).ok());
  ASSERT_EQ(slices.size(), 1u);
  const char* begin = reinterpret_cast<const char*>(slices[0].begin());
  for (const InPage& page : got->pages) {
    ASSERT_EQ(page.data.pieces().size(), 1u);
    // A view into the received slice, not a copy.
    EXPECT_GE(page.data.pieces()[0].data(), begin);
    EXPECT_LE(page.data.pieces()[0].data() + page.data.size(), begin + slices[0].size());
  }
}

// Every single cut point of a small message: tags, lengths, keys, the
// format and page data each get split somewhere.
TEST(ParseGetMessageTest, EveryTwoSliceCutParsesTheSame) {
  const std::vector<Expected> want = {{std::string(16, 'k'), 3, Bytes(40, 5)},
                                      {std::string(16, 'l'), 300, Bytes(200, 6)}};
  const std::string bytes = Message(want, true).SerializeAsString();
  for (size_t cut = 1; cut < bytes.size(); ++cut) {
    SCOPED_TRACE(cut);
    absl::StatusOr<InMessage> got = ParseGetMessage(Cut(bytes, {cut}));
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_TRUE(got->has_format);
    EXPECT_EQ(got->format.codec(), "int4");
    ExpectPages(*got, want);
  }
}

// Pages of 256 KiB in 64 KiB slices, as gRPC receives them: each page is
// the pieces of the slices it spans, and the views outlive the buffer while
// `keep` lives.
TEST(ParseGetMessageTest, LargePagesSpanSlicesAndLiveAsLongAsKeep) {
  const std::vector<Expected> want = {{std::string(16, 'x'), 0, Bytes(256 << 10, 7)},
                                      {std::string(16, 'y'), 0, Bytes(256 << 10, 8)},
                                      {std::string(16, 'z'), 1, Bytes(100 << 10, 9)}};
  const std::string bytes = Message(want, false).SerializeAsString();
  std::vector<size_t> cuts;
  for (size_t at = 64 << 10; at < bytes.size(); at += 64 << 10) cuts.push_back(at);
  std::vector<InPage> pages;
  std::shared_ptr<const void> keep;
  {
    absl::StatusOr<InMessage> got = ParseGetMessage(Cut(bytes, cuts));
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_FALSE(got->has_format);
    pages = got->pages;
    keep = got->keep;
  }  // the ByteBuffer and the message are gone; `keep` holds the slices
  InMessage held;
  held.pages = pages;
  ExpectPages(held, want);
  // 256 KiB starting a few bytes into a 64 KiB slice spans five slices.
  EXPECT_EQ(pages[0].data.pieces().size(), 5u);
  EXPECT_EQ(pages[1].data.pieces().size(), 5u);
  size_t total = 0;
  for (std::string_view piece : pages[0].data.pieces()) total += piece.size();
  EXPECT_EQ(total, pages[0].data.size());
}

TEST(ParseGetMessageTest, RandomCutsAndEmptySlices) {
  const std::vector<Expected> want = {{std::string(16, 'p'), 7, Bytes(3000, 10)},
                                      {std::string(16, 'q'), 7, Bytes(1, 11)},
                                      {std::string(16, 'r'), 8, Bytes(4500, 12)}};
  const std::string bytes = Message(want, true).SerializeAsString();
  std::mt19937 rng(42);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<size_t> cuts;
    for (int i = 0; i < 12; ++i) cuts.push_back(rng() % (bytes.size() + 1));
    std::sort(cuts.begin(), cuts.end());  // repeats make empty slices
    absl::StatusOr<InMessage> got = ParseGetMessage(Cut(bytes, cuts));
    ASSERT_TRUE(got.ok()) << got.status();
    ExpectPages(*got, want);
  }
}

// What EncodePutMessage builds from the caller's pages, ParseGetMessage
// reads back (the two messages share their layout).
TEST(ParseGetMessageTest, ReadsWhatEncodePutMessageWrites) {
  const std::string a = Bytes(90000, 13), b = Bytes(10, 14);
  BlockKey ka{}, kb{};
  ka.fill(1);
  kb.fill(2);
  std::vector<OutPage> out = {{ka, 4, a, nullptr}, {kb, 5, b, nullptr}};
  v1::BlockFormat format;
  format.set_codec("qaq");
  SliceFence fence;
  {
    const grpc::ByteBuffer buffer = EncodePutMessage(format.SerializeAsString(), out, fence);
    absl::StatusOr<InMessage> got = ParseGetMessage(buffer);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->format.codec(), "qaq");
    ExpectPages(*got, {{std::string(16, '\1'), 4, a}, {std::string(16, '\2'), 5, b}});
    // Sent without a copy, so read without one: the caller's own bytes.
    EXPECT_EQ(got->pages[0].data.pieces()[0].data(), a.data());
  }
  fence.Wait();
}

TEST(ParseGetMessageTest, MalformedMessagesAreInternalErrors) {
  const std::vector<Expected> want = {{std::string(16, 'm'), 1, Bytes(500, 15)}};
  // One page and no format: every proper prefix cuts the page short.
  const std::string bytes = Message(want, false).SerializeAsString();
  // Every truncation is detected.
  for (size_t n = 1; n < bytes.size(); ++n) {
    SCOPED_TRACE(n);
    absl::StatusOr<InMessage> got = ParseGetMessage(Cut(bytes.substr(0, n), {n / 2}));
    ASSERT_FALSE(got.ok());
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInternal);
    EXPECT_THAT(got.status().message(), HasSubstr("malformed GetPages message"));
  }
  // A page declared one byte long whose field runs to two.
  absl::StatusOr<InMessage> got = ParseGetMessage(Cut(std::string("\x12\x01\x10\x01"), {}));
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(got.status().message(), HasSubstr("page length"));
  // A key whose length claims far more bytes than the message holds, split
  // so the parser would have to gather it from two slices.
  const std::string huge_key("\x12\x0c\x0a\xff\xff\xff\xff\xff\xff\xff\xff\x7f\x00\x00", 14);
  got = ParseGetMessage(Cut(huge_key, {12}));
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInternal);
  // A layer beyond 32 bits.
  const std::string wide = "\x12\x06\x10\xff\xff\xff\xff\x1f";
  got = ParseGetMessage(Cut(wide, {}));
  ASSERT_FALSE(got.ok());
  EXPECT_THAT(got.status().message(), HasSubstr("layer"));
}

}  // namespace
}  // namespace qaqkv::client::internal
