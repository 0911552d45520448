// test_atomic_file.cpp: the one write helper (atomic_file.h) and the folder
// lock. Each refusal is checked on the file system afterwards: the node it
// protects is still what it was.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "sasrec/atomic_file.h"
#include "sasrec/error.h"
#include "test_util.h"

namespace sasrec {
namespace {

using test::TempDir;

// The message of the Error(Input) `f` throws, "" when it throws none.
template <typename F>
std::string refusal(F f) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.domain(), ErrorDomain::Input) << e.what();
    return e.what();
  }
  return "";
}

mode_t kind_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st.st_mode & S_IFMT;
}

void write_through(const std::string& path, const std::string& text, const std::vector<RunInput>& inputs = {}) {
  write_file_atomically(path, "the output", text, inputs);
}

TEST(AtomicOutput, WritesWholeFilesAndKeepsTheOldOneOnFailure) {
  TempDir dir;
  const std::string out = dir.file("out.txt");
  write_through(out, "first\n");
  EXPECT_EQ(test::read_text(out), "first\n");
  ::chmod(out.c_str(), 0600);
  {
    AtomicOutput o(out, "the output");
    o.open();
    o.write("second", 6);
    EXPECT_EQ(test::read_text(out), "first\n") << "visible before commit";
    EXPECT_TRUE(test::fs::exists(o.temp_path()));
    EXPECT_EQ(o.temp_path(), out + ".tmp-" + std::to_string(::getpid()));
    try {
      o.fail(ENOSPC);
      ADD_FAILURE() << "fail() returned";
    } catch (const Error& e) {
      EXPECT_EQ(e.domain(), ErrorDomain::Io);
      EXPECT_NE(std::string(e.what()).find("No space left on device"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(test::fs::exists(o.temp_path())) << "a failure removes the temporary";
  }
  EXPECT_EQ(test::read_text(out), "first\n");
  {
    AtomicOutput o(out, "the output");  // destroyed without commit: as if it threw
    o.open();
    o.write("third", 5);
  }
  EXPECT_EQ(test::read_text(out), "first\n");
  write_through(out, "fourth\n");
  EXPECT_EQ(test::read_text(out), "fourth\n");
  EXPECT_EQ(kind_of(out), static_cast<mode_t>(S_IFREG));
  struct stat st {};
  ::stat(out.c_str(), &st);
  EXPECT_EQ(st.st_mode & 07777, 0600u) << "the replaced file's permissions are kept";
  for (const auto& e : test::fs::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().string().find(".tmp-"), std::string::npos) << e.path();
}

TEST(AtomicOutput, RefusesEveryNodeThatIsNotARegularFile) {
  TempDir dir;
  const std::string fifo = dir.file("fifo"), folder = dir.file("folder"), sock = dir.file("sock");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  test::fs::create_directories(folder);
  const int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", sock.c_str());
  ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << sock;
  std::vector<std::pair<std::string, std::string>> nodes{
      {fifo, "a FIFO (named pipe)"}, {folder, "a directory"}, {sock, "a socket"}};
  // A character device of our own (the same numbers as /dev/null), never the real one: a regression
  // must not be able to replace /dev/null on the machine that runs the tests.
  const std::string device = dir.file("null");
  if (::mknod(device.c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0) nodes.emplace_back(device, "a character device");
  for (const auto& [path, kind] : nodes) {
    const mode_t before = kind_of(path);
    const std::string msg = refusal([&] { write_through(path, "x"); });
    EXPECT_NE(msg.find("'" + path + "' exists and is " + kind + ", not a regular file"), std::string::npos) << msg;
    EXPECT_EQ(kind_of(path), before) << path << " was replaced";
    // Through a symbolic link too.
    const std::string link = path + ".link";
    test::fs::create_symlink(path, link);
    EXPECT_NE(refusal([&] { write_through(link, "x"); }).find("a symbolic link to '" + path + "'"), std::string::npos);
    EXPECT_EQ(kind_of(path), before);
  }
  ::close(s);
}

TEST(AtomicOutput, RefusesTheInputsOfTheRunByIdentity) {
  TempDir dir;
  const std::string in = dir.file("in.csv");
  test::write_text(in, "user_id,item_id\na,b\n");
  test::fs::create_hard_link(in, dir.file("hard.csv"));
  test::fs::create_symlink(in, dir.file("soft.csv"));
  test::fs::create_directories(dir.file("sub"));
  const std::vector<RunInput> inputs{run_input("the input", in)};
  for (const std::string& out : {in, dir.file("hard.csv"), dir.file("soft.csv"), dir.file("sub/../in.csv")}) {
    const std::string msg = refusal([&] { write_through(out, "store", inputs); });
    EXPECT_NE(msg.find("is the input '" + in + "' (the same file)"), std::string::npos) << out << ": " << msg;
    EXPECT_EQ(test::read_text(in), "user_id,item_id\na,b\n") << out;
  }
  EXPECT_EQ(kind_of(dir.file("soft.csv")), static_cast<mode_t>(S_IFLNK));
}

TEST(AtomicOutput, ASymlinkWritesThroughToItsTarget) {
  TempDir dir;
  test::fs::create_directories(dir.file("real"));
  const std::string target = dir.file("real/out.h5"), link = dir.file("out.h5");
  test::write_text(target, "old");
  test::fs::create_symlink("real/out.h5", link);  // relative, as ln -s writes it
  write_through(link, "new");
  EXPECT_EQ(kind_of(link), static_cast<mode_t>(S_IFLNK)) << "the link is kept";
  EXPECT_EQ(test::read_text(target), "new");
  // A dangling link creates its target.
  test::fs::create_symlink("real/later.h5", dir.file("later.h5"));
  write_through(dir.file("later.h5"), "made");
  EXPECT_EQ(test::read_text(dir.file("real/later.h5")), "made");
}

TEST(AtomicOutput, MissingFolderIsARefusalBeforeAnythingIsWritten) {
  TempDir dir;
  const std::string msg = refusal([&] { AtomicOutput o(dir.file("no/such/out.h5"), "--out"); });
  EXPECT_NE(msg.find("--out '" + dir.file("no/such/out.h5") + "': the folder " + dir.file("no/such") +
                     " does not exist; create it first"),
            std::string::npos)
      << msg;
}

TEST(AtomicOutput, TemporariesOfDeadWritersAreRemovedByTheNextOne) {
  TempDir dir;
  const std::string out = dir.file("out.h5");
  // A pid that no longer runs: a child that has exited and been reaped.
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);
  const std::string dead = out + ".tmp-" + std::to_string(child), live = out + ".tmp-1";  // pid 1 always runs
  const std::string other = dir.file("other.h5.tmp-" + std::to_string(child));
  for (const auto& p : {dead, live, other}) test::write_text(p, "partial");
  AtomicOutput o(out, "the output");
  EXPECT_EQ(o.stale_removed(), 1);
  EXPECT_FALSE(test::fs::exists(dead));
  EXPECT_TRUE(test::fs::exists(live)) << "a live writer's temporary is left alone";
  EXPECT_TRUE(test::fs::exists(other)) << "another output's temporary is left alone";
}

TEST(FolderLock, ASecondHolderIsRefusedNamingThePid) {
  TempDir dir;
  {
    FolderLock first(dir.path().string(), "checkpoint.dir");
    EXPECT_EQ(test::read_text(first.path()), std::to_string(::getpid()) + "\n");
    const std::string msg = refusal([&] { FolderLock second(dir.path().string(), "checkpoint.dir"); });
    EXPECT_NE(msg.find("checkpoint.dir '" + dir.path().string() + "' is in use by another run (pid " +
                       std::to_string(::getpid())),
              std::string::npos)
        << msg;
  }
  FolderLock again(dir.path().string(), "checkpoint.dir");  // released with the first
  EXPECT_EQ(again.previous_pid(), 0) << "a holder that ended normally leaves no pid behind";
}

TEST(FolderLock, TheLockOfAKilledHolderIsTakenOverSayingSo) {
  TempDir dir;
  const pid_t child = ::fork();
  if (child == 0) {
    FolderLock held(dir.path().string(), "checkpoint.dir");
    ::raise(SIGKILL);  // dies holding it: the kernel drops the flock, the pid stays in the file
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  FolderLock next(dir.path().string(), "checkpoint.dir");
  EXPECT_EQ(next.previous_pid(), child);
}

}  // namespace
}  // namespace sasrec
