// A main() for fuzz targets built without libFuzzer (g++ builds, the release and ASan CI): runs
// LLVMFuzzerTestOneInput once over every file named on the command line, or over every regular
// file of a named directory (sorted, not recursive). Exit status 0 when every input ran (a
// finding aborts the process, as under libFuzzer); 2 for a usage or I/O error, or no input.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

bool run_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "fuzz-replay: cannot read %s\n", path.c_str());
    return false;
  }
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::uint8_t> input(bytes.begin(), bytes.end());
  (void)LLVMFuzzerTestOneInput(input.data(), input.size());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s <file-or-directory>...\n", argv[0]);
    return 2;
  }
  std::size_t count = 0;
  for (int i = 1; i < argc; ++i) {
    const std::filesystem::path arg(argv[i]);
    std::error_code error;
    std::vector<std::filesystem::path> files;
    if (std::filesystem::is_directory(arg, error)) {
      for (const auto& entry : std::filesystem::directory_iterator(arg, error)) {
        if (entry.is_regular_file()) files.push_back(entry.path());
      }
      std::sort(files.begin(), files.end());
    } else {
      files.push_back(arg);
    }
    if (error) {
      std::fprintf(stderr, "fuzz-replay: %s: %s\n", argv[i], error.message().c_str());
      return 2;
    }
    for (const auto& file : files) {
      if (!run_file(file)) return 2;
      ++count;
    }
  }
  std::printf("fuzz-replay: %zu inputs ran\n", count);
  return count == 0 ? 2 : 0;
}
