// Cross-thread frees: chunks allocated by one thread and freed by another travel home in
// batches (outbox per destination, inbox per owner). These tests check that every chunk
// comes home exactly once, that nothing is handed out twice meanwhile, and that the
// counters in iso_get_stats agree with what the threads did.
//
// Synchronisation is by mutex/condition variable/barrier only; no sleeps.
#include <barrier>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "api/isoshard.h"
#include "tests/api/test_support.hpp"

namespace {

using isotest::escape;
using isotest::opaque;
using isotest::Event;
using isotest::XorShift;

constexpr unsigned kRemoteBatchChunks = 61;  // chunks per cross-thread batch (runtime config)

struct Item {
  void* p;
  std::size_t n;
  std::uint64_t seed;
};

// Fills the whole block with a byte of the seed and stamps the seed at both ends: cheap
// enough for thousands of blocks, yet any overlap or lost write shows.
void stamp(const Item& it) {
  auto* b = static_cast<unsigned char*>(it.p);
  std::memset(b, static_cast<int>(it.seed & 0xff), it.n);
  if (it.n >= 16) {
    std::memcpy(b, &it.seed, 8);
    std::memcpy(b + it.n - 8, &it.seed, 8);
  }
  escape(b);
}

bool stamp_intact(const Item& it) {
  escape(it.p);
  auto* b = static_cast<const unsigned char*>(it.p);
  std::size_t from = 0, to = it.n;
  if (it.n >= 16) {
    std::uint64_t head, tail;
    std::memcpy(&head, b, 8);
    std::memcpy(&tail, b + it.n - 8, 8);
    if (head != it.seed || tail != it.seed) return false;
    from = 8;
    to = it.n - 8;
  }
  unsigned char want = static_cast<unsigned char>(it.seed & 0xff);
  bool ok = true;
  for (std::size_t i = from; i < to; ++i) ok &= b[i] == want;
  return ok;
}

// Mostly small, some medium, a few big allocations (their own mappings).
std::size_t random_size(XorShift& rng) {
  std::size_t r = rng.below(100);
  if (r < 70) return 1 + rng.below(256);
  if (r < 95) return 257 + rng.below(4096 - 256);
  if (r < 99) return 4097 + rng.below(32768 - 4096);
  return 32769 + rng.below(200000);
}

Item make_item(XorShift& rng) {
  Item it{nullptr, random_size(rng), rng.next() | 1};
  it.p = malloc(opaque(it.n));
  if (it.p) stamp(it);
  return it;
}

// Makes sure the calling thread has its shard (bound on its first allocation), so that the
// per-shard counters read afterwards are this thread's, and that what it allocates from now
// on comes from its own zones.
void bind_shard() { isotest::own_zones_from_now(); }

iso_stats stats() {
  iso_stats s{};
  iso_get_stats(&s);
  return s;
}

// A mutex-protected exchange slot per thread. Its buffers are reserved by the main thread
// and only swapped, never grown, so the worker threads free nothing but the test's items
// (which keeps the sent/received counters exactly comparable).
struct Mailbox {
  std::mutex m;
  std::vector<Item> items;
};

TEST(CrossThreadFrees, EightThreadsExchangingBlocksFreeEverythingExactlyOnce) {
  constexpr unsigned kThreads = 8;
  constexpr unsigned kOps = 12000;
  constexpr std::size_t kCap = 4096;

  std::vector<Mailbox> mail(kThreads);
  std::vector<std::vector<Item>> scratch(kThreads), own(kThreads);
  for (unsigned i = 0; i < kThreads; ++i) {
    mail[i].items.reserve(kCap);
    scratch[i].reserve(kCap);
    own[i].reserve(kOps);
  }
  std::barrier sync(kThreads);
  std::vector<std::uint64_t> sent(kThreads), received(kThreads), bad(kThreads);
  std::vector<std::int64_t> leaked(kThreads);

  auto worker = [&](unsigned self) {
    XorShift rng(self + 1);
    // Bind this thread's shard before measuring.
    bind_shard();
    std::vector<Item>& inbox = scratch[self];
    auto check_and_free = [&](const Item& it) {
      if (!stamp_intact(it)) ++bad[self];
      free(it.p);
    };
    auto drain_mail = [&] {
      {
        std::lock_guard<std::mutex> lock(mail[self].m);
        mail[self].items.swap(inbox);  // both hold kCap capacity: no allocation
      }
      for (const Item& it : inbox) check_and_free(it);
      inbox.clear();
    };
    const iso_stats start = stats();
    const std::uint64_t in_use_start = iso_verify();

    for (unsigned op = 0; op < kOps; ++op) {
      Item it = make_item(rng);
      if (!it.p) {
        ++bad[self];
        continue;
      }
      if (rng.below(4) == 0) {
        own[self].push_back(it);  // freed by its own thread, later
      } else {
        unsigned to = (self + 1 + static_cast<unsigned>(rng.below(kThreads - 1))) % kThreads;
        bool full;
        {
          std::lock_guard<std::mutex> lock(mail[to].m);
          full = mail[to].items.size() == kCap;
          if (!full) mail[to].items.push_back(it);
        }
        if (full) check_and_free(it);
      }
      if (op % 64 == 63) drain_mail();
      if (op % 256 == 255) {  // free some of our own, in LIFO order
        for (int k = 0; k < 32 && !own[self].empty(); ++k) {
          check_and_free(own[self].back());
          own[self].pop_back();
        }
      }
    }
    for (const Item& it : own[self]) check_and_free(it);
    own[self].clear();

    sync.arrive_and_wait();  // nobody sends any more
    drain_mail();
    iso_flush();             // our pending batches go out
    sync.arrive_and_wait();  // every batch has been sent
    iso_flush();             // take in what the others sent us
    const iso_stats end = stats();
    sent[self] = end.remote_frees_sent - start.remote_frees_sent;
    received[self] = end.remote_frees_received - start.remote_frees_received;
    // Everything this thread allocated in the loop has come home and been freed; iso_verify
    // also checks every canary and bitmap invariant of its zones (and aborts if broken).
    leaked[self] = static_cast<std::int64_t>(iso_verify()) - static_cast<std::int64_t>(in_use_start);
  };

  std::vector<std::thread> threads;
  for (unsigned i = 0; i < kThreads; ++i) threads.emplace_back(worker, i);
  for (auto& t : threads) t.join();

  std::uint64_t total_sent = 0, total_received = 0;
  for (unsigned i = 0; i < kThreads; ++i) {
    EXPECT_EQ(bad[i], 0u) << "thread " << i << " found corrupted blocks or failed allocations";
    EXPECT_LE(leaked[i], 0) << "thread " << i << " has chunks in use that should have come home";
    total_sent += sent[i];
    total_received += received[i];
  }
  EXPECT_GT(total_sent, 10000u);
  EXPECT_EQ(total_received, total_sent) << "remote frees lost or delivered twice";
}

TEST(CrossThreadFrees, MemoryReusedByNewThreadsIsConsistent) {
  // Round 1: threads exchange and free blocks, then exit (their shards go to the pool with
  // zones full of freed chunks). Round 2: new threads take those shards over, fill many live
  // blocks at once and check them all: a chunk handed out twice, or a bitmap that lost a
  // free, shows as a clobbered stamp or an iso_verify abort.
  constexpr unsigned kThreads = 8;
  std::barrier all_bound(kThreads);
  auto round1 = [&all_bound](unsigned self, std::vector<Item>* out, std::mutex* m) {
    bind_shard();
    all_bound.arrive_and_wait();  // kThreads shards, for round 2 to take over
    XorShift rng(100 + self);
    for (int i = 0; i < 3000; ++i) {
      Item it = make_item(rng);
      std::lock_guard<std::mutex> lock(*m);
      out->push_back(it);
    }
  };
  std::mutex m;
  std::vector<Item> handed;
  handed.reserve(kThreads * 3000);
  {
    std::vector<std::thread> ts;
    for (unsigned i = 0; i < kThreads; ++i) ts.emplace_back(round1, i, &handed, &m);
    for (auto& t : ts) t.join();
  }
  // Freed by threads that do not own them (the owners have exited): batches to pooled shards.
  std::size_t corrupted = 0;
  {
    std::vector<std::thread> ts;
    for (unsigned i = 0; i < kThreads; ++i) {
      ts.emplace_back([&, i] {
        for (std::size_t k = i; k < handed.size(); k += kThreads) {
          if (!stamp_intact(handed[k])) {
            std::lock_guard<std::mutex> lock(m);
            ++corrupted;
          }
          free(handed[k].p);
        }
      });
    }
    for (auto& t : ts) t.join();
  }
  EXPECT_EQ(corrupted, 0u);
  const iso_stats after_round1 = stats();

  std::barrier sync(kThreads);
  std::vector<std::size_t> bad(kThreads);
  std::vector<std::uint64_t> in_use(kThreads), small_live(kThreads);
  std::vector<std::vector<Item>> live(kThreads);
  for (auto& v : live) v.reserve(4000);
  {
    std::vector<std::thread> ts;
    for (unsigned i = 0; i < kThreads; ++i) {
      ts.emplace_back([&, i] {
        bind_shard();  // its chunks in its own zones, for iso_verify to count
        XorShift rng(1000 + i);
        for (int k = 0; k < 4000; ++k) {
          Item it = make_item(rng);
          if (it.p) live[i].push_back(it);
          else ++bad[i];
        }
        sync.arrive_and_wait();  // every thread's blocks are live and stamped
        for (const Item& it : live[i]) {
          bad[i] += !stamp_intact(it);
          small_live[i] += it.n <= 32768;  // big allocations are not zone chunks
        }
        in_use[i] = iso_verify();
        sync.arrive_and_wait();
        for (const Item& it : live[i]) free(it.p);
      });
    }
    for (auto& t : ts) t.join();
  }
  for (unsigned i = 0; i < kThreads; ++i) {
    EXPECT_EQ(bad[i], 0u) << "thread " << i;
    EXPECT_GE(in_use[i], small_live[i]) << "thread " << i << ": live chunks not accounted";
  }
  // Round 2 ran on the pooled shards of round 1: no shard was created for it.
  const iso_stats after_round2 = stats();
  EXPECT_EQ(after_round2.shards, after_round1.shards);
  // And the main thread's own heap is still sound.
  iso_verify();
}

// --- producer / consumer ---------------------------------------------------------------------

// A bounded single-producer single-consumer channel whose buffer is allocated once by its
// creator: the consumer thread never allocates through it.
class Channel {
 public:
  explicit Channel(std::size_t cap) : buf_(cap) {}
  void push(void* p) {
    std::unique_lock<std::mutex> lock(m_);
    cv_.wait(lock, [&] { return count_ < buf_.size(); });
    buf_[(head_ + count_++) % buf_.size()] = p;
    cv_.notify_all();
  }
  void* pop() {
    std::unique_lock<std::mutex> lock(m_);
    cv_.wait(lock, [&] { return count_ > 0; });
    void* p = buf_[head_];
    head_ = (head_ + 1) % buf_.size();
    --count_;
    cv_.notify_all();
    return p;
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  std::vector<void*> buf_;
  std::size_t head_ = 0, count_ = 0;
};

TEST(ProducerConsumer, ChunksFreedByANonAllocatingConsumerAllComeHome) {
  constexpr std::size_t kCount = 20000;
  Channel ch(256);
  Event consumer_gone;
  iso_stats start{}, end{};
  std::uint64_t in_use_before = 0, in_use_after = 0;

  std::thread producer([&] {
    bind_shard();  // bind, then measure
    start = stats();
    in_use_before = iso_verify();
    XorShift rng(7);
    for (std::size_t i = 0; i < kCount; ++i) {
      void* p = malloc(opaque(1 + rng.below(2000)));
      ASSERT_NE(p, nullptr);
      std::memset(p, 0x5c, 1);
      ch.push(p);
    }
    ch.push(nullptr);
    consumer_gone.wait();  // the consumer exited: its last partial batch went out then
    iso_flush();
    end = stats();
    in_use_after = iso_verify();
  });
  std::thread consumer([&] {
    // Only frees: its first allocator call is a free of someone else's chunk.
    while (void* p = ch.pop()) free(p);
  });
  consumer.join();
  consumer_gone.set();
  producer.join();

  EXPECT_GT(end.remote_frees_received, start.remote_frees_received);
  EXPECT_EQ(end.remote_frees_received - start.remote_frees_received, kCount)
      << "chunks freed by the consumer did not all reach their owner";
  EXPECT_EQ(end.remote_frees_sent, start.remote_frees_sent) << "the producer freed nothing remote";
  EXPECT_LE(in_use_after, in_use_before) << "freed chunks still counted in use by the owner";
}

TEST(ProducerConsumer, FullBatchesReachTheOwnerWhileTheConsumerLivesOn) {
  // The consumer neither exits nor calls iso_flush: every full batch (61 chunks) must have
  // been sent on its own, so at most one partial batch is still held back.
  constexpr std::size_t kCount = kRemoteBatchChunks * 100 + 17;
  Channel ch(256);
  Event consumed, checked;
  iso_stats start{}, mid{};

  std::thread producer([&] {
    bind_shard();
    start = stats();
    for (std::size_t i = 0; i < kCount; ++i) ch.push(malloc(opaque(std::size_t{48})));
    ch.push(nullptr);
    consumed.wait();
    iso_flush();
    mid = stats();
    checked.set();
  });
  std::thread consumer([&] {
    while (void* p = ch.pop()) free(p);
    consumed.set();
    checked.wait();  // stay alive (and unflushed) until the producer has looked
  });
  producer.join();
  consumer.join();
  std::uint64_t got = mid.remote_frees_received - start.remote_frees_received;
  EXPECT_GE(got, kCount - (kRemoteBatchChunks - 1)) << "full batches were held back";
  EXPECT_LE(got, kCount);
}

TEST(ProducerConsumer, PendingFreesAreSentWhenTheFreeingThreadAllocatesOnItsSlowPath) {
  // Fewer frees than a batch, then the consumer keeps running and allocates enough of a
  // class it never used to go through its allocation slow path several times. The pending
  // frees must have been sent by then (isoshard sends them on that path), without
  // iso_flush or thread exit.
  constexpr std::size_t kFew = 10;
  Channel ch(64);
  Event consumed, checked;
  iso_stats start{}, mid{};

  std::thread producer([&] {
    bind_shard();
    start = stats();
    for (std::size_t i = 0; i < kFew; ++i) ch.push(malloc(opaque(std::size_t{200})));
    ch.push(nullptr);
    consumed.wait();
    iso_flush();
    mid = stats();
    checked.set();
  });
  std::thread consumer([&] {
    while (void* p = ch.pop()) free(p);
    // A slow path hands out up to a cache of 64: 640 take at least ten, even from a pooled
    // shard whose zones and caches its last thread left full.
    std::vector<void*> mine;
    mine.reserve(640);
    for (int i = 0; i < 640; ++i) mine.push_back(malloc(opaque(std::size_t{30000})));
    consumed.set();
    checked.wait();
    for (void* p : mine) free(p);
  });
  producer.join();
  consumer.join();
  EXPECT_EQ(mid.remote_frees_received - start.remote_frees_received, kFew)
      << "frees held in the consumer's outbox past its allocation slow path";
}

TEST(ProducerConsumer, ManyConsumersOverflowingTheOwnersInboxLoseNothing) {
  // Seven threads free 61-chunk batches to one owner that does not drain meanwhile: more
  // batches than its bounded inbox holds, so the overflow list must carry the rest.
  constexpr unsigned kConsumers = 7;
  constexpr std::size_t kPerConsumer = kRemoteBatchChunks * 30;
  iso_stats start{}, end{};
  std::vector<std::vector<void*>> parts(kConsumers);
  Event allocated, freed;

  std::thread owner([&] {
    bind_shard();
    start = stats();
    for (auto& part : parts) {
      part.reserve(kPerConsumer);
      for (std::size_t i = 0; i < kPerConsumer; ++i) part.push_back(malloc(opaque(std::size_t{64})));
    }
    allocated.set();
    freed.wait();  // no allocation, no drain while the consumers send
    iso_flush();
    end = stats();
  });
  allocated.wait();
  std::vector<std::thread> consumers;
  for (unsigned c = 0; c < kConsumers; ++c)
    consumers.emplace_back([&, c] {
      for (void* p : parts[c]) free(p);
      iso_flush();
    });
  for (auto& t : consumers) t.join();
  freed.set();
  owner.join();

  EXPECT_EQ(end.remote_frees_received - start.remote_frees_received, kConsumers * kPerConsumer);
  EXPECT_GT(end.inbox_overflows, start.inbox_overflows)
      << "the bounded inbox never overflowed: the overflow path went untested";
}

}  // namespace
