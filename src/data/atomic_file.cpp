// atomic_file.cpp: checked outputs written through a temporary, the
// signal-time cleanup of temporaries, and folder locks (see atomic_file.h).
// Owns no file format: the writers (store, export, checkpoints) fill the
// temporary; this file checks, fsyncs, renames and cleans up.
#include "sasrec/atomic_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "sasrec/error.h"

namespace sasrec {
namespace fs = std::filesystem;
namespace {

using detail::cat;

const char* node_kind(mode_t m) {
  if (S_ISDIR(m)) return "a directory";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISFIFO(m)) return "a FIFO (named pipe)";
  if (S_ISSOCK(m)) return "a socket";
  return "not a regular file";
}

std::string folder_of(const std::string& path) {
  const std::string parent = fs::path(path).parent_path().string();
  return parent.empty() ? "." : parent;
}

// The file a path finally names: symbolic links of the last component
// followed (a dangling link names the file it would create).
std::string follow_links(const std::string& path, const std::string& what) {
  std::string p = path;
  for (int depth = 0; depth < 40; ++depth) {
    struct stat st;
    if (::lstat(p.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) return p;
    std::error_code ec;
    fs::path to = fs::read_symlink(p, ec);
    if (ec) SASREC_FAIL(Input, what, " '", path, "': cannot read the symbolic link ", p, " (", ec.message(), ")");
    if (to.is_relative()) to = fs::path(p).parent_path() / to;
    p = to.string();
  }
  SASREC_FAIL(Input, what, " '", path, "': too many levels of symbolic links; give the file itself");
}

void fsync_folder(const std::string& folder) {
  const int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

// ---- the registry of live temporaries, read by the signal handler -------------------
// Fixed storage and lock-free atomics: all a signal handler may touch.
constexpr int kSlots = 16;
constexpr size_t kPathMax = 4096;
char g_temp_paths[kSlots][kPathMax];
std::atomic<int> g_temp_state[kSlots];  // 0 free, 1 registered, 2 being written
char g_program[64] = "sasrec";
static_assert(std::atomic<int>::is_always_lock_free, "the signal handler reads these");

int register_temporary(const std::string& path) {
  if (path.size() >= kPathMax) return -1;  // still removed on every other path, and as stale later
  for (int i = 0; i < kSlots; ++i) {
    int expected = 0;
    if (!g_temp_state[i].compare_exchange_strong(expected, 2)) continue;
    std::memcpy(g_temp_paths[i], path.c_str(), path.size() + 1);
    g_temp_state[i].store(1);
    return i;
  }
  return -1;
}

void unregister_temporary(int slot) {
  if (slot >= 0) g_temp_state[slot].store(0);
}

void write_stderr(const char* s) {
  const ssize_t ignored = ::write(STDERR_FILENO, s, std::strlen(s));
  (void)ignored;
}

extern "C" void on_interrupt(int sig) {
  for (int i = 0; i < kSlots; ++i)
    if (g_temp_state[i].load() == 1) ::unlink(g_temp_paths[i]);
  write_stderr(g_program);
  write_stderr(sig == SIGINT ? ": interrupted by SIGINT" : ": interrupted by SIGTERM");
  write_stderr("; nothing was written, no unfinished output is left\n");
  ::_exit(kExitInterrupted);
}

}  // namespace

FileId file_id(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return {};
  return {static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino), true};
}

FileId file_id_of_fd(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return {};
  return {static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino), true};
}

RunInput run_input(std::string what, std::string path) {
  FileId id = file_id(path);
  return {std::move(what), std::move(path), id};
}

bool process_alive(pid_t pid) {
  if (pid <= 0) return false;
  if (pid == ::getpid()) return true;
  return ::kill(pid, 0) == 0 || errno == EPERM;
}

std::string check_output(const std::string& path, const std::string& what, const std::vector<RunInput>& inputs) {
  if (path.empty()) SASREC_FAIL(Input, what, " is empty; give a file path");
  const std::string target = follow_links(path, what);
  const std::string via = target == path ? std::string() : cat(" (a symbolic link to '", target, "')");
  struct stat st;
  if (::lstat(target.c_str(), &st) == 0) {
    if (!S_ISREG(st.st_mode))
      SASREC_FAIL(Input, what, " '", path, "'", via, " exists and is ", node_kind(st.st_mode),
                  ", not a regular file; only regular files are replaced: give the path of a file");
    const FileId out{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino), true};
    for (const auto& in : inputs)
      if (in.id == out)
        SASREC_FAIL(Input, what, " '", path, "'", via, " is ", in.what, " '", in.path,
                    "' (the same file): writing it would destroy an input of this run; choose another path");
  } else if (errno != ENOENT) {
    SASREC_FAIL(Input, what, " '", path, "'", via, ": cannot examine it (", std::strerror(errno), ")");
  }
  const std::string folder = folder_of(target);
  struct stat dst;
  if (::stat(folder.c_str(), &dst) != 0 || !S_ISDIR(dst.st_mode))
    SASREC_FAIL(Input, what, " '", path, "'", via, ": the folder ", folder, " does not exist; create it first");
  if (::access(folder.c_str(), W_OK | X_OK) != 0)
    SASREC_FAIL(Input, what, " '", path, "'", via, ": the folder ", folder,
                " is not writable; choose another path or fix its permissions");
  return target;
}

