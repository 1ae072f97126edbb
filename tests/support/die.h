#pragma once
// die(): the calling process SIGKILLs itself at once (crash injection in fork children: no
// destructor, atexit handler or stdio flush runs, exactly as for an external SIGKILL).

#include <signal.h>
#include <unistd.h>

namespace xproc::test {

[[noreturn]] inline void die() {
  raise(SIGKILL);
  for (;;) pause();  // never reached: SIGKILL cannot be blocked or caught
}

}  // namespace xproc::test
