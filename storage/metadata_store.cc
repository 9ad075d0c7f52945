#include "storage/metadata_store.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "base/strings.h"
#include "storage/keys.h"

namespace qaqkv::storage {
namespace {

// Names a record in an error without its binary block bytes.
std::string Describe(std::string_view key) {
  return absl::StrCat(key.empty() ? "?" : std::string(1, key[0]), " record of tenant ",
                      base::AsAbsl(KeyTenant(key)));
}

}  // namespace

std::string_view RecordBatch::Keep(std::string value) {
  owned_.push_back(std::move(value));
  return owned_.back();
}

void RecordBatch::PutBlock(std::string_view key, const BlockRecord& record) {
  mutations_.push_back(
      {Column::kBlocks, Keep(std::string(key)), Keep(EncodeBlockRecord(record)), false});
}

void RecordBatch::EraseBlock(std::string_view key) {
  mutations_.push_back({Column::kBlocks, Keep(std::string(key)), {}, true});
}

void RecordBatch::PutPage(std::string_view key, std::string_view page) {
  mutations_.push_back({Column::kPages, Keep(std::string(key)), page, false});
}

void RecordBatch::PutNewPage(std::string_view key, std::string_view page) {
  mutations_.push_back({Column::kPages, Keep(std::string(key)), page, false, /*absent=*/true});
}

void RecordBatch::ErasePage(std::string_view key) {
  mutations_.push_back({Column::kPages, Keep(std::string(key)), {}, true});
}

absl::Status MetadataStore::ForEachBlock(
    absl::FunctionRef<void(std::string_view key, BlockRecord record)> fn) {
  absl::Status bad_record;
  QAQKV_RETURN_IF_ERROR(
      db_->Scan(Column::kBlocks, "B", [&](std::string_view key, std::string_view bytes) {
        absl::StatusOr<BlockRecord> record = DecodeBlockRecord(bytes);
        if (!record.ok()) {
          bad_record = absl::DataLossError(
              absl::StrCat(Describe(key), ": ", record.status().message()));
          return false;
        }
        fn(key, std::move(*record));
        return true;
      }));
  return bad_record;
}

absl::Status MetadataStore::PutBlock(std::string_view key, const BlockRecord& record) {
  return db_->Put(Column::kBlocks, key, EncodeBlockRecord(record));
}

absl::Status MetadataStore::Commit(const RecordBatch& batch) {
  if (batch.empty()) return absl::OkStatus();
  return db_->Write(batch.mutations_);
}

absl::StatusOr<SessionRecord> MetadataStore::GetSession(std::string_view key) {
  absl::StatusOr<std::string> bytes = db_->Get(Column::kSessions, key);
  if (!bytes.ok()) {
    if (absl::IsNotFound(bytes.status()))
      return absl::NotFoundError("session: not found");
    return bytes.status();
  }
  absl::StatusOr<SessionRecord> record = DecodeSessionRecord(*bytes);
  if (!record.ok()) {
    return absl::DataLossError(
        absl::StrCat(Describe(key), ": ", record.status().message()));
  }
  return record;
}

absl::Status MetadataStore::PutSession(std::string_view key,
                                       const SessionRecord& record) {
  return db_->Put(Column::kSessions, key, EncodeSessionRecord(record));
}

absl::Status MetadataStore::DeleteSession(std::string_view key) {
  return db_->Delete(Column::kSessions, key);
}

absl::Status MetadataStore::ScanSessions(
    std::string_view prefix, std::string_view start_after,
    absl::FunctionRef<bool(std::string_view key, absl::StatusOr<SessionRecord> record)>
        fn) {
  return db_->Scan(Column::kSessions, prefix, start_after,
                   [&](std::string_view key, std::string_view bytes) {
                     absl::StatusOr<SessionRecord> record = DecodeSessionRecord(bytes);
                     if (!record.ok()) {
                       record = absl::DataLossError(
                           absl::StrCat(Describe(key), ": ", record.status().message()));
                     }
                     return fn(key, std::move(record));
                   });
}

}  // namespace qaqkv::storage
