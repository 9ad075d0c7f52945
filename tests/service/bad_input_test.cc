// Bad input through the real server: every case gets its exact code, a
// message naming the field, and stores nothing.
#include "tests/service/service_fixture.h"

namespace qaqkv::service::testing {
namespace {

// ---------------------------------------------------------------------------
// Bad input: exact code, the field named, nothing stored.

struct BadInput {
  std::string name;
  grpc::StatusCode code;
  std::string field;  // the status message must contain this
  // Stores what the case needs beforehand; may be empty.
  std::function<void(Stub&)> setup;
  std::function<grpc::Status(Stub&)> call;
  // Blocks and sessions that must not exist afterwards.
  std::vector<std::string> absent_blocks;
  std::vector<std::string> absent_sessions;
};

const v1::BlockFormat& Int8() {
  static const v1::BlockFormat f = MakeFormat("int8");
  return f;
}
// Blocks are deterministic in their seed; each is encoded once.
const TestBlock& Block(uint64_t seed) {
  static std::mutex mu;
  static std::map<uint64_t, TestBlock> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(seed);
  if (it == cache.end()) it = cache.emplace(seed, NewBlock(Int8(), seed)).first;
  return it->second;
}

// One message under `format` holding `pages`.
grpc::Status PutPagesWith(Stub& stub, const v1::BlockFormat& format,
                          std::vector<v1::Page> pages) {
  v1::PutPagesRequest m;
  *m.mutable_format() = format;
  for (v1::Page& p : pages) *m.add_pages() = std::move(p);
  return PutPages(stub, {m}).status;
}

v1::Page WithData(v1::Page page, std::string data) {
  page.set_data(std::move(data));
  return page;
}

v1::BlockFormat Int8With(const std::function<void(v1::Geometry&)>& change) {
  v1::BlockFormat f = Int8();
  change(*f.mutable_geometry());
  return f;
}

std::string Resigned(std::string page) {
  const uint64_t h = XXH3_64bits(page.data(), page.size() - 8);
  std::memcpy(page.data() + page.size() - 8, &h, 8);
  return page;
}

// A session of two (unstored) blocks under int8 with a tail of
// `tail_tokens` tokens (a valid tail page unless the case changes it).
v1::Session SessionOf(const std::string& id, uint32_t tail_tokens) {
  v1::Session s;
  s.set_session_id(id);
  s.add_block_keys(MakeBlockKey(501));
  s.add_block_keys(MakeBlockKey(502));
  const v1::Geometry& g = Int8().geometry();
  s.set_token_count(2 * g.block_tokens() + tail_tokens);
  if (tail_tokens > 0) s.set_tail(NewPage("int8", g, 503, tail_tokens * g.num_layers()));
  *s.mutable_format() = Int8();
  return s;
}

grpc::Status PutSessionWith(Stub& stub, const std::function<void(v1::Session&)>& change) {
  v1::Session s = SessionOf("sess", 5);
  change(s);
  return PutSession(stub, s);
}

void PutCommitted(Stub& stub, uint64_t seed) {
  ASSERT_GRPC_OK(PutBlocks(stub, Int8(), {Block(seed)}).status);
}
void PutFirstTwoLayers(Stub& stub, uint64_t seed) {
  ASSERT_GRPC_OK(
      PutPagesWith(stub, Int8(), {PageOf(Block(seed), 0), PageOf(Block(seed), 1)}));
}

std::vector<BadInput> BadInputs() {
  using C = grpc::StatusCode;
  constexpr C kInvalid = C::INVALID_ARGUMENT;
  const std::string k1 = MakeBlockKey(1), k2 = MakeBlockKey(2), k3 = MakeBlockKey(3);
  auto page = [](uint64_t seed, uint32_t layer) { return PageOf(Block(seed), layer); };
  auto put_page = [](v1::Page p, v1::BlockFormat f = Int8()) {
    return [p, f](Stub& s) { return PutPagesWith(s, f, {p}); };
  };
  auto put_data = [=](std::string data) { return put_page(WithData(page(1, 0), data)); };
  auto put_format = [=](v1::BlockFormat f) { return put_page(page(1, 0), f); };
  auto geometry = [=](std::function<void(v1::Geometry&)> change) {
    return put_format(Int8With(change));
  };
  const std::string good = Block(1).pages[0];
  std::string flipped = good;
  flipped[good.size() / 2] ^= 0x40;
  std::string bad_sum = good;
  bad_sum.back() ^= 0x01;
  std::string bad_magic = good;
  bad_magic[0] = 'X';
  bad_magic = Resigned(bad_magic);
  const v1::Geometry g = Int8().geometry();
  v1::Geometry g32 = g;
  g32.set_head_dim(32);

  std::vector<BadInput> cases;
  // Page bytes.
  cases.push_back({.name = "TruncatedPage",
                   .code = C::DATA_LOSS,
                   .field = "pages[0].data",
                   .call = put_data(good.substr(0, good.size() - 100)),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "PageShorterThanHeader",
                   .code = C::DATA_LOSS,
                   .field = "pages[0].data",
                   .call = put_data(good.substr(0, 20)),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "PageWithFlippedByte",
                   .code = C::DATA_LOSS,
                   .field = "pages[0].data",
                   .call = put_data(flipped),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "PageWithWrongChecksum",
                   .code = C::DATA_LOSS,
                   .field = "pages[0].data",
                   .call = put_data(bad_sum),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "EmptyPage",
                   .code = kInvalid,
                   .field = "pages[0].data",
                   .call = put_data(""),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "PageWithBadMagicAndValidChecksum",
                   .code = kInvalid,
                   .field = "pages[0].data",
                   .call = put_data(bad_magic),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "PageWithFewerTokensThanBlock",
                   .code = kInvalid,
                   .field = "pages[0].data",
                   .call = put_data(NewPage("int8", g, 7, 8)),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "PageWithOtherHeadDim",
                   .code = kInvalid,
                   .field = "pages[0].data",
                   .call = put_data(NewPage("int8", g32, 7)),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "PageOfOtherCodec",
                   .code = kInvalid,
                   .field = "pages[0].data",
                   .call = put_data(NewPage("int4", g, 7)),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "PageWithLayerGroupsUnderHeadGroupCodec",
                   .code = kInvalid,
                   .field = "pages[0].data",
                   .call = put_data(NewPage("int8-layer", g, 7)),
                   .absent_blocks = {k1}});
  // Block keys and layers.
  cases.push_back({.name = "BlockKeyEmpty",
                   .code = kInvalid,
                   .field = "pages[0].block_key",
                   .call = put_page([=] {
                     v1::Page p = page(1, 0);
                     p.set_block_key("");
                     return p;
                   }()),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "BlockKey15Bytes",
                   .code = kInvalid,
                   .field = "pages[0].block_key",
                   .call = put_page([=] {
                     v1::Page p = page(1, 0);
                     p.set_block_key(k1.substr(0, 15));
                     return p;
                   }()),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "BlockKey17Bytes",
                   .code = kInvalid,
                   .field = "pages[0].block_key",
                   .call = put_page([=] {
                     v1::Page p = page(1, 0);
                     p.set_block_key(k1 + "x");
                     return p;
                   }()),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "LayerNotBelowNumLayers",
                   .code = kInvalid,
                   .field = "pages[0].layer",
                   .call = put_page([=] {
                     v1::Page p = page(1, 0);
                     p.set_layer(4);
                     return p;
                   }()),
                   .absent_blocks = {k1}});
  // Formats.
  cases.push_back({.name = "UnknownCodec",
                   .code = kInvalid,
                   .field = "format.codec",
                   .call = put_format(MakeFormat("zstd")),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "UnknownCodecVariant",
                   .code = kInvalid,
                   .field = "format.codec",
                   .call = put_format(MakeFormat("int8-fancy")),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "MissingCodec",
                   .code = kInvalid,
                   .field = "format.codec",
                   .call = put_format(MakeFormat("")),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "MissingGeometry",
                   .code = kInvalid,
                   .field = "format.geometry",
                   .call = put_format([] {
                     v1::BlockFormat f;
                     f.set_codec("int8");
                     return f;
                   }()),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "MissingFormatInFirstMessage",
                   .code = kInvalid,
                   .field = "format: missing",
                   .call =
                       [=](Stub& s) {
                         v1::PutPagesRequest m;
                         *m.add_pages() = page(1, 0);
                         return PutPages(s, {m}).status;
                       },
                   .absent_blocks = {k1}});
  cases.push_back({.name = "FormatChangesMidStream",
                   .code = kInvalid,
                   .field = "format: differs",
                   .call =
                       [=](Stub& s) {
                         v1::PutPagesRequest m1, m2;
                         *m1.mutable_format() = Int8();  // a first message without pages
                         *m2.mutable_format() = MakeFormat("int4");
                         *m2.add_pages() = WithData(page(1, 0), NewPage("int4", g, 8));
                         return PutPages(s, {m1, m2}).status;
                       },
                   .absent_blocks = {k1}});
  cases.push_back({.name = "NumLayersZero",
                   .code = kInvalid,
                   .field = "format.geometry.num_layers",
                   .call = geometry([](v1::Geometry& x) { x.set_num_layers(0); }),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "NumLayers5000",
                   .code = kInvalid,
                   .field = "format.geometry.num_layers",
                   .call = geometry([](v1::Geometry& x) { x.set_num_layers(5000); }),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "NumKvHeadsZero",
                   .code = kInvalid,
                   .field = "format.geometry.num_kv_heads",
                   .call = geometry([](v1::Geometry& x) { x.set_num_kv_heads(0); }),
                   .absent_blocks = {k1}});
  cases.push_back(
      {.name = "NumKvHeadsHuge",
       .code = kInvalid,
       .field = "format.geometry.num_kv_heads",
       .call = geometry([](v1::Geometry& x) { x.set_num_kv_heads(0xFFFFFFFFu); }),
       .absent_blocks = {k1}});
  cases.push_back({.name = "NumQHeadsZero",
                   .code = kInvalid,
                   .field = "format.geometry.num_q_heads",
                   .call = geometry([](v1::Geometry& x) { x.set_num_q_heads(0); }),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "NumQHeadsNotAMultipleOfKvHeads",
                   .code = kInvalid,
                   .field = "format.geometry.num_q_heads",
                   .call = geometry([](v1::Geometry& x) { x.set_num_q_heads(3); }),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "HeadDimZero",
                   .code = kInvalid,
                   .field = "format.geometry.head_dim",
                   .call = geometry([](v1::Geometry& x) { x.set_head_dim(0); }),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "HeadDim2048",
                   .code = kInvalid,
                   .field = "format.geometry.head_dim",
                   .call = geometry([](v1::Geometry& x) { x.set_head_dim(2048); }),
                   .absent_blocks = {k1}});
  cases.push_back(
      {.name = "DtypeUnspecified",
       .code = kInvalid,
       .field = "format.geometry.dtype",
       .call = geometry([](v1::Geometry& x) { x.set_dtype(v1::DTYPE_UNSPECIFIED); }),
       .absent_blocks = {k1}});
  cases.push_back(
      {.name = "DtypeUnknownValue",
       .code = kInvalid,
       .field = "format.geometry.dtype",
       .call = geometry([](v1::Geometry& x) { x.set_dtype(static_cast<v1::DType>(77)); }),
       .absent_blocks = {k1}});
  cases.push_back({.name = "BlockTokensZero",
                   .code = kInvalid,
                   .field = "format.geometry.block_tokens",
                   .call = geometry([](v1::Geometry& x) { x.set_block_tokens(0); }),
                   .absent_blocks = {k1}});
  cases.push_back({.name = "BlockTokens100000",
                   .code = kInvalid,
                   .field = "format.geometry.block_tokens",
                   .call = geometry([](v1::Geometry& x) { x.set_block_tokens(100000); }),
                   .absent_blocks = {k1}});
  cases.push_back(
      {.name = "BlockTokensUint32Max",
       .code = kInvalid,
       .field = "format.geometry.block_tokens",
       .call = geometry([](v1::Geometry& x) { x.set_block_tokens(0xFFFFFFFFu); }),
       .absent_blocks = {k1}});
  // Every size at its maximum is a legal format; the small page does not fit it.
  // Every field at its own maximum, but no page that large can exist: the
  // format is refused before any page is looked at.
  cases.push_back({.name = "EverySizeAtItsMaximum",
                   .code = kInvalid,
                   .field = "format.geometry: block_tokens x num_kv_heads x head_dim is "
                            "68719476736 values per page",
                   .call = geometry([](v1::Geometry& x) {
                     x.set_num_layers(4096);
                     x.set_num_kv_heads(1024);
                     x.set_num_q_heads(65536);
                     x.set_head_dim(1024);
                     x.set_block_tokens(65536);
                   }),
                   .absent_blocks = {k1}});
  // A bad page after good ones stores none of its message.
  cases.push_back({.name = "BadLayerAfterGoodPagesInOneMessage",
                   .code = kInvalid,
                   .field = "pages[4].layer",
                   .call =
                       [=](Stub& s) {
                         v1::Page bad = page(2, 0);
                         bad.set_layer(9);
                         return PutPagesWith(
                             s, Int8(),
                             {page(1, 0), page(1, 1), page(1, 2), page(1, 3), bad});
                       },
                   .absent_blocks = {k1, k2}});
  cases.push_back({.name = "CorruptPageAfterGoodPagesInOneMessage",
                   .code = C::DATA_LOSS,
                   .field = "pages[5].data",
                   .call =
                       [=](Stub& s) {
                         return PutPagesWith(
                             s, Int8(),
                             {page(1, 0), page(1, 1), page(1, 2), page(1, 3), page(2, 0),
                              WithData(page(2, 1), flipped)});
                       },
                   .absent_blocks = {k1, k2}});
  // Pages for a block that exists under another format.
  cases.push_back({.name = "OtherNumLayersForExistingBlock",
                   .code = C::FAILED_PRECONDITION,
                   .field = "pages[0]",
                   .setup = [](Stub& s) { PutFirstTwoLayers(s, 1); },
                   .call = put_page(page(1, 2), Int8With([](v1::Geometry& x) {
                                      x.set_num_layers(8);
                                    })),
                   .absent_blocks = {k1}});
  cases.push_back(
      {.name = "OtherCodecForCommittedBlock",
       .code = C::FAILED_PRECONDITION,
       .field = "pages[0]",
       .setup = [](Stub& s) { PutCommitted(s, 1); },
       .call = put_page(WithData(page(1, 0), NewPage("int4", g, 9)), MakeFormat("int4")),
       .absent_blocks = {}});
  cases.push_back(
      {.name = "OtherCodecForExistingBlockAfterAGoodPageInOneMessage",
       .code = C::FAILED_PRECONDITION,
       .field = "pages[1]",
       .setup = [](Stub& s) { PutCommitted(s, 1); },
       .call =
           [=](Stub& s) {
             const TestBlock b3 = NewBlock(MakeFormat("int4"), 3);
             return PutPagesWith(
                 s, MakeFormat("int4"),
                 {PageOf(b3, 0), WithData(page(1, 0), NewPage("int4", g, 9))});
           },
       .absent_blocks = {k3}});
  // Lookup.
  cases.push_back({.name = "LookupKeyOfWrongLength",
                   .code = kInvalid,
                   .field = "block_keys[1]",
                   .call = [=](Stub& s) {
                     return Lookup(s, {k1, k2.substr(0, 15)}).status;
                   }});
  cases.push_back({.name = "LookupWithInvalidFormat",
                   .code = kInvalid,
                   .field = "format.geometry.num_layers",
                   .call = [=](Stub& s) {
                     v1::BlockFormat f =
                         Int8With([](v1::Geometry& x) { x.set_num_layers(0); });
                     return Lookup(s, {k1}, &f).status;
                   }});
  // GetPages.
  // No keys is an empty stream (GetPagesWithNoKeysIsAnEmptyStream), but its
  // layer range is still checked.
  cases.push_back(
      {.name = "GetPagesWithoutKeysAndAnEmptyLayerRange",
       .code = kInvalid,
       .field = "layer_begin",
       .call = [](Stub& s) { return GetPages(s, std::vector<std::string>{}, 2, 1).status; }});
  cases.push_back({.name = "GetPagesKeyOfWrongLength",
                   .code = kInvalid,
                   .field = "block_keys[0]",
                   .setup = [](Stub& s) { PutCommitted(s, 1); },
                   .call = [=](Stub& s) { return GetPages(s, {k1 + "x"}).status; }});
  cases.push_back({.name = "GetPagesLayerBeginNotBelowLayerEnd",
                   .code = kInvalid,
                   .field = "layer_begin",
                   .setup = [](Stub& s) { PutCommitted(s, 1); },
                   .call = [=](Stub& s) { return GetPages(s, {k1}, 2, 2).status; }});
  cases.push_back({.name = "GetPagesLayerBeginPastLastLayer",
                   .code = kInvalid,
                   .field = "layer_begin",
                   .setup = [](Stub& s) { PutCommitted(s, 1); },
                   .call = [=](Stub& s) { return GetPages(s, {k1}, 4, 0).status; }});
  cases.push_back({.name = "GetPagesLayerEndPastLastLayer",
                   .code = kInvalid,
                   .field = "layer_end",
                   .setup = [](Stub& s) { PutCommitted(s, 1); },
                   .call = [=](Stub& s) { return GetPages(s, {k1}, 0, 5).status; }});
  cases.push_back({.name = "GetPagesUnknownBlock",
                   .code = C::NOT_FOUND,
                   .field = "block_keys[1]",
                   .setup = [](Stub& s) { PutCommitted(s, 1); },
                   .call =
                       [=](Stub& s) {
                         return GetPages(s, {k1, k2}).status;
                       },
                   .absent_blocks = {k2}});
  cases.push_back({.name = "GetPagesBlocksOfDifferentFormats",
                   .code = C::FAILED_PRECONDITION,
                   .field = "block_keys[1]",
                   .setup =
                       [](Stub& s) {
                         PutCommitted(s, 1);
                         ASSERT_GRPC_OK(PutBlocks(s, MakeFormat("int4"),
                                                  {NewBlock(MakeFormat("int4"), 3)})
                                            .status);
                       },
                   .call =
                       [=](Stub& s) {
                         return GetPages(s, {k1, k3}).status;
                       }});
  cases.push_back({.name = "GetPagesIncompleteBlock",
                   .code = C::NOT_FOUND,
                   .field = "block_keys[0]",
                   .setup = [](Stub& s) { PutFirstTwoLayers(s, 1); },
                   .call = [=](Stub& s) { return GetPages(s, {k1}).status; },
                   .absent_blocks = {k1}});
  // Sessions.
  cases.push_back({.name = "SessionMissing",
                   .code = kInvalid,
                   .field = "session",
                   .call = [](Stub& s) {
                     v1::PutSessionResponse r;
                     return Unary(s, &Stub::PutSession, v1::PutSessionRequest(), &r);
                   }});
  cases.push_back({.name = "SessionIdEmpty",
                   .code = kInvalid,
                   .field = "session_id",
                   .call = [](Stub& s) {
                     return PutSessionWith(s,
                                           [](v1::Session& x) { x.set_session_id(""); });
                   }});
  cases.push_back({.name = "SessionIdWithSpace",
                   .code = kInvalid,
                   .field = "session_id",
                   .call = [](Stub& s) {
                     return PutSessionWith(
                         s, [](v1::Session& x) { x.set_session_id("chat 1"); });
                   }});
  cases.push_back({.name = "SessionIdWithControlByte",
                   .code = kInvalid,
                   .field = "session_id",
                   .call = [](Stub& s) {
                     return PutSessionWith(
                         s, [](v1::Session& x) { x.set_session_id("chat\n1"); });
                   }});
  cases.push_back({.name = "SessionIdTooLong",
                   .code = kInvalid,
                   .field = "session_id",
                   .call = [](Stub& s) {
                     return PutSessionWith(s, [](v1::Session& x) {
                       x.set_session_id(std::string(1025, 'a'));
                     });
                   }});
  cases.push_back({.name = "SessionFormatMissing",
                   .code = kInvalid,
                   .field = "session.format",
                   .call =
                       [](Stub& s) {
                         return PutSessionWith(s,
                                               [](v1::Session& x) { x.clear_format(); });
                       },
                   .absent_blocks = {},
                   .absent_sessions = {"sess"}});
  cases.push_back({.name = "SessionFormatInvalid",
                   .code = kInvalid,
                   .field = "session.format.codec",
                   .call =
                       [](Stub& s) {
                         return PutSessionWith(s, [](v1::Session& x) {
                           x.mutable_format()->set_codec("nope");
                         });
                       },
                   .absent_blocks = {},
                   .absent_sessions = {"sess"}});
  cases.push_back({.name = "SessionBlockKeyOfWrongLength",
                   .code = kInvalid,
                   .field = "session.block_keys[1]",
                   .call =
                       [](Stub& s) {
                         return PutSessionWith(
                             s, [](v1::Session& x) { x.set_block_keys(1, "short"); });
                       },
                   .absent_blocks = {},
                   .absent_sessions = {"sess"}});
  cases.push_back({.name = "SessionTokenCountBelowItsBlocks",
                   .code = kInvalid,
                   .field = "session.token_count",
                   .call =
                       [](Stub& s) {
                         return PutSessionWith(
                             s, [](v1::Session& x) { x.set_token_count(20); });
                       },
                   .absent_blocks = {},
                   .absent_sessions = {"sess"}});
  cases.push_back({.name = "SessionTokenCountAFullBlockPastItsBlocks",
                   .code = kInvalid,
                   .field = "session.token_count",
                   .call =
                       [](Stub& s) {
                         return PutSessionWith(
                             s, [](v1::Session& x) { x.set_token_count(48); });
                       },
                   .absent_blocks = {},
                   .absent_sessions = {"sess"}});
  cases.push_back({.name = "SessionTailMissing",
                   .code = kInvalid,
                   .field = "session.tail",
                   .call =
                       [](Stub& s) {
                         return PutSessionWith(s, [](v1::Session& x) { x.clear_tail(); });
                       },
                   .absent_blocks = {},
                   .absent_sessions = {"sess"}});
  cases.push_back({.name = "SessionTailWithOneLayersRows",
                   .code = kInvalid,
                   .field = "session.tail",
                   .call =
                       [=](Stub& s) {
                         return PutSessionWith(s, [=](v1::Session& x) {
                           x.set_tail(NewPage("int8", g, 504, 5));
                         });
                       },
                   .absent_blocks = {},
                   .absent_sessions = {"sess"}});
  cases.push_back({.name = "SessionTailOnBlockBoundary",
                   .code = kInvalid,
                   .field = "session.tail",
                   .call =
                       [](Stub& s) {
                         return PutSessionWith(
                             s, [](v1::Session& x) { x.set_token_count(32); });
                       },
                   .absent_blocks = {},
                   .absent_sessions = {"sess"}});
  cases.push_back({.name = "SessionTailCorrupt",
                   .code = C::DATA_LOSS,
                   .field = "session.tail",
                   .call =
                       [](Stub& s) {
                         return PutSessionWith(
                             s, [](v1::Session& x) { (*x.mutable_tail())[100] ^= 0x10; });
                       },
                   .absent_blocks = {},
                   .absent_sessions = {"sess"}});
  cases.push_back({.name = "SessionTailOfOtherCodec",
                   .code = kInvalid,
                   .field = "session.tail",
                   .call =
                       [=](Stub& s) {
                         return PutSessionWith(s, [=](v1::Session& x) {
                           x.set_tail(NewPage("int4", g, 505, 20));
                         });
                       },
                   .absent_blocks = {},
                   .absent_sessions = {"sess"}});
  cases.push_back({.name = "SessionNegativeTtl",
                   .code = kInvalid,
                   .field = "session.ttl_ms",
                   .call =
                       [](Stub& s) {
                         return PutSessionWith(s,
                                               [](v1::Session& x) { x.set_ttl_ms(-1); });
                       },
                   .absent_blocks = {},
                   .absent_sessions = {"sess"}});
  cases.push_back({.name = "ListSessionsLimitTooBig",
                   .code = kInvalid,
                   .field = "limit",
                   .call = [](Stub& s) {
                     v1::ListSessionsRequest r;
                     r.set_limit(100001);
                     v1::ListSessionsResponse out;
                     return Unary(s, &Stub::ListSessions, r, &out);
                   }});
  cases.push_back({.name = "GetSessionBadId",
                   .code = kInvalid,
                   .field = "session_id",
                   .call = [](Stub& s) {
                     v1::GetSessionResponse r;
                     return GetSession(s, "a b", &r);
                   }});
  cases.push_back({.name = "DeleteSessionBadId",
                   .code = kInvalid,
                   .field = "session_id",
                   .call = [](Stub& s) { return DeleteSession(s, ""); }});
  cases.push_back(
      {.name = "TouchSessionBadId",
       .code = kInvalid,
       .field = "session_id",
       .call = [](Stub& s) { return TouchSession(s, std::string(2000, 'x')); }});
  cases.push_back({.name = "SessionRepairWithoutVersion",
                   .code = kInvalid,
                   .field = "session.updated_ms",
                   .call =
                       [](Stub& s) {
                         v1::PutSessionRequest r;
                         *r.mutable_session() = SessionOf("sess", 5);
                         r.set_repair(true);
                         v1::PutSessionResponse out;
                         return Unary(s, &Stub::PutSession, r, &out);
                       },
                   .absent_blocks = {},
                   .absent_sessions = {"sess"}});
  cases.push_back({.name = "ListSessionsBadCursor",
                   .code = kInvalid,
                   .field = "start_after",
                   .call = [](Stub& s) {
                     v1::ListSessionsRequest r;
                     r.set_start_after("a b");
                     v1::ListSessionsResponse out;
                     return Unary(s, &Stub::ListSessions, r, &out);
                   }});
  cases.push_back({.name = "ListBlocksLimitTooBig",
                   .code = kInvalid,
                   .field = "limit",
                   .call = [](Stub& s) {
                     v1::ListBlocksRequest r;
                     r.set_limit(100001);
                     v1::ListBlocksResponse out;
                     return Unary(s, &Stub::ListBlocks, r, &out);
                   }});
  cases.push_back({.name = "ListBlocksShortCursor",
                   .code = kInvalid,
                   .field = "start_after",
                   .call = [](Stub& s) {
                     v1::ListBlocksRequest r;
                     r.set_start_after("short");
                     v1::ListBlocksResponse out;
                     return Unary(s, &Stub::ListBlocks, r, &out);
                   }});
  cases.push_back({.name = "DeleteBlocksNone",
                   .code = kInvalid,
                   .field = "block_keys",
                   .call = [](Stub& s) {
                     v1::DeleteBlocksRequest r;
                     v1::DeleteBlocksResponse out;
                     return Unary(s, &Stub::DeleteBlocks, r, &out);
                   }});
  cases.push_back({.name = "DeleteBlocksBadKeyDeletesNone",
                   .code = kInvalid,
                   .field = "block_keys[1]",
                   .setup = [](Stub& s) { PutCommitted(s, 1); },
                   .call = [](Stub& s) {
                     v1::DeleteBlocksRequest r;
                     r.add_block_keys(Block(1).key);
                     r.add_block_keys("short");
                     v1::DeleteBlocksResponse out;
                     return Unary(s, &Stub::DeleteBlocks, r, &out);
                   }});
  cases.push_back({.name = "DeleteUnknownSession",
                   .code = C::NOT_FOUND,
                   .field = "session",
                   .call = [](Stub& s) { return DeleteSession(s, "nobody"); }});
  return cases;
}

void PrintTo(const BadInput& c, std::ostream* os) { *os << c.name; }

class BadInputTest : public ServiceTest,
                     public ::testing::WithParamInterface<BadInput> {};

TEST_P(BadInputTest, IsRejectedAndStoresNothing) {
  const BadInput& c = GetParam();
  ASSERT_NO_FATAL_FAILURE(StartServer());
  if (c.setup) {
    ASSERT_NO_FATAL_FAILURE(c.setup(*stub_));
  }
  const v1::GetStatsResponse before = Stats(*stub_);
  const std::vector<std::string> sessions_before = ListSessions(*stub_);

  EXPECT_TRUE(IsError(c.call(*stub_), c.code, c.field));

  const v1::GetStatsResponse after = Stats(*stub_);
  EXPECT_EQ(after.tenant_bytes(), before.tenant_bytes()) << "page bytes were stored";
  EXPECT_EQ(after.tenant_blocks(), before.tenant_blocks()) << "blocks were created";
  EXPECT_EQ(after.total_bytes(), before.total_bytes());
  EXPECT_EQ(ListSessions(*stub_), sessions_before);
  for (const std::string& key : c.absent_blocks) {
    EXPECT_EQ(Lookup(*stub_, {key}).committed_prefix, 0u);
    EXPECT_EQ(GetPages(*stub_, {key}).status.error_code(), grpc::StatusCode::NOT_FOUND);
  }
  for (const std::string& id : c.absent_sessions) {
    v1::GetSessionResponse r;
    EXPECT_EQ(GetSession(*stub_, id, &r).error_code(), grpc::StatusCode::NOT_FOUND) << id;
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, BadInputTest, ::testing::ValuesIn(BadInputs()),
                         [](const ::testing::TestParamInfo<BadInput>& info) {
                           return info.param.name;
                         });

}  // namespace
}  // namespace qaqkv::service::testing
