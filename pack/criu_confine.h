// SPDX-License-Identifier: Apache-2.0
// A gateway's confinement in a sink, written into its CRIU images, and taken out again at
// home. CRIU restores each thread's credentials and seccomp filters from the images, so
// the sink lowers them there before its restore: the capabilities no gateway uses in a
// sink leave all four sets, and a seccomp filter of the sink's goes on top of the
// thread's own. At home the guest puts back what it dumped (its record, never the sink's
// word): those capabilities and the seccomp state of each thread.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "common/result.h"
#include "pack/criu_images.h"

namespace seamless::packfmt::criu_images {

// CAP_LINUX_IMMUTABLE, NET_ADMIN, NET_RAW, IPC_OWNER, SYS_MODULE, SYS_RAWIO, SYS_PTRACE,
// SYS_PACCT, SYS_ADMIN, SYS_BOOT, SYS_TIME, SYS_TTY_CONFIG, MKNOD, AUDIT_CONTROL, SETFCAP,
// MAC_OVERRIDE, MAC_ADMIN, SYSLOG, WAKE_ALARM, BLOCK_SUSPEND, AUDIT_READ, PERFMON, BPF,
// CHECKPOINT_RESTORE: what would reach past a container (devices, modules, mounts, other
// processes, the clock, the kernel's log and audit, BPF), none of it a gateway's work
// while it waits for a client.
inline constexpr uint64_t kSinkDroppedCaps =
    (uint64_t(1) << 9) | (uint64_t(1) << 12) | (uint64_t(1) << 13) | (uint64_t(1) << 15) | (uint64_t(1) << 16) |
    (uint64_t(1) << 17) | (uint64_t(1) << 19) | (uint64_t(1) << 20) | (uint64_t(1) << 21) | (uint64_t(1) << 22) |
    (uint64_t(1) << 25) | (uint64_t(1) << 26) | (uint64_t(1) << 27) | (uint64_t(1) << 30) | (uint64_t(1) << 31) |
    (uint64_t(1) << 32) | (uint64_t(1) << 33) | (uint64_t(1) << 34) | (uint64_t(1) << 35) | (uint64_t(1) << 36) |
    (uint64_t(1) << 37) | (uint64_t(1) << 38) | (uint64_t(1) << 39) | (uint64_t(1) << 40);

// In the sink, before the restore: every thread of the dump in `dir` (pstree.img) loses
// kSinkDroppedCaps from its inheritable, permitted, effective and bounding sets, and gets
// `filter` (classic BPF instructions, struct sock_filter[]) as its newest seccomp filter,
// above those it had (a thread in strict mode keeps it: it is narrower). seccomp.img is
// rewritten with the thread's own filters first, as they were. Err on a malformed image.
Result<void> confine(const std::string& dir, std::string_view filter);

// In the guest, on a hand-back already checked against the dump (check_handed_back):
// every thread's kSinkDroppedCaps bits and its seccomp state (mode and filters) become
// what `dumped` (the guest's own record) says; the rest of its credentials stay as the
// hand-back has them. Err on a thread the record lacks or a malformed image.
Result<void> restore_as_dumped(const std::string& dir, const std::map<uint32_t, TaskIdentity>& dumped);

}  // namespace seamless::packfmt::criu_images
