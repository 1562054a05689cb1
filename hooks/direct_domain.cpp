// SPDX-License-Identifier: Apache-2.0
// DirectDomain: plain QEMU behind the suspend engine.
#include "hooks/direct_domain.h"

#include <signal.h>

#include <filesystem>
#include <sstream>
#include <thread>

#include "common/process.h"
#include "common/sys.h"

namespace seamless::suspend {
namespace {

std::string state_file(const std::string& dir, const std::string& name) { return dir + "/" + name + ".state"; }
std::string launch_file(const std::string& dir, const std::string& name) { return dir + "/" + name + ".launch.json"; }

Result<std::vector<std::string>> cmdline_of(pid_t pid) {
  auto argv = sys::split_nul(SL_TRY(sys::read_file(cat("/proc/", pid, "/cmdline"))));
  if (argv.empty()) return make_error(ErrorKind::Protocol, "empty command line of process ", pid);
  return argv;
}

// Exited, or a zombie its parent has not reaped yet (QEMU may be the caller's child).
bool gone(pid_t pid) {
  if (::kill(pid, 0) != 0) return true;
  auto stat = sys::read_file(cat("/proc/", pid, "/stat"));
  if (!stat.ok()) return true;
  auto paren = stat->rfind(')');
  return paren != std::string::npos && paren + 2 < stat->size() && (*stat)[paren + 2] == 'Z';
}

// The monitor of a domain whose QEMU was saved to disk and has exited.
class Offline final : public qmp::Channel {
 public:
  explicit Offline(std::string name) : name_(std::move(name)) {}
  Result<qmp::Json> call(std::string_view command, std::string_view, Millis) override {
    return make_error(ErrorKind::Closed, "`", name_, "` is saved to disk and its QEMU has exited (", command,
                      " needs it running: resume it first)");
  }
  std::string describe() const override { return cat("offline QEMU of `", name_, "`"); }

 private:
  std::string name_;
};

// The guest agent, connected (and synced) on first use: a paused guest cannot answer
// guest-sync, and resuming a VM parked in RAM must not need its agent.
class LazyAgent final : public qmp::Channel {
 public:
  explicit LazyAgent(std::string path) : path_(std::move(path)) {}
  Result<qmp::Json> call(std::string_view command, std::string_view args, Millis timeout) override {
    if (!qga_) qga_ = SL_TRY(qmp::QgaSocket::connect(path_, timeout));
    return qga_->call(command, args, timeout);
  }
  std::string describe() const override { return cat("guest agent `", path_, "`"); }

