// The lock-free pieces on their own: the tagged id stack and the shard inbox.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "runtime/shard/id_stack.hpp"
#include "runtime/shard/remote_inbox.hpp"

namespace iso {
namespace {

std::atomic<std::uint32_t> g_links[4096];
struct TestLink {
  std::atomic<std::uint32_t>& operator()(std::uint32_t id) const { return g_links[id]; }
};

TEST(IdStack, ConcurrentPushPopLosesAndDuplicatesNothing) {
  IdStack<TestLink> stack;
  for (std::uint32_t i = 0; i < 4096; ++i) stack.push(i, TestLink{});
  std::vector<std::thread> threads;
  std::atomic<int> seen[4096] = {};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int round = 0; round < 20000; ++round) {
        std::uint32_t id;
        if (!stack.pop(id, TestLink{})) continue;
        seen[id].fetch_add(1);
        seen[id].fetch_sub(1);
        stack.push(id, TestLink{});
      }
    });
  }
  for (auto& t : threads) t.join();
  std::vector<bool> present(4096);
  std::uint32_t id, count = 0;
  while (stack.pop(id, TestLink{})) {
    ASSERT_FALSE(present[id]) << "duplicate " << id;
    present[id] = true;
    ++count;
  }
  EXPECT_EQ(count, 4096u);
}

TEST(RemoteInbox, OverflowPastTheBoundedQueueDeliversEveryBatch) {
  auto* inbox = new RemoteInbox();
  std::vector<RemoteBatch*> sent;
  // Four senders push far more batches than the queue holds before anyone drains.
  std::vector<std::thread> senders;
  std::mutex m;
  for (int t = 0; t < 4; ++t) {
    senders.emplace_back([&] {
      for (unsigned i = 0; i < kInboxSlots; ++i) {
        RemoteBatch* b = batch_get();
        b->fill = kEmptyBatchFill;
        inbox->push(b);
        std::lock_guard<std::mutex> g(m);
        sent.push_back(b);
      }
    });
  }
  for (auto& t : senders) t.join();
  EXPECT_GT(inbox->overflow_pushes(), 0u);  // the fallback path really ran
  std::vector<RemoteBatch*> got;
  inbox->drain([&](RemoteBatch* b) { got.push_back(b); });
  std::sort(sent.begin(), sent.end());
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, sent);
  EXPECT_FALSE(inbox->maybe_nonempty());
  for (RemoteBatch* b : got) batch_put(b);
  delete inbox;
}

}  // namespace
}  // namespace iso
