// format_detect.h: which text format an input is under --format auto
// (internal to the text import; csv_import.h is its API, with
// detect_format on a path).
//
// Owns the rule (docs/data.md): a first line split by ',', tab or ';' with
// a non-numeric field is a csv header; lines of exactly two tokens are
// pairs; longer lines are seq; what fits none is refused, saying what to
// pass. Reads only what the LineReader's peek() shows, so the input is
// still read once. Does not own reading the rows (row_parser.h).
#pragma once

#include "sasrec/csv_import.h"
#include "sasrec/line_reader.h"

namespace sasrec::text_import {

// The format of `reader`'s input from its first lines (its first 100
// non-empty ones in all but odd inputs), nothing consumed; `delimiter` as
// in ImportOptions.
InputFormat detect_format_of(LineReader& reader, char delimiter);

}  // namespace sasrec::text_import