 private:
  std::string path_;
  std::unique_ptr<qmp::QgaSocket> qga_;
};

}  // namespace

Result<std::unique_ptr<DirectDomain>> DirectDomain::open(const std::string& qmp_path, const std::string& qga_path,
                                                         const std::string& save_dir, const std::string& name) {
  std::unique_ptr<DirectDomain> d(new DirectDomain());
  d->qmp_path_ = qmp_path;
  d->qga_path_ = qga_path;
  d->save_dir_ = save_dir;
  if (auto up = d->connect(Millis(10000)); !up.ok()) {
    if (name.empty() || !std::filesystem::exists(launch_file(save_dir, name))) return up.error();
    d->name_ = name;
    d->offline_ = std::make_unique<Offline>(name);
    return d;
  }
  auto n = SL_TRY(qmp::execute(*d->qmp_, qmp::QueryName{}));
  if (!name.empty() && n.name && *n.name != name)
    return make_error(ErrorKind::Invalid, "the QEMU at `", qmp_path, "` is named `", *n.name, "`, not `", name, "`");
  d->name_ = n.name.value_or(name.empty() ? std::filesystem::path(qmp_path).stem().string() : name);
  return d;
}

qmp::Channel& DirectDomain::monitor() { return qmp_ ? static_cast<qmp::Channel&>(*qmp_) : *offline_; }

Result<void> DirectDomain::connect(Millis timeout) {
  qmp_ = SL_TRY(qmp::QmpSocket::connect(qmp_path_, timeout));
  if (!qga_path_.empty()) qga_ = std::make_unique<LazyAgent>(qga_path_);
  return ok();
}

qmp::Channel* DirectDomain::agent() { return qga_.get(); }

Result<void> DirectDomain::online() const {
  if (!qmp_)
    return make_error(ErrorKind::Closed, "`", name_, "` is saved to disk and its QEMU has exited: resume it first");
  return ok();
}

Result<cgroup::Memory*> DirectDomain::memory() {
  SL_TRY(online());
  pid_t pid = SL_TRY(qmp_->peer_pid());
  if (!memory_) {
    auto group = SL_TRY(cgroup::for_pid(pid));
    if (group.relative == "/")
      return make_error(ErrorKind::Invalid, "QEMU (pid ", pid, ") of `", name_,
                        "` is in the root memory cgroup: start it in a cgroup of its own");
    memory_.emplace(group, SL_TRY(cgroup::libcgroup_knobs(group)));
  }
  // Throttling a group shared with other processes would squeeze them too.
  auto procs = SL_TRY(sys::read_file(memory_->group().dir() + "/cgroup.procs"));
  std::istringstream in(procs);
  for (pid_t other; in >> other;) {
    if (other != pid)
      return make_error(ErrorKind::Invalid, "the memory cgroup `", memory_->group().dir(), "` of `", name_,
                        "` also holds process ", other, ": QEMU needs a cgroup of its own");
  }
  return &*memory_;
}

Result<void> DirectDomain::save_to_disk() {
  SL_TRY(online());
  pid_t pid = SL_TRY(qmp_->peer_pid());
  auto argv = SL_TRY(cmdline_of(pid));
  // A QEMU that was itself relaunched carries the old -incoming: resume adds a new one.
  for (auto it = argv.begin(); it != argv.end();) {
    if (*it == "-incoming" && it + 1 != argv.end())
      it = argv.erase(it, it + 2);
    else
      ++it;
  }
  cgroup::Memory* mem = SL_TRY(memory());
  std::filesystem::create_directories(save_dir_);
  const std::string file = state_file(save_dir_, name_);
  // How to bring it back, written before QEMU goes away.
  std::string launch = cat("{\"cgroup\":", qmp::quote(mem->group().dir()), ",\"argv\":[");
  for (size_t i = 0; i < argv.size(); ++i) launch += cat(i ? "," : "", qmp::quote(argv[i]));
  launch += "]}";
  SL_TRY(sys::write_file(launch_file(save_dir_, name_), launch, 0600));

  // Paused first, as libvirt's save does: the state is one instant, not a live migration
  // racing the guest's writes (under TCG a live save once restored a guest whose timer
  // list was torn). The relaunched QEMU comes up paused too; restore continues it.
  SL_TRY_CTX(qmp::execute(*qmp_, qmp::Stop{}), "pausing `", name_, "` to save it");
  auto saved = [&]() -> Result<void> {
    SL_TRY(qmp::execute(*qmp_, qmp::Migrate{"exec:cat > '" + file + "'"}));
    for (Deadline d(Millis(600000));; std::this_thread::sleep_for(Millis(50))) {
      auto info = SL_TRY(qmp::execute(*qmp_, qmp::QueryMigrate{}));
      if (info.status == "completed") return ok();
      if (info.status == "failed" || info.status == "cancelled")
        return make_error(ErrorKind::Remote, "saving `", name_, "` failed: ", info.error.value_or(info.status));
      if (d.expired()) return make_error(ErrorKind::Timeout, "saving `", name_, "` did not finish in 10 minutes");
    }
  }();
  if (!saved.ok()) {
    (void)qmp::execute(*qmp_, qmp::MigrateCancel{});
    (void)qmp::execute(*qmp_, qmp::Cont{});  // undo: the VM runs on as before
    std::filesystem::remove(file);
    std::filesystem::remove(launch_file(save_dir_, name_));
    return saved.error();
  }
  (void)qmp::execute(*qmp_, qmp::Quit{});  // QEMU may close the socket before it answers
  for (Deadline d(Millis(30000)); !gone(pid); std::this_thread::sleep_for(Millis(20))) {
    if (d.expired()) return make_error(ErrorKind::Timeout, "QEMU (pid ", pid, ") did not exit after quit");
  }
  qmp_.reset();
  qga_.reset();
  offline_ = std::make_unique<Offline>(name_);
  memory_.reset();
  return ok();
}

Result<void> DirectDomain::restore_from_disk() {
  auto text = SL_TRY(sys::read_file(launch_file(save_dir_, name_)));
  auto launch = SL_TRY_CTX(qmp::parse(text), "launch record of `", name_, "`");
  auto cg = SL_TRY(qmp::get_string(launch.root(), "cgroup"));
  const qmp::Value* argv_json = SL_TRY(qmp::field(launch.root(), "argv"));
  if (!argv_json->IsArray() || argv_json->Empty()) return make_error(ErrorKind::Protocol, "launch record: bad argv");
  // The relaunched QEMU joins the old cgroup before it runs: sh writes its own pid, then execs.
  std::vector<std::string> argv = {"/bin/sh", "-c", "echo $$ > \"$0\" && exec \"$@\"", cg + "/cgroup.procs"};
  for (const auto& a : argv_json->GetArray()) {
    if (!a.IsString()) return make_error(ErrorKind::Protocol, "launch record: argv holds a non-string");
    argv.emplace_back(a.GetString(), a.GetStringLength());
  }
  const std::string file = state_file(save_dir_, name_);
  argv.insert(argv.end(), {"-incoming", "exec:cat '" + file + "'"});
  std::filesystem::remove(qmp_path_);
  SpawnOptions opts;
  opts.new_session = true;
  opts.stdout_path = save_dir_ + "/" + name_ + ".qemu.log";
  opts.stderr_path = opts.stdout_path;
  auto child = SL_TRY(ChildProcess::spawn(argv, opts));
  child.release();  // QEMU outlives this process, as it did before the save
  Deadline deadline(Millis(120000));
  qmp_.reset();
  qga_.reset();
  while (!connect(Millis(2000)).ok()) {
    if (deadline.expired()) return make_error(ErrorKind::Timeout, "relaunched QEMU of `", name_, "` did not come up");
    std::this_thread::sleep_for(Millis(100));
  }
  for (;; std::this_thread::sleep_for(Millis(50))) {
    auto st = SL_TRY(qmp::execute(*qmp_, qmp::QueryStatus{}));
    if (st.running) break;
    // Saved paused, loaded paused: once the state is in, run it.
    if (st.status == "paused" || st.status == "postmigrate")
      SL_TRY_CTX(qmp::execute(*qmp_, qmp::Cont{}), "resuming `", name_, "` after loading its state");
    if (deadline.expired())
      return make_error(ErrorKind::Timeout, "`", name_, "` did not run after loading its state (", st.status, ")");
  }
  offline_.reset();
  std::filesystem::remove(file);
  std::filesystem::remove(launch_file(save_dir_, name_));
  return ok();
}

}  // namespace seamless::suspend
