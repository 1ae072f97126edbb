// Seed generator for the fuzz corpus: `xproc_fuzz_seeds <corpus-root>` writes real segments,
// channel regions, pool regions and transfer tables (and damaged variants) into
// <corpus-root>/<target>/ for each fuzz target, as files named seed-*.
// The committed corpus (tests/fuzz/corpus) is this program's output plus the fuzzer's minimized
// finds (named by their SHA-1, as libFuzzer writes them). docs/design/fuzzing.md, "Corpus", says
// how to regenerate.
//
// Seeds are built by the library itself (Segment::create_anonymous/create, channel::format,
// send/reserve/peek), so they follow the current layout; what varies: kind, participant
// capacity, body size, flags; channel capacity, max_message, spsc/redelivery, start position
// (wrap-around and padding), and records left reserved, committed, claimed and consumed; pool
// class layouts and buffers left loaned, posted and held.

#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include "seed_files.h"
#include "xproc/bulk/pool.h"
#include "xproc/channel/endpoint.h"
#include "xproc/shm/segment.h"
#include "xproc/shm/segment_header.h"

namespace {

namespace shm = xproc::shm;
namespace channel = xproc::channel;
using xproc::fuzz::Bytes;

using xproc::fuzz::fail;
using xproc::fuzz::write_seed;

Bytes file_bytes(int fd) {
  struct stat status {};
  if (::fstat(fd, &status) != 0) fail("fstat");
  Bytes bytes(static_cast<std::size_t>(status.st_size));
  if (::pread(fd, bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size())) {
    fail("pread");
  }
  return bytes;
}

template <class T>
void put(Bytes& bytes, std::size_t offset, T value) {
  if (offset + sizeof value <= bytes.size())
    std::memcpy(bytes.data() + offset, &value, sizeof value);
}

std::span<const std::byte> text(const char* s) {
  return std::as_bytes(std::span<const char>(s, std::strlen(s)));
}

// Sends and partly consumes messages; leaves `reserved` records reserved and `claimed` claimed
// (their handles are kept alive until the caller copied the region).
struct ChannelState {
  std::vector<channel::Reservation> reservations;
  std::vector<channel::Message> messages;
};

ChannelState fill(const channel::Endpoint& endpoint, int sent, int received, int claimed,
                  int reserved) {
  ChannelState state;
  for (int i = 0; i < sent; ++i) {
    const char* payloads[] = {"", "x", "hello, channel", "a somewhat longer message of 40 bytes.."};
    (void)endpoint.try_send(text(payloads[i % 4]));
  }
  for (int i = 0; i < received; ++i) {
    std::vector<std::byte> out;
    (void)endpoint.try_receive(out);
  }
  for (int i = 0; i < claimed; ++i) {
    auto message = endpoint.try_peek();
    if (message) state.messages.push_back(std::move(*message));
  }
  for (int i = 0; i < reserved; ++i) {
    auto reservation = endpoint.try_reserve(static_cast<std::size_t>(8 * i + 3));
    if (reservation) state.reservations.push_back(std::move(*reservation));
  }
  return state;
}

void segment_seeds(const std::filesystem::path& dir) {
  const shm::SegmentKind kinds[] = {shm::SegmentKind::raw, shm::SegmentKind::channel,
                                    shm::SegmentKind::pool, shm::SegmentKind::rpc};
  int index = 0;
  for (shm::SegmentKind kind : kinds) {
    for (std::uint32_t capacity : {1u, 4u}) {
      shm::SegmentOptions options;
      options.participant_capacity = capacity;
      const std::size_t body = kind == shm::SegmentKind::channel ? 1280 : 64u * capacity;
      shm::Segment::Init init = [kind](std::span<std::byte> region) -> std::error_code {
        if (kind != shm::SegmentKind::channel) return {};
        channel::ChannelConfig config;
        config.capacity_bytes = 256;
        config.max_message = 64;
        return channel::format(region, config);
      };
      auto segment = shm::Segment::create_anonymous(kind, body, options, init);
      if (!segment) fail("create_anonymous");
      if (kind == shm::SegmentKind::channel) {
        auto endpoint = channel::Endpoint::open(segment->body(), &segment->self());
        if (!endpoint) fail("Endpoint::open");
        ChannelState state = fill(*endpoint, 3, 1, 1, 1);
        write_seed(dir, "anon-channel-busy-" + std::to_string(capacity), file_bytes(segment->fd()));
      }
      Bytes bytes = file_bytes(segment->fd());
      const std::string stem = "anon-" + std::to_string(index++) + "-kind" +
                               std::to_string(static_cast<unsigned>(kind)) + "-cap" +
                               std::to_string(capacity);
      write_seed(dir, stem, bytes);
      if (capacity != 4) continue;
      // Damaged variants of one valid file each: the validation steps of segment.md.
      Bytes copy = bytes;
      copy.resize(shm::kHeaderSize);
      write_seed(dir, stem + "-header-only", copy);
      copy = bytes;
      copy.resize(bytes.size() - 1);
      write_seed(dir, stem + "-short", copy);
      copy = bytes;
      put<std::uint32_t>(copy, 80, 0);  // ready: never published
      write_seed(dir, stem + "-unready", copy);
      copy = bytes;
      put<std::uint32_t>(copy, 80, 1);  // ready: initializing with a sleeper
      write_seed(dir, stem + "-sleeper", copy);
      copy = bytes;
      put<std::uint64_t>(copy, 40, std::uint64_t{1} << 39);  // body_size beyond the file
      write_seed(dir, stem + "-huge-body", copy);
      copy = bytes;
      put<std::uint32_t>(copy, 56, 4096);  // capacity that disagrees with the table
      write_seed(dir, stem + "-capacity", copy);
      copy = bytes;
      put<std::uint32_t>(copy, 128 + 8, 4096);  // the table's own capacity
      write_seed(dir, stem + "-table-capacity", copy);
      copy = bytes;
      put<std::uint32_t>(copy, 20, 0x80u);  // an unknown flag
      write_seed(dir, stem + "-flags", copy);
      copy = bytes;
      put<std::uint32_t>(copy, 128 + 16, 0xffffffffu);  // slot 0 generation at its maximum
      write_seed(dir, stem + "-generation", copy);
    }
  }
  // A named segment's file (no anonymous flag; unlink-when-last-detaches set).
  shm::SegmentOptions options;
  options.unlink_when_last_detaches = true;
  options.participant_capacity = 2;
  const std::string name = "fuzz-seed-" + std::to_string(::getpid());
  auto segment = shm::Segment::create(name, shm::SegmentKind::raw, 100, options);
  if (!segment) fail("create");
  write_seed(dir, "named-raw", file_bytes(segment->fd()));
  (void)segment->unlink();
}

void channel_seeds(const std::filesystem::path& dir, const xproc::sync::Participant* self) {
  struct Case {
    const char* name;
    channel::ChannelConfig config;
    int sent, received, claimed, reserved;
  };
  const std::uint64_t wrap = (std::uint64_t{1} << 32) - 32;  // the check bits wrap here too
  const Case cases[] = {
      {"empty", {256, 64, false, false, 0}, 0, 0, 0, 0},
      {"three", {256, 64, false, false, 0}, 3, 0, 0, 0},
      {"received", {256, 64, false, false, 0}, 4, 2, 0, 0},
      {"claimed", {256, 64, false, false, 0}, 4, 1, 1, 0},
      {"reserved", {256, 64, false, false, 0}, 2, 0, 0, 2},
      {"mixed", {512, 100, false, false, 0}, 5, 1, 1, 1},
      {"full", {256, 64, false, false, 0}, 20, 0, 0, 0},
      {"spsc", {256, 64, true, false, 0}, 3, 1, 1, 1},
      {"redelivery", {256, 64, false, true, 0}, 4, 0, 2, 0},
      {"wrap-padding", {256, 64, false, false, 256 - 32}, 3, 1, 0, 0},
      {"wrap-2e32", {256, 64, false, false, wrap}, 4, 2, 1, 1},
      {"large", {1024, 512, false, false, 0}, 6, 2, 1, 1},
      {"roles", {512, 64, false, false, 0, 8}, 4, 2, 1, 0},
  };
  // Op scripts (see channel_region_fuzz.cc: low nibble = operation, high nibble = size / 9).
  const Bytes scripts[] = {
      {},
      {0x05, 0x0a, 0x10, 0x23, 0x07, 0x0f, 0x0c, 0x09},
      {0x30, 0x31, 0x42, 0x14, 0x0b, 0x06, 0x08, 0x0c, 0x0d, 0xf0, 0x0a, 0x05},
      // held handles, two endpoints (mode bit 6): odd ops on the second one
      {0x3d, 0x10, 0x05, 0x0e, 0x20, 0x0f, 0x0b, 0x07, 0x2d, 0x0e, 0x0c, 0x0f},
      // a peer's writes between ops: tail (offset 136), head (264), a record's size (1032)
      {0x10, 0x10, 0x8c, 17, 0x40, 0x05, 0x0f, 0x8c, 33, 0x30, 0x05, 0x0c, 0x10, 0x8c, 129, 0xff,
       0x07, 0x0f},
  };
  for (const Case& c : cases) {
    const std::size_t size = channel::region_size_for(c.config);
    if (size == 0) fail("region_size_for");
    for (bool with_self : {false, true}) {
      void* memory = ::operator new (size, std::align_val_t{64});
      std::memset(memory, 0, size);
      std::span<std::byte> region(static_cast<std::byte*>(memory), size);
      if (channel::format(region, c.config)) fail("format");
      {
        auto endpoint = channel::Endpoint::open(region, with_self ? self : nullptr);
        if (!endpoint) fail("Endpoint::open");
        ChannelState state = fill(*endpoint, c.sent, c.received, c.claimed, c.reserved);
        const auto* raw = static_cast<const std::uint8_t*>(memory);
        for (std::size_t s = 0; s < std::size(scripts); ++s) {
          if (!with_self && s == 2) continue;
          Bytes input;
          input.push_back(static_cast<std::uint8_t>((with_self ? 0x80u : 0u) |
                                                    (s == 3 ? 0x40u : 0u) | scripts[s].size()));
          input.insert(input.end(), scripts[s].begin(), scripts[s].end());
          input.insert(input.end(), raw, raw + size);
          write_seed(
              dir,
              std::string(c.name) + (with_self ? "-self" : "-local") + "-ops" + std::to_string(s),
              input);
        }
      }  // handles released/abandoned before the memory goes
      ::operator delete (memory, std::align_val_t{64});
    }
  }
}

// Pool regions: a few class layouts, buffers left free, loaned, posted and held (by the seed
// generator's second participant: a dead owner for the harness, or the local owner).
void pool_seeds(const std::filesystem::path& dir, const xproc::sync::Participant* self) {
  namespace bulk = xproc::bulk;
  struct Case {
    const char* name;
    std::vector<bulk::SizeClass> classes;
    int loaned, posted, held;
  };
  const Case cases[] = {
      {"one-class", {{64, 4}}, 0, 0, 0},
      {"busy", {{64, 4}}, 1, 1, 1},
      {"two-classes", {{256, 2}, {4096, 2}}, 1, 1, 0},
      {"three-classes", {{64, 3}, {1024, 2}, {8192, 1}}, 2, 1, 1},
      {"exhausted", {{128, 2}}, 1, 1, 0},
  };
  // Op scripts (see pool_region_fuzz.cc: low 3 bits = operation, bit 3 = slot, high nibble = arg).
  const Bytes scripts[] = {
      {},
      {0x10, 0x01, 0x02, 0x02, 0x07, 0x05, 0x06, 0x07},
      {0x20, 0x28, 0x01, 0x09, 0x33, 0x0a, 0x84, 0x02, 0x0d, 0x06, 0x07},
      // a peer's writes between ops: the first state word (offset 1024 + 7: its state byte)
      {0x10, 0x01, 0xff, 0x04, 0x07, 0x07, 0x02, 0x06, 0xff, 0x04, 0x07, 0x03, 0x06, 0x07},
  };
  for (const Case& c : cases) {
    bulk::PoolConfig config;
    config.classes = c.classes;
    const std::size_t size = bulk::region_size_for(config);
    if (size == 0) fail("pool region_size_for");
    for (bool with_self : {false, true}) {
      void* memory = ::operator new (size, std::align_val_t{4096});
      std::memset(memory, 0, size);
      std::span<std::byte> region(static_cast<std::byte*>(memory), size);
      if (bulk::format(region, config)) fail("pool format");
      {
        auto pool = bulk::PoolView::open(region, with_self ? self : nullptr);
        if (!pool) fail("PoolView::open");
        std::vector<bulk::Loan> loans;
        std::vector<bulk::Held> helds;
        for (int i = 0; i < c.posted + c.held; ++i) {
          auto loan = pool->try_loan(static_cast<std::size_t>(10 + i));
          if (!loan) fail("pool try_loan");
          auto descriptor = pool->post(std::move(*loan));
          if (!descriptor) fail("pool post");
          if (i >= c.posted) {
            auto held = pool->accept(*descriptor);
            if (!held) fail("pool accept");
            helds.push_back(std::move(*held));
          }
        }
        for (int i = 0; i < c.loaned; ++i) {
          auto loan = pool->try_loan(static_cast<std::size_t>(20 + i));
          if (!loan) fail("pool try_loan");
          loans.push_back(std::move(*loan));
        }
        const auto* raw = static_cast<const std::uint8_t*>(memory);
        for (std::size_t s = 0; s < std::size(scripts); ++s) {
          Bytes input;
          input.push_back(static_cast<std::uint8_t>((with_self ? 0x80u : 0u) | scripts[s].size()));
          input.insert(input.end(), scripts[s].begin(), scripts[s].end());
          input.insert(input.end(), raw, raw + size);
          write_seed(
              dir,
              std::string(c.name) + (with_self ? "-self" : "-local") + "-ops" + std::to_string(s),
              input);
        }
      }  // loans and helds given back before the memory goes
      ::operator delete (memory, std::align_val_t{4096});
    }
  }
}

}  // namespace

