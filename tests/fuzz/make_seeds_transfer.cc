// Seeds of transfer_table_fuzz for xproc_fuzz_seeds (make_seeds.cc): transfer tables built by the
// library itself.

#include <sys/uio.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include "seed_files.h"
#include "xproc/bulk/transfer.h"
#include "xproc/shm/segment.h"

namespace {

namespace shm = xproc::shm;
using xproc::fuzz::Bytes;

using xproc::fuzz::fail;
using xproc::fuzz::write_seed;

}  // namespace

// Transfer tables (bodies of 4-participant segments, as transfer_table_fuzz.cc creates): 1, 2 and 8
// slots, transfers left open, completed and withdrawn, scattered ranges.
void transfer_seeds(const std::filesystem::path& dir) {
  namespace bulk = xproc::bulk;
  // Op scripts (see transfer_table_fuzz.cc: low 3 bits = operation, bit 3 = slot, high nibble =
  // argument).
  const Bytes scripts[] = {
      {},
      {0x30, 0x02, 0x02, 0x16, 0x07, 0x17, 0x31, 0x3a, 0x05, 0x0e},
      {0x20, 0x23, 0x33, 0x43, 0x53, 0x63, 0x73, 0x83, 0x14, 0x24, 0x05, 0x02},
  };
  std::vector<std::byte> memory(1 << 16, std::byte{0x11});
  for (std::uint32_t slots : {1u, 2u, 8u}) {
    for (int busy = 0; busy < 2; ++busy) {
      shm::SegmentOptions options;
      options.participant_capacity = 4;
      bulk::TransferTableOptions table{slots};
      auto segment =
          shm::Segment::create_anonymous(shm::SegmentKind::raw, bulk::transfer_table_size(table, 4),
                                         options, bulk::transfer_table_init(table, 4));
      if (!segment) fail("transfer segment");
      auto endpoint = bulk::TransferEndpoint::open(*segment);
      if (!endpoint) fail("TransferEndpoint::open");
      std::vector<bulk::Transfer> kept;
      if (busy != 0) {
        for (std::uint32_t i = 0; i < slots && i < 3; ++i) {
          iovec ranges[2] = {{memory.data(), 100u + i}, {memory.data() + 4096, 7}};
          auto transfer = endpoint->register_source(std::span<const iovec>(ranges));
          if (!transfer) fail("register_source");
          if (i == 1) {
            std::vector<std::byte> into(200);
            if (!endpoint->pull(transfer->descriptor(), std::span<std::byte>(into))) fail("pull");
          }
          kept.push_back(std::move(*transfer));
        }
      }
      const std::span<const std::byte> body = segment->body();
      const auto* raw = reinterpret_cast<const std::uint8_t*>(body.data());
      for (std::size_t s = 0; s < std::size(scripts); ++s) {
        Bytes input;
        input.push_back(static_cast<std::uint8_t>(scripts[s].size()));
        input.insert(input.end(), scripts[s].begin(), scripts[s].end());
        input.insert(input.end(), raw, raw + body.size());
        write_seed(dir,
                   "slots" + std::to_string(slots) + (busy != 0 ? "-busy" : "-idle") + "-ops" +
                       std::to_string(s),
                   input);
      }
    }  // transfers withdrawn or retired before the endpoint goes
  }
}
