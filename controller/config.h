// SPDX-License-Identifier: Apache-2.0
// /etc/seamless/seamless.conf: the sinks and the defaults of park and wake.
//   # comment
//   sink NAME            a sink VM (libvirt domain; its channel socket comes from its XML)
//   mode swap|ram|disk   default park mode (swap)
//   margin-mib N         memory left to the parked guest above its use (48)
//   throttle-mib N       QEMU's cgroup limit while swapping out (10)
//   prefetch-timeout S   seconds the prewarm may take (300)
//   prefetch-room-mib N  memory given back to the guest for the prewarm, taken after (256)
//   dump-attempts N      dumps tried when user activity aborts one (5)
//   auto-wake yes|no     wake on the sink's ACTIVITY event (yes)
//   wake-sink-first yes|no
//                        while the sink hands a gateway back, the waking VM runs at the
//                        lowest CPU weight, its own again once the hand-back is done (no:
//                        measured slower on a 2-core TCG host, see the README)
//   wake-deflate-early yes|no
//                        a waking swap-mode VM's balloon gives all its memory back while
//                        the sink hands the gateway back, not only room for the restore
//                        with the rest after the wake (no: the guest's deflation slowed
//                        the hand-back on a 2-core TCG host, see the README)
//   wake-room-mib N      memory a waking swap-mode VM gets back before its gateway's
//                        restore runs (256; the rest comes after the wake)
//   socket PATH          seamlessd's control socket (/run/seamless/seamlessd.sock)
//   connect URI          libvirt URI (qemu:///system)
#pragma once

#include <string>
#include <vector>

#include "common/result.h"
#include "common/time.h"
#include "hooks/suspend.h"

namespace seamless::ctl {

inline constexpr const char* kDefaultConfig = "/etc/seamless/seamless.conf";
inline constexpr const char* kDefaultSocket = "/run/seamless/seamlessd.sock";

struct Config {
  std::vector<std::string> sinks;
  std::string mode = "swap";
  int64_t margin_mib = 48;
  int64_t throttle_mib = 10;
  Millis prefetch_timeout = Millis(300000);
  int64_t prefetch_room_mib = 256;
  int dump_attempts = 5;
  bool auto_wake = true;
  bool wake_sink_first = false;
  bool wake_deflate_early = false;
  int64_t wake_room_mib = suspend::kResumeRoomBytes >> 20;
  std::string socket = kDefaultSocket;
  std::string uri = "qemu:///system";
};

// Errors name the file and line.
Result<Config> parse_config(const std::string& text, const std::string& origin);
Result<Config> load_config(const std::string& path);

}  // namespace seamless::ctl
