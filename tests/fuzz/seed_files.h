#pragma once
// What xproc_fuzz_seeds' files share (make_seeds.cc, make_seeds_transfer.cc): writing one seed
// file, and giving up with a message.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace xproc::fuzz {

using Bytes = std::vector<std::uint8_t>;

[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "xproc_fuzz_seeds: %s\n", what);
  std::exit(1);
}

// Writes <dir>/seed-<name>.
inline void write_seed(const std::filesystem::path& dir, const std::string& name,
                       const Bytes& bytes) {
  std::ofstream out(dir / ("seed-" + name), std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  if (!out) fail("cannot write a seed");
}

}  // namespace xproc::fuzz
