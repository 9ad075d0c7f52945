// A test fixture with one real qaqkv-server (loopback, RocksDB in a
// temporary directory) and a client of it.
#ifndef QAQKV_TESTS_CLIENT_ONE_SERVER_TEST_H_
#define QAQKV_TESTS_CLIENT_ONE_SERVER_TEST_H_

#include <memory>

#include "gtest/gtest.h"
#include "qaqkv/client.h"
#include "tests/client/test_kv.h"
#include "tests/service/server_process.h"

namespace qaqkv::client::testing {

class OneServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto port = server_.Start();
    ASSERT_TRUE(port.ok()) << port.status();
    client_ = Connect(server_.target());
    ASSERT_NE(client_, nullptr);
  }
  service::testing::ServerProcess server_;
  std::unique_ptr<Client> client_;
};

}  // namespace qaqkv::client::testing

#endif  // QAQKV_TESTS_CLIENT_ONE_SERVER_TEST_H_