// make_seeds_transfer.cc
void transfer_seeds(const std::filesystem::path& dir);

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus-root>\n", argv[0]);
    return 2;
  }
  const std::filesystem::path root(argv[1]);
  std::filesystem::create_directories(root / "segment_open_fuzz");
  std::filesystem::create_directories(root / "channel_region_fuzz");
  std::filesystem::create_directories(root / "pool_region_fuzz");
  std::filesystem::create_directories(root / "transfer_table_fuzz");
  segment_seeds(root / "segment_open_fuzz");
  // Owner ids in the channel seeds: slot 1 of a private table (slot 0 is the creator's), so that
  // the fuzz harness, whose own id is slot 0's, sees them as dead peers' ids.
  shm::SegmentOptions options;
  options.participant_capacity = 8;
  auto host = shm::Segment::create_anonymous(shm::SegmentKind::raw, 64, options);
  if (!host) fail("create_anonymous");
  auto second = xproc::sync::Participant::attach(host->participants(), host->fd(),
                                                 static_cast<off_t>(shm::kParticipantLockBase));
  if (!second) fail("attach");
  channel_seeds(root / "channel_region_fuzz", &*second);
  pool_seeds(root / "pool_region_fuzz", &*second);
  transfer_seeds(root / "transfer_table_fuzz");
  std::printf("xproc_fuzz_seeds: wrote seeds under %s\n", argv[1]);
  return 0;
}
