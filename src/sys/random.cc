#include "xproc/sys/random.h"

#include <sys/random.h>

#include <cerrno>
#include <cstddef>

namespace xproc::sys {

Result<std::uint32_t> random_u32() noexcept {
  std::uint32_t value = 0;
  auto* bytes = reinterpret_cast<unsigned char*>(&value);
  std::size_t filled = 0;
  while (filled < sizeof(value)) {
    ssize_t got = getrandom(bytes + filled, sizeof(value) - filled, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      return std::error_code(errno, std::system_category());
    }
    filled += static_cast<std::size_t>(got);
  }
  return value;
}

}  // namespace xproc::sys
