// SPDX-License-Identifier: Apache-2.0
// Lifecycle hook actions.
#include "hooks/hook.h"

#include <filesystem>

#include "common/sys.h"
#include "hooks/cgroup.h"
#include "qmp/json.h"
#include "qmp/socket.h"

namespace seamless::hook {
namespace {

bool valid_domain_name(const std::string& name) {
  return !name.empty() && name.find('/') == std::string::npos && name != "." && name != "..";
}

Result<void> prepare_cgroup(const std::string& domain, const Env& env) {
  pid_t pid = SL_TRY(cgroup::qemu_pid(domain, env.libvirt_run_dir));
  auto group = SL_TRY(cgroup::for_pid(pid, env.proc));
  std::unique_ptr<cgroup::Knobs> knobs =
      env.file_knobs ? cgroup::file_knobs(group) : SL_TRY(cgroup::libcgroup_knobs(group));
  if (group.version == cgroup::Version::V1) {
    if (knobs->has("memory.memsw.limit_in_bytes")) SL_TRY(knobs->write("memory.memsw.limit_in_bytes", "-1"));
    if (knobs->has("memory.swappiness")) SL_TRY(knobs->write("memory.swappiness", std::to_string(env.swappiness)));
  } else if (knobs->has("memory.swap.max")) {
    SL_TRY(knobs->write("memory.swap.max", "max"));
  }
  return ok();
}

}  // namespace

Result<void> handle(const std::vector<std::string>& args, const Env& env) {
  if (args.size() < 2) return make_error(ErrorKind::Invalid, "usage: 50-seamless DOMAIN OPERATION [SUB-OP [EXTRA]]");
  const std::string& domain = args[0];
  const std::string& op = args[1];
  if (!valid_domain_name(domain)) return make_error(ErrorKind::Invalid, "invalid domain name `", domain, "`");
  if (is_notice(op)) {
    auto n = notify(domain, op, env);
    if (!n.ok()) return n;
  }
  if (op == "started") return prepare_cgroup(domain, env).wrap(cat("preparing the memory cgroup of `", domain, "`"));
  if (op == "release") {
    std::error_code ec;
    std::filesystem::remove(env.state_dir + "/" + domain + ".json", ec);
    if (ec) return make_error(ErrorKind::System, "forgetting `", domain, "`: ", ec.message());
    return ok();
  }
  return ok();  // prepare, start, stopped, migrate, restore, reconnect, attach: nothing to do yet
}

bool is_notice(const std::string& op) { return op == "stopped" || op == "release" || op == "reconnect"; }

Result<void> notify(const std::string& domain, const std::string& op, const Env& env) {
  qmp::ArgWriter w;
  const std::string args = w.str("domain", domain).str("operation", op).finish();
  auto c = qmp::QmpSocket::connect(env.controller_socket, env.notify_timeout);
  if (c.ok() && (*c)->call("hook", args, env.notify_timeout).ok()) return ok();
  // seamlessd is down or busy: the notice waits for it (it reads the spool when it starts).
  std::error_code ec;
  std::filesystem::create_directories(env.spool_dir, ec);
  if (ec) return make_error(ErrorKind::System, "spool `", env.spool_dir, "`: ", ec.message());
  return sys::write_file(cat(env.spool_dir, "/", domain, ".", op), args, 0600);
}

Result<void> check_migration(const std::string& domain, const std::string& xml) {
  if (xml.find("https://seamless.dev/xmlns/park/1") != std::string::npos)
    return make_error(ErrorKind::Invalid, "domain `", domain,
                      "` is parked by seamless (its services run in a sink on this host): wake it first "
                      "(virsh-wake ",
                      domain, ")");
  return ok();
}

}  // namespace seamless::hook
