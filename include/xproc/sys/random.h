#pragma once
// Random numbers from the kernel (getrandom), for identifiers that must differ between objects
// created independently (the participant table's tag).
// Thread- and process-safe; never blocks once the kernel's pool is initialized (early boot only).

#include <cstdint>

#include "xproc/sys/result.h"

namespace xproc::sys {

// 32 random bits from the kernel's CSPRNG. EINTR is retried; other failures are returned.
Result<std::uint32_t> random_u32() noexcept;

}  // namespace xproc::sys
