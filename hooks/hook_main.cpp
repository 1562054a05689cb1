// SPDX-License-Identifier: Apache-2.0
// 50-seamless: the libvirt qemu hook executable. Always exits 0 so that a seamless
// problem never stops a domain from starting; problems go to stderr (libvirtd's log).
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "hooks/hook.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  seamless::hook::Env env;
  if (const char* d = std::getenv("SEAMLESS_STATE_DIR")) env.state_dir = d;
  auto r = seamless::hook::handle(args, env);
  if (!r.ok()) std::fprintf(stderr, "seamless hook: %s\n", r.error().message.c_str());
  return 0;
}
