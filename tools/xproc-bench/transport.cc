#include "transport.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <new>
#include <stdexcept>
#include <system_error>
#include <utility>

namespace xproc::bench {
namespace {

struct Entry {
  int rank;
  std::function<std::unique_ptr<Transport>()> factory;
};

std::vector<Entry>& registry() {
  static std::vector<Entry> entries;
  return entries;
}

}  // namespace

TransportRegistration::TransportRegistration(int rank,
                                             std::function<std::unique_ptr<Transport>()> factory) {
  registry().push_back({rank, std::move(factory)});
}

std::vector<std::unique_ptr<Transport>> make_registered_transports() {
  std::vector<Entry> entries = registry();
  std::stable_sort(entries.begin(), entries.end(),
                   [](const Entry& a, const Entry& b) { return a.rank < b.rank; });
  std::vector<std::unique_ptr<Transport>> transports;
  for (auto& entry : entries) transports.push_back(entry.factory());
  return transports;
}

void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

void write_all(int fd, const std::byte* data, std::size_t size) {
  while (size > 0) {
    ssize_t written = ::write(fd, data, size);
    if (written < 0) {
      if (errno == EINTR) continue;
      throw_errno("write");
    }
    data += written;
    size -= static_cast<std::size_t>(written);
  }
}

void read_all(int fd, std::byte* data, std::size_t size) {
  while (size > 0) {
    ssize_t got = ::read(fd, data, size);
    if (got < 0) {
      if (errno == EINTR) continue;
      throw_errno("read");
    }
    if (got == 0) throw std::runtime_error("read: end of file (peer closed)");
    data += got;
    size -= static_cast<std::size_t>(got);
  }
}

SharedMapping::SharedMapping(std::size_t size) : size_(size) {
  data_ = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (data_ == MAP_FAILED) throw_errno("mmap shared");
}

SharedMapping::~SharedMapping() {
  munmap(data_, size_);
}

}  // namespace xproc::bench
