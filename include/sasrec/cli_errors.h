// cli_errors.h: how every command line of sasrec-ddp ends a parse.
//
// CLI11's app.exit() returns CLI11's own codes (105 for a bad value, 106 for
// an unknown flag, 108 for a failed check, ...). The binaries promise one
// table instead (error.h): --help and --version exit 0; any parse error
// exits 2 (kExitBadInput) with CLI11's message, the usage line of the
// (sub)command and where the full help is. Header-only: the three mains
// include it, the libraries do not depend on CLI11.
#pragma once

#include <CLI/CLI.hpp>

#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>

#include "sasrec/error.h"

namespace sasrec {

// Parses argv into `app`. Returns -1 to go on, else the exit code to return
// now: 0 after --help / --version (printed), 2 after a usage error (printed
// to stderr as "PROGRAM: message", then the usage line).
inline int parse_command_line(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
    return -1;
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);                       // --help, --version
    app.name(std::filesystem::path(app.get_name()).filename().string());  // "csv2h5", not its full path
    // The deepest subcommand the parse reached names the usage to show.
    const CLI::App* at = &app;
    for (bool deeper = true; deeper;) {
      deeper = false;
      for (const CLI::App* sub : at->get_subcommands())
        if (sub->parsed()) at = sub, deeper = true;
    }
    std::string usage;
    std::istringstream help(at->help());
    for (std::string line; std::getline(help, line);)
      if (line.rfind("Usage:", 0) == 0) usage = line;
    std::string command = app.get_name();
    if (at != &app) {
      command += " " + at->get_name();
      // CLI11 2.1 writes a subcommand's usage without its parent: "Usage: recommend [OPTIONS] ...".
      const std::string bare = "Usage: " + at->get_name() + " ";
      if (usage.rfind(bare, 0) == 0) usage = "Usage: " + command + " " + usage.substr(bare.size());
    }
    std::cerr << app.get_name() << ": " << e.what() << "\n"
              << (usage.empty() ? std::string() : usage + "\n") << "Run '" << command << " --help' for every option.\n";
    return kExitBadInput;
  }
}

}  // namespace sasrec
