// Block-key hashing (docs/design.md "block key"). Kept apart from the RPC code so
// the tools and tests can use it without a channel.
#include <cstring>

#include "base/endian.h"
#include "qaqkv/client.h"
#include "xxhash.h"

namespace qaqkv::client {
namespace {

void AppendLe32(std::vector<uint8_t>& buf, uint32_t v) {
  buf.resize(buf.size() + 4);
  base::StoreLe32(buf.data() + buf.size() - 4, v);
}

}  // namespace

std::vector<BlockKey> Client::ComputeBlockKeys(std::string_view model_fingerprint,
                                               std::string_view codec,
                                               std::span<const int32_t> token_ids,
                                               int block_tokens) {
  std::vector<BlockKey> keys;
  if (block_tokens < 1) return keys;
  const size_t blocks = token_ids.size() / static_cast<size_t>(block_tokens);
  keys.reserve(blocks);

  // The message is rebuilt per block in one buffer: [prev key | header |
  // tokens]; only the key and the tokens change between blocks.
  std::vector<uint8_t> buf(16, 0);
  AppendLe32(buf, static_cast<uint32_t>(model_fingerprint.size()));
  buf.insert(buf.end(), model_fingerprint.begin(), model_fingerprint.end());
  AppendLe32(buf, static_cast<uint32_t>(codec.size()));
  buf.insert(buf.end(), codec.begin(), codec.end());
  const size_t header = buf.size();
  buf.resize(header + 4 * static_cast<size_t>(block_tokens));

  for (size_t b = 0; b < blocks; ++b) {
    uint8_t* tokens = buf.data() + header;
    for (int t = 0; t < block_tokens; ++t) {
      // Explicit little-endian, so keys agree across hosts.
      const uint32_t id = static_cast<uint32_t>(token_ids[b * block_tokens + t]);
      base::StoreLe32(tokens + 4 * t, id);
    }
    const XXH128_hash_t h = XXH3_128bits(buf.data(), buf.size());
    BlockKey key;
    base::StoreLe64(key.data(), h.low64);
    base::StoreLe64(key.data() + 8, h.high64);
    keys.push_back(key);
    std::memcpy(buf.data(), key.data(), key.size());
  }
  return keys;
}

}  // namespace qaqkv::client
