#pragma once
// Readable names for RwPolicy test parameters (AllPolicies/Suite.Test/phase_fair).

#include <gtest/gtest.h>

#include <string>

#include "xproc/sync/rw_lock.h"

namespace xproc::test {

inline std::string rw_policy_name(const ::testing::TestParamInfo<sync::RwPolicy>& info) {
  switch (info.param) {
    case sync::RwPolicy::prefer_reader:
      return "prefer_reader";
    case sync::RwPolicy::prefer_writer:
      return "prefer_writer";
    case sync::RwPolicy::phase_fair:
      return "phase_fair";
  }
  return "unknown";
}

inline const auto kAllRwPolicies = ::testing::Values(
    sync::RwPolicy::prefer_reader, sync::RwPolicy::prefer_writer, sync::RwPolicy::phase_fair);

}  // namespace xproc::test
