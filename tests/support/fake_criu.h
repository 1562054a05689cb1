// SPDX-License-Identifier: Apache-2.0
// A fake at the CRIU boundary: a dump writes the images that say who it dumped (pstree,
// the root task's core with root's credentials), a restore needs one; both are recorded,
// and a dump or restore fails on request.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "common/sys.h"
#include "guest-agent/criu.h"
#include "tests/support/criu_writer.h"

namespace seamless::guest {

struct FakeCriu : Criu {
  std::vector<pid_t> dumped;
  std::vector<std::string> restored;               // image dirs
  std::vector<bool> restored_stopped;              // leave_stopped of each restore
  std::vector<bool> restored_in_place;             // keep_cgroup of each restore
  std::vector<std::vector<std::string>> wrappers;  // of each restore
  std::vector<uint64_t> external_unix;             // of the last dump
  bool external_datagrams = false;                 // of the last dump
  std::vector<std::string> inherited;              // keys of the last restore
  std::string write_to_inherited;                  // written into each inherited fd on restore
  pid_t fail_dump_of = 0;
  std::string fail_restore_of;  // image dir
  std::string failure = "criu dump failed: Error (test)";
  Result<void> dump(const DumpRequest& req) override {
    if (req.root == fail_dump_of) return make_error(ErrorKind::Remote, failure);
    dumped.push_back(req.root);
    external_unix = req.external_unix;
    external_datagrams = req.external_datagrams;
    using test::criu_writer::bytes, test::criu_writer::image, test::criu_writer::num;
    std::string creds;
    for (uint32_t f = 1; f <= 8; ++f) creds += num(f, 0);
    for (uint32_t f = 9; f <= 12; ++f) creds += num(f, 0xffffffff) + num(f, 0x1ff);
    creds += num(13, 0);
    const uint64_t pid = uint64_t(req.root);
    SL_TRY(sys::write_file(req.images + "/pstree.img",
                           image(0x50273030, {num(1, pid) + num(2, 1) + num(3, pid) + num(4, pid) + num(5, pid)})));
    return sys::write_file(req.images + "/core-" + std::to_string(req.root) + ".img",
                           image(0x54545454, {num(1, 1) + bytes(5, num(1, 0) + num(2, 24) + bytes(10, creds))}));
  }
  Result<pid_t> restore(const RestoreRequest& req) override {
    if (req.images == fail_restore_of) return make_error(ErrorKind::Remote, "criu restore failed: Error (test)");
    std::error_code ec;
    auto img = std::filesystem::directory_iterator(req.images, ec);
    if (ec || img == std::filesystem::directory_iterator())
      return make_error(ErrorKind::Remote, "no images in `", req.images, "`");
    restored.push_back(req.images);
    restored_stopped.push_back(req.leave_stopped);
    restored_in_place.push_back(req.keep_cgroup);
    wrappers.push_back(req.wrapper);
    inherited.clear();
    for (const auto& i : req.inherit) {
      if (::fcntl(i.fd, F_GETFD) != 0) return make_error(ErrorKind::Remote, "fd ", i.fd, " is not inheritable");
      inherited.push_back(i.key);
      if (!write_to_inherited.empty()) (void)!::write(i.fd, write_to_inherited.data(), write_to_inherited.size());
    }
    // CRIU keeps pids: the restored root is the first of the tree (4242 when none is named).
    return req.pids.empty() ? 4242 : req.pids.front();
  }
  Result<std::string> version() override { return std::string("3.17.1"); }
};

}  // namespace seamless::guest