AtomicOutput::AtomicOutput(std::string path, std::string what, const std::vector<RunInput>& inputs, std::string advice)
    : path_(std::move(path)), what_(std::move(what)), advice_(std::move(advice)), inputs_(inputs) {
  target_ = check_output(path_, what_, inputs_);
  temp_ = cat(target_, ".tmp-", static_cast<long>(::getpid()));
  stale_removed_ = remove_stale_temporaries(folder_of(target_), fs::path(target_).filename().string() + ".tmp-");
  struct stat st;
  if (::stat(target_.c_str(), &st) == 0) had_target_ = true, target_mode_ = st.st_mode & 07777;
  slot_ = register_temporary(temp_);
}

AtomicOutput::~AtomicOutput() {
  if (!committed_) discard();
}

void AtomicOutput::open() {
  SASREC_CHECK(fd_ < 0 && !committed_, "AtomicOutput::open twice");
  fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail(errno, "creating");
}

void AtomicOutput::write(const void* data, size_t n) {
  SASREC_CHECK(fd_ >= 0, "AtomicOutput::write before open");
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail(errno);
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void AtomicOutput::fail(int err, const std::string& doing) {
  discard();
  SASREC_FAIL(Io, doing, " ", what_, " ", path_, " failed (", std::strerror(err), "); ", advice_);
}

void AtomicOutput::commit() {
  SASREC_CHECK(!committed_, "AtomicOutput::commit twice");
  int fd = fd_;
  fd_ = -1;
  if (fd < 0) fd = ::open(temp_.c_str(), O_RDONLY | O_CLOEXEC);  // written by a library
  if (fd < 0) fail(errno, "finishing");
  int err = ::fsync(fd) != 0 ? errno : 0;
  if (::close(fd) != 0 && !err) err = errno;
  if (err) fail(err, "finishing");
  if (had_target_) ::chmod(temp_.c_str(), target_mode_);
  // The output may have changed since the check (a FIFO made in its place).
  try {
    check_output(path_, what_, inputs_);
  } catch (...) {
    discard();
    throw;
  }
  if (std::rename(temp_.c_str(), target_.c_str()) != 0) fail(errno, "renaming into place");
  fsync_folder(folder_of(target_));
  unregister_temporary(slot_);
  slot_ = -1;
  committed_ = true;
}

void AtomicOutput::discard() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (!committed_) ::unlink(temp_.c_str());
  unregister_temporary(slot_);
  slot_ = -1;
}

void write_file_atomically(const std::string& path, const std::string& what, const std::string& text,
                           const std::vector<RunInput>& inputs) {
  AtomicOutput out(path, what, inputs);
  out.open();
  out.write(text.data(), text.size());
  out.commit();
}

int remove_stale_temporaries(const std::string& folder, const std::string& prefix) {
  int removed = 0;
  std::error_code ec;
  for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const size_t at = name.rfind(".tmp-");
    if (name.compare(0, prefix.size(), prefix) != 0 || at == std::string::npos || at + 5 >= name.size() ||
        at + 5 < prefix.size() || name.find_first_not_of("0123456789", at + 5) != std::string::npos)
      continue;
    const long pid = std::strtol(name.c_str() + at + 5, nullptr, 10);
    if (process_alive(static_cast<pid_t>(pid))) continue;
    std::error_code rm;
    removed += fs::remove(it->path(), rm) ? 1 : 0;
  }
  return removed;
}

void install_signal_cleanup(const char* program) {
  std::snprintf(g_program, sizeof(g_program), "%s", program);
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  sigaddset(&sa.sa_mask, SIGTERM);
  sigaddset(&sa.sa_mask, SIGINT);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
}

FolderLock::FolderLock(const std::string& folder, const std::string& what)
    : path_((fs::path(folder) / "lock").string()) {
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0)
    SASREC_FAIL(Io, what, " '", folder, "': cannot create the lock file ", path_, " (", std::strerror(errno),
                "); check the folder's permissions");
  char buf[32] = {};
  const ssize_t n = ::pread(fd_, buf, sizeof(buf) - 1, 0);
  const pid_t holder = n > 0 ? static_cast<pid_t>(std::strtol(buf, nullptr, 10)) : 0;
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK)
      SASREC_FAIL(Input, what, " '", folder, "' is in use by another run (pid ", holder, ", lock file ", path_,
                  "): two runs in one folder overwrite each other's files. Wait for it to end or choose another ",
                  what);
    return;  // a file system without locks (some network mounts): run unlocked rather than not at all
  }
  // The kernel released the lock of a holder that died; the file still names it.
  if (holder > 0 && holder != ::getpid() && !process_alive(holder)) previous_pid_ = holder;
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) == 0) {
    const ssize_t ignored = ::pwrite(fd_, pid.data(), pid.size(), 0);
    (void)ignored;
  }
}

FolderLock::~FolderLock() {
  if (fd_ < 0) return;
  // Emptied, not removed: removing a flock'ed file races with a process opening it.
  if (::ftruncate(fd_, 0) != 0) {
  }
  ::close(fd_);
}

}  // namespace sasrec
