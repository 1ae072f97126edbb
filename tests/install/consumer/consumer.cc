// A program that uses xproc only through its installed headers and libraries.
#include <cstdio>

#include "xproc/sys/error.h"
#include "xproc/sys/futex.h"

int main() {
  std::atomic<std::uint32_t> word{1};
  auto result = xproc::sys::futex_wait(word, 0, xproc::sys::FutexScope::process_private);
  if (result != xproc::errc::would_block) {
    std::fprintf(stderr, "consumer: unexpected futex_wait result: %s\n", result.message().c_str());
    return 1;
  }
  std::printf("consumer: xproc linked and working (%s)\n", result.message().c_str());
  return 0;
}
