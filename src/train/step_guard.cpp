// step_guard.cpp: the signal handlers behind StepGuard (see step_guard.h).
#include "sasrec/step_guard.h"

#include <csignal>

#include "sasrec/error.h"

namespace sasrec {
namespace {

volatile std::sig_atomic_t g_requested = 0;  // the one thing a handler may touch
struct sigaction g_old_term, g_old_int;
bool g_installed = false;

extern "C" void on_stop_signal(int sig) { g_requested = sig; }

}  // namespace

StepGuard::StepGuard() {
  SASREC_CHECK(!g_installed, "only one StepGuard may exist at a time");
  g_requested = 0;
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESETHAND | SA_RESTART;  // a second signal: default action
  sigaction(SIGTERM, &sa, &g_old_term);
  sigaction(SIGINT, &sa, &g_old_int);
  g_installed = true;
}

StepGuard::~StepGuard() {
  sigaction(SIGTERM, &g_old_term, nullptr);
  sigaction(SIGINT, &g_old_int, nullptr);
  g_installed = false;
}

int StepGuard::requested() const { return g_requested; }

const char* StepGuard::signal_name(int sig) {
  return sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : "a signal";
}

}  // namespace sasrec
