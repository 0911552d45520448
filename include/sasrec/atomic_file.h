// atomic_file.h: the one way sasrec-ddp writes a file, and the lock of a
// folder a run owns.
//
// AtomicOutput writes NAME through a temporary in NAME's own folder,
// NAME.tmp-PID: the data is fsynced, the temporary renamed over NAME only on
// commit() and the folder fsynced; a failure, the destructor or a SIGTERM /
// SIGINT (install_signal_cleanup) removes the temporary. NAME is therefore
// either what it was or the complete new file, never a part. Before anything
// is written the output is checked (check_output):
//   - an existing NAME that is not a regular file (a device, FIFO, socket or
//     directory) is refused: renaming over it would replace the node itself;
//   - an output that IS one of the run's inputs is refused, by identity
//     (st_dev and st_ino: another spelling, a hard link or a symlink to the
//     input is caught), not by the string;
//   - a symlink writes through: the temporary goes next to the link's final
//     target, which is replaced; the link stays and names the new file;
//   - the folder must exist and be writable.
// Every refusal is an Error(Input) (exit 2) naming the output and what to do.
// Temporaries of writers that died (a PID that no longer runs) are removed
// when the next writer of the same NAME starts. The replaced file's
// permission bits are kept.
//
// FolderLock is a lock file held while a run owns a folder (flock: the kernel
// releases it when the process ends, even by SIGKILL, so a lock never goes
// stale); the file holds the owner's pid, named when a second run is refused.
//
// This file owns no format: callers write bytes (write()) or let a library
// create temp_path() (HDF5, libtorch's profiler) and commit() it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace sasrec {

// A file's identity (st_dev, st_ino); invalid when the file does not exist.
struct FileId {
  uint64_t dev = 0;
  uint64_t ino = 0;
  bool valid = false;
  bool operator==(const FileId& o) const { return valid && o.valid && dev == o.dev && ino == o.ino; }
};
FileId file_id(const std::string& path);  // follows symlinks
FileId file_id_of_fd(int fd);

// An input of the run, named in messages ("data.path", "the input", "--checkpoint").
struct RunInput {
  std::string what;
  std::string path;
  FileId id;
};
// `path`'s identity now (an input that does not exist is never matched).
RunInput run_input(std::string what, std::string path);

// Checks that `path` may be replaced by a new file (rules above) and returns
// where the file really goes (symlinks followed). `what` names the output in
// messages ("the output", "--out", "output.profile").
std::string check_output(const std::string& path, const std::string& what, const std::vector<RunInput>& inputs);

class AtomicOutput {
 public:
  // Checks the output (check_output) and removes dead writers' temporaries.
  // `advice` ends the message of a failed write ("free disk space ...").
  AtomicOutput(std::string path, std::string what, const std::vector<RunInput>& inputs = {},
               std::string advice = "check free disk space and permissions");
  ~AtomicOutput();  // discard() unless committed
  AtomicOutput(const AtomicOutput&) = delete;
  AtomicOutput& operator=(const AtomicOutput&) = delete;

  const std::string& path() const { return path_; }       // as given
  const std::string& target() const { return target_; }   // after symlinks
  const std::string& temp_path() const { return temp_; }  // target + ".tmp-PID"

  // Creates the temporary and writes to it; write() writes all of `n` bytes
  // or throws Error(Io) (the temporary removed). Writers that create the
  // file themselves use temp_path() and never call these.
  void open();
  void write(const void* data, size_t n);
  // The failure of a write as `err` would give (fault injection, and
  // writers that found the error themselves): discards, throws Error(Io).
  [[noreturn]] void fail(int err, const std::string& doing = "writing");
  // fsync, close, rename over target(), fsync of the folder. Throws
  // Error(Io) (the temporary removed) on any failure.
  void commit();
  // Closes and removes the temporary; the target is untouched.
  void discard();
  bool committed() const { return committed_; }
  // Temporaries of dead writers of this output removed by the constructor.
  int stale_removed() const { return stale_removed_; }

 private:
  std::string path_, what_, advice_, target_, temp_;
  std::vector<RunInput> inputs_;
  int fd_ = -1;
  int slot_ = -1;  // in the signal-cleanup registry
  int stale_removed_ = 0;
  bool committed_ = false;
  bool had_target_ = false;
  unsigned target_mode_ = 0;
};

// Writes `text` to `path` through an AtomicOutput (a whole small file).
void write_file_atomically(const std::string& path, const std::string& what, const std::string& text,
                           const std::vector<RunInput>& inputs = {});

// Removes the files of `folder` named PREFIX*.tmp-PID whose PID no longer
// runs; returns how many. (Another machine's live writer on a shared file
// system looks dead here: folders a run owns are locked, see FolderLock.)
int remove_stale_temporaries(const std::string& folder, const std::string& prefix);

// SIGTERM / SIGINT: remove every temporary of a live AtomicOutput, print
// "PROGRAM: interrupted by SIG...; nothing was written, no unfinished output
// is left" and exit 3 (kExitInterrupted). For the tools whose work is one
// file (csv2h5, sasrec_synth, recommend, export) and sasrec_ddp eval; the
// trainer has its StepGuard.
void install_signal_cleanup(const char* program);

class FolderLock {
 public:
  // Takes `folder`/lock. Another live holder: Error(Input) naming its pid,
  // `what` (e.g. "checkpoint.dir") and what to do.
  FolderLock(const std::string& folder, const std::string& what);
  ~FolderLock();
  FolderLock(const FolderLock&) = delete;
  FolderLock& operator=(const FolderLock&) = delete;
  const std::string& path() const { return path_; }
  // The pid a previous holder left in the file when it died holding the lock (0: none).
  pid_t previous_pid() const { return previous_pid_; }

 private:
  std::string path_;
  int fd_ = -1;
  pid_t previous_pid_ = 0;
};

// Whether process `pid` runs (kill(pid, 0)); our own pid runs.
bool process_alive(pid_t pid);

}  // namespace sasrec
