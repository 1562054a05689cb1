// SPDX-License-Identifier: Apache-2.0
// 50-seamless: the libvirt qemu hook executable. Exits 0 so that a seamless problem
// never stops a domain from starting (problems go to stderr, libvirtd's log), with one
// exception: the migration of a parked domain is refused (exit 1, libvirt shows why).
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "hooks/hook.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  seamless::hook::Env env;
  if (const char* d = std::getenv("SEAMLESS_STATE_DIR")) env.state_dir = d;
  if (const char* d = std::getenv("SEAMLESS_SOCKET")) env.controller_socket = d;
  if (args.size() >= 2 && args[1] == "migrate") {
    // libvirt writes the domain XML to our stdin for this operation.
    std::string xml((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    if (auto m = seamless::hook::check_migration(args[0], xml); !m.ok()) {
      std::fprintf(stderr, "%s\n", m.error().message.c_str());
      return 1;
    }
  }
  auto r = seamless::hook::handle(args, env);
  if (!r.ok()) std::fprintf(stderr, "seamless hook: %s\n", r.error().message.c_str());
  return 0;
}
